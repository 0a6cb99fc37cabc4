"""Proper scoring rules for Gaussian predictions: the full-covariance negative
log-likelihood and the closed-form CRPS per output."""

import math

import numpy as np

from keras_efficient.calibration import _math

__all__ = ["gaussian_nll", "crps_gaussian"]


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
