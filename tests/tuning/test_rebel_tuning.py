"""ReBELHyperModel: search space and a two-trial random search."""

import numpy as np
import pytest
import keras_tuner

from keras_efficient.backend import keras
from keras_efficient.models import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model
from keras_efficient.tuning.rebel import ReBELHyperModel


def _split():
    keras.utils.set_random_seed(0)
    teacher = cifar_resnet(8, num_classes=3, input_shape=(8, 8, 3), base_filters=4)
    return split_functional_model(teacher, "stage2_block0")


def test_build_uses_hyperparameters():
    head, tail = _split()
    hm = ReBELHyperModel(head, tail, 3, head_filters=(4,), decoder_filters=(4,),
                         components_choices=(3,), covariance_choices=("full",),
                         latent_channels_choices=(2,), beta_range=(0.01, 0.01))
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    assert isinstance(model, ReBEL)
    assert model.components_per_class == 3 and model.covariance == "full"
    assert model.beta == 0.01 and hp.values["beta"] == 0.01
    assert set(hp.values) == {"latent_channels", "components_per_class", "covariance", "beta",
                              "gamma", "learning_rate"}


@pytest.mark.slow
def test_random_search_two_trials(tmp_path):
    head, tail = _split()
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(8, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 8)
    hm = ReBELHyperModel(head, tail, 3, head_filters=(4,), decoder_filters=(4,),
                         components_choices=(1, 2), covariance_choices=("diag",),
                         latent_channels_choices=(1, 2))
    tuner = keras_tuner.RandomSearch(hm, objective=keras_tuner.Objective(
        "val_local_accuracy", "max"), max_trials=2, directory=str(tmp_path), seed=0)
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=8, verbose=0)
    assert len(tuner.oracle.trials) == 2
    best = tuner.get_best_hyperparameters(1)[0]
    assert best.values["components_per_class"] in (1, 2)


@pytest.mark.parametrize("kwargs,match", [
    ({"components_choices": ()}, "components_choices"),
    ({"components_choices": (2.5,)}, "components_choices"),
    ({"covariance_choices": ("tied",)}, "covariance_choices"),
    ({"beta_range": (0.1, 0.01)}, "beta_range"),
    ({"gamma_range": (0.0, 1.0)}, "gamma_range"),
    ({"learning_rate_range": 0.1}, "learning_rate_range"),
    ({"num_classes": 0}, "num_classes"),
])
def test_bad_arguments(kwargs, match):
    head, tail = _split()
    args = {"teacher_head": head, "tail": tail, "num_classes": 3}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        ReBELHyperModel(**args)
