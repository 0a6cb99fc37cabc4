"""parameter_budget: compile + fit ends at the requested effective fraction."""

import json
import os

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.data import make_ctc_sequences
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.models import ConformerEncoder, CTCLoss
from keras_efficient.pruning import count_parameters, parameter_budget, prune
from keras_efficient.pruning.budget import BudgetValue, ParameterBudget, get_parameter_budget
from keras_efficient.schedules import RetentionTargetSchedule

TOLERANCE = 0.02
METRICS = ("budget_expected_fraction", "budget_final_fraction", "budget_hard_fraction",
           "budget_lambda")


def _mlp(decay_steps=150, units=64, seed=0):
    inp = keras.Input((20,))
    h = keras.layers.Dense(units, activation="relu", name="d1")(inp)
    h = AdaptiveDropout(RetentionTargetSchedule(10.0, -2.0, decay_steps), seed=seed, name="adl")(h)
    out = keras.layers.Dense(10, name="d2")(h)
    return keras.Model(inp, out)


def _mlp_data(n=3200, seed=0):
    """A noisy teacher task, so that units differ in how much the loss needs them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)).astype("float32")
    teacher = rng.standard_normal((20, 10))
    y = np.argmax(np.tanh(x @ teacher) + 0.3 * rng.standard_normal((n, 10)), axis=-1)
    return x, y


def _compile(model, **kwargs):
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)


# ----------------------------------------------------------------------------- reaching the budget


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_mlp_ends_at_target(target):
    keras.utils.set_random_seed(1)
    model = _mlp()
    weights = [w.name for w in model.weights]
    parameter_budget(model, target)
    _compile(model)
    x, y = _mlp_data()
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # 300 steps, settle at 150
    counts = count_parameters(model)
    assert abs(counts["ratio"] - target) <= TOLERANCE, counts
    for name in METRICS:
        assert name in history.history
    assert history.history["budget_hard_fraction"][-1] == pytest.approx(counts["ratio"], abs=1e-6)
    # The budget is not part of the model: same weights, prune() still matches the count.
    assert [w.name for w in model.weights] == weights
    assert prune(model).count_params() == counts["effective"]


def _encoder(decay_steps, seed=0):
    return ConformerEncoder((32, 8), vocab_size=5, num_blocks=1, model_dim=16, num_heads=2,
                            ffn_dim=32, kernel_size=3, subsampling_filters=8, adaptive=True,
                            adaptive_subsampling=True,
                            schedule=RetentionTargetSchedule(10.0, -2.0, decay_steps), seed=seed)


@pytest.mark.slow  # about 20 s per budget on 2 cores
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_encoder_ends_at_target(target):
    keras.utils.set_random_seed(0)
    data = make_ctc_sequences(512, vocab_size=5, max_label_length=3, feature_dim=8,
                              num_frames=32, max_frames=4)
    model = _encoder(decay_steps=120)
    budget = parameter_budget(model, target)
    assert budget.settle_step == 120
    model.compile(keras.optimizers.Adam(1e-2), CTCLoss())
    model.fit(data["features"], data["labels"], batch_size=16, epochs=7, verbose=0)  # 224 steps
    counts = count_parameters(model)
    assert abs(counts["ratio"] - target) <= TOLERANCE, counts
    assert prune(model).count_params() == counts["effective"]


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("target, error", [
    (0.0, ValueError), (-0.5, ValueError), (1.5, ValueError), (float("nan"), ValueError),
    (None, TypeError), ("0.5", TypeError), (True, TypeError),
])
def test_bad_target(target, error):
    with pytest.raises(error, match="target_fraction"):
        parameter_budget(_mlp(), target)


def test_target_below_unprunable_part():
    inp = keras.Input((20,))
    h = keras.layers.Dense(100, name="stem")(inp)           # 2100 parameters no site touches
    h = keras.layers.Dense(8, activation="relu", name="d1")(h)
    h = AdaptiveDropout(RetentionTargetSchedule(1.0, -1.0, 10), name="adl")(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="d2")(h))
    total = 2100 + 808 + 36
    minimum = (2100 + 4) / total                              # d1 gone, d2 a constant
    with pytest.raises(ValueError, match=r"target_fraction.*at least {:.6f}".format(minimum)):
        parameter_budget(model, 0.5)
    budget = parameter_budget(model, minimum + 1e-3)
    assert budget.minimum_fraction == pytest.approx(minimum, abs=1e-12)
    adl = model.get_layer("adl")
    adl.retention_raw.assign(np.full(adl.retention_raw.shape, -10.0, np.float32))
    assert count_parameters(model)["ratio"] == pytest.approx(minimum, abs=1e-12)


def test_model_without_sites():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ValueError, match="AdaptiveDropout sites"):
        parameter_budget(model, 0.5)


def test_second_budget_and_unsupported_model():
    model = _mlp()
    parameter_budget(model, 0.5)
    with pytest.raises(ValueError, match="already has a parameter budget"):
        parameter_budget(model, 0.4)
    with pytest.raises(ValueError, match="functional or Sequential"):
        parameter_budget(keras.layers.Dense(3), 0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"multiplier_rate": -1.0}, ValueError, "multiplier_rate"),
    ({"margin": 0.0}, ValueError, "margin"),
    ({"settle_step": -1}, ValueError, "settle_step"),
    ({"settle_step": 1.5}, TypeError, "settle_step"),
    ({"margin": "1"}, TypeError, "margin"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        parameter_budget(_mlp(), 0.5, **kwargs)


def test_schedule_without_decay_steps_needs_settle_step():
    class Constant:
        def __call__(self, step):
            return tf.constant(0.0)

        def get_config(self):
            return {}

    inp = keras.Input((4,))
    h = keras.layers.Dense(6, name="d1")(inp)
    h = AdaptiveDropout(Constant(), threshold=-1.0, name="adl")(h)
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="settle_step"):
        parameter_budget(model, 0.5)
    assert parameter_budget(model, 0.5, settle_step=10).settle_step == 10


def test_config_round_trip():
    budget = parameter_budget(_mlp(), 0.4, temperature=0.5, multiplier_rate=0.2, settle_step=7,
                              margin=0.3)
    config = json.loads(json.dumps(budget.get_config()))
    clone = ParameterBudget.from_config(config)
    assert clone.get_config() == budget.get_config()
    assert {k: config[k] for k in ("target_fraction", "temperature", "multiplier_rate",
                                   "settle_step", "margin")} == {
        "target_fraction": 0.4, "temperature": 0.5, "multiplier_rate": 0.2, "settle_step": 7,
        "margin": 0.3}
    metric = BudgetValue("budget_x")
    assert BudgetValue.from_config(json.loads(json.dumps(metric.get_config()))).name == "budget_x"
    with pytest.raises(ValueError, match="not attached"):
        clone.budget_loss()


# ----------------------------------------------------------------------------- state


def _state(budget):
    return [float(budget.lambda1.numpy()), float(budget.lambda2.numpy()),
            int(budget.last_step.numpy())]


def test_multipliers_move_once_per_training_step_not_in_evaluate():
    model = _mlp(decay_steps=1000)
    budget = parameter_budget(model, 0.3)
    assert get_parameter_budget(model) is budget
    assert any(True for _ in model.losses)
    _compile(model, steps_per_execution=2)
    x, y = _mlp_data(n=640)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    adl = model.get_layer("adl")
    assert int(budget.last_step.numpy()) == int(adl.step_counter.numpy()) == 20
    assert int(model.optimizer.iterations.numpy()) == 20
    before = _state(budget)
    assert before[0] != 0.0 and before[1] > 0.0
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert _state(budget) == before
    assert set(METRICS) <= set(logs)


def test_steps_per_execution_reaches_target():
    keras.utils.set_random_seed(2)
    model = _mlp()
    parameter_budget(model, 0.5)
    _compile(model, steps_per_execution=2)
    x, y = _mlp_data()
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert abs(count_parameters(model)["ratio"] - 0.5) <= TOLERANCE


def test_checkpoint_restores_state(tmp_path):
    model = _mlp(decay_steps=1000)
    budget = parameter_budget(model, 0.3)
    _compile(model)
    x, y = _mlp_data(n=640)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    saved = _state(budget)
    path = os.path.join(str(tmp_path), "ckpt")
    model.save_weights(path)
    restored_model = _mlp(decay_steps=1000)
    restored = parameter_budget(restored_model, 0.3)
    assert _state(restored) == [0.0, 0.0, 0]
    restored_model.load_weights(path).expect_partial()
    assert _state(restored) == saved
    # tf.train.Checkpoint sees the budget as the model's dependency `parameter_budget`.
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any("parameter_budget/lambda1" in name for name in names)


def test_saved_model_round_trip(tmp_path):
    model = _mlp(decay_steps=30)
    budget = parameter_budget(model, 0.3)  # settles from step 30
    _compile(model)
    x, y = _mlp_data(n=640)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # 20 steps: still the Lagrangian
    saved = _state(budget)
    path = os.path.join(str(tmp_path), "saved_model")
    model.save(path, save_format="tf")
    loaded = keras.models.load_model(path, compile=False)
    revived = loaded.parameter_budget  # the checkpoint dependency, restored
    assert [float(revived.lambda1.numpy()), float(revived.lambda2.numpy()),
            int(revived.last_step.numpy())] == saved
    raw = tf.saved_model.load(path)
    assert float(raw.parameter_budget.lambda1.numpy()) == saved[0]
    # The loaded model keeps the budget's loss (restored as a traced function) and
    # goes on from the restored state: past settle_step it ends at the target.
    _compile(loaded)
    loaded.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert int(revived.last_step.numpy()) == 80
    assert abs(count_parameters(loaded)["ratio"] - 0.3) <= TOLERANCE


def test_mirrored_strategy(mirrored_strategy):
    keras.utils.set_random_seed(3)
    with mirrored_strategy.scope():
        model = _mlp()
        budget = parameter_budget(model, 0.5)
        _compile(model)
    x, y = _mlp_data()
    history = model.fit(x, y, batch_size=64, epochs=6, verbose=0)  # 300 global steps
    assert int(budget.last_step.numpy()) == int(model.get_layer("adl").step_counter.numpy())
    assert int(budget.last_step.numpy()) == 300
    assert abs(count_parameters(model)["ratio"] - 0.5) <= TOLERANCE
    assert history.history["budget_hard_fraction"][-1] == pytest.approx(
        count_parameters(model)["ratio"], abs=1e-6)
