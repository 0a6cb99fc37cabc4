"""Dense and Conv2D layers trained with predictive sign gradients (E²-Train Sec. 3.3).

Forward (fixed-point training, the paper's [15]):  y = q_{B_x}(x) ⊛ q_{B_w}(W) + b.
Backward, through `tf.custom_gradient` inside the layer, so plain `model.fit` and
`tf.distribute` strategies work unchanged:

  * input gradient  g_x = q_{B_g}(g_y) ⊛ᵀ q_{B_w}(W)   (quantised back-propagation);
  * weight gradient g̃_w = Eq. (2), `psg_weight_gradient` / `psg_conv2d_weight_gradient`
    (straight-through the weight quantiser);
  * bias gradient   sgn(Σ q_{B_g}(g_y)) — the paper speaks only of weights; the bias
    gets the sign of its (cheap, predictor-free) quantised gradient so the whole
    layer follows signSGD.

The fraction of weight-gradient entries taken from the predictor in the last
backward pass is kept in the non-trainable weight `predicted_fraction` and, in
training calls, reported as the metric `<layer name>_psg_fraction` (the value
of the preceding step: the backward pass of a step runs after its forward).

Limitation: under `mixed_float16` with a loss-scaling optimizer the optimizer
divides the sign gradient by the loss scale; use the float32 policy (or a loss
scale of 1) with PSG layers. The layers compute in float32 inside in any case.
"""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.training.psg import (
    fixed_point_quantize,
    psg_conv2d_weight_gradient,
    psg_weight_gradient,
    validate_psg_config,
)
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_input_rank,
    check_last_dim_defined,
    invalid_argument,
)

__all__ = ["PSGDense", "PSGConv2D", "PSG_CONFIG_KEYS"]

PSG_CONFIG_KEYS = ("input_bits", "weight_bits", "grad_bits", "input_msb_bits", "grad_msb_bits",
                   "beta")


class _PSGMixin(ValidateArgsMixin):
    """Shared PSG configuration, the fraction weight, the metric and `validate_args`."""

    def _init_psg(self, input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta,
                  validate_args):
        self._init_validate_args(validate_args)
        self.psg_config = validate_psg_config(input_bits, weight_bits, grad_bits, input_msb_bits,
                                              grad_msb_bits, beta)
        for key, value in self.psg_config.items():
            setattr(self, key, value)

    def _build_fraction(self):
        self.predicted_fraction = self.add_weight(
            name="predicted_fraction", shape=(), dtype="float32", trainable=False,
            initializer="zeros", synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN)

    def _psg_kwargs(self):
        return {k: self.psg_config[k] for k in ("input_bits", "grad_bits", "input_msb_bits",
                                                 "grad_msb_bits", "beta")}

    def _fraction_handle(self):
        # The resource handle is taken in the forward pass, so a gradient computed inside
        # a `tf.cond` branch (a gated block in "gather" mode) reaches the variable
        # through a forward intermediate instead of capturing it anew.
        # Under a strategy's cross-replica context (building a model in its scope)
        # there is no per-replica handle and nothing to record.
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            return None
        variable = getattr(self.predicted_fraction, "_variable", self.predicted_fraction)
        return tf.identity(variable.handle)

    def _record(self, handle, fraction, tensors):
        if handle is None:
            return tensors
        update = tf.raw_ops.AssignVariableOp(resource=handle, value=fraction)
        with tf.control_dependencies([update]):
            return [tf.identity(t) for t in tensors]

    def _report(self, training):
        if training:
            self.add_metric(tf.cast(tf.identity(self.predicted_fraction), tf.float32),
                            name=self.name + "_psg_fraction", aggregation="mean")

    def call(self, inputs, training=None):
        """Quantised forward pass (float32 inside) whose backward pass is `_forward`'s."""
        x = tf.cast(self._validate_values(tf.convert_to_tensor(inputs)), tf.float32)
        kernel = tf.cast(self.kernel, tf.float32)
        bias = (tf.cast(self.bias, tf.float32) if self.use_bias
                else tf.zeros([self.kernel.shape[-1]]))
        y = self._forward(x, kernel, bias)
        self._report(training)
        y = tf.cast(y, self.compute_dtype)
        return self.activation(y) if self.activation is not None else y

    def _psg_get_config(self, config):
        config.update(self.psg_config)
        config.update(self._validate_args_config())
        return config


@register_serializable
class PSGDense(_PSGMixin, keras.layers.Dense):
    """A Dense layer whose weight gradient is the predictive sign gradient, Eq. (2).

    y = activation(q_{B_x}(x) · q_{B_w}(W) + b); backward as in the module docstring.

    Args:
      units: output features.
      input_bits: B_x, width of the activations (default 8).
      weight_bits: B_w, width of the weights in the forward pass (default 8).
      grad_bits: B_g, width of the output gradient (default 16).
      input_msb_bits: B_x^msb <= B_x, predictor width of the activations (default 4).
      grad_msb_bits: B_g^msb <= B_g, predictor width of the output gradient (default 10).
      beta: β in [0, 1], τ = β·max|g_w^msb| (default 0.05).
      validate_args: also check the input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`); rank, the last dimension and the dtype are
        always checked.
      **kwargs: the arguments of `keras.layers.Dense`.

    Call arguments:
      inputs: `[..., in_features]`.
      training: reports the predictor fraction as a metric when True.

    Input shape: `[..., in_features]`. Output shape: `[..., units]`.
    """

    def __init__(self, units, input_bits=8, weight_bits=8, grad_bits=16, input_msb_bits=4,
                 grad_msb_bits=10, beta=0.05, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(units, **kwargs)
        self._init_psg(input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta,
                       validate_args)

    def build(self, input_shape):
        check_input_rank(self.name, input_shape, min_rank=2)
        check_last_dim_defined(self.name, input_shape)
        super().build(input_shape)
        self._build_fraction()

    def _forward(self, x, kernel, bias):
        cfg = self.psg_config
        kwargs = self._psg_kwargs()
        rank = x.shape.rank

        @tf.custom_gradient
        def forward(x, kernel, bias):
            handle = self._fraction_handle()
            qw = fixed_point_quantize(kernel, cfg["weight_bits"])
            y = tf.tensordot(fixed_point_quantize(x, cfg["input_bits"]), qw, [[rank - 1], [0]])
            y = y + bias

            def grad(dy):
                qg = fixed_point_quantize(dy, cfg["grad_bits"])
                dx = tf.tensordot(qg, qw, [[rank - 1], [1]])
                dw, fraction = psg_weight_gradient(x, dy, return_fraction=True, **kwargs)
                db = tf.sign(tf.reduce_sum(tf.reshape(qg, [-1, self.units]), axis=0))
                return self._record(handle, fraction, [dx, dw, db])

            return y, grad

        return forward(x, kernel, bias)

    def get_config(self):
        return self._psg_get_config(super().get_config())


@register_serializable
class PSGConv2D(_PSGMixin, keras.layers.Conv2D):
    """A Conv2D layer (NHWC, no dilation, one group) trained with predictive sign gradients.

    y = activation(conv(q_{B_x}(x), q_{B_w}(W)) + b); backward as in the module docstring.

    Args:
      filters, kernel_size: as in `keras.layers.Conv2D`.
      input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta, validate_args:
        as in `PSGDense`.
      **kwargs: the other arguments of `keras.layers.Conv2D` (padding "valid" or
        "same", `data_format="channels_last"`, `dilation_rate=1`, `groups=1`).

    Call arguments:
      inputs: `[batch, height, width, channels]`.
      training: reports the predictor fraction as a metric when True.

    Input shape: `[batch, height, width, channels]`.
    Output shape: `[batch, new_height, new_width, filters]`.
    """

    def __init__(self, filters, kernel_size, input_bits=8, weight_bits=8, grad_bits=16,
                 input_msb_bits=4, grad_msb_bits=10, beta=0.05,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if self.data_format != "channels_last":
            raise invalid_argument("data_format", "'channels_last'", self.data_format)
        if tuple(self.dilation_rate) != (1, 1):
            raise invalid_argument("dilation_rate", "1", kwargs.get("dilation_rate"))
        if self.groups != 1:
            raise invalid_argument("groups", "1", self.groups)
        if self.padding not in ("valid", "same"):
            raise invalid_argument("padding", "'valid' or 'same'", self.padding)
        self._init_psg(input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta,
                       validate_args)

    def build(self, input_shape):
        check_input_rank(self.name, input_shape, rank=4)
        check_last_dim_defined(self.name, input_shape, "channel dimension")
        super().build(input_shape)
        self._build_fraction()

    def _forward(self, x, kernel, bias):
        cfg = self.psg_config
        kwargs = self._psg_kwargs()
        strides = [1, self.strides[0], self.strides[1], 1]
        padding = self.padding.upper()
        kernel_shape = tuple(int(d) for d in kernel.shape)

        @tf.custom_gradient
        def forward(x, kernel, bias):
            handle = self._fraction_handle()
            qw = fixed_point_quantize(kernel, cfg["weight_bits"])
            qx = fixed_point_quantize(x, cfg["input_bits"])
            y = tf.nn.conv2d(qx, qw, strides, padding) + bias

            def grad(dy):
                qg = fixed_point_quantize(dy, cfg["grad_bits"])
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=qw, out_backprop=qg, strides=strides,
                    padding=padding, data_format="NHWC")
                dw, fraction = psg_conv2d_weight_gradient(
                    x, dy, kernel_shape, tuple(self.strides), self.padding,
                    return_fraction=True, **kwargs)
                db = tf.sign(tf.reduce_sum(qg, axis=[0, 1, 2]))
                return self._record(handle, fraction, [dx, dw, db])

            return y, grad

        return forward(x, kernel, bias)

    def get_config(self):
        return self._psg_get_config(super().get_config())
