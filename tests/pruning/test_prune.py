import os

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout, ConformerBlock
from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import (
    PrunedConformerBlock,
    count_parameters,
    prune,
    surviving_units,
)
from keras_efficient.schedules import RetentionTargetSchedule


def _set_keep(adl, keep, rng):
    """Sets beta' so that exactly the units in boolean `keep` have beta >= threshold."""
    thr = adl.effective_threshold
    beta = np.where(keep, thr + rng.uniform(0.05, 2.0, keep.shape),
                    thr - rng.uniform(0.05, 2.0, keep.shape))
    scale = np.sqrt(adl.gamma / adl.alpha)
    adl.retention_raw.assign(((beta - float(adl.current_target)) / scale).astype(np.float32))


def _randomise_weights(model, rng):
    for w in model.weights:
        if "retention_raw" in w.name or w.dtype == tf.int64:
            continue
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((0.4 * rng.standard_normal(w.shape)).astype(np.float32))


def _assert_same_outputs(model, pruned, x):
    expected = model(x, training=False).numpy()
    actual = pruned(x, training=False).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ----------------------------------------------------------------------------- MLP


def _mlp():
    inp = keras.Input((6,))
    h = keras.layers.Dense(10, activation="relu", name="d1")(inp)
    h = AdaptiveDropout(name="adl1")(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Dense(8, activation="tanh", name="d2")(h)
    h = AdaptiveDropout(name="adl2")(h)
    h = keras.layers.Dense(4, activation="sigmoid", name="d3")(h)
    h = keras.layers.Activation("relu", name="a3")(h)
    h = AdaptiveDropout(name="adl3")(h)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inp, out)


def test_mlp_prune_equal_outputs_and_exact_counts():
    rng = np.random.default_rng(0)
    model = _mlp()
    _randomise_weights(model, rng)
    keep1 = rng.uniform(size=10) < 0.5
    keep1[0] = True
    keep2 = np.zeros(8, bool)  # second site fully pruned: d3 becomes a constant
    keep3 = np.array([True, False, True, False])
    for name, keep in (("adl1", keep1), ("adl2", keep2), ("adl3", keep3)):
        _set_keep(model.get_layer(name), keep, rng)
    pruned = prune(model)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    _assert_same_outputs(model, pruned, x)
    assert not any(isinstance(layer, AdaptiveDropout) for layer in pruned.layers)
    n1, n3 = int(keep1.sum()), int(keep3.sum())
    # Independent closed form: d1 keeps n1 columns; d2 loses every column (no survivor
    # after it) and disappears; d3 loses every input row and becomes its bias on the n3
    # columns that survive adl3; `out` keeps n3 rows.
    expected = (6 * n1 + n1) + 0 + n3 + (n3 * 3 + 3)
    counts = count_parameters(model)
    assert counts["total"] == (6 * 10 + 10) + (10 * 8 + 8) + (8 * 4 + 4) + (4 * 3 + 3)
    assert counts["effective"] == expected == pruned.count_params()
    assert counts["adaptive_dropout"] == (10 + 1) + (8 + 1) + (4 + 1)


# ----------------------------------------------------------------------------- Conformer

D, H, DK, F, K, T = 8, 2, 4, 12, 3, 9


def _block_total():
    ffn = 2 * D + D * F + F + F * D + D
    attention = 2 * D + 3 * (D * H * DK + H * DK) + H * DK * D + D
    conv = 2 * D + D * 2 * D + 2 * D + K * D + 4 * D + D * D + D
    return 2 * ffn + attention + conv + 2 * D


def _block_removed(keep):
    """Table 1 accounting written from the paper's Sec. 3: parameters attached to pruned
    units, plus parameters left without effect (the LayerNorm of an emptied module, the
    query/key units of a head without values)."""
    removed = 0
    for site in ("ffn1", "ffn2"):
        removed += (~keep[site]).sum() * (D + 1 + D)
        removed += 2 * D if not keep[site].any() else 0
    q, v = keep["attention_query"], keep["attention_value"]
    removed += (~q).sum() * 2 * (D + 1) + (~v).sum() * (2 * D + 1)
    for h in range(H):
        if not v[h].any():
            removed += q[h].sum() * 2 * (D + 1)
    removed += 2 * D if not v.any() else 0
    removed += (~keep["conv"]).sum() * (2 * (D + 1) + K + 4 + D)
    removed += 2 * D if not keep["conv"].any() else 0
    return int(removed)


def _conformer_model():
    inp = keras.Input((T, 6))
    x = keras.layers.Dense(D, name="proj")(inp)
    for i in range(3):
        x = ConformerBlock(D, H, F, K, dropout_rate=0.1, name="block{}".format(i))(x)
    return keras.Model(inp, keras.layers.Dense(5, name="head")(x))


def _patterns(rng):
    def rand(shape):
        keep = rng.uniform(size=shape) < 0.6
        keep.flat[0] = True
        keep.flat[-1] = False
        return keep
    sites = ("ffn1", "attention_query", "attention_value", "conv", "ffn2")
    shapes = {"ffn1": (F,), "ffn2": (F,), "conv": (D,), "attention_query": (H, DK),
              "attention_value": (H, DK)}
    random = {s: rand(shapes[s]) for s in sites}
    special = {s: rand(shapes[s]) for s in sites}
    special["ffn1"][:] = False                  # an FFN pruned entirely
    special["attention_query"][0] = False       # head 0: every query unit pruned
    special["attention_value"][0] = [True, False, True, True]
    special["attention_value"][1] = False       # head 1: every value unit pruned
    special["attention_query"][1] = [True, True, False, True]
    empty = {s: rand(shapes[s]) for s in sites}
    empty["conv"][:] = False
    empty["attention_value"][:] = False
    empty["ffn2"][:] = False
    return [random, special, empty]


def test_conformer_prune_equal_outputs_and_exact_counts():
    rng = np.random.default_rng(1)
    model = _conformer_model()
    _randomise_weights(model, rng)
    patterns = _patterns(rng)
    for i, keep in enumerate(patterns):
        block = model.get_layer("block{}".format(i))
        for site, adl in block.adaptive_dropout_sites.items():
            _set_keep(adl, keep[site], rng)
    pruned = prune(model)
    x = rng.standard_normal((4, T, 6)).astype(np.float32)
    _assert_same_outputs(model, pruned, x)
    assert all(isinstance(pruned.get_layer("block{}".format(i)), PrunedConformerBlock)
               for i in range(3))
    assert not [w for w in pruned.weights if "retention" in w.name or "step" in w.name]

    dense = (6 * D + D) + (D * 5 + 5)
    counts = count_parameters(model)
    assert counts["total"] == dense + 3 * _block_total()
    expected = counts["total"] - sum(_block_removed(k) for k in patterns)
    assert counts["effective"] == expected == pruned.count_params()

    rows = {r["site"]: r for r in surviving_units(model)}
    assert len(rows) == 15
    for i, keep in enumerate(patterns):
        for site, mask in keep.items():
            row = rows["block{}/{}".format(i, site)]
            assert (row["total"], row["surviving"]) == (mask.size, int(mask.sum()))
            assert row["fraction"] == pytest.approx(mask.mean())


def test_pruned_encoder_saves_and_converts_to_tflite(tmp_path):
    rng = np.random.default_rng(2)
    model = ConformerEncoder((16, 6), vocab_size=4, num_blocks=1, model_dim=D, num_heads=H,
                             ffn_dim=F, kernel_size=K, adaptive=True,
                             schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    _randomise_weights(model, rng)
    for adl in model.get_layer("conformer_block_0").adaptive_dropout_sites.values():
        _set_keep(adl, rng.uniform(size=adl.retention_raw.shape) < 0.5, rng)
    pruned = prune(model)
    x = rng.standard_normal((2, 16, 6)).astype(np.float32)
    _assert_same_outputs(model, pruned, x)
    assert pruned.count_params() == count_parameters(model)["effective"] < model.count_params()

    path = os.path.join(str(tmp_path), "pruned")
    pruned.save(path, save_format="tf", save_traces=False)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), pruned(x).numpy(), rtol=1e-6, atol=1e-6)

    converter = tf.lite.TFLiteConverter.from_keras_model(pruned)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite, pruned(x).numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- errors


def test_adl_not_between_dense_layers_is_rejected():
    inp = keras.Input((4,))
    h = AdaptiveDropout(name="adl")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="between two Dense or Conv2D layers"):
        prune(model)


def test_dense_shared_elsewhere_is_rejected():
    inp = keras.Input((4,))
    h = keras.layers.Dense(6, name="d1")(inp)
    a = AdaptiveDropout(name="adl")(h)
    out = keras.layers.Concatenate()([keras.layers.Dense(2)(a), h])
    with pytest.raises(ValueError, match="used exactly once"):
        prune(keras.Model(inp, out))


def test_subclassed_model_is_rejected():
    class Net(keras.Model):
        def call(self, x):
            return x
    with pytest.raises(ValueError, match="functional"):
        prune(Net())


# ----------------------------------------------------------------------------- nested models


def test_nested_functional_models_are_pruned_recursively():
    rng = np.random.default_rng(3)
    inner_in = keras.Input((5,))
    h = keras.layers.Dense(12, activation="relu", name="inner_d1")(inner_in)
    h = AdaptiveDropout(name="inner_adl")(h)
    inner = keras.Model(inner_in, keras.layers.Dense(7, name="inner_d2")(h), name="inner")
    seq = keras.Sequential([keras.Input((7,)), keras.layers.Dense(9, activation="tanh"),
                            AdaptiveDropout(name="seq_adl"), keras.layers.Dense(4)], name="seq")
    inp = keras.Input((5,))
    out = keras.layers.Dense(2, name="head")(seq(inner(inp)))
    model = keras.Model(inp, out)
    _randomise_weights(model, rng)
    keep_inner = rng.uniform(size=12) < 0.5
    keep_seq = np.zeros(9, bool)
    keep_seq[[1, 4]] = True
    _set_keep(inner.get_layer("inner_adl"), keep_inner, rng)
    _set_keep(seq.get_layer("seq_adl"), keep_seq, rng)
    pruned = prune(model)
    _assert_same_outputs(model, pruned, rng.standard_normal((8, 5)).astype(np.float32))
    n1, n2 = int(keep_inner.sum()), 2
    # inner: 5 -> n1 -> 7; seq: 7 -> n2 -> 4; head 4 -> 2 (each Dense with its bias).
    expected = (5 * n1 + n1) + (n1 * 7 + 7) + (7 * n2 + n2) + (n2 * 4 + 4) + (4 * 2 + 2)
    assert count_parameters(model)["effective"] == expected
    assert pruned.count_params() == expected
    assert not any(isinstance(layer, AdaptiveDropout)
                   for layer in pruned._flatten_layers(include_self=False))


def test_nested_subclassed_model_with_sites_is_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1, self.adl, self.d2 = (keras.layers.Dense(6), AdaptiveDropout(),
                                          keras.layers.Dense(2))

        def call(self, x):
            return self.d2(self.adl(self.d1(x)))
    inp = keras.Input((4,))
    with pytest.raises(ValueError, match="subclassed"):
        prune(keras.Model(inp, Net()(inp)))
