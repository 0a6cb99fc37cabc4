"""Rank decisions of gated blocks, the budget's capacity allocation and gate calibration."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import GateCalibration
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock
from keras_efficient.layers.gate_decisions import gate_logits
from keras_efficient.training import calibrate_gates, skip_budget

FLOPS = (100, 300)  # w = (0.25, 0.75)


def _model(decision="rank", open_steps=0, flops=FLOPS, mode="mask"):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inp)
    gate, state = RecurrentGate(4, bias_initializer_value=0.0), None
    for i, f in enumerate(flops):
        block = GatedResidualBlock(ResidualBlock(4), gate=gate, mode=mode, open_steps=open_steps,
                                   block_flops=f, decision=decision, return_state=True,
                                   name="g%d" % i)
        h, *state = block(h) if state is None else block(h, state=state)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(2, name="logits")(h))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 4, 3)).astype(np.float32)
    y = (x[:, :2, :2, 0].mean(axis=(1, 2)) > 0).astype(np.int32)
    return x, y


def _first_block_probs(model, x):
    """The first gated block's gate probabilities (it starts the recurrence from zero)."""
    h = model.get_layer("stem_conv")(x)
    block = model.get_layer("g0")
    pooled = tf.reduce_mean(h, axis=[1, 2])
    prob, _ = block.recurrent_gate(block.projection(pooled))
    return prob.numpy()


def _water_filling(w, m, total):
    """Reference: c_k = min(1, s * m_k) with sum_k w_k c_k = total, by bisection on s."""
    w, m = np.asarray(w, np.float64), np.maximum(np.asarray(m, np.float64), 1e-6)
    lo, hi = 0.0, 1e9
    for _ in range(200):
        s = 0.5 * (lo + hi)
        if np.sum(w * np.minimum(1.0, s * m)) > total:
            hi = s
        else:
            lo = s
    return np.minimum(1.0, lo * m)


@pytest.mark.parametrize("target,means", [
    (0.4, [0.5, 0.5]),
    (0.4, [0.9, 0.1]),
    (0.2, [0.99, 0.3]),
    (0.7, [0.05, 0.6]),
    (0.5, [0.0, 0.8]),
])
def test_allocate_matches_water_filling(target, means):
    model = _model()
    budget = skip_budget(model, target)
    got = budget.allocate(tf.constant(means, tf.float32)).numpy()
    want = _water_filling([0.25, 0.75], means, 1.0 - target)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.dot([0.25, 0.75], got) == pytest.approx(1.0 - target, abs=1e-5)


def test_rank_training_call_opens_the_highest_gates_and_theta_follows_the_cut():
    model = _model()
    x, _ = _data(16)
    block = model.get_layer("g0")
    probs = _first_block_probs(model, x)
    y, *_ = block(model.get_layer("stem_conv")(x), training=True)
    # Without a budget the capacity is mean(g): k = round(16 * mean) samples open.
    k = int(np.round(16 * probs.astype(np.float64).mean()))
    assert float(block.open_fraction.numpy()) == pytest.approx(k / 16.0)
    logits = np.log(probs.astype(np.float64)) - np.log1p(-probs.astype(np.float64))
    s = np.sort(logits)[::-1]
    # First free step: the running mean is the cut itself.
    assert float(block.threshold.numpy()) == pytest.approx(0.5 * (s[k - 1] + s[k]), abs=1e-4)
    # Inference with that θ opens the same samples (k of them).
    assert int(np.sum(gate_logits(probs).numpy() >= block.threshold.numpy())) == k


def test_theta_is_the_running_mean_of_the_cuts_then_an_average_with_weight_001():
    model = _model()
    block, stem = model.get_layer("g0"), model.get_layer("stem_conv")
    theta, cuts = 0.0, []
    for step in range(103):
        x, _ = _data(16, seed=step)
        if step >= 100:
            x = 5.0 * x + 2.0  # far from the first 100 batches: the 0.01 weight shows
        probs = _first_block_probs(model, x).astype(np.float64)
        logits = np.log(probs) - np.log1p(-probs)
        k = int(np.round(16 * probs.mean()))
        s = np.sort(logits)[::-1]
        cuts.append(0.5 * (s[k - 1] + s[k]))
        weight = max(0.01, 1.0 / (step + 1))
        theta += weight * (cuts[-1] - theta)
        block(stem(x), training=True)
        if step == 2:
            assert float(block.threshold.numpy()) == pytest.approx(np.mean(cuts), abs=2e-6)
    assert float(block.threshold.numpy()) == pytest.approx(theta, abs=2e-6)
    # A plain running mean over all 103 cuts would end elsewhere (by 20x the tolerance).
    assert abs(np.mean(cuts) - theta) > 4e-5


def test_rank_with_budget_meets_the_target_every_step():
    model = _model()
    budget = skip_budget(model, 0.5)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            rates.append([float(model.get_layer(n).open_fraction.numpy()) for n in ("g0", "g1")])

    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[Rates()])
    rates = np.array(rates)
    executed = rates @ np.array([0.25, 0.75])
    # Per step: round(c_k * 16) / 16 per block with sum_k w_k c_k = 0.5, so within 1/32.
    assert np.all(np.abs(executed[1:] - 0.5) <= 1.0 / 32 + 1e-6), executed
    assert budget.result()["skip"] == pytest.approx(0.5, abs=1.0 / 32)
    # The capacities follow the gates' means (water filling), and sum to the target.
    caps = budget.capacities.numpy()
    np.testing.assert_allclose(caps, _water_filling([0.25, 0.75], budget.gate_means.numpy(), 0.5),
                               rtol=1e-4, atol=1e-5)


def test_mixed_decisions_in_one_budget_are_rejected():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 3))
    gate = RecurrentGate(4)
    h, *state = GatedResidualBlock(ResidualBlock(3), gate=gate, block_flops=1, decision="rank",
                                   return_state=True, name="a")(inp)
    h = GatedResidualBlock(ResidualBlock(3), gate=gate, block_flops=1, name="b")(h, state=state)
    model = keras.Model(inp, h)
    with pytest.raises(ValueError, match="decision"):
        skip_budget(model, 0.3)


def test_decision_argument_is_validated_and_serialised():
    with pytest.raises(ValueError, match="decision"):
        GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(4), decision="top")
    block = GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(4), decision="rank")
    assert block.get_config()["decision"] == "rank"
    assert GatedResidualBlock.from_config(block.get_config()).decision == "rank"


def test_calibrate_gates_one_batch_opens_the_requested_share():
    model = _model(flops=(100,))
    x, _ = _data(40)
    thresholds = calibrate_gates(model, [x], {"g0": 0.3})
    probs = _first_block_probs(model, x)
    opened = int(np.sum(gate_logits(probs).numpy() >= thresholds["g0"]))
    assert opened == 12  # round(0.3 * 40)
    assert float(model.get_layer("g0").threshold.numpy()) == pytest.approx(thresholds["g0"])
    # The pass leaves no calibration behind: a later inference call decides by θ.
    assert model.get_layer("g0").budget_slot.calibration is None


def test_calibrate_gates_argument_errors():
    model = _model()
    x, _ = _data(8)
    with pytest.raises(ValueError, match="open_rates"):
        calibrate_gates(model, [x], {"g0": 0.5})
    with pytest.raises(ValueError, match="open_rates"):
        calibrate_gates(model, [x], [0.5, 1.5])
    with pytest.raises(ValueError, match="no batch"):
        calibrate_gates(model, [], [0.5, 0.5])
    with pytest.raises(ValueError, match="GatedResidualBlock"):
        calibrate_gates(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), [x], [])


def test_gate_calibration_callback_restores_after_validation_and_keeps_at_the_end():
    model = _model()
    skip_budget(model, 0.5)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    seen = {"train": [], "cal": [], "after": []}

    def theta():
        return [float(model.get_layer(n).threshold.numpy()) for n in ("g0", "g1")]

    class Watch(keras.callbacks.Callback):  # runs after GateCalibration (list order)
        def on_train_batch_end(self, batch, logs=None):
            self.last = theta()

        def on_test_begin(self, logs=None):
            seen["train"].append(self.last)
            seen["cal"].append(theta())

        def on_epoch_end(self, epoch, logs=None):
            seen["after"].append(theta())

    calibration = GateCalibration([x[:32]])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x[:16], y[:16]),
              callbacks=[calibration, Watch()])
    assert len(seen["cal"]) == 2
    # Validation decided with calibrated thresholds, then training's θ came back.
    for train, cal, after in zip(seen["train"], seen["cal"], seen["after"]):
        assert not np.allclose(cal, train)
        np.testing.assert_allclose(after, train)
    # At the end the calibrated thresholds stay (evaluate / predict / save use them).
    assert calibration.thresholds is not None
    np.testing.assert_allclose(theta(), [calibration.thresholds["g0"],
                                         calibration.thresholds["g1"]], rtol=1e-6)


def test_rank_with_budget_under_mirrored_strategy_keeps_replicas_in_step(mirrored_strategy):
    with mirrored_strategy.scope():
        model = _model()
        budget = skip_budget(model, 0.5)
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    # m_k is the mean over the global batch, so every replica holds the same values.
    for variable in (budget.gate_means, budget.capacities):
        copies = [v.numpy() for v in variable.values]
        np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(np.dot([0.25, 0.75], budget.capacities.numpy()), 0.5, atol=1e-5)
    assert budget.result()["skip"] == pytest.approx(0.5, abs=1.0 / 16)


def test_calibration_pass_ignores_an_empty_batch():
    from keras_efficient.training.gate_calibration import CalibrationPass

    calibration = CalibrationPass(0.3)
    calibration.record(tf.constant(2.0), tf.constant(8))
    calibration.record(tf.constant(0.0), tf.constant(0))  # an empty batch's placeholder cut
    calibration.record(tf.constant(4.0), tf.constant(8))
    assert calibration.threshold() == pytest.approx(3.0)


def test_inference_decides_on_logits_beyond_the_sigmoid_range():
    # A cut above every (clipped) logit closes all gates, even where sigmoid(θ) rounds to 1.
    model = _model(flops=(100,), decision="threshold")
    x, _ = _data(8)
    block = model.get_layer("g0")
    block.threshold.assign(17.0)
    h = model.get_layer("stem_conv")(x)
    y, *_ = block(h, training=False)
    np.testing.assert_allclose(y.numpy(), h.numpy(), atol=1e-6)  # all closed: identity
