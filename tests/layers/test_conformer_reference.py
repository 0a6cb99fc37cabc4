"""NumPy reference of the Conformer block of Kubo et al. (Eqs. 8-12), for tests.

Written from the equations, independent of the Keras implementation; it reads
the weights of a built `ConformerBlock` and the hard masks 1[beta >= threshold].
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def swish(x):
    return x * sigmoid(x)


def layer_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _np(v):
    return np.asarray(v.numpy(), np.float64)


def _mask(adl, shape):
    if adl is None:
        return np.ones(shape)
    return np.asarray(adl.keep_mask.numpy(), np.float64)


def ffn(module, x):
    xn = layer_norm(x, _np(module.norm.gamma), _np(module.norm.beta))
    h = swish(xn @ _np(module.dense1.kernel) + _np(module.dense1.bias))
    h = h * _mask(module.adaptive_dropout, h.shape[-1:])
    return h @ _np(module.dense2.kernel) + _np(module.dense2.bias)


def attention(module, x):
    xn = layer_norm(x, _np(module.norm.gamma), _np(module.norm.beta))
    heads = (module.num_heads, module.head_dim)
    q = np.einsum("btd,dhk->bthk", xn, _np(module.query.kernel)) + _np(module.query.bias)
    k = np.einsum("btd,dhk->bthk", xn, _np(module.key.kernel)) + _np(module.key.bias)
    v = np.einsum("btd,dhk->bthk", xn, _np(module.value.kernel)) + _np(module.value.bias)
    q = q * _mask(module.query_dropout, heads)          # Eq. (9)
    v = v * _mask(module.value_dropout, heads)          # Eq. (10)
    s = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(module.head_dim)
    w = softmax(s, axis=-1)
    ctx = np.einsum("bhts,bshk->bthk", w, v)
    return np.einsum("bthk,hkd->btd", ctx, _np(module.output_dense.kernel)) + _np(
        module.output_dense.bias)


def conv(module, x):
    xn = layer_norm(x, _np(module.norm.gamma), _np(module.norm.beta))
    h = xn @ _np(module.pointwise_in.kernel) + _np(module.pointwise_in.bias)
    c = module.channels
    z = h[..., :c] * sigmoid(h[..., c:])                # GLU
    z = z * _mask(module.adaptive_dropout, (c,))        # Eq. (11)
    kernel = _np(module.depthwise.depthwise_kernel)[:, :, 0]  # [K, C]
    size = kernel.shape[0]
    pad = (size - 1) // 2
    zp = np.pad(z, ((0, 0), (pad, size - 1 - pad), (0, 0)))
    t = z.shape[1]
    zc = sum(kernel[j] * zp[:, j:j + t, :] for j in range(size))
    bn = module.batch_norm
    zc = (zc - _np(bn.moving_mean)) / np.sqrt(_np(bn.moving_variance) + bn.epsilon) * _np(
        bn.gamma) + _np(bn.beta)
    return swish(zc) @ _np(module.pointwise_out.kernel) + _np(module.pointwise_out.bias)  # Eq. 12


def block(layer, x):
    x = np.asarray(x, np.float64)
    x = x + 0.5 * ffn(layer.ffn1, x)
    x = x + attention(layer.attention, x)
    x = x + conv(layer.conv, x)
    x = x + 0.5 * ffn(layer.ffn2, x)
    return layer_norm(x, _np(layer.final_norm.gamma), _np(layer.final_norm.beta))


def randomise(layer, rng, prune_fraction=0.4, extra=None):
    """Random weights, BatchNorm statistics and retention logits (some below threshold)."""
    for w in layer.weights:
        if "retention_raw" in w.name or w.dtype in ("int64",):
            continue
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((0.3 * rng.standard_normal(w.shape)).astype(np.float32))
    sites = getattr(layer, "adaptive_dropout_sites", {})
    for name, adl in sites.items():
        thr = adl.effective_threshold
        c = float(adl.current_target)
        scale = np.sqrt(adl.gamma / adl.alpha)
        beta = np.where(rng.uniform(size=adl.retention_raw.shape) < prune_fraction,
                        thr - rng.uniform(0.1, 3.0, adl.retention_raw.shape),
                        thr + rng.uniform(0.1, 3.0, adl.retention_raw.shape))
        if extra and name in extra:
            beta = extra[name](beta, thr)
        adl.retention_raw.assign(((beta - c) / scale).astype(np.float32))
