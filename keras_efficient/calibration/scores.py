"""Proper scoring rules for Gaussian and Student-t predictions: the full-covariance
negative log-likelihood and the closed-form CRPS per output.

A Student-t prediction is given, like a Gaussian one, by its mean and covariance
Sigma, plus its degrees of freedom nu > 2; its scale matrix is
S = (nu - 2) / nu * Sigma (what `fit_covariance_scale(..., family="student_t")`
serves)."""

import math

import numpy as np

from keras_efficient.calibration import _math

__all__ = ["gaussian_nll", "crps_gaussian", "student_t_nll", "crps_student_t"]


def gaussian_nll(y_true, mean, covariance):
    """Negative log-likelihood of each target under N(mean, covariance).

        NLL = 1/2 [d ln(2 pi) + ln |Sigma| + (y - mu)^T Sigma^-1 (y - mu)]

    (Eq. 1 of the IPU/GPU cosmology paper, per example.)

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]), symmetric positive definite.

    Returns:
      float64 array [...] (one value per example, in nats).
    """
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    return -_math.gaussian_log_density(y, mu, cov)


def crps_gaussian(y_true, mean, covariance):
    """Continuous ranked probability score of each output's marginal Gaussian.

        CRPS(N(mu, s^2), y) = int (F(x) - 1[x >= y])^2 dx
                            = s [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)],
        z = (y - mu) / s,  s = sqrt(Sigma_kk)

    (Gneiting & Raftery, 2007, Eq. 21). In the units of y; lower is better; it
    rewards sharpness and calibration together, and equals the absolute error
    for a zero-width prediction.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]); only its diagonal is used.

    Returns:
      float64 array [..., d].
    """
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    s = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    if np.any(s <= 0.0):
        raise ValueError("`covariance` must have a positive diagonal.")
    z = (y - mu) / s
    return s * (z * (2.0 * _math.normal_cdf(z) - 1.0) + 2.0 * _math.normal_pdf(z)
                - 1.0 / math.sqrt(math.pi))


def student_t_nll(y_true, mean, covariance, df):
    """Negative log-likelihood of each target under a d-dimensional Student-t.

        NLL = -ln Gamma((nu + d) / 2) + ln Gamma(nu / 2) + d/2 ln(nu pi) + 1/2 ln |S|
              + (nu + d) / 2 ln(1 + r^T S^-1 r / nu),

    r = y - mu, S = (nu - 2) / nu * Sigma (the density of
    `tfd.MultivariateStudentTLinearOperator`); it tends to `gaussian_nll` as
    nu -> infinity.

    Args:
      y_true, mean: arrays [..., d].
      covariance: the predictive covariances Sigma, array [..., d, d] (or one [d, d]).
      df: degrees of freedom nu > 2.

    Returns:
      float64 array [...] (one value per example, in nats).
    """
    df = _math.check_df(df)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    return -_math.t_log_density(y, mu, cov, df)


def crps_student_t(y_true, mean, covariance, df):
    """Continuous ranked probability score of each output's marginal Student-t.

        CRPS = s [z (2 T(z) - 1) + 2 t(z) (nu + z^2) / (nu - 1)
                  - 2 sqrt(nu) B(1/2, nu - 1/2) / ((nu - 1) B(1/2, nu / 2)^2)],
        z = (y - mu) / s,  s = sqrt(S_kk) = sqrt((nu - 2) / nu * Sigma_kk)

    (T, t the standard Student-t CDF and density, B the beta function; the
    closed form of Jordan, Kruger & Lerch, 2019, "Evaluating probabilistic
    forecasts with scoringRules", for the location-scale t). Tends to
    `crps_gaussian` as nu -> infinity.

    Args:
      y_true, mean: arrays [..., d].
      covariance: array [..., d, d] (or one [d, d]); only its diagonal is used.
      df: degrees of freedom nu > 2.

    Returns:
      float64 array [..., d].
    """
    df = _math.check_df(df)
    y, mu, cov = _math.gaussian_arrays(y_true, mean, covariance)
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    if np.any(var <= 0.0):
        raise ValueError("`covariance` must have a positive diagonal.")
    s = np.sqrt(var * (df - 2.0) / df)
    z = (y - mu) / s

    def log_beta(a, b):
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    constant = 2.0 * math.sqrt(df) / (df - 1.0) * math.exp(
        log_beta(0.5, df - 0.5) - 2.0 * log_beta(0.5, 0.5 * df))
    return s * (z * (2.0 * _math.t_cdf(z, df) - 1.0)
                + 2.0 * _math.t_pdf(z, df) * (df + z * z) / (df - 1.0) - constant)
