"""A served Gaussian with a recalibrated covariance: `CovarianceScale` and `CalibratedPredictor`.

Post-hoc recalibration keeps the mean and rescales the covariance,

    Sigma -> s^2 Sigma                 (one scale), or
    Sigma -> D Sigma D, D = diag(s)    (one scale per output; correlations are kept),

i.e. the Cholesky factor L -> s L or D L. With degrees of freedom `df` = nu > 2
the served distribution is a multivariate Student-t instead, with the same mean
and the same covariance s^2 Sigma, i.e. the scale matrix
S = (nu - 2) / nu * s^2 Sigma (`tfd.MultivariateStudentTLinearOperator`): heavier
tails and a peakier centre than the Gaussian of that covariance. The scales (and
nu) are non-trainable layer weights, so they are saved with the model
(SavedModel, `.keras`, checkpoints). `calibration.fit_covariance_scale` fits them
on validation data.
"""

import numbers

import numpy as np
import tensorflow_probability as tfp

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.calibration import _math
from keras_efficient.calibration.metrics import gaussian_moments
from keras_efficient.utils.validation import check_int, invalid_argument

__all__ = ["CovarianceScale", "CalibratedPredictor"]

tfd = tfp.distributions


def _check_scale(scale):
    """A positive float, or a non-empty list of positive floats (one per output)."""
    expected = "a positive float or a non-empty list of positive floats"
    if isinstance(scale, np.ndarray):
        scale = scale.tolist()
    if isinstance(scale, (list, tuple)):
        if not scale or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0
                            or not np.isfinite(v) for v in scale):
            raise invalid_argument("scale", expected, scale)
        return [float(v) for v in scale]
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise invalid_argument("scale", expected, scale, TypeError)
    if not (scale > 0 and np.isfinite(scale)):
        raise invalid_argument("scale", expected, scale)
    return float(scale)


def _mvn_tril_from_params(params):
    """N(loc, L L^T) from params = [loc (d), L flattened row-major (d * d)]."""
    n = params.shape[-1]
    d = int(round((-1.0 + np.sqrt(1.0 + 4.0 * n)) / 2.0))
    loc = params[..., :d]
    tril = tf.reshape(params[..., d:], tf.concat([tf.shape(params)[:-1], [d, d]], axis=0))
    return tfd.MultivariateNormalTriL(loc=loc, scale_tril=tril)


def _mvt_tril_from_params(params):
    """t_nu(loc, L L^T) from params = [loc (d), L flattened row-major (d * d), nu (1)]."""
    n = params.shape[-1] - 1
    d = int(round((-1.0 + np.sqrt(1.0 + 4.0 * n)) / 2.0))
    loc = params[..., :d]
    tril = tf.reshape(params[..., d:d + d * d],
                      tf.concat([tf.shape(params)[:-1], [d, d]], axis=0))
    return tfd.MultivariateStudentTLinearOperator(
        df=params[..., -1], loc=loc, scale=tf.linalg.LinearOperatorLowerTriangular(tril))


@register_serializable
class CovarianceScale(keras.layers.Layer):
    """Rescales a predicted Gaussian's covariance: Sigma -> s^2 Sigma or D Sigma D.

    Args:
      scale: s > 0 (one float: Sigma -> s^2 Sigma) or a list of d floats
        (Sigma -> D Sigma D with D = diag(s), one scale per output). Stored in a
        non-trainable weight `scale`.
      df: None (serve a Gaussian) or nu > 2: serve the multivariate Student-t
        with nu degrees of freedom, the same mean and covariance (scale matrix
        (nu - 2) / nu times the rescaled covariance). Stored in a non-trainable
        weight `df`. Only with one scale.

    Call arguments:
      inputs: a distribution with `mean()` and `covariance()` (e.g. the output of
        `MultivariateNormalHead`) or a `(mean, covariance)` pair of tensors.

    Input shape:
      mean `(batch, ..., d)`, covariance `(batch, ..., d, d)`.

    Output shape:
      A `tfd.MultivariateNormalTriL` (or, with `df`, a
      `tfd.MultivariateStudentTLinearOperator`) with the same mean and the scaled
      covariance (used as a tensor: its mean).
    """

    def __init__(self, scale=1.0, df=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.initial_scale = _check_scale(scale)
        self.initial_df = None if df is None else _math.check_df(df)
        if self.initial_df is not None and self.per_output:
            raise ValueError("A Student-t (`df` given) takes one covariance scale, not one per "
                             "output. Received: scale={!r}, df={!r}".format(scale, df))
        self._distribution = tfp.layers.DistributionLambda(
            _mvn_tril_from_params if self.initial_df is None else _mvt_tril_from_params,
            convert_to_tensor_fn=tfd.Distribution.mean, dtype="float32",
            name="mvn_tril" if self.initial_df is None else "mvt_tril")

    @property
    def per_output(self):
        return isinstance(self.initial_scale, list)

    def build(self, input_shape=None):
        shape = (len(self.initial_scale),) if self.per_output else ()
        self.scale = self.add_weight(
            name="scale", shape=shape, dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(self.initial_scale))
        if self.initial_df is not None:
            self.df = self.add_weight(
                name="df", shape=(), dtype="float32", trainable=False,
                initializer=keras.initializers.Constant(self.initial_df))
        super().build(input_shape)

    def call(self, inputs):
        mean, cov = gaussian_moments(inputs)
        d = mean.shape[-1]
        if self.per_output and d is not None and d != len(self.initial_scale):
            raise ValueError("Layer `{}` has {} per-output scales, but the prediction has d = {} "
                             "outputs. Received: mean.shape={}".format(
                                 self.name, len(self.initial_scale), d, mean.shape))
        tril = tf.linalg.cholesky(cov)
        scale = self.scale[:, None] if self.per_output else self.scale
        if self.initial_df is not None:
            # Covariance nu / (nu - 2) S = s^2 Sigma  <=>  S^(1/2) = s sqrt((nu - 2) / nu) L.
            scale = scale * tf.sqrt((self.df - 2.0) / self.df)
        tril = tril * scale
        flat = tf.reshape(tril, tf.concat([tf.shape(mean)[:-1], [d * d]], axis=0))
        pieces = [mean, flat]
        if self.initial_df is not None:
            pieces.append(tf.fill(tf.concat([tf.shape(mean)[:-1], [1]], axis=0), self.df))
        return self._distribution(tf.concat(pieces, axis=-1))

    def get_config(self):
        config = super().get_config()
        config["scale"] = self.initial_scale
        config["df"] = self.initial_df
        return config


@register_serializable
class CalibratedPredictor(keras.Model):
    """A model whose served Gaussian has a recalibrated covariance.

    Runs the wrapped model `num_samples` times (for a Bayesian model each pass
    draws new weights), forms the predictive mean and covariance by the law of
    total covariance (`calibration.predictive_moments`; one pass: the model's own
    mean and covariance), and rescales the covariance with `CovarianceScale`.
    `calibration.fit_covariance_scale(model, (x_val, y_val))` returns one fitted on
    validation data.

    `serve(x)` is a `tf.function` with an input signature (the wrapped model's
    input) returning {"mean", "covariance"} (and "df" [batch] for a Student-t):
    export with
    `predictor.save(path, save_format="tf", signatures={"serving_default": predictor.serve})`.

    Args:
      model: a Keras model returning a distribution with `mean()` and
        `covariance()` (or its Keras config).
      scale, df: as for `CovarianceScale` (`df`: serve a Student-t).
      num_samples: forward passes averaged per call (1 for a deterministic model).

    Call arguments:
      inputs: the wrapped model's inputs.
      training: passed to the wrapped model.

    Output shape:
      A `tfd.MultivariateNormalTriL` (with `df`: a
      `tfd.MultivariateStudentTLinearOperator`) over the model's d outputs.
    """

    def __init__(self, model, scale=1.0, num_samples=1, df=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.layers.deserialize(model)
        if not isinstance(model, keras.Model):
            raise invalid_argument("model", "a Keras model", model, TypeError)
        self.base_model = model
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.covariance_scale = CovarianceScale(scale, df=df, name="covariance_scale")
        inputs = getattr(model, "inputs", None)
        if inputs and len(inputs) == 1:
            spec = tf.TensorSpec(inputs[0].shape, inputs[0].dtype, name="inputs")
            self.serve = tf.function(self._serve, input_signature=[spec])

    def call(self, inputs, training=False):
        means, covs = [], []
        for _ in range(self.num_samples):
            mean, cov = gaussian_moments(self.base_model(inputs, training=training))
            means.append(mean)
            covs.append(cov)
        if self.num_samples == 1:
            mean, cov = means[0], covs[0]
        else:
            mu = tf.stack(means)
            mean = tf.reduce_mean(mu, axis=0)
            dev = mu - mean
            epistemic = tf.reduce_mean(dev[..., :, None] * dev[..., None, :], axis=0)
            cov = tf.reduce_mean(tf.stack(covs), axis=0) + epistemic
        return self.covariance_scale((mean, cov))

    def _serve(self, inputs):
        dist = self(inputs, training=False)
        out = {"mean": dist.mean(), "covariance": dist.covariance()}
        if self.covariance_scale.initial_df is not None:
            out["df"] = tf.broadcast_to(dist.df, tf.shape(out["mean"])[:-1])
        return out

    @property
    def scale(self):
        """The covariance scale(s), NumPy (a float or an array [d])."""
        if not self.covariance_scale.built:
            self.covariance_scale.build(None)
        value = self.covariance_scale.scale.numpy()
        return float(value) if value.ndim == 0 else value

    @property
    def df(self):
        """The Student-t degrees of freedom (float), None for a Gaussian."""
        if self.covariance_scale.initial_df is None:
            return None
        if not self.covariance_scale.built:
            self.covariance_scale.build(None)
        return float(self.covariance_scale.df.numpy())

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.layers.serialize(self.base_model),
            "scale": self.covariance_scale.initial_scale,
            "num_samples": self.num_samples,
            "df": self.covariance_scale.initial_df,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.layers.deserialize(config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)
