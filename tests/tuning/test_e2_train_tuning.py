"""keras-tuner helper for E²-Train: declared ranges, validation, one search trial."""

import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_efficient.tuning import E2TrainHyperModel, e2_train_hyperparameters  # noqa: E402


def test_declares_ranges_and_samples_valid_values():
    hp = keras_tuner.HyperParameters()
    params = e2_train_hyperparameters(hp)
    assert set(hp.values) == {"e2_drop_rate", "e2_flops_weight", "e2_input_msb_bits",
                              "e2_grad_msb_bits", "e2_beta"}
    space = {p.name: p for p in hp.space}
    assert space["e2_flops_weight"].sampling == "log"
    assert (space["e2_input_msb_bits"].min_value, space["e2_input_msb_bits"].max_value) == (2, 8)
    assert params["psg"]["input_bits"] == 8 and params["psg"]["grad_bits"] == 16
    for seed in range(20):
        values = {p.name: p.random_sample(seed) for p in hp.space}
        assert 0.0 <= values["e2_drop_rate"] <= 0.7
        assert 0.01 <= values["e2_flops_weight"] <= 1.0
        assert 2 <= values["e2_input_msb_bits"] <= 8


def test_fixed_values():
    hp = keras_tuner.HyperParameters()
    params = e2_train_hyperparameters(hp, drop_rate=0.5, beta=0.05, input_msb_bits=4,
                                      grad_msb_bits=10, flops_weight=0.1)
    assert params["drop_rate"] == 0.5 and params["psg"]["beta"] == 0.05
    assert params["psg"]["grad_msb_bits"] == 10


@pytest.mark.parametrize("kwargs,name", [
    (dict(drop_rate=(0.2, 1.0)), "drop_rate"), (dict(beta=1.5), "beta"),
    (dict(input_msb_bits=(2, 9)), "input_msb_bits"), (dict(grad_msb_bits=1), "grad_msb_bits"),
    (dict(flops_weight=(0.0, 1.0)), "flops_weight"), (dict(drop_rate=(0.5, 0.2)), "drop_rate"),
])
def test_bad_ranges(kwargs, name):
    with pytest.raises(ValueError, match=name):
        e2_train_hyperparameters(keras_tuner.HyperParameters(), **kwargs)


def test_one_search_trial(tmp_path):
    model = E2TrainHyperModel(depth=8, base_filters=4, input_shape=(8, 8, 3), batch_size=8,
                              search=dict(drop_rate=0.5))
    tuner = keras_tuner.RandomSearch(model, objective="loss", max_trials=1,
                                     directory=str(tmp_path), project_name="e2", seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 8, 8, 3)).astype(np.float32)
    tuner.search(x, np.arange(32) % 10, epochs=1, verbose=0)
    best = tuner.get_best_hyperparameters()[0]
    assert best.get("e2_drop_rate") == 0.5
    trial = tuner.oracle.get_best_trials()[0]
    assert np.isfinite(trial.score)
