"""prune() on Conv2D channel sites and the Conformer front end (adaptive_subsampling)."""

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import count_parameters, prune, surviving_units
from keras_efficient.schedules import RetentionTargetSchedule

from test_prune import _assert_same_outputs, _randomise_weights, _set_keep


def _cnn(flat_target=(4, 3 * 4)):
    """Conv2D(5) -> ADL -> Conv2D(4, stride 2) -> ADL -> flatten (F' = 3) -> Dense(3)."""
    inp = keras.Input((8, 6, 2))
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inp)
    h = AdaptiveDropout(name="adl1")(h)
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh", name="c2")(h)
    h = AdaptiveDropout(name="adl2")(h)
    h = keras.layers.Reshape(flat_target, name="flat")(h)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inp, out)


def _cnn_effective(n1, n2):
    # Independent closed form: 3x3 kernels with bias; the Dense sees 3 frequency
    # positions x n2 channels.
    return (9 * 2 * n1 + n1) + (9 * n1 * n2 + n2) + (3 * n2 * 3 + 3)


@pytest.mark.parametrize("keep1, keep2", [
    ([1, 0, 1, 1, 0], [0, 1, 1, 0]),
    ([0, 0, 0, 0, 0], [1, 0, 0, 1]),   # conv1 site dead: one zero channel stays
    ([1, 1, 0, 1, 1], [0, 0, 0, 0]),   # conv2 site dead before a flattening Reshape
])
def test_conv_sites_equal_outputs_and_exact_counts(keep1, keep2):
    rng = np.random.default_rng(sum(keep1) + 10 * sum(keep2))
    model = _cnn()
    _randomise_weights(model, rng)
    keep1, keep2 = np.asarray(keep1, bool), np.asarray(keep2, bool)
    _set_keep(model.get_layer("adl1"), keep1, rng)
    _set_keep(model.get_layer("adl2"), keep2, rng)
    pruned = prune(model)
    x = rng.standard_normal((3, 8, 6, 2)).astype(np.float32)
    _assert_same_outputs(model, pruned, x)
    n1, n2 = max(int(keep1.sum()), 1), max(int(keep2.sum()), 1)
    assert pruned.get_layer("c1").filters == n1
    assert pruned.get_layer("c2").filters == n2
    assert pruned.get_layer("flat").target_shape == (4, 3 * n2)
    counts = count_parameters(model)
    assert counts["total"] == _cnn_effective(5, 4)
    assert counts["effective"] == _cnn_effective(n1, n2) == pruned.count_params()
    rows = {r["site"]: r for r in surviving_units(model)}
    assert rows["adl1"]["surviving"] == keep1.sum() and rows["adl2"]["surviving"] == keep2.sum()


def test_flatten_with_inferred_size_and_conv_to_dense_sites():
    rng = np.random.default_rng(7)
    model = _cnn(flat_target=(4, -1))
    _randomise_weights(model, rng)
    _set_keep(model.get_layer("adl1"), np.array([1, 1, 0, 0, 1], bool), rng)
    _set_keep(model.get_layer("adl2"), np.array([0, 1, 0, 1], bool), rng)
    pruned = prune(model)
    _assert_same_outputs(model, pruned, rng.standard_normal((2, 8, 6, 2)).astype(np.float32))
    assert pruned.count_params() == _cnn_effective(3, 2)

    # Conv2D -> ADL -> Dense on the channel axis (no Reshape), and Dense -> ADL -> Conv2D.
    inp = keras.Input((5, 5, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c")(inp)
    h = AdaptiveDropout(name="a1")(h)
    h = keras.layers.Dense(4, activation="tanh", name="d")(h)
    h = AdaptiveDropout(name="a2")(h)
    out = keras.layers.Conv2D(2, 1, name="c_out")(h)
    model = keras.Model(inp, out)
    _randomise_weights(model, rng)
    _set_keep(model.get_layer("a1"), np.array([0, 1, 1, 0, 1, 0], bool), rng)
    _set_keep(model.get_layer("a2"), np.zeros(4, bool), rng)  # dead before a Conv2D
    pruned = prune(model)
    _assert_same_outputs(model, pruned, rng.standard_normal((2, 5, 5, 3)).astype(np.float32))
    expected = (9 * 3 * 3 + 3) + (3 * 1 + 1) + (1 * 2 + 2)
    assert count_parameters(model)["effective"] == expected == pruned.count_params()


def test_dense_to_conv_is_not_a_flatten_site():
    """A Reshape that does not merge the last two axes is not looked through."""
    inp = keras.Input((4, 6, 2))
    h = keras.layers.Conv2D(3, 1, name="c1")(inp)
    h = AdaptiveDropout(name="adl")(h)
    out = keras.layers.Dense(2)(keras.layers.Reshape((6, 4 * 3))(h))
    with pytest.raises(ValueError, match="between two Dense or Conv2D layers"):
        prune(keras.Model(inp, out))


@pytest.mark.parametrize("variable_length", [False, True])
def test_encoder_front_end_sites_are_pruned(variable_length):
    rng = np.random.default_rng(5)
    features, filters, dim = 10, 6, 8
    model = ConformerEncoder((16, features), vocab_size=3, num_blocks=1, model_dim=dim,
                             num_heads=2, ffn_dim=12, kernel_size=3, subsampling_filters=filters,
                             adaptive=True, schedule=RetentionTargetSchedule(1.0, -1.0, 10),
                             variable_length=variable_length, adaptive_subsampling=True)
    _randomise_weights(model, rng)
    block = model.get_layer("conformer_block_0")
    for adl in block.adaptive_dropout_sites.values():
        _set_keep(adl, np.ones(adl.retention_raw.shape, bool), rng)
    keep1 = np.array([1, 0, 0, 1, 1, 0], bool)
    keep2 = np.array([0, 1, 1, 1, 0, 1], bool)
    _set_keep(model.get_layer("subsample_adl1"), keep1, rng)
    _set_keep(model.get_layer("subsample_adl2"), keep2, rng)
    pruned = prune(model)
    x = rng.standard_normal((2, 16, features)).astype(np.float32)
    if variable_length:
        x[1, 12:] = 0.0
    _assert_same_outputs(model, pruned, x)
    counts = count_parameters(model)
    # conv1 keeps 3 of 6 filters, conv2 3 of 6 input channels and 4 of 6 filters,
    # the projection 3 frequency positions x 4 channels of rows.
    f4 = 3
    removed = (9 * 6 + 6) - (9 * 3 + 3) + (9 * 6 * 6 + 6) - (9 * 3 * 4 + 4) + (
        f4 * 6 * dim) - (f4 * 4 * dim)
    assert counts["total"] - counts["effective"] == removed
    assert pruned.count_params() == counts["effective"]
    sites = {r["site"] for r in surviving_units(model)}
    assert {"subsample_adl1", "subsample_adl2"} <= sites


def test_encoder_adaptive_subsampling_validated():
    with pytest.raises(TypeError, match="adaptive_subsampling"):
        ConformerEncoder((16, 10), vocab_size=3, adaptive_subsampling="yes")
