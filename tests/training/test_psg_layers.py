"""PSGDense / PSGConv2D: gradients equal the PSG references, the layer contract, fit."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.testing import run_layer_test
from keras_efficient.training import PSGConv2D, PSGDense

from test_psg import np_conv_psg, np_dense_psg, np_im2col, np_quantize


def test_dense_gradients_match_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    dy = rng.normal(size=(8, 3)).astype(np.float32)
    layer = PSGDense(3)
    layer.build((None, 5))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * dy)
    gx, gw, gb = tape.gradient(loss, [xt, layer.kernel, layer.bias])
    w = layer.kernel.numpy()
    np.testing.assert_allclose(y.numpy(), np_quantize(x, 8) @ np_quantize(w, 8), rtol=1e-4,
                               atol=1e-5)
    want_w, frac = np_dense_psg(x, dy)
    np.testing.assert_array_equal(gw.numpy(), want_w)
    np.testing.assert_allclose(gx.numpy(), np_quantize(dy, 16) @ np_quantize(w, 8).T, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(gb.numpy(), np.sign(np_quantize(dy, 16).sum(0)))
    assert float(layer.predicted_fraction.numpy()) == pytest.approx(frac)


def test_conv_gradients_match_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    layer = PSGConv2D(4, 3, strides=2, padding="same")
    layer.build((None, 6, 6, 3))
    _, (oh, ow) = np_im2col(x.astype(np.float64), 3, 3, 2, "same")
    dy = rng.normal(size=(2, oh, ow, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * dy)
    gw = tape.gradient(loss, layer.kernel)
    w = layer.kernel.numpy()
    cols, _ = np_im2col(np_quantize(x, 8), 3, 3, 2, "same")
    np.testing.assert_allclose(y.numpy().reshape(-1, 4), cols @ np_quantize(w, 8).reshape(-1, 4),
                               rtol=1e-4, atol=1e-5)
    want, _ = np_conv_psg(x, dy, w.shape, 2, "same")
    np.testing.assert_array_equal(gw.numpy(), want)


def test_fit_reports_fraction_and_learns():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), PSGDense(8, activation="relu", name="h"),
                              PSGDense(1, name="out")])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    assert "h_psg_fraction" in hist.history
    assert 0.0 < hist.history["h_psg_fraction"][-1] <= 1.0
    assert hist.history["loss"][-1] < hist.history["loss"][0]


@pytest.mark.parametrize("kwargs,name", [
    (dict(input_bits=1), "input_bits"), (dict(weight_bits=33), "weight_bits"),
    (dict(input_msb_bits=9), "input_msb_bits"), (dict(grad_msb_bits=17), "grad_msb_bits"),
    (dict(beta=2.0), "beta"), (dict(beta=-1.0), "beta"),
])
def test_bad_layer_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PSGDense(3, **kwargs)
    with pytest.raises(ValueError, match=name):
        PSGConv2D(3, 3, **kwargs)


def test_bad_conv_options_and_inputs():
    with pytest.raises(ValueError, match="dilation_rate"):
        PSGConv2D(3, 3, dilation_rate=2)
    with pytest.raises(ValueError, match="rank|ndim"):
        PSGConv2D(3, 3)(tf.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="rank|ndim"):
        PSGDense(3)(tf.zeros((2,)))


# PSG quantises inputs with the range of the batch each replica sees (8 bits: relative error
# up to 2^-7) and its weight gradient is a sign with a batch-maximum threshold, which is not a
# sum over examples: under MirroredStrategy only the loss is compared, to quantisation
# accuracy.
PSG_DISTRIBUTED = dict(distributed_gradients=False, distributed_rtol=2e-2, distributed_atol=1e-3)


def test_dense_layer_contract():
    run_layer_test(PSGDense, dict(units=3, beta=0.1, validate_args=True), input_shape=(4, 5),
                   expected_output_shape=(4, 3), expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=1, supports_jit=True, expect_nan_error=True,
                   **PSG_DISTRIBUTED)


def test_conv_layer_contract():
    run_layer_test(PSGConv2D, dict(filters=2, kernel_size=3, padding="same", strides=2,
                                   validate_args=True),
                   input_shape=(2, 6, 6, 3), expected_output_shape=(2, 3, 3, 2),
                   expected_num_trainable_weights=2, expected_num_non_trainable_weights=1,
                   supports_jit=True, expect_nan_error=True, **PSG_DISTRIBUTED)


def test_convert_resnet_to_psg_keeps_outputs_close_and_trains():
    from keras_efficient.models import cifar_resnet
    from keras_efficient.training import PSGResidualBlock, convert_to_psg, psg_layers_of

    model = cifar_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4)
    psg = convert_to_psg(model, include=lambda layer: layer.name != "logits")
    assert isinstance(psg.get_layer("stage1_block0"), PSGResidualBlock)
    assert type(psg.get_layer("logits")) is keras.layers.Dense
    assert isinstance(psg.get_layer("stem_conv"), PSGConv2D)
    # stem + 3 blocks x 2 convs + 2 projection shortcuts
    assert len(psg_layers_of(psg)) == 1 + 6 + 2
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    ref, out = model(x).numpy(), psg(x).numpy()
    # 8-bit activations/weights: close to the float model, not equal.
    assert np.max(np.abs(ref - out)) < 0.25 * np.max(np.abs(ref)) + 1e-3
    assert not np.array_equal(ref, out)
    psg.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    hist = psg.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert "stem_conv_psg_fraction" in hist.history


def test_convert_gated_resnet_keeps_gates_and_weights():
    from keras_efficient.models import gated_blocks_of, gated_resnet
    from keras_efficient.training import PSGResidualBlock, convert_to_psg

    keras.utils.set_random_seed(0)
    model = gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4, mode="mask")
    psg = convert_to_psg(model, input_bits=32, weight_bits=32, grad_bits=32, input_msb_bits=32,
                         grad_msb_bits=32)
    blocks = gated_blocks_of(psg)
    assert len(blocks) == 1 and isinstance(blocks[0].block, PSGResidualBlock)
    assert blocks[0].gate is not None
    assert float(blocks[0].flops_fraction.numpy()) == 1.0
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    # 32-bit quantisers: the converted model computes what the original does.
    np.testing.assert_allclose(psg(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_psg_inside_gather_mode_gates_trains_and_records_fraction():
    from keras_efficient.models import gated_blocks_of, gated_resnet
    from keras_efficient.training import convert_to_psg

    keras.utils.set_random_seed(0)
    psg = convert_to_psg(gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4,
                                      mode="gather"))
    psg.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(np.float32)
    psg.fit(x, np.arange(8), epochs=1, verbose=0)
    conv = gated_blocks_of(psg)[0].block.conv1
    assert 0.0 < float(conv.predicted_fraction.numpy()) <= 1.0


@pytest.mark.parametrize("make, x_shape", [
    (lambda: PSGDense(3, use_bias=False), (2, 4)),
    (lambda: PSGConv2D(5, 3, padding="same", use_bias=False), (2, 6, 6, 2)),
])
def test_without_bias_forward_is_the_quantised_product(make, x_shape):
    """No bias: y = q8(x) · q8(W) (Dense) or conv(q8(x), q8(W)), and only the kernel trains."""
    layer = make()
    x = np.random.default_rng(3).normal(size=x_shape).astype(np.float32)
    with tf.GradientTape() as tape:
        y = layer(x)
    (grad,) = tape.gradient(y, layer.trainable_weights)
    qx = np_quantize(x, 8)
    qw = np_quantize(layer.kernel.numpy(), 8)
    if len(x_shape) == 2:
        expected = qx @ qw
    else:
        expected = tf.nn.conv2d(qx, qw, 1, "SAME").numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert len(layer.trainable_weights) == 1 and grad.shape == layer.kernel.shape
