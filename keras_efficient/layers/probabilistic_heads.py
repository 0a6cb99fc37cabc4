"""A full-covariance Gaussian output head: Dense -> `tfd.MultivariateNormalTriL`.

The galaxy shape estimator of the IPU/GPU cosmology paper ends in "a multivariate
normal distribution layer" whose negative log probability is the loss (Eq. 1,
L = -log p(x)). This module provides that head as one serializable layer.
"""

import tensorflow_probability as tfp

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    assert_finite,
    check_bool,
    check_choice,
    check_input_rank,
    check_int,
    check_last_dim_defined,
)

__all__ = ["MultivariateNormalHead"]

_CONVERT_FNS = {
    "mean": tfp.distributions.Distribution.mean,
    "sample": tfp.distributions.Distribution.sample,
}


@register_serializable
class MultivariateNormalHead(ValidateArgsMixin, keras.layers.Layer):
    """Dense layer followed by a full-covariance multivariate normal distribution.

    The input features h are mapped by a Dense layer to
    `params_size(event_size) = d + d (d + 1) / 2` numbers: the mean mu (first d)
    and the entries of a lower-triangular scale matrix L (softplus on the
    diagonal plus 1e-5, as in `tfp.layers.MultivariateNormalTriL`). The output is
    `tfd.MultivariateNormalTriL(loc=mu, scale_tril=L)`, i.e. N(mu, L L^T), whose
    negative log probability is the loss of Eq. 1 (see
    `keras_efficient.losses.NegativeLogLikelihood`).

    The Dense layer and the distribution always compute in float32, also under a
    `mixed_float16` policy (a Cholesky factor in float16 loses too much precision).

    Args:
      event_size: d, the dimension of the predicted vector (2 for (e1, e2)).
      kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer:
        for the Dense layer (Keras identifiers or objects).
      convert_to_tensor: "mean" (default) or "sample": what the output becomes when
        used as a plain tensor (e.g. by a Keras metric such as "mae").
      validate_args: check the features' values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`) and pass `validate_args=True` to the
        distribution (TFP's own argument checks); rank, the last dimension and
        the dtype are always checked.
      check_finite: only the finiteness check of the features (NaN/Inf ->
        InvalidArgumentError), also without `validate_args`. On by default on
        this head, unlike the `validate_args` convention: a model ending in it
        (`models.galaxy_shape_estimator`) rejects NaN images once, at the head,
        for the price of one reduction over the features.
      params_layer: optional layer (or its Keras config) that replaces the Dense
        layer, e.g. `FlipoutDense(params_size(d), ...)` for a Bayesian head; it must
        output `params_size(event_size)` features. When given, the initializer and
        regularizer arguments are unused.

    Call arguments:
      inputs: features, float tensor [batch, ..., features].

    Input shape:
      `(batch, ..., features)` with a defined last dimension.

    Output shape:
      A `tfd.MultivariateNormalTriL` with batch shape `(batch, ...)` and event
      shape `(event_size,)`. Used as a tensor it is its mean (or a sample).
    """

    def __init__(self, event_size, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, convert_to_tensor="mean",
                 validate_args=VALIDATE_ARGS_DEFAULT, check_finite=True, params_layer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.event_size = check_int("event_size", event_size, low=1)
        self.convert_to_tensor = check_choice("convert_to_tensor", convert_to_tensor,
                                              tuple(_CONVERT_FNS))
        self._init_validate_args(validate_args)
        self.check_finite = check_bool("check_finite", check_finite)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        if isinstance(params_layer, dict):
            params_layer = keras.layers.deserialize(params_layer)
        if params_layer is not None and not isinstance(params_layer, keras.layers.Layer):
            raise TypeError(
                "Invalid value received for argument `params_layer`. Expected a Keras layer, a "
                "layer config or None. Received: params_layer={!r}".format(params_layer))
        self._custom_params = params_layer is not None
        self.params = params_layer if params_layer is not None else keras.layers.Dense(
            self.params_size(self.event_size),
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype="float32",
            name="params",
        )
        self.distribution = tfp.layers.MultivariateNormalTriL(
            self.event_size,
            convert_to_tensor_fn=_CONVERT_FNS[self.convert_to_tensor],
            validate_args=self.validate_args,
            dtype="float32",
            name="mvn_tril",
        )

    @staticmethod
    def params_size(event_size):
        """Number of Dense outputs for an event of size d: d + d (d + 1) / 2."""
        event_size = check_int("event_size", event_size, low=1)
        return int(tfp.layers.MultivariateNormalTriL.params_size(event_size))

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_input_rank(self.name, input_shape, min_rank=2)
        check_last_dim_defined(self.name, input_shape)
        self.params.build(input_shape)
        out = self.params.compute_output_shape(input_shape)
        if out[-1] != self.params_size(self.event_size):
            raise ValueError(
                "`params_layer` of layer `{}` must output params_size({}) = {} features. "
                "Received: output_shape={}".format(self.name, self.event_size,
                                                  self.params_size(self.event_size), out))
        super().build(input_shape)

    def call(self, inputs):
        inputs = tf.cast(self._validate_values(tf.convert_to_tensor(inputs)), tf.float32)
        if self.check_finite and not self.validate_args:
            with tf.control_dependencies([assert_finite(inputs, self.name)]):
                inputs = tf.identity(inputs)
        params = self.params(inputs)
        return self.distribution(tf.cast(params, tf.float32))

    def get_config(self):
        config = super().get_config()
        config.update({
            "event_size": self.event_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "convert_to_tensor": self.convert_to_tensor,
            "validate_args": self.validate_args,
            "check_finite": self.check_finite,
            "params_layer": (keras.layers.serialize(self.params)
                             if self._custom_params else None),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("kernel_initializer", "bias_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        for key in ("kernel_regularizer", "bias_regularizer"):
            if config.get(key) is not None:
                config[key] = keras.regularizers.deserialize(config[key])
        return cls(**config)
