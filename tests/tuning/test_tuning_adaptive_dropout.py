import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_efficient.backend import keras  # noqa: E402
from keras_efficient.layers import AdaptiveDropout  # noqa: E402
from keras_efficient.schedules import RetentionTargetSchedule  # noqa: E402
from keras_efficient.tuning import adaptive_dropout_hyperparameters  # noqa: E402


def test_declares_four_hyperparameters_within_ranges():
    hp = keras_tuner.HyperParameters()
    kwargs = adaptive_dropout_hyperparameters(hp, initial_target=(3.0, 5.0),
                                              final_target=(-3.0, -1.0), decay_steps=(10, 1000),
                                              alpha=(1e-6, 1e-3))
    names = {p.name for p in hp.space}
    assert names == {"adl_initial_target", "adl_final_target", "adl_decay_steps", "adl_alpha"}
    schedule = kwargs["schedule"]
    assert isinstance(schedule, RetentionTargetSchedule)
    assert 3.0 <= schedule.initial_target <= 5.0 and -3.0 <= schedule.final_target <= -1.0
    assert 10 <= schedule.decay_steps <= 1000 and 1e-6 <= kwargs["alpha"] <= 1e-3
    AdaptiveDropout(**kwargs)  # the kwargs are valid layer arguments


def test_fixed_values_are_declared_fixed():
    hp = keras_tuner.HyperParameters()
    kwargs = adaptive_dropout_hyperparameters(hp, initial_target=10.0, final_target=-2.0,
                                              decay_steps=500, alpha=1e-7)
    assert kwargs["schedule"].get_config() == {"initial_target": 10.0, "final_target": -2.0,
                                               "decay_steps": 500}
    assert all(isinstance(p, keras_tuner.engine.hyperparameters.Fixed) for p in hp.space)


def test_random_search_two_trials(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, :2].sum(axis=1, keepdims=True)).astype(np.float32)

    def build(hp):
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="relu")(inp)
        h = AdaptiveDropout(**adaptive_dropout_hyperparameters(hp, decay_steps=(5, 50)))(h)
        model = keras.Model(inp, keras.layers.Dense(1)(h))
        model.compile(keras.optimizers.Adam(0.01), "mse")
        return model

    tuner = keras_tuner.RandomSearch(build, objective="val_loss", max_trials=2, seed=1,
                                     directory=str(tmp_path), project_name="adl")
    tuner.search(x, y, validation_split=0.25, epochs=2, batch_size=16, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2
    for trial in trials:
        values = trial.hyperparameters.values
        assert values["adl_final_target"] < values["adl_initial_target"]
        assert np.isfinite(trial.score)


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(initial_target=(0.0, 2.0), final_target=(-1.0, 1.0)), "final_target", ValueError),
    (dict(decay_steps=(0, 10)), "decay_steps", ValueError),
    (dict(decay_steps=(1.5, 10)), "decay_steps", TypeError),
    (dict(alpha=(1e-3, 1e-6)), "alpha", ValueError),
    (dict(alpha=-1.0), "alpha", ValueError),
    (dict(alpha="x"), "alpha", TypeError),
    (dict(gamma=0.0), "gamma", ValueError),
    (dict(initial_target=(1.0, 2.0, 3.0)), "initial_target", ValueError),
])
def test_invalid_arguments(kwargs, name, error):
    with pytest.raises(error, match="`{}`".format(name)):
        adaptive_dropout_hyperparameters(keras_tuner.HyperParameters(), **kwargs)
