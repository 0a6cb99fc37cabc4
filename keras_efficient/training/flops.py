"""Analytic per-sample operation counts of the layers E²-Train skips or quantises.

Conventions (per sample, forward pass):
  * Conv2D: MACs = H_out·W_out·k_h·k_w·(C_in / groups)·C_out (+ H_out·W_out·C_out bias adds);
  * Dense: MACs = in·out (+ out bias adds), times the leading non-batch positions;
  * BatchNormalization (inference form, folded into a scale and a shift): one
    multiply-add per element, counted as 1 MAC;
  * residual addition: one add per output element;
  * activations, pooling: not counted (comparisons, negligible).
FLOPs = 2 × MACs + adds. The backward pass of a convolution or dense layer costs
2 × its forward MACs (input gradient and weight gradient).
"""

from keras_efficient.backend import keras, tf

__all__ = ["layer_macs", "residual_block_flops", "residual_block_macs"]


def _spatial_out(layer, input_shape):
    return tf.TensorShape(layer.compute_output_shape(input_shape))


def layer_macs(layer, input_shape):
    """(MACs, adds, output_shape) of one sublayer per sample; unknown layers count 0."""
    input_shape = tf.TensorShape(input_shape)
    if isinstance(layer, keras.layers.Conv2D):
        out = _spatial_out(layer, input_shape)
        kh, kw = layer.kernel_size
        cin = int(input_shape[-1]) // getattr(layer, "groups", 1)
        positions = int(out[1]) * int(out[2])
        macs = positions * kh * kw * cin * int(out[-1])
        adds = positions * int(out[-1]) if layer.use_bias else 0
        return macs, adds, out
    if isinstance(layer, keras.layers.Dense):
        out = _spatial_out(layer, input_shape)
        positions = 1
        for d in input_shape[1:-1]:
            positions *= int(d)
        macs = positions * int(input_shape[-1]) * layer.units
        adds = positions * layer.units if layer.use_bias else 0
        return macs, adds, out
    if isinstance(layer, keras.layers.BatchNormalization):
        elements = 1
        for d in input_shape[1:]:
            elements *= int(d)
        return elements, 0, input_shape
    return 0, 0, tf.TensorShape(layer.compute_output_shape(input_shape))


def residual_block_macs(block, input_shape):
    """(MACs, adds) per sample of a built `ResidualBlock`-like layer, from its sublayers.

    Uses `conv1`, `bn1`, `conv2`, `bn2`, and `shortcut` / `shortcut_bn` when present,
    plus one add per output element for the residual sum.
    """
    input_shape = tf.TensorShape(input_shape)
    macs = adds = 0
    shape = input_shape
    for name in ("conv1", "bn1", "conv2", "bn2"):
        m, a, shape = layer_macs(getattr(block, name), shape)
        macs, adds = macs + m, adds + a
    if getattr(block, "shortcut", None) is not None:
        m, a, sshape = layer_macs(block.shortcut, input_shape)
        macs, adds = macs + m, adds + a
        m, a, _ = layer_macs(block.shortcut_bn, sshape)
        macs, adds = macs + m, adds + a
    elements = 1
    for d in shape[1:]:
        elements *= int(d)
    return macs, adds + elements


def residual_block_flops(block, input_shape):
    """FLOPs per sample (2 × MACs + adds) of a built residual block, forward pass."""
    macs, adds = residual_block_macs(block, input_shape)
    return 2 * macs + adds
