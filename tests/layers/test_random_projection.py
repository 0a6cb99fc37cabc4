"""RandomProjection: Achlioptas entry law and Johnson–Lindenstrauss distance preservation."""

import numpy as np
import pytest
from scipy.stats import chisquare

from keras_efficient.backend import keras, tf
from keras_efficient.layers.random_projection import RandomProjection, achlioptas_matrix
from keras_efficient.testing import run_layer_test



def test_entry_values_and_frequencies():
    k = 50
    w = achlioptas_matrix(200, k, seed=3)
    scaled = w * np.sqrt(k / 3.0)
    values, counts = np.unique(np.round(scaled, 5), return_counts=True)
    np.testing.assert_allclose(values, [-1.0, 0.0, 1.0])
    expected = np.array([1 / 6, 2 / 3, 1 / 6]) * w.size
    # 10_000 entries: a chi-square goodness-of-fit test at the 0.1 % level.
    assert chisquare(counts, expected).pvalue > 1e-3


def test_johnson_lindenstrauss():
    rng = np.random.default_rng(0)
    n, d, k, eps = 30, 1000, 400, 0.25
    x = rng.normal(size=(n, d)).astype("float32")
    layer = RandomProjection(k, seed=7)
    y = layer(x).numpy()
    i, j = np.triu_indices(n, 1)
    ratio = (np.sum((y[i] - y[j]) ** 2, -1) / np.sum((x[i] - x[j]) ** 2, -1))
    # JL: k >= 4 ln n / (eps²/2 - eps³/3) ≈ 580 guarantees it with probability > 1 - 1/n;
    # with k = 400 we still require every pair within (1 ± eps) and the mean ratio ≈ 1.
    assert np.all((ratio > 1 - eps) & (ratio < 1 + eps)), (ratio.min(), ratio.max())
    assert abs(ratio.mean() - 1.0) < 0.03


def test_matches_matrix_product_and_is_fixed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 12)).astype("float32")
    layer = RandomProjection(5, seed=11)
    out = layer(x).numpy()
    w = achlioptas_matrix(12, 5, 11)
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-5)
    assert layer.trainable_weights == []
    np.testing.assert_allclose(layer.matrix().numpy(), w.T)
    assert not np.array_equal(achlioptas_matrix(12, 5, 12), w)


def test_saved_in_model_even_when_seed_changes(tmp_path):
    inputs = keras.Input((6,))
    layer = RandomProjection(3, seed=2)
    model = keras.Model(inputs, layer(inputs))
    layer.kernel.assign(np.ones((6, 3), "float32"))  # not reproducible from the seed any more
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.layers[-1].kernel.numpy(), 1.0)


def test_run_layer_test():
    run_layer_test(
        RandomProjection, {"output_dim": 4, "seed": 5}, input_shape=(4, 9),
        expected_output_shape=(4, 4), expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=1, expected_num_losses=0, supports_jit=True,
        expect_trainable_weights_change=False, rtol=1e-5, atol=1e-5,
        # The layer has no trainable weight: under mixed_float16 the LossScaleOptimizer
        # rejects an empty variable list, so `fit` is checked in test_fit_keeps_matrix_fixed.
        run_training_check=False)


def test_fit_keeps_matrix_fixed(mixed_precision):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 6)).astype("float32")
    inputs = keras.Input((6,))
    layer = RandomProjection(3, seed=1)
    model = keras.Model(inputs, layer(keras.layers.Dense(6)(inputs)))
    before = layer.kernel.numpy().copy()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    history = model.fit(x, rng.normal(size=(8, 3)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    np.testing.assert_array_equal(layer.kernel.numpy(), before)


@pytest.mark.parametrize("kwargs,match", [
    ({"output_dim": 0}, "output_dim"),
    ({"output_dim": -3}, "output_dim"),
    ({"output_dim": 2.5}, "output_dim"),
    ({"output_dim": None}, "output_dim"),
    ({"output_dim": "4"}, "output_dim"),
    ({"output_dim": 4, "seed": -1}, "seed"),
    ({"output_dim": 4, "seed": 1.0}, "seed"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RandomProjection(**kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match="rank >= 2"):
        RandomProjection(3)(np.zeros((5,), "float32"))
    layer = RandomProjection(3)
    layer(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="expected axis -1"):
        layer(np.zeros((2, 6), "float32"))


def test_validate_args():
    layer = RandomProjection(3, seed=1)
    assert layer.get_config()["validate_args"] is False
    bad = np.array([[np.nan] * 5], np.float32)
    assert np.all(np.isnan(layer(bad)))  # default: no value check
    checked = RandomProjection.from_config(dict(layer.get_config(), validate_args=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        checked(bad)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="empty batch"):
        checked(np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match="rank"):  # shape checks are always on
        RandomProjection(3)(np.ones((5,), np.float32))
    with pytest.raises(TypeError, match="floating-point"):  # so is the dtype
        RandomProjection(3)(np.ones((2, 5), np.int32))
    with pytest.raises(TypeError, match="validate_args"):
        RandomProjection(3, validate_args="no")
