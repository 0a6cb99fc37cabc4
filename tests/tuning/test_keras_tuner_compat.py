"""import_keras_tuner: keras-tuner searches over library-Keras models on both release lines."""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("keras_tuner")

from keras_efficient.backend import LEGACY_KERAS_PACKAGE, keras  # noqa: E402
from keras_efficient.layers import AdaptiveDropout  # noqa: E402
from keras_efficient.tuning.adaptive_dropout import adaptive_dropout_hyperparameters  # noqa: E402
from keras_efficient.tuning.compat import (  # noqa: E402
    import_keras_tuner,
    keras_tuner_uses_library_keras,
)

kt = import_keras_tuner()

_KERAS_ROOTS = ("keras", "tf_keras")
_LIBRARY_ROOT = keras.Model.__module__.split(".")[0]


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    return x, x[:, :2].sum(axis=1, keepdims=True).astype(np.float32)


class _DropoutHyperModel(kt.HyperModel):
    """A Dense model with an `AdaptiveDropout`; remembers each trained model's predictions."""

    def __init__(self, probe):
        super().__init__()
        self.probe = probe
        self.predictions = []

    def build(self, hp):
        inputs = keras.Input((6,))
        h = keras.layers.Dense(hp.Choice("units", [4, 8]), activation="relu")(inputs)
        h = AdaptiveDropout(**adaptive_dropout_hyperparameters(hp, decay_steps=(5, 50)))(h)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(keras.optimizers.Adam(0.01), "mse")
        return model

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        self.predictions.append((dict(hp.values), model.predict(self.probe, verbose=0)))
        return history


def _in_search_space(hp):
    for param in hp.space:
        value = hp.values[param.name]
        if isinstance(param, kt.engine.hyperparameters.Choice):
            assert value in param.values, param.name
        elif isinstance(param, kt.engine.hyperparameters.Fixed):
            assert value == param.value, param.name
        else:
            assert param.min_value <= value <= param.max_value, param.name


def test_random_search_over_a_library_model(tmp_path):
    x, y = _data()
    hypermodel = _DropoutHyperModel(probe=x[:8])
    tuner = kt.RandomSearch(hypermodel, objective="val_loss", max_trials=2, seed=1,
                            directory=str(tmp_path), project_name="compat")
    # Keras callbacks pass through the tuner (deep-copied per trial; TensorBoard
    # gets keras-tuner's HParams callback) next to its own TunerCallback/SaveBestEpoch.
    callbacks = [keras.callbacks.EarlyStopping(patience=1),
                 keras.callbacks.TensorBoard(str(tmp_path / "logs"))]
    tuner.search(x, y, validation_split=0.25, epochs=1, batch_size=8, verbose=0,
                 callbacks=callbacks)

    assert len(tuner.oracle.trials) == 2
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    assert tuner.oracle.objective.direction == "min"
    best_hp = tuner.get_best_hyperparameters(1)[0]
    assert set(best_hp.values) == {"units", "adl_initial_target", "adl_final_target",
                                   "adl_decay_steps", "adl_alpha"}
    _in_search_space(best_hp)
    assert os.listdir(str(tmp_path / "logs"))  # the TensorBoard callback wrote its logs

    best_model = tuner.get_best_models(1)[0]
    assert isinstance(best_model, keras.Model)
    assert any(isinstance(layer, AdaptiveDropout) for layer in best_model.layers)
    trained = [p for values, p in hypermodel.predictions if values == best_hp.values]
    assert len(trained) == 1
    # One epoch: SaveBestEpoch's checkpoint holds the weights the trial ended with.
    np.testing.assert_allclose(best_model.predict(x[:8], verbose=0), trained[0],
                               rtol=1e-6, atol=1e-6)


def test_engine_uses_library_keras():
    from keras_tuner.src import backend

    assert keras_tuner_uses_library_keras()
    assert not backend.config.multi_backend()
    assert backend.config.backend() == "tensorflow"
    assert backend.keras.Model is keras.Model
    for name, module in list(sys.modules.items()):
        if not name.startswith("keras_tuner.") or name.startswith("keras_tuner.src.applications"):
            continue
        if "keras" in vars(module):  # the library's keras, or (2.14) a module re-exporting it
            assert module.keras.Model is keras.Model, name
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == name:
                roots = {base.__module__.split(".")[0] for base in cls.__mro__}
                assert roots & set(_KERAS_ROOTS) <= {_LIBRARY_ROOT}, cls


def test_tuner_callbacks_are_library_callbacks():
    from keras_tuner.src.engine import tuner_utils

    objective = kt.Objective("val_loss", "min")
    assert isinstance(tuner_utils.SaveBestEpoch(objective, "unused"), keras.callbacks.Callback)
    assert issubclass(tuner_utils.TunerCallback, keras.callbacks.Callback)


@pytest.mark.parametrize("metric,direction", [
    ("val_loss", "min"), ("val_accuracy", "max"), ("mean_squared_error", "min")])
def test_metric_direction_lookup(metric, direction):
    from keras_tuner.src.engine import metrics_tracking

    assert metrics_tracking.infer_metric_direction(metric) == direction


def test_metric_direction_of_a_library_metric_object():
    from keras_tuner.src.engine import metrics_tracking

    assert metrics_tracking.infer_metric_direction(keras.metrics.AUC()) == "max"
    assert metrics_tracking.infer_metric_direction(keras.losses.MeanSquaredError()) == "min"


def test_idempotent():
    from keras_tuner.src.engine import tuner_utils

    assert import_keras_tuner() is kt
    assert import_keras_tuner() is kt
    assert tuner_utils.SaveBestEpoch.__bases__ == (keras.callbacks.Callback,)


_USER_IMPORTED_FIRST = textwrap.dedent("""
    import keras_tuner                       # the user's import, before the library's
    from keras_tuner.src.engine import tuner_utils
    held = tuner_utils.SaveBestEpoch         # a class the user already holds

    import numpy as np
    from keras_efficient.backend import keras
    from keras_efficient.tuning.compat import (import_keras_tuner,
                                               keras_tuner_uses_library_keras)

    print("uses_library_keras_before", keras_tuner_uses_library_keras())
    assert import_keras_tuner() is keras_tuner
    assert keras_tuner_uses_library_keras()
    assert issubclass(held, keras.callbacks.Callback)

    def build(hp):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hp.Choice("u", [2, 3])),
                                  keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        return model

    x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    tuner = keras_tuner.RandomSearch(build, objective="loss", max_trials=1,
                                     directory={directory!r})
    tuner.search(x, x[:, :1], epochs=1, verbose=0)
    assert isinstance(tuner.get_best_models(1)[0], keras.Model)
    print("search_ok")
""")


@pytest.mark.slow  # a fresh interpreter imports TensorFlow and Keras 3: about 10 s on 2 cores
def test_adapts_a_keras_tuner_the_user_imported_first(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)  # as in a fresh process; the library sets it
    script = _USER_IMPORTED_FIRST.format(directory=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "search_ok" in result.stdout
    if not LEGACY_KERAS_PACKAGE:
        # The 2.14 line: keras-tuner already uses tf.keras, the adapter changes nothing.
        assert "uses_library_keras_before True" in result.stdout
