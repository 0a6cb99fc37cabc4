"""Empirical coverage of Gaussian predictions, and the probability integral transform.

A predicted N(mu, Sigma) over d outputs is calibrated when the truth falls
inside its level-p region a fraction p of the time. The level-p region of a
d-dimensional Gaussian is the ellipsoid

    (y - mu)^T Sigma^-1 (y - mu) <= chi2_d.ppf(p),

since the squared Mahalanobis distance of a draw is chi-square distributed with
d degrees of freedom (for d = 2 and p = 0.683 the threshold is 2.30, not the
1-D value 1). Per output k, the central interval |y_k - mu_k| <= z sqrt(Sigma_kk)
with z = Phi^-1((1 + p) / 2) is the marginal level-p region.

Student-t predictions (`df` given: what `fit_covariance_scale(...,
family="student_t")` serves) are passed by the same mean and covariance plus
their degrees of freedom nu > 2. Their scale matrix is S = (nu - 2) / nu * Sigma,
and the squared radius r^T S^-1 r of a draw is d times an F(d, nu) variable, so
the level-p ellipsoid is r^T S^-1 r <= d F.ppf(p; d, nu) (the chi-square
quantile in the limit nu -> infinity) and the marginal interval uses the
Student-t quantile t_nu.ppf((1 + p) / 2) times sqrt(S_kk).
"""

import numpy as np

from keras_efficient.calibration import _math
from keras_efficient.utils.validation import check_bool

__all__ = ["coverage", "probability_integral_transform"]


def _radii(y, mu, cov, df):
    """Squared Mahalanobis radii w.r.t. the covariance (Gaussian) or the scale matrix (t)."""
    m2 = _math.mahalanobis_squared(y, mu, cov)
    return m2 if df is None else m2 * df / (df - 2.0)


def _radius_thresholds(levels, d, df):
    """Level-p thresholds of the squared radius: chi2_d.ppf(p) or d F.ppf(p; d, df)."""
    return _math.chi2_ppf(levels, d) if df is None else _math.t_radius_ppf(levels, d, df)


def _abs_standardized(y, mu, cov, df):
    """|y_k - mu_k| / sqrt(Sigma_kk) (Gaussian) or / sqrt(S_kk) (t), [..., d]."""
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    if np.any(std <= 0.0):
        raise ValueError("`covariance` must have a positive diagonal.")
    z = (y - mu) / std
    return np.abs(z) if df is None else np.abs(z) * np.sqrt(df / (df - 2.0))


def _interval_half_widths(levels, df):
    """z such that the central interval +-z holds p: Phi^-1((1+p)/2) or t_df.ppf((1+p)/2)."""
    levels = np.asarray(levels, dtype=np.float64)
    if df is None:
        return np.array([_math.normal_ppf(0.5 * (1.0 + p)) for p in levels.reshape(-1)]
                        ).reshape(levels.shape)
    # T^2 ~ F(1, df): P(|T| <= z) = p  <=>  z^2 = df x / (1 - x), x = Beta(1/2, df/2).ppf(p).
    x = _math.beta_ppf(levels, 0.5, 0.5 * df)
    return np.sqrt(df * x / (1.0 - x))


def coverage(y_true, mean, covariance, level, marginal=False, df=None):
    """Fraction of targets inside the predicted Gaussian's (or Student-t's) level-p region.

    Args:
      y_true: targets, array [..., d].
      mean: predicted means, array [..., d].
      covariance: predicted covariances, array [..., d, d] (or one [d, d]).
      level: probability content p of the region, in (0, 1) (e.g. 0.683, 0.954).
      marginal: False: the joint ellipsoid with the chi-square quantile
        chi2_d.ppf(p); True: each output's central interval mu_k +- z sigma_k,
        z = Phi^-1((1 + p) / 2), counted per output.
      df: None (Gaussian predictions) or the degrees of freedom nu > 2 of
        Student-t predictions with this mean and covariance (joint: the threshold
        d F.ppf(p; d, nu) on the squared radius w.r.t. the scale matrix
        S = (nu - 2) / nu * Sigma; marginal: the Student-t quantile).

    Returns:
      float (joint) or float64 array [d] (marginal): the observed fraction, which
      should be close to `level` for calibrated predictions (within about
      sqrt(p (1 - p) / n) for n independent examples).
    """
    level = _math.check_level("level", level)
    check_bool("marginal", marginal)
    df = None if df is None else _math.check_df(df)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    d = mu.shape[-1]
    if marginal:
        inside = _abs_standardized(y, mu, cov, df) <= float(_interval_half_widths(level, df))
        return inside.reshape(-1, d).mean(axis=0)
    threshold = float(_radius_thresholds(level, d, df))
    return float(np.mean(_radii(y, mu, cov, df) <= threshold))


def probability_integral_transform(y_true, mean, covariance, df=None):
    """Per-output PIT values u_k = Phi((y_k - mu_k) / sqrt(Sigma_kk)).

    With `df` (Student-t predictions): u_k = T_nu((y_k - mu_k) / sqrt(S_kk)),
    T_nu the Student-t CDF, S = (nu - 2) / nu * Sigma the scale matrix.

    For calibrated Gaussian predictions each output's PIT values are uniform on
    [0, 1]: a U-shaped histogram means over-confident (too narrow) predictions, a
    hump over-dispersed ones, a slope a biased mean.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]); only its diagonal is used.
      df: None (Gaussian) or the Student-t degrees of freedom nu > 2.

    Returns:
      float64 array [..., d] in [0, 1].
    """
    df = None if df is None else _math.check_df(df)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    if np.any(std <= 0.0):
        raise ValueError("`covariance` must have a positive diagonal.")
    z = (y - mu) / std
    if df is None:
        return _math.normal_cdf(z)
    return _math.t_cdf(z * np.sqrt(df / (df - 2.0)), df)
