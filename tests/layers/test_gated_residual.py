"""SLU gates: forced decisions, gather == mask, analytic FLOPs, gradients to the gate."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock
from keras_efficient.testing import run_layer_test


def _x(n=6, h=8, c=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, h, c)).astype(np.float32)


def _pair(mode, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    block = ResidualBlock(4, name="inner")
    layer = GatedResidualBlock(block, gate=RecurrentGate(), mode=mode, flops_weight=0.1, **kwargs)
    layer.build((None, 8, 8, 4))
    return layer


@pytest.mark.parametrize("mode", ["gather", "mask"])
def test_forced_open_is_plain_block_and_closed_is_identity(mode):
    layer = _pair(mode)
    x = _x()
    plain = layer.block(x, training=False).numpy()
    np.testing.assert_allclose(layer(x, decisions=np.ones(6)).numpy(), plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer(x, decisions=np.zeros(6)).numpy(), x)
    mixed = layer(x, decisions=np.array([1, 0, 1, 0, 0, 1])).numpy()
    np.testing.assert_allclose(mixed[[0, 2, 5]], plain[[0, 2, 5]], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mixed[[1, 3, 4]], x[[1, 3, 4]])


def _grads(layer, x, decisions, upstream):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=False, decisions=decisions)
        loss = tf.reduce_sum(y * upstream) + tf.add_n(layer.losses)
    grads = tape.gradient(loss, [xt] + layer.trainable_weights)
    return y.numpy(), [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


def _grads_graph(layer, xt, decisions, upstream):
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=False, decisions=decisions)
        loss = tf.reduce_sum(y * upstream) + tf.add_n(layer.losses)
    return tape.gradient(loss, [xt] + layer.trainable_weights)


def test_gather_and_mask_identical_outputs_and_gradients():
    gather, mask = _pair("gather"), _pair("mask")
    mask.set_weights(gather.get_weights())
    x = _x(seed=1)
    up = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    decisions = np.array([1, 0, 0, 1, 1, 0], np.float32)
    yg, gg = _grads(gather, x, decisions, up)
    ym, gm = _grads(mask, x, decisions, up)
    np.testing.assert_allclose(yg, ym, rtol=1e-5, atol=1e-6)
    assert len(gg) == len(gm)
    for a, b, name in zip(gg, gm, ["x"] + [w.name for w in gather.trainable_weights]):
        assert a is not None and b is not None, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def _bn_state(block):
    return [w.numpy().copy() for w in block.non_trainable_weights]


@pytest.mark.parametrize("graph", [False, True])
def test_gather_training_equals_block_on_open_rows(graph):
    # Training mode: the open rows must be exactly the block run on the open sub-batch
    # (BatchNormalization statistics over the open samples only), closed rows the
    # identity; the gradient of x must be the upstream gradient on closed rows and, on
    # open rows, the block's input gradient plus the straight-through gate term
    # d/dx Σ_open ⟨up_i, F(x_i) − x_i⟩·g_i(x); BN moving statistics as from the sub-batch.
    layer = _pair("gather")
    reference = ResidualBlock(4, name="reference")
    reference.build((None, 8, 8, 4))
    reference.set_weights(layer.block.get_weights())
    x = _x(n=7, seed=6)
    up = np.random.default_rng(7).normal(size=x.shape).astype(np.float32)
    decisions = np.array([0, 1, 1, 0, 1, 0, 1], np.float32)
    open_rows, closed_rows = np.flatnonzero(decisions), np.flatnonzero(decisions == 0)

    def gated(xt):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True, decisions=decisions)
            loss = tf.reduce_sum(y * up)
        return y, tape.gradient(loss, [xt] + layer.block.trainable_weights)

    if graph:
        gated = tf.function(gated)
    y, grads = gated(tf.constant(x))
    xo = tf.constant(x[open_rows])
    with tf.GradientTape() as tape:
        tape.watch(xo)
        yo = reference(xo, training=True)
        loss = tf.reduce_sum(yo * up[open_rows])
    ref_grads = tape.gradient(loss, [xo] + reference.trainable_weights)
    weight = np.zeros(len(x), np.float32)
    weight[open_rows] = np.sum(up[open_rows] * (yo.numpy() - x[open_rows]), axis=(1, 2, 3))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        prob, _ = layer.gate(layer.projection(tf.reduce_mean(xt, axis=[1, 2])))
        gate_term = tape.gradient(tf.reduce_sum(weight * prob), xt).numpy()
    np.testing.assert_allclose(y.numpy()[open_rows], yo.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy()[closed_rows], x[closed_rows])
    gx = grads[0].numpy()
    np.testing.assert_array_equal(gx[closed_rows], up[closed_rows])
    np.testing.assert_allclose(gx[open_rows], ref_grads[0].numpy() + gate_term[open_rows],
                               rtol=1e-4, atol=1e-5)
    for a, b in zip(grads[1:], ref_grads[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(_bn_state(layer.block), _bn_state(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gather_all_closed_in_training_leaves_block_untouched():
    # The block must not run on an empty batch (BatchNormalization would write NaN
    # into its moving statistics); the output and the gradient of x are the identity.
    layer = _pair("gather")
    before = _bn_state(layer.block)
    x = _x(seed=8)
    up = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)

    @tf.function
    def step(xt):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True, decisions=tf.zeros([6]))
            loss = tf.reduce_sum(y * up)
        return y, tape.gradient(loss, xt)

    y, gx = step(tf.constant(x))
    np.testing.assert_array_equal(y.numpy(), x)
    np.testing.assert_array_equal(gx.numpy(), up)
    for a, b in zip(_bn_state(layer.block), before):
        np.testing.assert_array_equal(a, b)
    assert float(layer.open_fraction.numpy()) == 0.0


@pytest.mark.parametrize("mode", ["gather", "mask"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(mode, bad):
    layer = _pair(mode)
    x = _x()
    x[2, 3, 5, 1] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        layer(x, decisions=np.ones(6))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        tf.function(lambda v: layer(v, training=True))(tf.constant(x))


@pytest.mark.parametrize("mode", ["gather", "mask"])
@pytest.mark.parametrize("graph", ["eager", "function"])
def test_gradients_reach_gate_parameters(mode, graph):
    layer = _pair(mode)
    x = _x(seed=3)
    up = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    decisions = np.array([1, 0, 1, 0, 1, 1], np.float32)
    if graph != "eager":
        fn = tf.function(lambda xt: _grads_graph(layer, xt, decisions, up))
        grads = [None if g is None else g.numpy() for g in fn(tf.constant(x))]
    else:
        _, grads = _grads(layer, x, decisions, up)
    by_var = {id(w): g for w, g in zip(layer.trainable_weights, grads[1:])}
    gate = layer.gate
    # The first block's LSTM state is zero, so only its recurrent kernel gets no gradient.
    for w in (gate.cell.kernel, gate.cell.bias, gate.head.kernel, gate.head.bias,
              layer.projection.kernel, layer.projection.bias):
        g = by_var[id(w)]
        assert g is not None and np.all(np.isfinite(g)) and np.any(g != 0), w.name
    # Independent straight-through reference for the gate's output bias:
    # dL/dg_i = d_i·<F(x_i) − x_i, up_i> + α·fraction/N, dg_i/db = g_i(1 − g_i).
    prob = gate(layer.projection(x.mean(axis=(1, 2))))[0].numpy().astype(np.float64)
    f = layer.block(x, training=False).numpy().astype(np.float64)
    dl_dg = decisions * np.sum((f - x) * up, axis=(1, 2, 3)) + 0.1 * 1.0 / len(x)
    np.testing.assert_allclose(by_var[id(gate.head.bias)], [np.sum(dl_dg * prob * (1 - prob))],
                               rtol=1e-4, atol=1e-6)


def test_counted_flops_equal_analytic_count():
    layer = _pair("mask")
    h = w = 8
    c = 4
    conv_macs = h * w * 3 * 3 * c * c
    bn_macs = h * w * c
    expected = 2 * (2 * conv_macs + 2 * bn_macs) + h * w * c
    assert layer.counted_flops == expected
    # A projection block: stride 2, 4 -> 8 channels, 1x1 shortcut with BN.
    from keras_efficient.training.flops import residual_block_flops
    block = ResidualBlock(8, strides=2)
    block.build((None, 8, 8, 4))
    macs = 4 * 4 * 9 * 4 * 8 + 4 * 4 * 8 + 4 * 4 * 9 * 8 * 8 + 4 * 4 * 8 + 4 * 4 * 4 * 8 + 4 * 4 * 8
    assert residual_block_flops(block, (None, 8, 8, 4)) == 2 * macs + 4 * 4 * 8


def test_regulariser_value_and_gate_rate():
    layer = _pair("gather")
    layer.flops_fraction.assign(0.25)
    x = _x(seed=4)
    decisions = np.array([1, 1, 0, 0, 0, 1], np.float32)
    layer(x, training=True, decisions=decisions)
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(0.1 * 0.25 * 0.5, rel=1e-6)
    assert float(layer.open_fraction.numpy()) == pytest.approx(0.5)


def _np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_gate(gate, z, state):
    """NumPy reference of RecurrentGate: one Keras LSTMCell step (gates i, f, c, o) + head."""
    kernel, recurrent, bias = (w.numpy().astype(np.float64) for w in gate.cell.weights)
    h, c = state
    i, f, g, o = np.split(z @ kernel + h @ recurrent + bias, 4, axis=-1)
    c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
    h = _np_sigmoid(o) * np.tanh(c)
    head_w, head_b = (w.numpy().astype(np.float64) for w in gate.head.weights)
    return _np_sigmoid(h @ head_w + head_b)[:, 0], (h, c)


def _np_project(block, pooled):
    w, b = (v.numpy().astype(np.float64) for v in block.projection.weights)
    return pooled @ w + b


def test_shared_gate_threads_state_through_blocks(monkeypatch):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    gate = RecurrentGate(hidden_units=4)
    first = GatedResidualBlock(ResidualBlock(4), gate=gate, mode="mask", return_state=True,
                               name="g0")
    second = GatedResidualBlock(ResidualBlock(4), gate=gate, mode="mask", name="g1")
    h1, h, c = first(inp)
    model = keras.Model(inp, [h1, second(h1, state=[h, c])])
    assert len(model.get_layer("g1").trainable_weights) == 6 + 2  # block + projection, no gate
    assert first.gate is gate and second.recurrent_gate is gate
    # Weights chosen so that the second block's decision depends on the state the first
    # block leaves behind: the head's bias is 0 (not the default 2.0, which keeps every gate
    # open whatever the state), the recurrent kernel is large and the second block's
    # projection small, so its decision is mostly carried by (h_1, c_1).
    rng = np.random.default_rng(7)
    kernel, recurrent, bias = gate.cell.weights
    kernel.assign(rng.normal(0.0, 1.0, kernel.shape).astype(np.float32))
    recurrent.assign(rng.normal(0.0, 2.0, recurrent.shape).astype(np.float32))
    bias.assign(np.zeros(bias.shape, np.float32))
    gate.head.bias.assign([0.0])
    gate.head.kernel.assign(rng.normal(0.0, 5.0, gate.head.kernel.shape).astype(np.float32))
    second.projection.kernel.assign(second.projection.kernel * 0.1)
    x = _x(n=16, seed=5)

    def reference(threaded):
        z0 = _np_project(first, x.astype(np.float64).mean(axis=(1, 2)))
        zeros = np.zeros((len(x), 4))
        p0, state = _np_gate(gate, z0, (zeros, zeros))
        y0 = first(x, training=False)[0].numpy()
        z1 = _np_project(second, y0.astype(np.float64).mean(axis=(1, 2)))
        p1, _ = _np_gate(gate, z1, state if threaded else (zeros, zeros))
        # No probability so close to 0.5 that float32 rounding could flip the decision.
        assert np.min(np.abs(p1 - 0.5)) > 1e-5, p1
        return p0 >= 0.5, p1 >= 0.5

    def observed():
        y0, y1 = model(x, training=False)
        # mask mode: a closed block is the identity exactly, an open one changes its rows.
        return np.any(y1.numpy() != y0.numpy(), axis=(1, 2, 3))

    open0, open1 = reference(threaded=True)
    _, open1_without_state = reference(threaded=False)
    # The test can fail: the decisions with and without the state differ for some rows, and
    # the second block neither opens nor closes for every row.
    assert np.any(open1 != open1_without_state), (open1, open1_without_state)
    assert 0 < open1.sum() < len(x), open1

    def assert_second_block_uses_the_first_blocks_state():
        np.testing.assert_array_equal(observed(), open1)

    assert_second_block_uses_the_first_blocks_state()

    # Dropping the state (every gate step from zeros) makes the same check fail.
    original_call = RecurrentGate.call
    monkeypatch.setattr(RecurrentGate, "call",
                        lambda self, inputs, states=None: original_call(self, inputs, None))
    np.testing.assert_array_equal(observed(), open1_without_state)
    with pytest.raises(AssertionError):
        assert_second_block_uses_the_first_blocks_state()
    monkeypatch.undo()

    with pytest.raises(ValueError, match="no gate of its own"):
        GatedResidualBlock(ResidualBlock(4))(x)


def test_shape_changing_block_is_rejected():
    with pytest.raises(ValueError, match="output shape equals its input shape"):
        GatedResidualBlock(ResidualBlock(8, strides=2), gate=RecurrentGate())(_x())


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(mode="skip"), "mode", ValueError), (dict(flops_weight=-1.0), "flops_weight", ValueError),
    (dict(projection_dim=0), "projection_dim", ValueError), (dict(gate=3), "gate", TypeError),
    (dict(gate=""), "gate", ValueError), (dict(gate=True), "gate", TypeError),
    (dict(return_state="yes"), "return_state", TypeError),
    (dict(validate_args=None), "validate_args", TypeError),
    (dict(compile_gate=True), "compile_gate", ValueError),
    (dict(open_steps=-1), "open_steps", ValueError),
    (dict(open_steps=1.5), "open_steps", (ValueError, TypeError)),
    (dict(open_steps=None), "open_steps", (ValueError, TypeError)),
])
def test_bad_arguments(kwargs, name, error):
    with pytest.raises(error, match=name):
        GatedResidualBlock(ResidualBlock(4), **kwargs)
    with pytest.raises(TypeError, match="block"):
        GatedResidualBlock("block")


def _config_without_dtype(layer):
    # Without a dtype the nested layer follows the global policy of the instance being
    # built (ResidualBlock's sublayers always do).
    config = keras.layers.serialize(layer)
    config["config"].pop("dtype", None)
    return config


@pytest.mark.parametrize("mode", ["gather", "mask"])
def test_layer_contract(mode):
    # Nested layers are passed as configs so that every instance the harness builds (in
    # a MirroredStrategy scope, under mixed precision) creates its own sublayers.
    run_layer_test(GatedResidualBlock,
                   dict(block=_config_without_dtype(ResidualBlock(4)),
                        gate=_config_without_dtype(RecurrentGate()), mode=mode, flops_weight=0.1,
                        open_steps=2),
                   input_shape=(4, 6, 6, 4), expected_output_shape=(4, 6, 6, 4),
                   expected_num_trainable_weights=6 + 2 + 5, expected_num_non_trainable_weights=8,
                   expected_num_losses=1, supports_jit=(mode == "mask"), expect_nan_error=True,
                   # The block's BatchNorm uses per-replica batch statistics in training:
                   # MirroredStrategy is compared in inference mode.
                   distributed_training=False)


def test_recurrent_gate_contract():
    # The gate returns (probabilities, [h, c]); the harness compares the probabilities.
    run_layer_test(RecurrentGate, dict(hidden_units=3, bias_initializer_value=0.5),
                   input_shape=(4, 5), output_fn=lambda out: out[0], expected_output_shape=(4,),
                   expected_num_trainable_weights=5, expected_num_non_trainable_weights=0,
                   supports_jit=True, expected_mixed_precision_output_dtype="float32",
                   fit_targets=[np.zeros((4,), np.float32), [np.zeros((4, 3), np.float32)] * 2])


def test_config_of_an_earlier_release_with_compile_gate_off_still_loads():
    layer = _pair("gather")
    config = keras.layers.serialize(layer)
    config["config"]["compile_gate"] = False
    rebuilt = keras.layers.deserialize(config)
    assert isinstance(rebuilt, GatedResidualBlock)
    assert "compile_gate" not in rebuilt.get_config()


@pytest.mark.parametrize("mode", ["gather", "mask"])
def test_threshold_decision_open_phase_and_regulariser_against_numpy(mode):
    """d = 1[g >= sigmoid(θ)] with θ ≠ 0 (g from the NumPy gate reference on the pooled
    input), the Eq. (1) term α·w·mean(d̂) (value: α·w·mean(d)), and during the open phase
    every gate open with a zero regulariser."""
    layer = _pair(mode, open_steps=1)
    layer.flops_fraction.assign(0.25)
    x = _x(n=8, seed=6)
    pooled = x.astype(np.float64).mean(axis=(1, 2))
    zeros = np.zeros((len(x), layer.gate.cell.units))
    prob, _ = _np_gate(layer.gate, _np_project(layer, pooled), (zeros, zeros))
    theta = float(np.log(np.median(prob) / (1.0 - np.median(prob))))
    layer.threshold.assign(theta)
    expected = (prob >= _np_sigmoid(theta)).astype(np.float64)
    assert 0.0 < expected.mean() < 1.0 and np.all(prob >= 0.5)  # θ decides, not 0.5

    layer(x, training=True)  # step 0 < open_steps: forced open
    assert float(layer.open_fraction.numpy()) == 1.0
    assert float(layer.losses[0]) == 0.0
    layer(x, training=True)  # the gates decide
    assert float(layer.open_fraction.numpy()) == pytest.approx(expected.mean())
    assert float(layer.losses[0]) == pytest.approx(0.1 * 0.25 * expected.mean(), rel=1e-6)
