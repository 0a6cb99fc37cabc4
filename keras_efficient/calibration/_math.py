"""NumPy (float64) helpers shared by the calibration functions: argument checks,
Gaussian, chi-square, Student-t, F and Beta distribution functions, Mahalanobis
distances.

SciPy is not a dependency of the library (only of its tests), so the special
functions come from TensorFlow / TensorFlow Probability, evaluated eagerly in
float64: the normal CDF from `tf.math.erfc`, the chi-square quantile from
`tfp.math.igammainv` (chi2_d.ppf(p) = 2 P^-1(d / 2, p), P the regularised lower
incomplete gamma function), its CDF from `tf.math.igamma`; the Student-t and F
distribution functions from the regularised incomplete beta function
`tf.math.betainc` (quantiles by bisection on it).
"""

import math
import numbers
import statistics

import numpy as np
import tensorflow_probability as tfp

from keras_efficient.backend import tf
from keras_efficient.utils.validation import invalid_argument

__all__ = []

_SQRT_2 = math.sqrt(2.0)
_LOG_2PI = math.log(2.0 * math.pi)


def check_level(name, level):
    """A probability strictly between 0 and 1, as float."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise invalid_argument(name, "a float in (0, 1)", level, TypeError)
    level = float(level)
    if not 0.0 < level < 1.0:
        raise invalid_argument(name, "a float in (0, 1)", level)
    return level


def check_levels(levels):
    """A non-empty 1-D float64 array of probabilities in (0, 1)."""
    try:
        arr = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError):
        raise invalid_argument("levels", "a sequence of floats in (0, 1)", levels,
                               TypeError) from None
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0.0) & (arr < 1.0)):
        raise invalid_argument("levels", "a non-empty 1-D sequence of floats in (0, 1)", levels)
    return arr


def gaussian_arrays(y_true, mean, covariance):
    """Checks and converts (y [..., d], mean [..., d], covariance [..., d, d]) to float64.

    `covariance` may also be one [d, d] matrix shared by every example. Raises
    ValueError with the shapes when they do not fit or values are not finite.
    """
    y = np.asarray(y_true, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    if mu.ndim < 1 or mu.shape[-1] == 0:
        raise ValueError("`mean` must have shape [..., d] with d >= 1. Received: mean.shape={}"
                         .format(mu.shape))
    d = mu.shape[-1]
    if y.shape != mu.shape:
        raise ValueError("`y_true` and `mean` must have the same shape [..., d]. Received: "
                         "y_true.shape={}, mean.shape={}".format(y.shape, mu.shape))
    if cov.ndim < 2 or cov.shape[-2:] != (d, d):
        raise ValueError("`covariance` must have shape [..., d, d] with d = {} (the last "
                         "dimension of `mean`). Received: covariance.shape={}".format(d, cov.shape))
    if cov.shape[:-2] != mu.shape[:-1]:
        if cov.ndim != 2:
            raise ValueError("`covariance` must have shape mean.shape + (d,) = {} or (d, d). "
                             "Received: covariance.shape={}".format(mu.shape + (d,), cov.shape))
        cov = np.broadcast_to(cov, mu.shape + (d,))
    for name, arr in (("y_true", y), ("mean", mu), ("covariance", cov)):
        if not np.all(np.isfinite(arr)):
            raise ValueError("`{}` contains NaN or Inf.".format(name))
    return y, mu, cov


def cholesky(cov):
    """Lower Cholesky factors [..., d, d]; a clear error for a matrix that is not
    symmetric positive definite."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("`covariance` must be symmetric positive definite; at least one "
                         "matrix is not.") from None


def whiten(residual, chol):
    """z = L^-1 r for r [..., d] and lower-triangular L [..., d, d] (so |z|^2 is the
    squared Mahalanobis distance r^T Sigma^-1 r)."""
    return np.linalg.solve(chol, residual[..., None])[..., 0]


def mahalanobis_squared(y, mu, cov):
    """(y - mu)^T cov^-1 (y - mu) per example, float64 [...]."""
    z = whiten(y - mu, cholesky(cov))
    return np.sum(z * z, axis=-1)


def log_det(chol):
    """log |Sigma| from its Cholesky factor."""
    return 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def normal_cdf(z):
    """Standard normal CDF, float64 array."""
    z = np.asarray(z, dtype=np.float64)
    with tf.init_scope():  # eager also while a tf.function is traced
        return 0.5 * tf.math.erfc(tf.constant(-z / _SQRT_2, tf.float64)).numpy()


def normal_pdf(z):
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def normal_ppf(p):
    """Standard normal quantile of one probability p in (0, 1), float."""
    return statistics.NormalDist().inv_cdf(float(p))


def chi2_ppf(p, df):
    """Chi-square quantile(s) with `df` degrees of freedom, float64 (array like `p`)."""
    p = np.asarray(p, dtype=np.float64)
    a = np.full(p.shape, 0.5 * float(df))
    with tf.init_scope():  # eager also while a tf.function is traced
        return 2.0 * tfp.math.igammainv(tf.constant(a, tf.float64),
                                        tf.constant(p, tf.float64)).numpy()


def chi2_cdf(x, df):
    """Chi-square CDF with `df` degrees of freedom, float64 (array like `x`)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.full(x.shape, 0.5 * float(df))
    with tf.init_scope():
        return tf.math.igamma(tf.constant(a, tf.float64), tf.constant(0.5 * x, tf.float64)).numpy()


def gaussian_log_density(y, mu, cov):
    """log N(y; mu, cov) per example, float64 [...]."""
    chol = cholesky(cov)
    z = whiten(y - mu, chol)
    d = mu.shape[-1]
    return -0.5 * (d * _LOG_2PI + log_det(chol) + np.sum(z * z, axis=-1))


# Student-t. A d-dimensional t with df nu > 2, location mu and covariance Sigma has
# scale matrix S = (nu - 2) / nu * Sigma; its squared Mahalanobis radius
# r^T S^-1 r = nu / (nu - 2) * r^T Sigma^-1 r is d times an F(d, nu) variable, i.e.
# t = m / (nu + m) ~ Beta(d / 2, nu / 2) for m = r^T S^-1 r.

def check_df(df, name="df"):
    """Degrees of freedom of a Student-t with a covariance: a float > 2."""
    if isinstance(df, bool) or not isinstance(df, (int, float, np.integer, np.floating)):
        raise invalid_argument(name, "a float > 2 (a Student-t with a finite covariance)", df,
                               TypeError)
    df = float(df)
    if not (df > 2.0 and np.isfinite(df)):
        raise invalid_argument(name, "a float > 2 (a Student-t with a finite covariance)", df)
    return df


def beta_ppf(p, a, b):
    """Quantile(s) of Beta(a, b), float64 (array like `p`).

    Bisection on the regularised incomplete beta function (`tf.math.betainc`,
    64 halvings: to float64 resolution). Not `tfp.math.betaincinv`: in TFP
    0.22-0.25 it returns wrong values at some points (Beta(1, 2) at p = 0.5:
    0.367 instead of 1 - 1/sqrt(2) = 0.293).
    """
    p = np.asarray(p, dtype=np.float64)
    lo, hi = np.zeros(p.shape), np.ones(p.shape)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = beta_cdf(mid, a, b) < p
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def beta_cdf(x, a, b):
    """CDF of Beta(a, b), float64 (array like `x`)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    with tf.init_scope():
        return tf.math.betainc(tf.constant(np.full(x.shape, float(a)), tf.float64),
                               tf.constant(np.full(x.shape, float(b)), tf.float64),
                               tf.constant(x, tf.float64)).numpy()


def t_radius_ppf(p, d, df):
    """Level-p threshold of the squared radius m = r^T S^-1 r of a d-dim t: d F.ppf(p; d, df)."""
    x = beta_ppf(p, 0.5 * d, 0.5 * df)
    return df * x / (1.0 - x)


def t_radius_cdf(m, d, df):
    """P(r^T S^-1 r <= m) for a d-dimensional t with `df` degrees of freedom."""
    m = np.asarray(m, dtype=np.float64)
    return beta_cdf(m / (df + m), 0.5 * d, 0.5 * df)


def t_cdf(z, df):
    """CDF of the standard Student-t with `df` degrees of freedom, float64."""
    z = np.asarray(z, dtype=np.float64)
    tail = 0.5 * beta_cdf(df / (df + z * z), 0.5 * df, 0.5)  # P(T > |z|)
    return np.where(z >= 0.0, 1.0 - tail, tail)


def t_pdf(z, df):
    z = np.asarray(z, dtype=np.float64)
    log_norm = (math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df)
                - 0.5 * math.log(df * math.pi))
    return np.exp(log_norm - 0.5 * (df + 1.0) * np.log1p(z * z / df))


def t_log_density(y, mu, cov, df):
    """log t_df(y; mu, S) per example with S = (df - 2) / df * cov, float64 [...]."""
    d = mu.shape[-1]
    chol = cholesky(cov)
    z = whiten(y - mu, chol)
    m = np.sum(z * z, axis=-1) * df / (df - 2.0)
    log_det_s = log_det(chol) + d * math.log((df - 2.0) / df)
    return (math.lgamma(0.5 * (df + d)) - math.lgamma(0.5 * df)
            - 0.5 * d * math.log(df * math.pi) - 0.5 * log_det_s
            - 0.5 * (df + d) * np.log1p(m / df))
