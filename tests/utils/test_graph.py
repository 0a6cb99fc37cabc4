"""FunctionalGraph: the graph of a functional model read from its public config."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.utils.graph import FunctionalGraph, TensorRef, is_functional


def _names(layers):
    return [layer.name for layer in layers]


def _replayed_model(model, graph, layer_fn=None):
    """A new functional model: fresh inputs, every call replayed."""
    new_inputs = [keras.Input(shape=x.shape[1:], dtype=x.dtype) for x in model.inputs]
    tensors = graph.replay(dict(zip(graph.input_refs, new_inputs)), layer_fn)
    outputs = [tensors[ref] for ref in graph.output_refs]
    return keras.Model(new_inputs, outputs)


def _assert_same(model, rebuilt, inputs):
    expected = [np.asarray(y) for y in tf.nest.flatten(model(inputs, training=False))]
    actual = [np.asarray(y) for y in tf.nest.flatten(rebuilt(tf.nest.flatten(inputs),
                                                             training=False))]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def _branches():
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, name="d1")(inp)
    a = keras.layers.Dense(3, activation="relu", name="a")(h)
    b = keras.layers.Dense(3, activation="tanh", name="b")(h)
    c = keras.layers.Concatenate(name="cat")([a, b])
    d = keras.layers.Dropout(0.5, name="drop")(c)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(d), name="branches")


def test_branches_producers_consumers_and_replay():
    model = _branches()
    graph = FunctionalGraph(model)
    assert _names(graph.layers) == _names(model.layers)
    assert graph.input_refs == [TensorRef("x", 0, 0)]
    assert graph.output_refs == [TensorRef("out", 0, 0)]
    assert _names(graph.producers("cat")) == ["a", "b"]
    assert _names(graph.producers(model.get_layer("d1"))) == ["x"]
    assert sorted(call.layer.name for call in graph.consumers("d1")) == ["a", "b"]
    assert [call.layer.name for call in graph.consumers("out")] == []
    assert graph.is_output("out") and not graph.is_output("cat")
    assert [graph.call_count(name) for name in ("x", "d1", "cat", "out")] == [0, 1, 1, 1]
    (call,) = graph.calls("cat")
    assert call.inputs == [TensorRef("a", 0, 0), TensorRef("b", 0, 0)]
    assert _names(graph.input_layers) == ["x"]
    assert [c.layer.name for c in graph.downstream([TensorRef("a", 0, 0)])] == [
        "cat", "drop", "out"]

    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    shared = _replayed_model(model, graph)
    assert all(any(layer is old for old in model.layers) for layer in shared.layers
               if not isinstance(layer, keras.layers.InputLayer))
    _assert_same(model, shared, x)

    # Fresh copies of every layer with their weights, and the Dropout removed.
    copies = []

    def copy(layer):
        if isinstance(layer, keras.layers.Dropout):
            return None
        new = layer.__class__.from_config(layer.get_config())
        copies.append((new, layer))
        return new
    rebuilt = _replayed_model(model, graph, copy)
    for new, old in copies:
        new.set_weights(old.get_weights())
    assert "drop" not in _names(rebuilt.layers)
    assert not set(map(id, rebuilt.layers)) & set(map(id, model.layers))
    _assert_same(model, rebuilt, x)


def test_shared_layer_called_twice():
    inp = keras.Input((3,), name="x")
    shared = keras.layers.Dense(3, activation="tanh", name="shared")
    h1 = shared(inp)
    h2 = shared(keras.layers.Dense(3, name="mid")(h1))
    model = keras.Model(inp, keras.layers.Add(name="add")([h1, h2]))
    graph = FunctionalGraph(model)
    assert graph.call_count(shared) == 2
    first, second = graph.calls(shared)
    assert (first.index, second.index) == (0, 1)
    assert first.refs == [TensorRef("x", 0, 0)] and second.refs == [TensorRef("mid", 0, 0)]
    assert graph.calls("add")[0].refs == [TensorRef("shared", 0, 0), TensorRef("shared", 1, 0)]
    assert sorted(c.layer.name for c in graph.consumers(shared)) == ["add", "add", "mid"]
    created = []

    def copy(layer):
        new = layer.__class__.from_config(layer.get_config())
        created.append((new, layer))
        return new
    rebuilt = _replayed_model(model, graph, copy)
    # One new layer per layer: the copy of `shared` is itself shared by both calls.
    assert sorted(new.name for new, _ in created) == ["add", "mid", "shared"]
    for new, old in created:
        new.set_weights(old.get_weights())
    _assert_same(model, rebuilt, np.random.default_rng(1).standard_normal((4, 3)))


def test_layer_used_in_another_model_counts_only_this_models_calls():
    inp = keras.Input((3,))
    dense = keras.layers.Dense(2, name="dense_elsewhere")
    model = keras.Model(inp, dense(inp))
    keras.Model(inp, dense(keras.layers.Dense(3)(inp)))  # a second call, in another model
    assert len(dense.inbound_nodes) == 2
    assert FunctionalGraph(model).call_count(dense) == 1


def test_nested_models_and_their_call_numbering():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, activation="relu")(inner_in),
                        name="inner")
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh")],
                           name="seq")
    deferred = keras.Sequential([keras.layers.Dense(4)], name="deferred")  # no Input

    class Sub(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    sub = Sub(name="sub")
    inp = keras.Input((4,), name="x")
    h = deferred(seq(inner(sub(inp))))
    model = keras.Model(inp, deferred(inner(h)))
    graph = FunctionalGraph(model)
    assert [graph.call_count(m) for m in (sub, inner, seq, deferred)] == [1, 2, 1, 2]
    # The config numbers the calls of functional models from 1; the graph from 0.
    assert graph.calls(deferred)[0].refs == [TensorRef("seq", 0, 0)]
    assert graph.calls(inner)[1].refs == [TensorRef("deferred", 0, 0)]
    assert graph.output_refs == [TensorRef("deferred", 1, 0)]
    assert _names(graph.producers("seq")) == ["inner"]
    assert is_functional(inner) and is_functional(seq) and is_functional(deferred)
    assert not is_functional(sub)
    _assert_same(model, _replayed_model(model, graph),
                 np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32))

    # A Sequential model is read like a functional one.
    seq_graph = FunctionalGraph(seq)
    (dense,) = seq.layers
    assert _names(seq_graph.producers(dense)) == [seq_graph.input_refs[0].layer]
    assert seq_graph.output_refs == [TensorRef(dense.name, 0, 0)]


def test_tensor_arguments_dicts_and_multi_output_ops():
    query = keras.Input((5, 4), name="query")
    value = keras.Input((7, 4), name="value")
    attention = keras.layers.MultiHeadAttention(2, 3, name="mha")
    att = attention(query, value)  # `value` is stored among the call's kwargs
    first, second = tf.split(att, 2, axis=-1)  # an op layer with two outputs
    model = keras.Model({"q": query, "v": value},
                        {"sum": keras.layers.Add(name="sum")([first, second]),
                         "second": keras.layers.Dense(1, name="head")(second)})
    graph = FunctionalGraph(model)
    assert [ref.layer for ref in graph.input_refs] == ["query", "value"]  # model.inputs order
    (call,) = graph.calls(attention)
    assert call.refs == [TensorRef("query", 0, 0), TensorRef("value", 0, 0)]
    assert isinstance(call.kwargs["value"], TensorRef)
    split_layer = graph.producers("head")[0]
    assert graph.calls("head")[0].refs == [TensorRef(split_layer.name, 0, 1)]
    rng = np.random.default_rng(3)
    x = {"q": rng.standard_normal((2, 5, 4)).astype(np.float32),
         "v": rng.standard_normal((2, 7, 4)).astype(np.float32)}
    new_inputs = [keras.Input(shape=t.shape[1:]) for t in model.inputs]
    tensors = graph.replay(dict(zip(graph.input_refs, new_inputs)))
    rebuilt = keras.Model(tf.nest.pack_sequence_as(model.input, new_inputs),
                          tf.nest.pack_sequence_as(model.output,
                                                   [tensors[r] for r in graph.output_refs]))
    expected, actual = model(x), rebuilt(x)
    assert sorted(actual) == ["second", "sum"]
    for key in expected:
        np.testing.assert_allclose(actual[key].numpy(), expected[key].numpy(), rtol=1e-6,
                                   atol=1e-6)


def test_replay_from_an_intermediate_tensor_and_missing_tensors():
    model = _branches()
    graph = FunctionalGraph(model)
    start = keras.Input((3,))
    # Only the calls downstream of `a` are replayed; `cat` also needs `b`.
    with pytest.raises(ValueError, match="`cat`.*neither given nor computed"):
        graph.replay({TensorRef("a", 0, 0): start})
    tensors = graph.replay({TensorRef("cat", 0, 0): keras.Input((6,))})
    assert set(tensors) == {TensorRef("cat", 0, 0), TensorRef("drop", 0, 0),
                            TensorRef("out", 0, 0)}


def test_rejects_non_functional_models_and_foreign_layers():
    class Net(keras.Model):
        def call(self, x):
            return x

    for bad in (Net(), keras.Sequential([keras.layers.Dense(2)]), keras.layers.Dense(2),
                None, "model"):
        assert not is_functional(bad)
        with pytest.raises(ValueError, match="functional"):
            FunctionalGraph(bad)
    graph = FunctionalGraph(_branches())
    with pytest.raises(ValueError, match="not part of model"):
        graph.calls(keras.layers.Dense(2, name="d1"))  # same name, another layer
    with pytest.raises(ValueError, match="not part of model"):
        graph.producers("nope")


# ----------------------------------------------------------------------------- users


def test_prune_and_split_reject_layers_called_several_times():
    from keras_efficient.layers import AdaptiveDropout
    from keras_efficient.models.rebel import split_functional_model
    from keras_efficient.pruning import prune

    # An AdaptiveDropout called twice (several inbound nodes).
    inp = keras.Input((4,))
    h = keras.layers.Dense(6)(inp)
    adl = AdaptiveDropout(name="adl")
    out = keras.layers.Add()([keras.layers.Dense(2)(adl(h)), keras.layers.Dense(2)(adl(h))])
    with pytest.raises(ValueError, match="`adl`: it has 2 inbound nodes.*used exactly once"):
        prune(keras.Model(inp, out))

    # A nested model holding a site, used twice.
    inner_in = keras.Input((4,))
    inner_h = AdaptiveDropout()(keras.layers.Dense(5)(inner_in))
    inner = keras.Model(inner_in, keras.layers.Dense(4)(inner_h), name="twice")
    inp = keras.Input((4,))
    with pytest.raises(ValueError, match="`twice`: it is used 2 times"):
        prune(keras.Model(inp, inner(inner(inp))))

    # A split after a shared layer.
    inp = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(inp, keras.layers.Dense(2)(shared(shared(inp))))
    with pytest.raises(ValueError, match="split_layer"):
        split_functional_model(model, "shared")


def test_layer_without_get_config_is_reported():
    class Scale:  # an argument Keras cannot serialize, so no automatic config
        value = 2.0

    class NoConfig(keras.layers.Layer):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def call(self, x):
            return self.scale.value * x

    inp = keras.Input((2,))
    model = keras.Model(inp, NoConfig(Scale())(inp), name="no_config")
    with pytest.raises(ValueError, match="`no_config`.*get_config"):
        FunctionalGraph(model)


def test_split_functional_model_on_branches():
    from keras_efficient.models.rebel import split_functional_model

    model = _branches()
    head, tail = split_functional_model(model, "cat")
    assert tail.input.name == "bottleneck"
    assert {layer.name for layer in tail.layers} == {"bottleneck", "drop", "out"}
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(tail(head(x)).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    # `b` is read by `cat`, after the split at `a`.
    with pytest.raises(ValueError, match="`cat` after the split reads a tensor from before `a`"):
        split_functional_model(model, "a")

    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="h")(inp)
    two = keras.Model(inp, [keras.layers.Dense(2, name="y1")(h), keras.layers.Dense(2)(inp)])
    with pytest.raises(ValueError, match="outputs do not depend on `h` only"):
        split_functional_model(two, "h")
