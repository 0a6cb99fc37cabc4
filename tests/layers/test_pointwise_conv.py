"""StridedPointwiseConv2D: a strided 1×1 convolution by slicing, equal to Conv2D and to NumPy."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import ResidualBlock, StridedPointwiseConv2D
from keras_efficient.testing import run_layer_test


def _reference(x, kernel, bias, strides):
    """NumPy: output pixel (i, j) is W^T x[i·s_h, j·s_w] + b (1×1 kernel, no padding)."""
    xs = x[:, ::strides[0], ::strides[1], :]
    return np.einsum("nhwc,cf->nhwf", xs, kernel[0, 0]) + bias


def _reference_gradients(x, kernel, dy, strides):
    xs = x[:, ::strides[0], ::strides[1], :]
    d_kernel = np.einsum("nhwc,nhwf->cf", xs, dy)[None, None]
    dx = np.zeros_like(x)
    dx[:, ::strides[0], ::strides[1], :] = np.einsum("nhwf,cf->nhwc", dy, kernel[0, 0])
    return dx, d_kernel


@pytest.mark.parametrize("batch,size,strides,padding", [
    (3, (9, 8), (2, 2), "same"), (29, (32, 32), (2, 2), "same"), (2, (7, 7), (3, 2), "valid"),
    (5, (6, 5), (1, 1), "same"), (1, (16, 16), (2, 1), "valid")])
def test_forward_and_gradients_match_numpy_and_conv2d(batch, size, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch,) + size + (4,)).astype("float32")
    layer = StridedPointwiseConv2D(6, strides=strides, padding=padding, use_bias=True,
                                   bias_initializer="random_normal")
    plain = keras.layers.Conv2D(6, 1, strides=strides, padding=padding)
    y = layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    kernel, bias = (w.numpy() for w in layer.weights)
    np.testing.assert_allclose(y.numpy(), _reference(x, kernel, bias, strides), atol=1e-5)
    np.testing.assert_allclose(y.numpy(), plain(x).numpy(), atol=1e-5)
    assert tuple(y.shape[1:3]) == tuple(-(-n // s) for n, s in zip(size, strides))
    assert tuple(layer.compute_output_shape(x.shape)) == tuple(y.shape)

    dy = rng.normal(size=y.shape).astype("float32")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = tf.reduce_sum(layer(xt) * dy)
    dx, d_kernel, d_bias = tape.gradient(out, [xt, layer.kernel, layer.bias])
    ref_dx, ref_dk = _reference_gradients(x, kernel, dy, strides)
    np.testing.assert_allclose(dx.numpy(), ref_dx, atol=1e-4)
    np.testing.assert_allclose(d_kernel.numpy(), ref_dk, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(d_bias.numpy(), dy.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kwargs,name", [
    ({"kernel_size": 3}, "kernel_size"), ({"kernel_size": (1, 2)}, "kernel_size"),
    ({"dilation_rate": 2}, "dilation_rate"), ({"data_format": "channels_first"}, "data_format")])
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StridedPointwiseConv2D(4, **kwargs)


def test_layer_contract():
    run_layer_test(StridedPointwiseConv2D, {"filters": 3, "strides": 2}, input_shape=(6, 8, 8, 2),
                   expected_output_shape=(6, 4, 4, 3), expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=0, expected_num_losses=0,
                   supports_jit=True)


def test_residual_block_shortcut_is_the_sliced_convolution():
    block = ResidualBlock(8, strides=2)
    block.build((None, 16, 16, 4))
    assert isinstance(block.shortcut, StridedPointwiseConv2D)
    assert tuple(block.shortcut.strides) == (2, 2)


_ODD_BATCH = textwrap.dedent("""
    import numpy as np
    from keras_efficient.backend import keras
    from keras_efficient.models import cifar_resnet, gated_resnet
    from keras_efficient.training import convert_to_psg

    keras.utils.set_random_seed(0)
    x = np.random.rand(93, 32, 32, 3).astype("float32")
    y = np.random.randint(0, 10, 93)
    psg = convert_to_psg(gated_resnet(depth=8, base_filters=4),
                         include=lambda layer: layer.name not in ("stem_conv", "logits"))
    for model in (cifar_resnet(depth=8, base_filters=4), psg):
        model.compile(keras.optimizers.SGD(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # batches of 64 and 29
    print("FINISHED")
""")


def test_resnets_train_on_an_odd_last_batch_in_a_fresh_process():
    """The ResNet builders train through an odd batch (the strided 1×1 shortcut's case).

    In its own process, so that a native abort fails this test rather than the run.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    proc = subprocess.run([sys.executable, "-c", _ODD_BATCH], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "FINISHED" in proc.stdout, (
        proc.returncode, proc.stderr[-3000:])
