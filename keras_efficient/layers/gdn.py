"""Generalized divisive normalization (GDN), in tensorflow-compression's parameterisation.

tensorflow-compression does not load past TensorFlow 2.14, so the library owns
its GDN. The layer reproduces `tensorflow_compression.GDN` (v2.14) with fixed
alpha and epsilon: the same non-negative reparameterisation of β and γ (and the
same lower bound with its "identity_if_towards" gradient), the same initial
values and the same arithmetic, so outputs and gradients agree with
`tfc.GDN` to float32 rounding (tests/layers/test_gdn.py checks this on the
2.14 line, where tensorflow-compression is installed).
"""

import numbers

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_bool,
    check_choice,
    check_float,
    invalid_argument,
)

__all__ = ["GDN"]

# tfc's `GDNParameter` defaults: values are stored as sqrt(value + offset²) and read back
# as lower_bound(variable, sqrt(minimum + offset²))² − offset².
_OFFSET = 2.0 ** -18
_BETA_MINIMUM = 1e-6
_GAMMA_MINIMUM = 0.0


def _lower_bound(inputs, bound):
    """`tf.maximum(inputs, bound)` with tfc's "identity_if_towards" gradient.

    The gradient with respect to `inputs` is passed through where `inputs >= bound`
    (as for `tf.maximum`) and also where the incoming gradient is negative, i.e.
    where a gradient-descent step would move `inputs` up, back towards the
    feasible region; elsewhere it is zero. No gradient flows to `bound`. This is
    `tensorflow_compression.lower_bound(inputs, bound)` with its default gradient.
    """
    inputs = tf.convert_to_tensor(inputs)
    bound = tf.convert_to_tensor(bound, dtype=inputs.dtype)

    @tf.custom_gradient
    def _bounded(x, b):
        def grad(dy):
            pass_through = tf.logical_or(x >= b, dy < 0)
            return tf.cast(pass_through, dy.dtype) * dy, None

        return tf.maximum(x, b), grad

    return _bounded(inputs, bound)


def _nonnegative_initial(value, offset=_OFFSET):
    """Variable value that represents `value`: sqrt(max(value + offset², offset²))."""
    value = tf.convert_to_tensor(value)
    pedestal = tf.constant(offset ** 2, dtype=value.dtype)
    return tf.math.sqrt(tf.math.maximum(value + pedestal, pedestal))


def _nonnegative_value(variable, minimum, offset=_OFFSET):
    """Effective parameter of a reparameterised variable v: lower_bound(v, bound)² − offset².

    bound = sqrt(minimum + offset²), so the value is >= `minimum`. The square root
    parameterisation slows learning near zero; the offset keeps the gradient
    non-zero when the value is exactly zero (tfc's `GDNParameter`).
    """
    variable = tf.convert_to_tensor(variable)
    pedestal = tf.constant(offset ** 2, dtype=variable.dtype)
    bound = tf.constant((minimum + offset ** 2) ** 0.5, dtype=variable.dtype)
    return tf.math.square(_lower_bound(variable, bound)) - pedestal


def _check_fixed_exponent(name, value):
    if value is None or callable(value) or not isinstance(value, numbers.Real) or isinstance(
            value, bool):
        raise invalid_argument(
            name, "a positive float (a fixed exponent; trainable or callable exponents, "
            "`None` in tensorflow-compression, are not supported)", value, TypeError)
    return check_float(name, value, low=0.0, low_inclusive=False)


def _check_initializer(name, value):
    try:
        initializer = keras.initializers.get(value)
    except (ValueError, TypeError):
        initializer = None
    if initializer is None:
        raise invalid_argument(name, "a Keras initializer, its name or its config", value)
    return initializer


@register_serializable
class GDN(ValidateArgsMixin, keras.layers.Layer):
    """Generalized divisive normalization (Ballé, Laparra & Simoncelli, 2016).

    Along the channel axis, at every position (never across positions),

        y_i = x_i / (β_i + Σ_j γ_ji |x_j|^α)^ε            (GDN)
        y_i = x_i · (β_i + Σ_j γ_ji |x_j|^α)^ε            (inverse GDN, `inverse=True`)

    with x replaced by relu(x) first when `rectify=True`. γ is indexed as in
    tensorflow-compression (`pool = |x|^α @ γ`, so column i of γ feeds channel i).
    References: "Density modeling of images using a generalized normalization
    transformation" (arXiv:1511.06281) and "End-to-end optimized image
    compression" (arXiv:1611.01704); this is `tensorflow_compression.GDN` with
    fixed α and ε.

    β (>= 1e-6) and γ (>= 0) are trained through tfc's non-negative
    reparameterisation: the weights `reparam_beta` and `reparam_gamma` hold
    v = sqrt(value + 2⁻³⁶) and the layer uses lower_bound(v, sqrt(minimum + 2⁻³⁶))² − 2⁻³⁶,
    where the lower bound passes gradients that point back inside the bound. The
    properties `beta` and `gamma` return these effective values.

    Precision: β and γ are kept and reparameterised in float32 (the weights are
    not auto-cast), and under a float16/bfloat16 compute dtype the pool is computed
    in float32 (|x|^α summed over channels overflows float16 easily); the output
    is cast back to the compute dtype. Otherwise everything runs in the compute dtype.

    Args:
      inverse: compute inverse GDN (multiply by the pool instead of dividing).
      rectify: apply relu to the inputs first.
      data_format: "channels_last" or "channels_first".
      alpha_parameter: fixed α > 0 (default 1). tfc's trainable α (`None`) is not
        supported.
      epsilon_parameter: fixed ε > 0 (default 1). tfc's trainable ε is not supported.
      beta_initializer: initializer of β's effective value (default "ones").
      gamma_initializer: initializer of γ's effective value (default
        `Identity(gain=0.1)`, as in tfc).
      validate_args: also check input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`; rank, channels and dtype are always checked).

    Call arguments:
      inputs: a tensor of rank >= 2 with a known channel dimension.

    Input shape:
      (batch, ..., channels) for channels_last, (batch, channels, ...) for
      channels_first.

    Output shape:
      Same as the input.
    """

    def __init__(self, inverse=False, rectify=False, data_format="channels_last",
                 alpha_parameter=1.0, epsilon_parameter=1.0, beta_initializer="ones",
                 gamma_initializer=None, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.inverse = check_bool("inverse", inverse)
        self.rectify = check_bool("rectify", rectify)
        self.data_format = check_choice("data_format", data_format,
                                        ("channels_last", "channels_first"))
        self.alpha_parameter = _check_fixed_exponent("alpha_parameter", alpha_parameter)
        self.epsilon_parameter = _check_fixed_exponent("epsilon_parameter", epsilon_parameter)
        self.beta_initializer = _check_initializer("beta_initializer", beta_initializer)
        if gamma_initializer is None:
            gamma_initializer = keras.initializers.Identity(gain=0.1)
        self.gamma_initializer = _check_initializer("gamma_initializer", gamma_initializer)
        self.supports_masking = True

    @property
    def _channel_axis(self):
        return 1 if self.data_format == "channels_first" else -1

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank is None or shape.rank < 2:
            raise ValueError("Input 0 of layer `{}` must have rank >= 2 (GDN normalises along "
                             "the channel axis). Received: input_shape={}".format(self.name, shape))
        channels = shape[self._channel_axis]
        if channels is None:
            raise ValueError("The channel dimension ({}) of the input of layer `{}` must be "
                             "defined. Received: input_shape={}".format(
                                 self.data_format, self.name, shape))
        channels = int(channels)
        beta_init, gamma_init = self.beta_initializer, self.gamma_initializer
        self.reparam_beta = self.add_weight(
            name="reparam_beta", shape=(channels,), dtype=self.variable_dtype,
            initializer=lambda shape, dtype=None: _nonnegative_initial(
                beta_init(shape, dtype=dtype)),
            trainable=True, experimental_autocast=False)
        self.reparam_gamma = self.add_weight(
            name="reparam_gamma", shape=(channels, channels), dtype=self.variable_dtype,
            initializer=lambda shape, dtype=None: _nonnegative_initial(
                gamma_init(shape, dtype=dtype)),
            trainable=True, experimental_autocast=False)
        axis = shape.rank - 1 if self._channel_axis == -1 else 1
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={axis: channels})
        super().build(input_shape)

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError("{} is not created yet: build or call layer `{}` first.".format(
                what, self.name))

    @property
    def beta(self):
        """Effective β = lower_bound(reparam_beta, sqrt(1e-6 + 2⁻³⁶))² − 2⁻³⁶ (variable dtype)."""
        self._require_built("beta")
        return _nonnegative_value(self.reparam_beta, _BETA_MINIMUM)

    @property
    def gamma(self):
        """Effective γ = lower_bound(reparam_gamma, 2⁻¹⁸)² − 2⁻³⁶ (variable dtype)."""
        self._require_built("gamma")
        return _nonnegative_value(self.reparam_gamma, _GAMMA_MINIMUM)

    @property
    def alpha(self):
        return tf.constant(self.alpha_parameter, dtype=self.variable_dtype)

    @property
    def epsilon(self):
        return tf.constant(self.epsilon_parameter, dtype=self.variable_dtype)

    def _math_dtype(self):
        dtype = tf.as_dtype(self.compute_dtype)
        return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype

    def call(self, inputs):
        inputs = self._validate_values(tf.convert_to_tensor(inputs))
        out_dtype = inputs.dtype
        dtype = self._math_dtype()
        x = tf.cast(inputs, dtype)
        rank = x.shape.rank
        beta = tf.cast(self.beta, dtype)
        gamma = tf.cast(self.gamma, dtype)
        if self.rectify:
            x = tf.nn.relu(x)

        # Same special cases as tfc (they set the gradients at 0 and the rounding).
        alpha = self.alpha_parameter
        if alpha == 1.0 and self.rectify:
            pool = x
        elif alpha == 1.0:
            pool = tf.math.abs(x)
        elif alpha == 2.0:
            pool = tf.math.square(x)
        else:
            pool = tf.math.pow(tf.math.abs(x), tf.constant(alpha, dtype))

        # Σ_j γ_ji |x_j|^α + β_i, computed with the channels last.
        if rank == 2:
            pool = tf.linalg.matmul(pool, gamma)
        else:
            pool = tf.tensordot(pool, gamma, [[self._channel_axis], [0]])
        pool = tf.nn.bias_add(pool, beta)
        if self.data_format == "channels_first" and rank > 2:
            perm = list(range(rank - 1))
            perm.insert(1, rank - 1)
            pool = tf.transpose(pool, perm)

        epsilon = self.epsilon_parameter
        if epsilon == 0.5:
            pool = tf.math.sqrt(pool)
        elif epsilon != 1.0:
            pool = tf.math.pow(pool, tf.constant(epsilon, dtype))

        y = x * pool if self.inverse else x / pool
        return tf.cast(y, out_dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "inverse": self.inverse,
            "rectify": self.rectify,
            "data_format": self.data_format,
            "alpha_parameter": self.alpha_parameter,
            "epsilon_parameter": self.epsilon_parameter,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            **self._validate_args_config(),
        })
        return config
