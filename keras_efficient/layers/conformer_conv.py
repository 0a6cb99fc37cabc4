"""The Conformer convolution (LConv) module with an adaptive-dropout site (Eq. 11)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.conformer_common import (
    ConformerModule,
    build_sublayer,
    check_sequence_input,
)
from keras_efficient.utils.validation import VALIDATE_ARGS_DEFAULT, check_int

__all__ = ["ConformerConvolution"]


@register_serializable
class ConformerConvolution(ConformerModule):
    """Conformer LConv module with an ADL on the GLU output.

        [a, g] = W [LayerNorm(x)] + b               (W = [W_I; W_G], one Dense of 2C units)
        z      = a * sigmoid(g) * m                 (Eq. 11, GLU with a sigmoid gate)
        z'     = depthwise_conv(z)                  (kernel w_d per channel, no bias)
        y      = Dropout(b_O + W_O swish(BatchNorm(z')))    (Eq. 12)

    The paper's Eq. (11) writes the gate without a sigmoid; we keep the
    standard Conformer GLU (sigmoid gate), which leaves the pruning argument
    unchanged: if m_d is always 0, channel d of W_I, W_G, b_I, b_G, the
    depthwise kernel and the BatchNorm parameters, and row d of W_O, can be
    removed. The BatchNorm is per channel (not a LayerNorm), so a pruned channel
    contributes the constant swish(BatchNorm(0))_d * W_O[d], which pruning folds
    into b_O.

    Time mask: with a Keras mask `[batch, time]` (True = a real frame), z is set
    to 0 at padded frames before the depthwise convolution (so real frames see
    the same zero padding as an unpadded sequence), and in training the
    BatchNorm statistics are taken over real frames only.

    Args:
      model_dim: input and output width D.
      kernel_size: depthwise kernel length (odd; "same" padding).
      dropout_rate: ordinary dropout rate on the module output.
      conv_dim: number of convolution channels C (default: model_dim).
      adaptive: insert the AdaptiveDropout site m (unit axis: the C channels).
      schedule, alpha, gamma, threshold, inference, seed: `AdaptiveDropout` arguments.
      validate_args: also check the input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`); rank, model_dim and the dtype are always checked.

    Call arguments:
      inputs: [batch, time, model_dim].
      training: Python bool.
      mask: optional boolean [batch, time] time mask (passed by Keras masking).

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, kernel_size, dropout_rate=0.1, conv_dim=None, adaptive=True,
                 schedule=None, alpha=1e-7, gamma=1e-5, threshold=None, inference="hard",
                 seed=None,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(model_dim, dropout_rate, adaptive, schedule, alpha, gamma, threshold,
                         inference, seed, validate_args, **kwargs)
        self.kernel_size = check_int("kernel_size", kernel_size, low=1)
        if self.kernel_size % 2 == 0:
            raise ValueError("Invalid value received for argument `kernel_size`. Expected an odd "
                             "integer. Received: kernel_size={}".format(kernel_size))
        self.conv_dim = check_int("conv_dim", conv_dim, low=1, allow_none=True)
        self.channels = self.conv_dim or self.model_dim
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.pointwise_in = keras.layers.Dense(2 * self.channels, name="pointwise_in")
        self.adaptive_dropout = self._settings.make("adl_glu", seed_offset=3)
        self.depthwise = keras.layers.DepthwiseConv1D(self.kernel_size, padding="same",
                                                      use_bias=False, name="depthwise")
        self.batch_norm = keras.layers.BatchNormalization(epsilon=1e-3, name="batch_norm")
        self.pointwise_out = keras.layers.Dense(self.model_dim, name="pointwise_out")
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        build_sublayer(self.norm, input_shape)
        build_sublayer(self.pointwise_in, input_shape)
        inner = input_shape[:-1].concatenate([self.channels])
        if self.adaptive_dropout is not None:
            build_sublayer(self.adaptive_dropout, inner)
        build_sublayer(self.depthwise, inner)
        build_sublayer(self.batch_norm, inner)
        build_sublayer(self.pointwise_out, inner)
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        h = self.pointwise_in(self.norm(self._validate_values(tf.convert_to_tensor(inputs))))
        a, g = tf.split(h, 2, axis=-1)
        z = a * tf.sigmoid(g)
        if self.adaptive_dropout is not None:
            z = self.adaptive_dropout(z, training=training)
        if mask is not None:
            z *= tf.cast(mask, z.dtype)[..., None]
        z = self.depthwise(z)
        z = tf.nn.silu(self.batch_norm(z, training=training, mask=mask))
        return self.dropout(self.pointwise_out(z), training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "conv_dim": self.conv_dim})
        return config
