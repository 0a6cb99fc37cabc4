"""Keras metrics of calibration for models that output a Gaussian.

They accept what the library's probabilistic models return (the TFP
distribution of `MultivariateNormalHead`, as `NegativeLogLikelihood` does), so
they go straight into `compile`:

    model.compile(optimizer, loss=NegativeLogLikelihood(),
                  metrics=[calibration.Coverage(0.683), calibration.GaussianNLL()])

`y_pred` may be a distribution (its `mean()` and `covariance()` are read) or a
`(mean, covariance)` pair of tensors [batch, d] and [batch, d, d].
"""

import math

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.calibration import _math
from keras_efficient.utils.validation import check_int

__all__ = ["Coverage", "GaussianNLL", "gaussian_moments"]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_moments(y_pred):
    """(mean [..., d], covariance [..., d, d]) float32 tensors of a model output.

    Args:
      y_pred: a TFP distribution with `mean()` and `covariance()` (or a tensor
        carrying one in `_tfp_distribution`, as TFP's distribution layers do), or
        a `(mean, covariance)` pair.
    """
    dist = y_pred if hasattr(y_pred, "covariance") else getattr(y_pred, "_tfp_distribution", None)
    if dist is not None and callable(getattr(dist, "covariance", None)):
        mean, cov = dist.mean(), dist.covariance()
    elif isinstance(y_pred, (tuple, list)) and len(y_pred) == 2:
        mean, cov = y_pred
    else:
        raise TypeError(
            "Expected the model output to be a TensorFlow Probability distribution with "
            "`mean()` and `covariance()` (for example from `MultivariateNormalHead`) or a "
            "(mean, covariance) pair. Received: y_pred={!r}".format(y_pred))
    mean = tf.cast(mean, tf.float32)
    cov = tf.cast(cov, tf.float32)
    if mean.shape.rank is not None and cov.shape.rank is not None and (
            cov.shape.rank != mean.shape.rank + 1):
        raise ValueError("The covariance must have shape mean.shape + (d,). Received: "
                         "mean.shape={}, covariance.shape={}".format(mean.shape, cov.shape))
    return mean, cov


def _student_t_df(y_pred):
    """The degrees of freedom of a Student-t output (a tensor), None for other outputs."""
    dist = y_pred if hasattr(y_pred, "covariance") else getattr(y_pred, "_tfp_distribution", None)
    df = getattr(dist, "df", None)
    return None if df is None else tf.cast(df, tf.float64)


def _whitened(y_true, y_pred):
    """(z = L^-1 (y - mu), L, d): L the Cholesky factor of the predicted covariance."""
    mean, cov = gaussian_moments(y_pred)
    y_true = tf.cast(y_true, tf.float32)
    d = mean.shape[-1]
    if d is None:
        raise ValueError("The event size (last dimension of the mean) must be known. "
                         "Received: mean.shape={}".format(mean.shape))
    y_true = tf.reshape(y_true, tf.shape(mean))
    chol = tf.linalg.cholesky(cov)
    z = tf.linalg.triangular_solve(chol, (y_true - mean)[..., None], lower=True)[..., 0]
    return z, chol, d


def _beta_cdf(a, b, x):
    """I_x(a, b) in float64, `a` and `b` broadcast to `x`."""
    x = tf.cast(x, tf.float64)
    a = tf.broadcast_to(tf.cast(a, tf.float64), tf.shape(x))
    b = tf.broadcast_to(tf.cast(b, tf.float64), tf.shape(x))
    return tf.math.betainc(a, b, x)


@register_serializable
class Coverage(keras.metrics.Mean):
    """Fraction of targets inside the predicted Gaussian's level-p region.

    Joint (`component=None`): inside the ellipsoid
    (y - mu)^T Sigma^-1 (y - mu) <= chi2_d.ppf(level). Per output
    (`component=k`): inside the central interval mu_k +- z sqrt(Sigma_kk),
    z = Phi^-1((1 + level) / 2). Same definitions as `calibration.coverage`.

    Args:
      level: nominal probability content p, in (0, 1) (default 0.683).
      component: None (joint) or the index k of one output.
      name: metric name (default "coverage_68.3", "coverage_68.3_c0", ...).
      dtype: metric dtype.
    """

    def __init__(self, level=0.683, component=None, name=None, dtype=None):
        level = _math.check_level("level", level)
        component = check_int("component", component, low=0, allow_none=True)
        if name is None:
            name = "coverage_{:g}".format(round(100.0 * level, 4))
            if component is not None:
                name += "_c{}".format(component)
        super().__init__(name=name, dtype=dtype)
        self.level = level
        self.component = component

    def update_state(self, y_true, y_pred, sample_weight=None):
        df = _student_t_df(y_pred)
        if self.component is None:
            z, _, d = _whitened(y_true, y_pred)
            m2 = tf.reduce_sum(tf.square(z), axis=-1)
            if df is None:
                inside = m2 <= float(_math.chi2_ppf(self.level, d))
            else:
                # r^T S^-1 r = nu / (nu - 2) m2 is d F(d, nu): its CDF is I_{x}(d/2, nu/2).
                m = tf.cast(m2, tf.float64) * df / (df - 2.0)
                inside = _beta_cdf(0.5 * d, 0.5 * df, m / (df + m)) <= self.level
        else:
            mean, cov = gaussian_moments(y_pred)
            d = mean.shape[-1]
            if d is not None and self.component >= d:
                raise ValueError("Coverage(component={}) needs at least {} outputs. Received: "
                                 "mean.shape={}".format(self.component, self.component + 1,
                                                        mean.shape))
            y_true = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(mean))
            k = self.component
            if df is None:
                half_width = _math.normal_ppf(0.5 * (1.0 + self.level)) * tf.sqrt(cov[..., k, k])
                inside = tf.abs(y_true[..., k] - mean[..., k]) <= half_width
            else:
                # t^2 = nu / (nu - 2) (y_k - mu_k)^2 / Sigma_kk is F(1, nu).
                t2 = (tf.cast(tf.square(y_true[..., k] - mean[..., k]) / cov[..., k, k],
                              tf.float64) * df / (df - 2.0))
                inside = _beta_cdf(0.5, 0.5 * df, t2 / (df + t2)) <= self.level
        return super().update_state(tf.cast(inside, self.dtype), sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"level": self.level, "component": self.component})
        return config


@register_serializable
class GaussianNLL(keras.metrics.Mean):
    """Mean negative log-likelihood of the targets under N(mean, covariance).

        NLL = 1/2 [d ln(2 pi) + ln |Sigma| + (y - mu)^T Sigma^-1 (y - mu)]

    (as `calibration.gaussian_nll`), from the predicted mean and covariance, so
    it is the same number for any Gaussian output, however it is parameterised.
    For a Student-t output it is the NLL of the Gaussian with the same moments;
    score the Student-t itself with `losses.NegativeLogLikelihood` (its
    `log_prob`) or `calibration.student_t_nll`.

    Args:
      name: metric name (default "gaussian_nll").
      dtype: metric dtype.
    """

    def __init__(self, name="gaussian_nll", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        z, chol, d = _whitened(y_true, y_pred)
        log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)
        nll = 0.5 * (d * _LOG_2PI + log_det + tf.reduce_sum(tf.square(z), axis=-1))
        return super().update_state(tf.cast(nll, self.dtype), sample_weight=sample_weight)
