"""BNN keras-tuner search space: declared hyperparameters, models carry the sampled values."""

import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_efficient.tuning.bnn import bnn_hyperparameters, bnn_hypermodel  # noqa: E402


def test_declared_space():
    hp = keras_tuner.HyperParameters()
    kwargs = bnn_hyperparameters(hp, base_filters=(8, 16))
    names = {p.name: p for p in hp.space}
    assert set(names) == {"bnn_prior_scale", "bnn_kl_weight", "bnn_width"}
    assert (names["bnn_prior_scale"].min_value, names["bnn_prior_scale"].max_value) == (0.1, 2.0)
    assert names["bnn_prior_scale"].sampling == "log"
    assert names["bnn_kl_weight"].sampling == "log"
    assert list(names["bnn_width"].values) == [0.5, 1.0]
    assert kwargs["filters"] == (4, 8)  # default width: the first choice, 0.5


def test_fixed_values():
    hp = keras_tuner.HyperParameters()
    kwargs = bnn_hyperparameters(hp, prior_scale=1.0, kl_weight=0.5, width_multipliers=(2.0,),
                                 base_filters=(3,))
    assert kwargs == {"prior_scale": 1.0, "kl_weight": 0.5, "filters": (6,)}


@pytest.mark.parametrize("kwargs,error,match", [
    ({"prior_scale": 0.0}, ValueError, "prior_scale"),
    ({"prior_scale": (2.0, 1.0)}, ValueError, "prior_scale"),
    ({"prior_scale": (1.0,)}, ValueError, "prior_scale"),
    ({"kl_weight": "1"}, TypeError, "kl_weight"),
    ({"kl_weight": -1.0}, ValueError, "kl_weight"),
    ({"width_multipliers": ()}, ValueError, "width_multipliers"),
    ({"width_multipliers": (0.0,)}, ValueError, "width_multipliers"),
    ({"base_filters": (0,)}, ValueError, "base_filters"),
    ({"estimators": ()}, ValueError, "estimators"),
    ({"estimators": "flipout"}, ValueError, "estimators"),
    ({"estimators": ("flipout", "mc_dropout")}, ValueError, "estimators"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        bnn_hyperparameters(keras_tuner.HyperParameters(), **kwargs)


def test_build_uses_the_hyperparameter_values():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("bnn_prior_scale", 0.3)
    hp.Fixed("bnn_kl_weight", 0.02)
    hp.Fixed("bnn_width", 1.0)
    model = bnn_hypermodel(24, input_shape=(8, 8, 6), base_filters=(4,))(hp)
    conv = model.get_layer("conv1_b")
    assert (conv.prior_scale, conv.kl_weight, conv.filters) == (0.3, 0.02, 4)
    assert model.get_layer("head").params.num_train_examples == 24
    assert model.optimizer is not None and model.loss.name == "negative_log_likelihood"


def test_estimator_choice_builds_the_chosen_layers():
    hp = keras_tuner.HyperParameters()
    kwargs = bnn_hyperparameters(hp, base_filters=(4,),
                                 estimators=("reparameterization", "flipout"))
    assert list({p.name: p for p in hp.space}["bnn_estimator"].values) == [
        "flipout", "reparameterization"]
    assert kwargs["estimator"] == "flipout"
    hp = keras_tuner.HyperParameters()
    hp.Fixed("bnn_estimator", "reparameterization")
    model = bnn_hypermodel(24, input_shape=(8, 8, 6), base_filters=(4,),
                           estimators=("flipout", "reparameterization"))(hp)
    assert type(model.get_layer("conv1_b")).__name__ == "ReparameterizationConv2D"


@pytest.mark.slow  # a real keras-tuner search with two trials
def test_search_builds_models_with_the_sampled_values(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8, 6)).astype(np.float32)
    y = (0.2 * rng.standard_normal((16, 2))).astype(np.float32)
    build = bnn_hypermodel(len(x), input_shape=(8, 8, 6), base_filters=(4,))
    tuner = keras_tuner.RandomSearch(build, objective="loss", max_trials=2, seed=1,
                                     directory=str(tmp_path), project_name="bnn")
    tuner.search(x, y, epochs=1, batch_size=8, verbose=0)
    assert len(tuner.oracle.trials) == 2
    best_hp = tuner.get_best_hyperparameters(1)[0]
    model = build(best_hp)
    conv = model.get_layer("conv1_a")
    assert conv.prior_scale == pytest.approx(best_hp.get("bnn_prior_scale"))
    assert conv.kl_weight == pytest.approx(best_hp.get("bnn_kl_weight"))
    assert conv.filters == max(1, round(4 * best_hp.get("bnn_width")))
    assert model.get_layer("head").params.num_train_examples == 16
