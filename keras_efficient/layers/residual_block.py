"""The basic residual block of CIFAR ResNets (He et al., 2016)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.pointwise_conv import StridedPointwiseConv2D
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_float,
    check_input_rank,
    check_int,
    check_last_dim_defined,
)

__all__ = ["ResidualBlock"]


@register_serializable
class ResidualBlock(ValidateArgsMixin, keras.layers.Layer):
    """y = relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)).

    The shortcut is the identity when the block keeps its input shape, else a
    strided 1×1 convolution with BatchNormalization (projection shortcut; a
    `StridedPointwiseConv2D`, which equals `Conv2D(filters, 1, strides)`).
    Sublayers are exposed as `conv1`, `bn1`, `conv2`, `bn2`, `shortcut` and
    `shortcut_bn` (both None for the identity shortcut) so that wrappers can
    count their FLOPs.

    Args:
      filters: output channels.
      strides: stride of the first convolution (1 or 2).
      weight_decay: L2 factor on the convolution kernels (0 disables).
      bn_momentum: momentum of the BatchNormalization moving statistics. The
        default 0.9 is the common CIFAR ResNet setting (PyTorch's momentum 0.1);
        Keras's own default, 0.99, needs several times more steps to settle.
      validate_args: also check the input values (NaN/Inf, empty batch) at
        every call (`ValidateArgsMixin`); rank, channels and the dtype are
        always checked.

    Input shape: `[batch, height, width, channels]`.
    Output shape: `[batch, height / strides, width / strides, filters]`.
    """

    def __init__(self, filters, strides=1, weight_decay=0.0, bn_momentum=0.9,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.filters = check_int("filters", filters, low=1)
        self.strides = check_int("strides", strides, low=1, high=2)
        self.weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        self.bn_momentum = check_float("bn_momentum", bn_momentum, low=0.0, high=1.0,
                                       high_inclusive=False)

    def _conv(self, kernel_size, strides, name):
        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        # The 1×1 projection shortcut slices instead of striding its kernel (same results;
        # see layers/pointwise_conv.py for the native crash this avoids).
        conv = StridedPointwiseConv2D if kernel_size == 1 else keras.layers.Conv2D
        return conv(self.filters, kernel_size, strides=strides, padding="same",
                                   use_bias=False, kernel_initializer="he_normal",
                                   kernel_regularizer=regularizer, dtype=self.dtype_policy,
                                   name=name)

    def build(self, input_shape):
        check_input_rank(self.name, input_shape, rank=4)
        input_shape = tf.TensorShape(input_shape)
        channels = check_last_dim_defined(self.name, input_shape, "channel dimension")
        self.conv1 = self._conv(3, self.strides, "conv1")
        self.bn1 = keras.layers.BatchNormalization(momentum=self.bn_momentum, dtype=self.dtype_policy, name="bn1")
        self.conv2 = self._conv(3, 1, "conv2")
        self.bn2 = keras.layers.BatchNormalization(momentum=self.bn_momentum, dtype=self.dtype_policy, name="bn2")
        if self.strides != 1 or channels != self.filters:
            self.shortcut = self._conv(1, self.strides, "shortcut")
            self.shortcut_bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, dtype=self.dtype_policy, name="shortcut_bn")
        else:
            self.shortcut = None
            self.shortcut_bn = None
        inner = input_shape
        for layer in (self.conv1, self.bn1):
            layer.build(inner)
            inner = layer.compute_output_shape(inner)
        for layer in (self.conv2, self.bn2):
            layer.build(inner)
            inner = layer.compute_output_shape(inner)
        if self.shortcut is not None:
            self.shortcut.build(input_shape)
            self.shortcut_bn.build(self.shortcut.compute_output_shape(input_shape))
        super().build(input_shape)

    @property
    def is_identity(self):
        """True when the block keeps its input shape (identity shortcut)."""
        return self.built and self.shortcut is None

    def call(self, inputs, training=None):
        inputs = self._validate_values(tf.convert_to_tensor(inputs))
        h = tf.nn.relu(self.bn1(self.conv1(inputs), training=training))
        h = self.bn2(self.conv2(h), training=training)
        s = inputs
        if self.shortcut is not None:
            s = self.shortcut_bn(self.shortcut(inputs), training=training)
        return tf.nn.relu(h + s)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        h, w = input_shape[1], input_shape[2]
        h = None if h is None else -(-h // self.strides)
        w = None if w is None else -(-w // self.strides)
        return tf.TensorShape([input_shape[0], h, w, self.filters])

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides,
                       "weight_decay": self.weight_decay, "bn_momentum": self.bn_momentum,
                       **self._validate_args_config()})
        return config
