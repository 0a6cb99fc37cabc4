"""Empirical coverage of Gaussian predictions, and the probability integral transform.

A predicted N(mu, Sigma) over d outputs is calibrated when the truth falls
inside its level-p region a fraction p of the time. The level-p region of a
d-dimensional Gaussian is the ellipsoid

    (y - mu)^T Sigma^-1 (y - mu) <= chi2_d.ppf(p),

since the squared Mahalanobis distance of a draw is chi-square distributed with
d degrees of freedom (for d = 2 and p = 0.683 the threshold is 2.30, not the
1-D value 1). Per output k, the central interval |y_k - mu_k| <= z sqrt(Sigma_kk)
with z = Phi^-1((1 + p) / 2) is the marginal level-p region.
"""

import numpy as np

from keras_efficient.calibration import _math
from keras_efficient.utils.validation import check_bool

__all__ = ["coverage", "probability_integral_transform"]


def coverage(y_true, mean, covariance, level, marginal=False):
    """Fraction of targets inside the predicted Gaussian's level-`level` region.

    Args:
      y_true: targets, array [..., d].
      mean: predicted means, array [..., d].
      covariance: predicted covariances, array [..., d, d] (or one [d, d]).
      level: probability content p of the region, in (0, 1) (e.g. 0.683, 0.954).
      marginal: False: the joint ellipsoid with the chi-square quantile
        chi2_d.ppf(p); True: each output's central interval mu_k +- z sigma_k,
        z = Phi^-1((1 + p) / 2), counted per output.

    Returns:
      float (joint) or float64 array [d] (marginal): the observed fraction, which
      should be close to `level` for calibrated predictions (within about
      sqrt(p (1 - p) / n) for n independent examples).
    """
    level = _math.check_level("level", level)
    check_bool("marginal", marginal)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    d = mu.shape[-1]
    if marginal:
        std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        inside = np.abs(y - mu) <= _math.normal_ppf(0.5 * (1.0 + level)) * std
        return inside.reshape(-1, d).mean(axis=0)
    threshold = float(_math.chi2_ppf(level, d))
    return float(np.mean(_math.mahalanobis_squared(y, mu, cov) <= threshold))


def probability_integral_transform(y_true, mean, covariance):
    """Per-output PIT values u_k = Phi((y_k - mu_k) / sqrt(Sigma_kk)).

    For calibrated Gaussian predictions each output's PIT values are uniform on
    [0, 1]: a U-shaped histogram means over-confident (too narrow) predictions, a
    hump over-dispersed ones, a slope a biased mean.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]); only its diagonal is used.

    Returns:
      float64 array [..., d] in [0, 1].
    """
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    if np.any(std <= 0.0):
        raise ValueError("`covariance` must have a positive diagonal.")
    return _math.normal_cdf((y - mu) / std)
