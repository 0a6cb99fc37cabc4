"""Skip budget: dual update against NumPy, open phase, target reached, state, distribution."""

import json

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock
from keras_efficient.training import SkipBudget, convert_to_psg, get_skip_budget, skip_budget

FLOPS = (100, 300)  # block_flops of the two gated blocks: w = (0.25, 0.75)


def _model(open_steps=0, mode="mask", gate_bias=2.0, flops_weight=0.0, flops=FLOPS):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inp)
    for i, f in enumerate(flops):
        gate = RecurrentGate(4, bias_initializer_value=gate_bias) if i == 0 else None
        h = GatedResidualBlock(ResidualBlock(4), gate=gate, mode=mode, open_steps=open_steps,
                               block_flops=f, flops_weight=flops_weight, name="g%d" % i)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(2, name="logits")(h))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 4, 3)).astype(np.float32)
    y = (x[:, :2, :2, 0].mean(axis=(1, 2)) > 0).astype(np.int32)
    return x, y


def _compile(model, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)


def _blocks(model):
    return [model.get_layer("g0"), model.get_layer("g1")]


class _Recorder(keras.callbacks.Callback):
    """Per training step: the blocks' open fractions and the budget's state after it."""

    def __init__(self, budget, blocks):
        super().__init__()
        self.budget, self.blocks, self.rows = budget, blocks, []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append(dict(
            rates=[float(b.open_fraction.numpy()) for b in self.blocks],
            lam=float(self.budget.multiplier.numpy()),
            violation=float(self.budget.violation.numpy()),
            thresholds=[float(b.threshold.numpy()) for b in self.blocks],
            step=int(self.blocks[0].gate_step.numpy()),
            last_step=int(self.budget.last_step.numpy()),
            gate=[w.numpy().copy() for w in self.blocks[0].gate.trainable_weights]))


_OPEN, _TARGET, _ETA, _RHO, _ETA_T = 3, 0.5, 0.3, 2.0, 0.7


def _reference_model():
    model = _model(open_steps=_OPEN, gate_bias=-3.0)  # closed unless forced open
    budget = skip_budget(model, _TARGET, multiplier_rate=_ETA, penalty=_RHO,
                         threshold_rate=_ETA_T)
    return model, budget


@pytest.fixture(scope="module")
def reference_run():
    """One run shared by several tests: 3 epochs of 4 steps, SGD, recorded per step."""
    model, budget = _reference_model()
    _compile(model, keras.optimizers.SGD(0.05))
    x, y = _data()
    recorder = _Recorder(budget, _blocks(model))
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                        callbacks=[recorder])
    return model, budget, recorder.rows, history.history


def test_dual_update_matches_numpy_and_open_phase_forces_gates_open(reference_run):
    model, budget, rows, _ = reference_run
    assert get_skip_budget(model) is budget
    assert len(rows) == 12
    w = np.array(FLOPS, float) / sum(FLOPS)
    lam = threshold = violation = 0.0
    for t, row in enumerate(rows):
        assert row["step"] == row["last_step"] == t + 1
        rates = np.array(row["rates"])
        if t < _OPEN:
            # Open phase: every gate open (exactly), no update, the gate untrained.
            np.testing.assert_array_equal(rates, 1.0)
            for a, b in zip(row["gate"], rows[0]["gate"]):
                np.testing.assert_array_equal(a, b)
        else:
            e = float(w @ rates) - (1.0 - _TARGET)
            lam += _ETA * e
            threshold += _ETA_T * e
            violation = e
        assert row["lam"] == pytest.approx(lam, abs=1e-6)
        assert row["violation"] == pytest.approx(violation, abs=1e-6)
        np.testing.assert_allclose(row["thresholds"], threshold, atol=1e-6)
    # After the open phase the gates decide: with a bias of -3 they start closed.
    free = np.array([r["rates"] for r in rows[_OPEN:]])
    assert free[0].max() < 1.0
    assert not np.array_equal(rows[-1]["gate"][0], rows[0]["gate"][0])  # the gate learns
    # The multiplier reaches the blocks: μ = λ + ρ·e.
    assert float(budget.multiplier_value()) == pytest.approx(lam + _RHO * violation, abs=1e-6)
    # result(): the last epoch's 4 steps.
    result = budget.result()
    last = np.array([r["rates"] for r in rows[-4:]])
    assert result["steps"] == 4
    assert result["skip"] == pytest.approx(np.mean(1.0 - last @ w), abs=1e-6)
    np.testing.assert_allclose([result["open_rates"][n] for n in ("g0", "g1")],
                               last.mean(axis=0), atol=1e-6)


def test_budget_does_not_move_in_evaluate_or_predict(reference_run):
    model, budget, _, _ = reference_run
    x, y = _data()

    def state():
        return [float(budget.multiplier.numpy()), int(budget.last_step.numpy()),
                float(model.get_layer("g0").threshold.numpy()), budget.result()]

    before = state()
    model.evaluate(x, y, verbose=0)  # resets the metrics, not what result() reports
    model.predict(x, verbose=0)
    assert state() == before


@pytest.mark.parametrize("target", [0.25, pytest.param(0.75, marks=pytest.mark.slow)])
def test_training_ends_at_the_target(target):
    # Reachable by skipping one block of the two (w = 0.25, 0.75) for every sample,
    # or by mixing per-sample decisions; the budget has to find and hold either.
    model = _model()
    budget = skip_budget(model, target)
    _compile(model, steps_per_execution=4)
    x, y = _data(n=128)
    history = model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    result = budget.result()
    # The achieved skip: mean of 1 - C(t) over the training steps of the last epoch.
    assert result["skip"] == pytest.approx(history.history["skip_budget_skip"][-1], abs=1e-6)
    assert result["steps"] == 4
    assert abs(result["skip"] - target) <= 0.03, history.history["skip_budget_skip"]
    # Recomputed from the per-block open rates of the same epoch (FLOPs-weighted).
    rates = np.array([history.history["g0_gate_rate"][-1], history.history["g1_gate_rate"][-1]])
    assert 1.0 - np.array([0.25, 0.75]) @ rates == pytest.approx(result["skip"], abs=1e-5)
    assert result["open_rates"]["g1"] == pytest.approx(rates[1], abs=1e-6)
    model.evaluate(x, y, verbose=0)  # resets the metrics, not the result
    assert budget.result()["skip"] == result["skip"]
    assert result["flops_weights"] == pytest.approx({"g0": 0.25, "g1": 0.75})


def test_steps_per_execution_gives_the_same_run(reference_run):
    _, reference, _, history = reference_run
    model, budget = _reference_model()
    _compile(model, keras.optimizers.SGD(0.05), steps_per_execution=2)
    x, y = _data()
    h2 = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    assert int(budget.last_step.numpy()) == int(reference.last_step.numpy()) == 12
    assert float(reference.multiplier.numpy()) != 0.0
    assert float(budget.multiplier.numpy()) == pytest.approx(
        float(reference.multiplier.numpy()), abs=1e-5)
    np.testing.assert_allclose(h2["skip_budget_skip"], history["skip_budget_skip"], atol=1e-6)


def test_checkpoint_restores_multiplier_threshold_and_steps(reference_run, tmp_path):
    model, budget, _, _ = reference_run
    x, y = _data()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))

    restored, restored_budget = _reference_model()
    _compile(restored, keras.optimizers.SGD(0.05))
    tf.train.Checkpoint(model=restored).restore(path).expect_partial()
    for a, b in [(budget.multiplier, restored_budget.multiplier),
                 (budget.violation, restored_budget.violation),
                 (budget.last_step, restored_budget.last_step),
                 (budget.epoch_sums, restored_budget.epoch_sums)]:
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ("g0", "g1"):
        for attr in ("threshold", "gate_step"):
            assert getattr(model.get_layer(name), attr).numpy() == \
                getattr(restored.get_layer(name), attr).numpy()
    assert restored_budget.last_step.numpy() == 12
    # Training continues from the saved state: one more step updates λ and θ from
    # the restored values by that step's rates.
    lam, theta = float(budget.multiplier.numpy()), float(model.get_layer("g0").threshold.numpy())
    restored.train_on_batch(x[:16], y[:16])
    rates = np.array([float(b.open_fraction.numpy()) for b in _blocks(restored)])
    e = float(np.array(FLOPS) / sum(FLOPS) @ rates) - (1.0 - _TARGET)
    assert restored_budget.last_step.numpy() == 13
    assert float(restored_budget.multiplier.numpy()) == pytest.approx(lam + _ETA * e, abs=1e-6)
    assert float(restored.get_layer("g1").threshold.numpy()) == pytest.approx(
        theta + _ETA_T * e, abs=1e-6)


def test_config_round_trip_and_saved_model_keeps_thresholds(reference_run, tmp_path):
    budget = SkipBudget(0.3, multiplier_rate=0.1, penalty=0.5, threshold_rate=2.0,
                        initial_multiplier=0.2, name="b")
    config = json.loads(json.dumps(keras.layers.serialize(budget)))
    rebuilt = keras.layers.deserialize(config)
    assert isinstance(rebuilt, SkipBudget)
    assert rebuilt.get_config() == budget.get_config()

    model = reference_run[0]
    x, _ = _data()
    assert float(model.get_layer("g0").threshold.numpy()) != 0.0
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("g1").open_steps == _OPEN
    assert get_skip_budget(loaded) is None
    for name in ("g0", "g1"):
        for attr in ("threshold", "gate_step"):
            assert getattr(loaded.get_layer(name), attr).numpy() == \
                getattr(model.get_layer(name), attr).numpy()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_budget_after_psg_conversion():
    model = convert_to_psg(_model(gate_bias=2.0),
                           include=lambda layer: layer.name not in ("stem_conv", "logits"))
    budget = skip_budget(model, 0.5, threshold_rate=2.0)
    _compile(model)
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    assert budget.result()["step"] == 16
    # The gates start open (bias 2); the budget closes some.
    assert history.history["skip_budget_skip"][-1] > 0.1


def test_mixed_precision(mixed_precision):
    model = _model(mode="gather")
    budget = skip_budget(model, 0.5)
    _compile(model)
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert budget.multiplier.dtype == tf.float32 and float(budget.multiplier.numpy()) != 0.0


def test_mirrored_strategy_matches_single_device(reference_run, mirrored_strategy):
    _, reference, _, history = reference_run
    with mirrored_strategy.scope():
        model, budget = _reference_model()
        _compile(model, keras.optimizers.SGD(0.05))
    x, y = _data()
    h2 = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    assert int(budget.last_step.numpy()) == 12
    # BatchNormalization uses per-replica batch statistics, so the second gate sees
    # slightly different inputs: the skip and λ agree within a tolerance.
    np.testing.assert_allclose(h2["skip_budget_skip"], history["skip_budget_skip"], atol=0.1)
    assert float(budget.multiplier.numpy()) == pytest.approx(
        float(reference.multiplier.numpy()), abs=0.1)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, None, "half"])
def test_bad_target(value):
    with pytest.raises((ValueError, TypeError), match="target_skip"):
        SkipBudget(value)
    with pytest.raises((ValueError, TypeError), match="target_skip"):
        skip_budget(_model(), value)


@pytest.mark.parametrize("kwargs,name", [
    (dict(multiplier_rate=0.0), "multiplier_rate"), (dict(penalty=-1.0), "penalty"),
    (dict(threshold_rate=-1.0), "threshold_rate"),
])
def test_bad_rates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SkipBudget(0.5, **kwargs)


def test_model_errors():
    inp = keras.Input((4, 4, 3))
    plain = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ValueError, match="GatedResidualBlock"):
        skip_budget(plain, 0.5)
    model = _model()
    skip_budget(model, 0.5)
    with pytest.raises(ValueError, match="already has a skip budget"):
        skip_budget(model, 0.5)
    with pytest.raises(ValueError, match="not attached"):
        SkipBudget(0.5).budget_loss()
