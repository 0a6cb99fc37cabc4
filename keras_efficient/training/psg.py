"""Predictive sign gradient (PSG, E²-Train Sec. 3.3): quantisers and weight gradients.

Fixed-point quantisation (symmetric, per tensor) of a tensor v to B bits:

    scale = max|v| / (2^(B-1) - 1),   q_B(v) = round(v / scale) · scale

(scale = 1 when v is all zeros, so q_B(0) = 0). PSG computes two weight
gradients of a layer y = x·W:

    g_w     from the full-precision operands  (q_{B_x}(x),     q_{B_g}(g_y))
    g_w^msb from the predictor operands       (q_{B_x^msb}(x), q_{B_g^msb}(g_y))

and returns, per weight i, Eq. (2):

    g̃_w[i] = sgn(g_w^msb[i])  if |g_w^msb[i]| >= τ,   else sgn(g_w[i]),
    τ = β · max_i |g_w^msb[i]|                     (the paper's adaptive threshold)

Defaults follow the paper's Sec. 4.4: B_x = 8, B_g = 16, B_x^msb = 4, B_g^msb = 10,
β = 0.05. The predictor operands are quantised from the *float* x and g_y with
the same quantiser (scale from the float tensor's max), which is what taking the
most significant bits of a fixed-point number with the same scale amounts to up
to rounding instead of truncation (the paper does not say which; rounding is
the unbiased choice).

All math is float32, whatever the compute dtype of the caller.
"""

from keras_efficient.backend import tf
from keras_efficient.layers.pointwise_conv import strided_pointwise_input
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = [
    "fixed_point_quantize",
    "psg_sign_select",
    "psg_weight_gradient",
    "psg_conv2d_weight_gradient",
    "validate_psg_config",
    "DEFAULT_PSG_CONFIG",
]

#: The paper's PSG precisions (Sec. 4.4) and threshold ratio.
DEFAULT_PSG_CONFIG = {
    "input_bits": 8,
    "weight_bits": 8,
    "grad_bits": 16,
    "input_msb_bits": 4,
    "grad_msb_bits": 10,
    "beta": 0.05,
}

_MAX_BITS = 32


def validate_psg_config(input_bits=8, weight_bits=8, grad_bits=16, input_msb_bits=4,
                        grad_msb_bits=10, beta=0.05):
    """Checks the PSG bit widths and β; returns them as a dict.

    Every width is an integer in [2, 32]; a predictor width may not exceed its
    full width; β is a float in [0, 1].
    """
    out = {}
    for name, value in (("input_bits", input_bits), ("weight_bits", weight_bits),
                        ("grad_bits", grad_bits), ("input_msb_bits", input_msb_bits),
                        ("grad_msb_bits", grad_msb_bits)):
        out[name] = check_int(name, value, low=2, high=_MAX_BITS)
    if out["input_msb_bits"] > out["input_bits"]:
        raise invalid_argument("input_msb_bits", "at most input_bits={}".format(out["input_bits"]),
                               input_msb_bits)
    if out["grad_msb_bits"] > out["grad_bits"]:
        raise invalid_argument("grad_msb_bits", "at most grad_bits={}".format(out["grad_bits"]),
                               grad_msb_bits)
    out["beta"] = check_float("beta", beta, low=0.0, high=1.0)
    return out


def fixed_point_quantize(v, bits):
    """Symmetric per-tensor fixed-point quantisation q_B(v) = round(v / scale) · scale.

    Args:
      v: a float tensor (computed in float32; the result is float32).
      bits: the width B (Python int >= 2); scale = max|v| / (2^(B-1) - 1).

    Returns:
      The quantised float32 tensor, same shape as `v`.
    """
    bits = check_int("bits", bits, low=2, high=_MAX_BITS)
    v = tf.cast(v, tf.float32)
    levels = float(2 ** (bits - 1) - 1)
    max_abs = tf.reduce_max(tf.abs(v)) if v.shape.rank != 0 else tf.abs(v)
    if v.shape.num_elements() == 0:
        return v
    scale = tf.where(max_abs > 0.0, max_abs / levels, tf.ones_like(max_abs))
    return tf.round(v / scale) * scale


def psg_sign_select(g_w, g_w_msb, beta):
    """Eq. (2): the sign of g_w^msb where |g_w^msb| >= β·max|g_w^msb|, else the sign of g_w.

    Returns:
      `(g_tilde, predicted_fraction)`: the float32 sign gradient and the fraction
      of its entries taken from the predictor.
    """
    g_w = tf.cast(g_w, tf.float32)
    g_w_msb = tf.cast(g_w_msb, tf.float32)
    magnitude = tf.abs(g_w_msb)
    tau = float(beta) * tf.reduce_max(magnitude)
    from_predictor = magnitude >= tau
    g_tilde = tf.where(from_predictor, tf.sign(g_w_msb), tf.sign(g_w))
    fraction = tf.reduce_mean(tf.cast(from_predictor, tf.float32))
    return g_tilde, fraction


def _operands(x, grad_y, input_bits, grad_bits, input_msb_bits, grad_msb_bits):
    return (fixed_point_quantize(x, input_bits), fixed_point_quantize(grad_y, grad_bits),
            fixed_point_quantize(x, input_msb_bits), fixed_point_quantize(grad_y, grad_msb_bits))


def psg_weight_gradient(x, grad_y, input_bits=8, grad_bits=16, input_msb_bits=4,
                        grad_msb_bits=10, beta=0.05, return_fraction=False):
    """PSG weight gradient of a Dense layer y = x·W (+ b), Eq. (2).

    g_w = q_{B_x}(x)ᵀ q_{B_g}(g_y) and g_w^msb = q_{B_x^msb}(x)ᵀ q_{B_g^msb}(g_y), summed
    over all leading (batch, time, ...) axes.

    Args:
      x: layer input, `[..., in_features]`.
      grad_y: gradient of the loss w.r.t. the layer output, `[..., units]`.
      input_bits, grad_bits: full widths B_x, B_g.
      input_msb_bits, grad_msb_bits: predictor widths B_x^msb <= B_x, B_g^msb <= B_g.
      beta: threshold ratio β in [0, 1].
      return_fraction: also return the fraction of entries taken from the predictor.

    Returns:
      A float32 `[in_features, units]` tensor of signs in {-1, 0, 1}
      (and the predicted fraction when `return_fraction`).
    """
    cfg = validate_psg_config(input_bits, 8, grad_bits, input_msb_bits, grad_msb_bits, beta)
    x = tf.cast(x, tf.float32)
    grad_y = tf.cast(grad_y, tf.float32)
    x2 = tf.reshape(x, [-1, tf.shape(x)[-1]])
    g2 = tf.reshape(grad_y, [-1, tf.shape(grad_y)[-1]])
    qx, qg, qx_msb, qg_msb = _operands(x2, g2, cfg["input_bits"], cfg["grad_bits"],
                                       cfg["input_msb_bits"], cfg["grad_msb_bits"])
    g_w = tf.matmul(qx, qg, transpose_a=True)
    g_w_msb = tf.matmul(qx_msb, qg_msb, transpose_a=True)
    g_tilde, fraction = psg_sign_select(g_w, g_w_msb, cfg["beta"])
    return (g_tilde, fraction) if return_fraction else g_tilde


def _conv_filter_gradient(x, grad_y, kernel_shape, strides, padding):
    if tuple(kernel_shape[:2]) == (1, 1) and tuple(strides) != (1, 1):
        # A strided 1×1 kernel reads x[:, ::s_h, ::s_w] with no padding: the same gradient
        # at stride 1 on the slice, without the strided 1×1 kernel that corrupts the heap
        # on some CPUs (layers/pointwise_conv.py).
        x, strides, padding = strided_pointwise_input(x, strides), (1, 1), "valid"
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.constant(list(kernel_shape), tf.int32), out_backprop=grad_y,
        strides=[1, strides[0], strides[1], 1], padding=padding.upper(), data_format="NHWC")


def psg_conv2d_weight_gradient(x, grad_y, kernel_shape, strides=(1, 1), padding="valid",
                               input_bits=8, grad_bits=16, input_msb_bits=4, grad_msb_bits=10,
                               beta=0.05, return_fraction=False):
    """PSG weight gradient of a Conv2D layer (NHWC, no dilation, one group), Eq. (2).

    g_w and g_w^msb are the convolution filter gradients (the im2col patches of
    the quantised input times the quantised output gradient) of the full and
    predictor operands.

    Args:
      x: layer input `[batch, height, width, in_channels]`.
      grad_y: output gradient `[batch, out_height, out_width, filters]`.
      kernel_shape: `(kh, kw, in_channels, filters)`.
      strides: `(sh, sw)`.
      padding: "valid" or "same".
      input_bits, grad_bits, input_msb_bits, grad_msb_bits, beta, return_fraction:
        as in `psg_weight_gradient`.

    Returns:
      A float32 tensor shaped `kernel_shape` of signs (and the predicted fraction).
    """
    cfg = validate_psg_config(input_bits, 8, grad_bits, input_msb_bits, grad_msb_bits, beta)
    if str(padding).lower() not in ("valid", "same"):
        raise invalid_argument("padding", "'valid' or 'same'", padding)
    strides = tuple(int(s) for s in strides)
    qx, qg, qx_msb, qg_msb = _operands(x, grad_y, cfg["input_bits"], cfg["grad_bits"],
                                       cfg["input_msb_bits"], cfg["grad_msb_bits"])
    g_w = _conv_filter_gradient(qx, qg, kernel_shape, strides, padding)
    g_w_msb = _conv_filter_gradient(qx_msb, qg_msb, kernel_shape, strides, padding)
    g_tilde, fraction = psg_sign_select(g_w, g_w_msb, cfg["beta"])
    return (g_tilde, fraction) if return_fraction else g_tilde
