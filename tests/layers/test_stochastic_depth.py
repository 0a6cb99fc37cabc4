"""Stochastic depth: per-batch Bernoulli skip, expectation at inference, contract."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import ResidualBlock, StochasticDepth
from keras_efficient.testing import run_layer_test


def test_training_runs_block_or_identity_with_probability_p():
    keras.utils.set_random_seed(0)
    layer = StochasticDepth(ResidualBlock(4), survival_probability=0.3, seed=5)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    layer.build(x.shape)
    ran = 0
    n = 300
    for _ in range(n):
        y = layer(x, training=True).numpy()
        if np.array_equal(y, x):
            assert float(layer.ran.numpy()) == 0.0
        else:
            ran += 1
            assert float(layer.ran.numpy()) == 1.0
    assert abs(ran - 0.3 * n) < 4 * np.sqrt(n * 0.3 * 0.7)
    expected = x + 0.3 * (layer.block(x, training=False).numpy() - x)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    for p in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="survival_probability"):
            StochasticDepth(ResidualBlock(4), survival_probability=p)
    with pytest.raises(ValueError, match="output shape equals"):
        StochasticDepth(ResidualBlock(8, strides=2))(tf.zeros((1, 4, 4, 4)))


def test_layer_contract():
    config = keras.layers.serialize(ResidualBlock(4))
    config["config"].pop("dtype", None)
    run_layer_test(StochasticDepth, dict(block=config, survival_probability=0.7, seed=1,
                                         validate_args=True),
                   input_shape=(4, 6, 6, 4), expected_output_shape=(4, 6, 6, 4),
                   expected_num_trainable_weights=6, expected_num_non_trainable_weights=6,
                   expect_nan_error=True)
