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

`encoder_flops(model, frames)` counts a `ConformerEncoder`, dense, with ADL sites
(which mask but do not remove work) or pruned by `keras_efficient.pruning.prune`
(smaller Dense/EinsumDense/depthwise kernels, ragged attention heads, constant
modules), with the conventions listed in its docstring.
"""

import numpy as np

from keras_efficient.backend import keras, tf

__all__ = ["encoder_flops", "layer_macs", "residual_block_flops", "residual_block_macs"]


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


def _ceil_div(a, b):
    return -(-a // b)


def _attention_macs(layer, frames):
    """Score, softmax and context MACs of a (pruned) self-attention over `frames` frames."""
    t2 = frames * frames
    if hasattr(layer, "query_units"):                   # PrunedSelfAttention: ragged heads
        macs = 0
        for nq, nv in zip(layer.query_units, layer.value_units):
            if nq and nv:
                macs += t2 * nq + t2 + t2 * nv            # q·k, softmax, weights·v
            elif nv:
                macs += frames * nv                      # uniform attention: the time mean
        return macs
    heads, head_dim = layer.num_heads, layer.head_dim    # ConformerSelfAttention
    return heads * (2 * t2 * head_dim + t2)


def _sequence_macs(layer, frames):
    """MACs of a layer (recursively) applied to [frames, ...] sequences, per sample."""
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        return frames * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.DepthwiseConv1D):
        return frames * int(np.prod(layer.depthwise_kernel.shape))
    if isinstance(layer, keras.layers.BatchNormalization):
        return frames * int(layer.gamma.shape[0] if layer.gamma is not None
                            else layer.moving_mean.shape[0])
    macs = 0
    if layer.__class__.__name__ in ("ConformerSelfAttention", "PrunedSelfAttention"):
        macs += _attention_macs(layer, frames)
        for name in ("query_kernel", "key_kernel", "value_kernel", "output_kernel"):
            if hasattr(layer, name):                     # PrunedSelfAttention's own kernels
                macs += frames * int(np.prod(getattr(layer, name).shape))
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        macs += _sequence_macs(sub, frames)
    return macs


def encoder_flops(model, frames=None):
    """Forward MACs and FLOPs per utterance of a `ConformerEncoder` (dense or pruned).

    Conventions (per utterance of `frames` input frames; T' = ceil(frames / 4)
    frames after the front end, which pads to a multiple of 4):

      * Conv2D (front end): H_out·W_out·k_h·k_w·C_in·C_out, over the (time,
        feature) grid, each stride-2 "same" convolution halving both (ceil);
      * Dense / EinsumDense (front-end projection, FFNs, Q/K/V/O projections,
        LConv pointwise, CTC layer): T'·(kernel size), i.e. T'·in·out;
      * depthwise convolution: T'·k·C; BatchNormalization (folded): T'·C;
      * attention, per head with q query/key units and v value units (q = v =
        head_dim unpruned): T'²·q for the scores, T'² for the softmax (one
        exp-and-normalise per score, counted as one MAC), T'²·v for the context;
        a pruned head with q = 0 attends uniformly: T'·v (the time mean); a head
        with v = 0 costs nothing;
      * not counted: biases, LayerNorm, activations, the GLU product, residual
        adds, AdaptiveDropout masks, dropout, reshapes (elementwise, O(T'·D)).

    ADL sites do not remove work before `prune`: count the pruned model for the
    cost of the effective one.

    Args:
      model: a built `ConformerEncoder` or its `prune`d copy.
      frames: input frames per utterance (default: the model's input frames).

    Returns:
      dict with `macs`, `flops` (= 2·macs) and the parts `front_end`, `blocks`,
      `head` (MACs, summing to `macs`), and `frames` (T').
    """
    if frames is None:
        frames = int(model.input_shape[1])
    frames = int(frames)
    if frames < 1:
        raise ValueError("Invalid value received for argument `frames`. Expected a positive "
                         "int. Received: frames={}".format(frames))
    padded = frames + (-frames % 4)
    grid = [padded, int(model.input_shape[2])]
    out_frames = padded // 4
    parts = {"front_end": 0, "blocks": 0, "head": 0}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            strides = layer.strides
            grid = [_ceil_div(grid[0], strides[0]), _ceil_div(grid[1], strides[1])]
            parts["front_end"] += grid[0] * grid[1] * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            key = "head" if layer.name == "ctc_logits" else "front_end"
            parts[key] += out_frames * int(np.prod(layer.kernel.shape))
        elif layer.__class__.__name__ in ("ConformerBlock", "PrunedConformerBlock"):
            parts["blocks"] += _sequence_macs(layer, out_frames)
    macs = sum(parts.values())
    return dict(parts, macs=macs, flops=2 * macs, frames=out_frames)
