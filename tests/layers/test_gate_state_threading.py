"""The recurrent gate's state as explicit tensors: two models in one graph, parallel branches,
save/load in between, the legacy implicit form, errors, validate_args.

Decisions are checked against a NumPy reference of the LSTM recurrence over the blocks
(mask mode: a closed block is the identity exactly, an open one changes its rows).
"""

import os

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock
from keras_efficient.models import gated_blocks_of, gated_resnet


def _x(n=16, h=8, c=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, h, c)).astype(np.float32)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_gate(gate, z, state):
    """One Keras LSTMCell step (gate order i, f, c, o) and the dense head, in float64."""
    kernel, recurrent, bias = (w.numpy().astype(np.float64) for w in gate.cell.weights)
    h, c = state
    i, f, g, o = np.split(z @ kernel + h @ recurrent + bias, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    head_w, head_b = (w.numpy().astype(np.float64) for w in gate.head.weights)
    return _sigmoid(h @ head_w + head_b)[:, 0], (h, c)


def _np_decisions(blocks, block_inputs, threaded=True):
    """Open/closed per block and sample from each block's input, the state threaded or not."""
    gate = blocks[0].recurrent_gate
    zeros = np.zeros((len(block_inputs[0]), gate.hidden_units))
    state, out = (zeros, zeros), []
    for block, x in zip(blocks, block_inputs):
        w, b = (v.numpy().astype(np.float64) for v in block.projection.weights)
        z = x.astype(np.float64).mean(axis=(1, 2)) @ w + b
        prob, new_state = _np_gate(gate, z, state if threaded else (zeros, zeros))
        # No probability so close to the threshold that float32 rounding could flip it.
        assert np.min(np.abs(prob - 0.5)) > 1e-5, prob
        out.append(prob >= 0.5)
        state = new_state
    return out


def _decisive_gate(gate, seed):
    """Gate weights under which the state changes decisions (the default head bias 2.0 would
    keep every gate open whatever the state)."""
    rng = np.random.default_rng(seed)
    kernel, recurrent, bias = gate.cell.weights
    kernel.assign(rng.normal(0.0, 1.0, kernel.shape).astype(np.float32))
    recurrent.assign(rng.normal(0.0, 2.0, recurrent.shape).astype(np.float32))
    bias.assign(np.zeros(bias.shape, np.float32))
    gate.head.kernel.assign(rng.normal(0.0, 5.0, gate.head.kernel.shape).astype(np.float32))
    gate.head.bias.assign([0.0])


def _chain(inp, n, name, hidden=4, seed=0):
    """n mask-mode gated blocks sharing one gate, state threaded explicitly."""
    gate = RecurrentGate(hidden_units=hidden, name=name + "_gate")
    blocks = [GatedResidualBlock(ResidualBlock(4, name="%s_res%d" % (name, i)), gate=gate,
                                 mode="mask", return_state=True, name="%s%d" % (name, i))
              for i in range(n)]
    h, state, ins, outs = inp, None, [], []
    for block in blocks:
        ins.append(h)
        h, *state = block(h) if state is None else block(h, state=state)
        outs.append(h)
    return blocks, ins, outs


def _shrink_later_projections(blocks):
    for block in blocks[1:]:
        block.projection.kernel.assign(block.projection.kernel * 0.1)


def _observed(ins, outs):
    return [np.any(o != i, axis=(1, 2, 3)) for i, o in zip(ins, outs)]


def _branches_model(seed=0):
    """Two gated stacks fed from one input, their layers called interleaved."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 4))
    stem = keras.layers.Conv2D(4, 1, name="stem")(inp)
    gates = [RecurrentGate(hidden_units=4, name="gate_%s" % n) for n in "ab"]
    blocks = {n: [GatedResidualBlock(ResidualBlock(4, name="res_%s%d" % (n, i)), gate=g,
                                     mode="mask", return_state=True, name="%s%d" % (n, i))
                  for i in range(3)] for n, g in zip("ab", gates)}
    ins, outs = {"a": [], "b": []}, {"a": [], "b": []}
    h = {"a": stem, "b": keras.layers.Conv2D(4, 1, name="stem_b")(inp)}
    state = {"a": None, "b": None}
    for i in range(3):
        for n in "ab":  # interleaved: a0, b0, a1, b1, ...
            ins[n].append(h[n])
            out = blocks[n][i](h[n]) if state[n] is None else blocks[n][i](h[n], state=state[n])
            h[n], state[n] = out[0], out[1:]
            outs[n].append(h[n])
    model = keras.Model(inp, ins["a"] + outs["a"] + ins["b"] + outs["b"])
    for k, n in enumerate("ab"):
        _decisive_gate(gates[k], seed=7 + k)
        _shrink_later_projections(blocks[n])
    return model


def _check_branches(model, x):
    values = [v.numpy() for v in model(x, training=False)]
    ins_a, outs_a, ins_b, outs_b = (values[i:i + 3] for i in range(0, 12, 3))
    changed = 0
    for n, ins, outs in (("a", ins_a, outs_a), ("b", ins_b, outs_b)):
        blocks = [model.get_layer("%s%d" % (n, i)) for i in range(3)]
        expected = _np_decisions(blocks, ins)
        unthreaded = _np_decisions(blocks, ins, threaded=False)
        for k, (obs, exp) in enumerate(zip(_observed(ins, outs), expected)):
            np.testing.assert_array_equal(obs, exp, err_msg="%s%d" % (n, k))
        changed += sum(int(np.any(e != u)) for e, u in zip(expected, unthreaded))
    # The check can fail: without the state some decisions would differ.
    assert changed > 0
    return values


def test_chain_threads_the_state_like_the_numpy_recurrence(monkeypatch):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    blocks, ins, outs = _chain(inp, 3, "g")
    model = keras.Model(inp, ins + outs)
    _decisive_gate(blocks[0].gate, seed=7)
    _shrink_later_projections(blocks)
    x = _x(seed=5)

    def observed():
        values = [v.numpy() for v in model(x, training=False)]
        return _observed(values[:3], values[3:]), values[:3]

    got, block_inputs = observed()
    expected = _np_decisions(blocks, block_inputs)
    unthreaded = _np_decisions(blocks, block_inputs, threaded=False)
    assert any(np.any(e != u) for e, u in zip(expected[1:], unthreaded[1:]))
    assert all(0 < e.sum() < len(x) for e in expected[1:]), expected
    for obs, exp in zip(got, expected):
        np.testing.assert_array_equal(obs, exp)
    # Dropping the state (every step from zeros) gives the unthreaded decisions instead.
    original = RecurrentGate.call
    monkeypatch.setattr(RecurrentGate, "call",
                        lambda self, inputs, states=None: original(self, inputs, None))
    dropped, _ = observed()
    assert any(np.any(d != e) for d, e in zip(dropped, expected))


def test_parallel_branches_and_round_trips(tmp_path):
    model = _branches_model()
    x = _x(seed=3)
    values = _check_branches(model, x)
    for fmt in ("keras", "tf"):
        path = os.path.join(str(tmp_path), "m.keras" if fmt == "keras" else "m_tf")
        if fmt == "keras":
            model.save(path)
        else:
            model.save(path, save_format="tf", save_traces=False)
        loaded = keras.models.load_model(path)
        for a, b in zip(values, loaded(x, training=False)):
            np.testing.assert_array_equal(a, b.numpy())
        _check_branches(loaded, x)
        # One gate per branch after reload, shared by its blocks, saved once.
        for n in "ab":
            blocks = [loaded.get_layer("%s%d" % (n, i)) for i in range(3)]
            assert blocks[0].gate is not None
            assert all(b.gate is None and b.recurrent_gate is blocks[0].gate for b in blocks[1:])
        assert len(loaded.weights) == len(model.weights)
        assert len({id(w) for w in loaded.weights}) == len(loaded.weights)


def test_two_gated_models_in_one_graph_equal_each_alone():
    models = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        m = gated_resnet(depth=14, input_shape=(8, 8, 3), base_filters=4, mode="mask",
                         gate_bias=0.0, name="net%d" % seed)
        _decisive_gate(gated_blocks_of(m)[0].gate, seed=11 + seed)
        models.append(m)
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 3)).astype(np.float32)
    alone = [m(x, training=False).numpy() for m in models]
    inp = keras.Input((8, 8, 3))
    both = keras.Model(inp, [m(inp) for m in models])
    for a, b in zip(alone, both(x, training=False)):
        np.testing.assert_array_equal(a, b.numpy())
    # In one tf.function (graph kernels may round differently from eager ones; a state
    # leaking between the models would change decisions, i.e. whole blocks).
    together = tf.function(lambda t: [models[1](t), models[0](t)])(tf.constant(x))
    np.testing.assert_allclose(together[0].numpy(), alone[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(together[1].numpy(), alone[0], rtol=1e-5, atol=1e-5)
    # The gates really decide (the comparison could fail): some block of each model has
    # both open and closed samples.
    for m in models:
        blocks = gated_blocks_of(m)
        probe = keras.Model(m.input, [b.input for b in blocks] + [b.output[0] for b in blocks])
        values = [v.numpy() for v in probe(x, training=False)]
        n = len(blocks)
        observed = _observed(values[:n], values[n:])
        assert any(0 < o.sum() < len(x) for o in observed)
        for obs, exp in zip(observed, _np_decisions(blocks, values[:n])):
            np.testing.assert_array_equal(obs, exp)


def _legacy_model():
    """The implicit form of earlier releases: gate=None blocks on a single tensor."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    gate = RecurrentGate(hidden_units=4)
    first = GatedResidualBlock(ResidualBlock(4), gate=gate, mode="mask", name="l0")
    rest = [GatedResidualBlock(ResidualBlock(4), mode="mask", name="l%d" % i) for i in (1, 2)]
    h0 = first(inp)
    h1 = rest[0](keras.layers.Activation("linear", name="between")(h0))
    h2 = rest[1](h1)
    model = keras.Model(inp, [inp, h0, h0, h1, h1, h2])
    _decisive_gate(gate, seed=7)
    _shrink_later_projections([first] + rest)
    return model


def test_legacy_implicit_form_loads_runs_and_raises_instead_of_restarting(tmp_path):
    model = _legacy_model()
    blocks = [model.get_layer("l%d" % i) for i in range(3)]
    assert [b.get_config()["gate"] is None for b in blocks] == [False, True, True]
    assert all(b.recurrent_gate is blocks[0].gate for b in blocks)
    x = _x(seed=5)

    def check(m):
        values = [v.numpy() for v in m(x, training=False)]
        ins, outs = values[0::2], values[1::2]
        bl = [m.get_layer("l%d" % i) for i in range(3)]
        for obs, exp in zip(_observed(ins, outs), _np_decisions(bl, ins)):
            np.testing.assert_array_equal(obs, exp)
        return values

    values = check(model)
    graph_values = tf.function(lambda t: model(t, training=False))(tf.constant(x))
    for a, b in zip(values, graph_values):
        np.testing.assert_array_equal(a, b.numpy())
    path = os.path.join(str(tmp_path), "legacy.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(values, check(loaded)):
        np.testing.assert_array_equal(a, b)
    # A legacy block run in a graph of its own has no state: it raises, never restarts.
    second = loaded.get_layer("l1")
    with pytest.raises(ValueError, match="no usable recurrent state"):
        tf.function(lambda t: second(t, training=False))(tf.constant(x))
    # Eager: the state of the previous block in the same (eager) pass is used.
    y0 = loaded.get_layer("l0")(x, training=False)
    np.testing.assert_array_equal(second(y0, training=False).numpy(), values[3])


def test_errors_are_clear():
    gate = RecurrentGate(hidden_units=4)
    owner = GatedResidualBlock(ResidualBlock(4), gate=gate, return_state=True)
    shared = GatedResidualBlock(ResidualBlock(4), gate=gate, return_state=True)
    assert owner.gate is gate and shared.gate is None and shared.recurrent_gate is gate
    assert shared.get_config()["gate"] == gate.name
    x = _x(n=4)
    y, h, c = owner(x)
    with pytest.raises(ValueError, match="needs the recurrent state"):
        shared(y)
    with pytest.raises(ValueError, match=r"state=\[h, c\]"):
        shared(y, state=[h])
    with pytest.raises(ValueError, match="shape"):
        shared(y, state=[h, tf.zeros([4, 3])])
    # Rebuilt from config, a sharing block knows only the gate's name until it is called
    # in a functional model on the state of a block that uses that gate.
    orphan = GatedResidualBlock.from_config(shared.get_config())
    assert orphan.recurrent_gate is None
    with pytest.raises(ValueError, match="not linked"):
        orphan(y, state=[h, c])
    inp = keras.Input((8, 8, 4))
    other = GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(name="other_gate"),
                               return_state=True)
    _, oh, oc = other(inp)
    with pytest.raises(ValueError, match="receives the state of the gate"):
        orphan(inp, state=[oh, oc])
    legacy = GatedResidualBlock(ResidualBlock(4))
    with pytest.raises(ValueError, match="no gate of its own"):
        legacy(x)
    with pytest.raises(TypeError, match="return_state"):
        GatedResidualBlock(ResidualBlock(4), return_state=1)
    with pytest.raises(TypeError, match="validate_args"):
        RecurrentGate(validate_args="yes")


def test_validate_args():
    x = _x(n=4)
    quiet = GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(4), return_state=True)
    strict = GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(4, validate_args=True),
                                return_state=True, validate_args=True)
    assert strict.get_config()["validate_args"] and not quiet.get_config()["validate_args"]
    for layer in (quiet, strict):
        _, h, c = layer(x)
    bad_state = [h.numpy(), c.numpy()]
    bad_state[1][2, 1] = np.nan
    # The NaN state passes unchecked by default and is rejected with validate_args.
    quiet(x, state=bad_state)
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        strict(x, state=bad_state)
    with pytest.raises(ValueError, match="empty batch"):
        strict(np.zeros([0, 8, 8, 4], np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        tf.function(lambda t: strict(t), input_signature=[tf.TensorSpec([None, 8, 8, 4])])(
            tf.zeros([0, 8, 8, 4]))
    # The pooled-input finiteness check stays on without validate_args.
    bad = x.copy()
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        quiet(bad)


def test_clone_model_relinks_the_shared_gates():
    model = _branches_model()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for n in "ab":
        blocks = [clone.get_layer("%s%d" % (n, i)) for i in range(3)]
        assert blocks[0].gate is not model.get_layer(n + "0").gate
        assert all(b.recurrent_gate is blocks[0].gate for b in blocks)
    x = _x(seed=4)
    for a, b in zip(model(x, training=False), clone(x, training=False)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("form", ["explicit", "legacy"])
def test_mirrored_replicas_equal_single_device(mirrored_strategy, form):
    # Two replicas each run half of the batch; inference is per sample, so the outputs
    # equal the single-device ones (a state crossing replicas would change decisions).
    build = _branches_model if form == "explicit" else _legacy_model
    single = build()
    x = _x(n=16, seed=9)
    expected = single.predict(x, batch_size=16, verbose=0)
    with mirrored_strategy.scope():
        replicated = build()
    replicated.set_weights(single.get_weights())
    got = replicated.predict(x, batch_size=16, verbose=0)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
