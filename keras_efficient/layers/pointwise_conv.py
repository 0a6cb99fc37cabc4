"""A strided 1×1 convolution computed as a strided slice and a stride-1 convolution.

For a 1×1 kernel, a convolution with strides (s_h, s_w) reads input rows
0, s_h, 2·s_h, ... and columns 0, s_w, 2·s_w, ... with no padding, for "same" and
"valid" padding alike (ceil(n / s) outputs either way). So

    conv1x1(x, W, strides=s) = conv1x1(x[:, ::s_h, ::s_w, :], W, strides=1)

exactly, in the forward pass and in both gradients. Computing the right-hand side
avoids TensorFlow's strided 1×1 filter-gradient kernel (`Conv2DBackpropFilter`),
which with oneDNN on AVX-512 x86 CPUs corrupts the native heap for some shapes when
the batch is odd. Measured (TensorFlow 2.21 and 2.14.1, oneDNN on, an AVX-512 BF16
CPU): input 32×32×4 → 8 channels, stride 2, batches 1, 3, 5, 7, 29, 31, 33 and 63
abort (`double free or corruption`, `munmap_chunk(): invalid pointer`) or segfault,
even batches pass; 16×16×4 → 8 and 16×16×8 → 16 abort too, 8×8×4 → 8 and
16×16×16 → 32 do not. Other kernel sizes and strides pass. A ResNet's projection
shortcut is such a layer, and a data set whose size leaves an odd last batch
(the digits' 1,437 images at batch 64 leave 29) hits it in the first epoch.
"""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import invalid_argument

__all__ = ["StridedPointwiseConv2D", "strided_pointwise_input"]


def strided_pointwise_input(x, strides):
    """The input rows and columns a strided 1×1 convolution reads: `x[:, ::s_h, ::s_w, :]`."""
    s_h, s_w = (int(s) for s in strides)
    if (s_h, s_w) == (1, 1):
        return x
    return x[:, ::s_h, ::s_w, :]


@register_serializable
class StridedPointwiseConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a 1×1 kernel whose strides are applied by slicing.

    Same arguments, weights, output shape and results as `Conv2D(filters, 1,
    strides=...)`; the convolution itself runs with stride 1 on
    `strided_pointwise_input(x, strides)` (see the module docstring for why).
    `kernel_size` must be 1, `data_format` "channels_last", `dilation_rate` 1.

    Input shape: `[batch, height, width, channels]`.
    Output shape: `[batch, ceil(height / s_h), ceil(width / s_w), filters]`.
    """

    def __init__(self, filters, kernel_size=1, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if tuple(self.kernel_size) != (1, 1):
            raise invalid_argument("kernel_size", "1", kernel_size)
        if self.data_format != "channels_last":
            raise invalid_argument("data_format", "'channels_last'", self.data_format)
        if tuple(self.dilation_rate) != (1, 1):
            raise invalid_argument("dilation_rate", "1", kwargs.get("dilation_rate"))

    def convolution_op(self, inputs, kernel):
        x = strided_pointwise_input(inputs, self.strides)
        return tf.nn.convolution(x, kernel, strides=1, padding="VALID",
                                 name=self.__class__.__name__)
