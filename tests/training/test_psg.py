"""PSG quantisers and Eq. (2) against independent NumPy references (im2col for Conv2D)."""

import numpy as np
import pytest

from keras_efficient.training import (
    fixed_point_quantize,
    psg_conv2d_weight_gradient,
    psg_weight_gradient,
)


def np_quantize(v, bits):
    v = np.asarray(v, np.float64)
    m = np.max(np.abs(v))
    scale = m / (2 ** (bits - 1) - 1) if m > 0 else 1.0
    return np.round(v / scale) * scale


def np_eq2(g_w, g_msb, beta):
    tau = beta * np.max(np.abs(g_msb))
    pick = np.abs(g_msb) >= tau
    return np.where(pick, np.sign(g_msb), np.sign(g_w)), pick.mean()


def np_dense_psg(x, gy, bx=8, bg=16, bxm=4, bgm=10, beta=0.05):
    g_w = np_quantize(x, bx).T @ np_quantize(gy, bg)
    g_msb = np_quantize(x, bxm).T @ np_quantize(gy, bgm)
    return np_eq2(g_w, g_msb, beta)


def np_im2col(x, kh, kw, stride, padding):
    n, h, w, c = x.shape
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        ph = max((oh - 1) * stride + kh - h, 0)
        pw = max((ow - 1) * stride + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = np.empty((n, oh, ow, kh, kw, c))
    for i in range(oh):
        for j in range(ow):
            cols[:, i, j] = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
    return cols.reshape(n * oh * ow, kh * kw * c), (oh, ow)


def np_conv_weight_grad(x, gy, kshape, stride, padding):
    cols, _ = np_im2col(x, kshape[0], kshape[1], stride, padding)
    return (cols.T @ gy.reshape(-1, kshape[3])).reshape(kshape)


def np_conv_psg(x, gy, kshape, stride, padding, bx=8, bg=16, bxm=4, bgm=10, beta=0.05):
    g_w = np_conv_weight_grad(np_quantize(x, bx), np_quantize(gy, bg), kshape, stride, padding)
    g_msb = np_conv_weight_grad(np_quantize(x, bxm), np_quantize(gy, bgm), kshape, stride, padding)
    return np_eq2(g_w, g_msb, beta)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_quantizer_matches_numpy(bits):
    v = np.random.default_rng(bits).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(fixed_point_quantize(v, bits).numpy(), np_quantize(v, bits),
                               rtol=1e-5, atol=1e-6)
    levels = np.unique(np.round(fixed_point_quantize(v, bits).numpy() /
                                (np.abs(v).max() / (2 ** (bits - 1) - 1))))
    assert len(levels) <= 2 ** bits - 1
    assert np.all(fixed_point_quantize(np.zeros(3, np.float32), bits).numpy() == 0)


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.3])
def test_dense_psg_matches_numpy(beta):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    gy = (rng.normal(size=(16, 5)) * 1e-3).astype(np.float32)
    got, frac = psg_weight_gradient(x, gy, beta=beta, return_fraction=True)
    want, want_frac = np_dense_psg(x, gy, beta=beta)
    np.testing.assert_array_equal(got.numpy(), want)
    assert float(frac) == pytest.approx(want_frac)
    if beta == 0.0:
        assert float(frac) == 1.0


def test_dense_psg_custom_widths():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    gy = rng.normal(size=(9, 3)).astype(np.float32)
    got = psg_weight_gradient(x, gy, input_bits=6, grad_bits=12, input_msb_bits=3,
                              grad_msb_bits=5, beta=0.5)
    want, _ = np_dense_psg(x, gy, 6, 12, 3, 5, 0.5)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "same"), (1, "valid"), (2, "valid")])
def test_conv_psg_matches_numpy_im2col(stride, padding):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    kshape = (3, 3, 3, 4)
    _, (oh, ow) = np_im2col(x.astype(np.float64), 3, 3, stride, padding)
    gy = rng.normal(size=(2, oh, ow, 4)).astype(np.float32)
    got, frac = psg_conv2d_weight_gradient(x, gy, kshape, (stride, stride), padding,
                                           return_fraction=True)
    want, want_frac = np_conv_psg(x, gy, kshape, stride, padding)
    np.testing.assert_array_equal(got.numpy(), want)
    assert float(frac) == pytest.approx(want_frac)


def test_full_precision_and_zero_beta_is_sign_of_float_gradient():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    gy = rng.normal(size=(12, 4)).astype(np.float32)
    full = dict(input_bits=32, grad_bits=32, input_msb_bits=32, grad_msb_bits=32, beta=0.0)
    got = psg_weight_gradient(x, gy, **full)
    np.testing.assert_array_equal(got.numpy(), np.sign(x.astype(np.float64).T @ gy))
    xc = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    gc = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    got = psg_conv2d_weight_gradient(xc, gc, (3, 3, 2, 3), (1, 1), "same", **full)
    want = np.sign(np_conv_weight_grad(xc.astype(np.float64), gc, (3, 3, 2, 3), 1, "same"))
    np.testing.assert_array_equal(got.numpy(), want)


def test_predictor_used_for_large_entries():
    # An entry with the largest |g_w^msb| always takes the predictor's sign.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    gy = rng.normal(size=(32, 8)).astype(np.float32)
    got, frac = psg_weight_gradient(x, gy, beta=1.0, return_fraction=True)
    assert 0 < float(frac) < 0.2
    _, frac_default = psg_weight_gradient(x, gy, return_fraction=True)
    assert float(frac_default) >= 0.6


BAD = [
    (dict(input_bits=1), "input_bits"),
    (dict(grad_bits=0), "grad_bits"),
    (dict(input_bits=40), "input_bits"),
    (dict(input_msb_bits=9), "input_msb_bits"),
    (dict(grad_msb_bits=17), "grad_msb_bits"),
    (dict(beta=-0.1), "beta"),
    (dict(beta=1.5), "beta"),
]


@pytest.mark.parametrize("kwargs,name", BAD)
def test_bad_arguments(kwargs, name):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=name):
        psg_weight_gradient(x, x, **kwargs)
    with pytest.raises(ValueError, match=name):
        psg_conv2d_weight_gradient(np.ones((1, 3, 3, 1), np.float32),
                                   np.ones((1, 3, 3, 1), np.float32), (1, 1, 1, 1), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(input_bits=8.0), dict(beta="0.1"), dict(grad_bits=None)])
def test_bad_argument_types(kwargs):
    with pytest.raises(TypeError):
        psg_weight_gradient(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), **kwargs)
