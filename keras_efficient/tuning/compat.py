"""Making keras-tuner use the library's Keras.

keras-tuner 1.4.6 to 1.4.8 pick their Keras once, when first imported:
`keras_tuner/src/backend/config.py` runs `import keras` and, if that is Keras 3,
every module of the tuning engine works with Keras 3. TensorFlow >= 2.16 installs
Keras 3, so on the current line keras-tuner rejects the library's models, which
are `tf_keras` (Keras 2) models: "FatalTypeError: Expected the model-building
function, or HyperModel.build() to return a valid Keras Model instance.
Received: <tf_keras.src.engine.functional.Functional ...>"
(keras-team/keras-tuner issue 1039). keras-tuner reads no environment variable
or setting that selects its Keras (it ignores `TF_USE_LEGACY_KERAS`), so
`import_keras_tuner()` adapts the imported module instead. Where keras-tuner
touches Keras, and what the adapter does there:

- `backend.config`: `multi_backend()` is made False, so the tuner takes its
  `tf.keras` code paths: weights checkpointed in the TensorFlow format
  (`checkpoint`, not `checkpoint.weights.h5`), no `build_config.json`, and
  `backend()` is "tensorflow" (TensorBoard callbacks get their HParams callback);
- the module-level name `keras` of every engine module (the `isinstance(model,
  keras.models.Model)` check in `Tuner._try_build`, `keras.backend.clear_session`
  before each build, `keras.callbacks.History` in the result checks, the metric
  direction lookup through `keras.metrics` / `keras.losses`, optimizer
  (de)serialization, `keras.utils` serialization of hyperparameters) is bound to
  the library's `keras`;
- `tuner_utils.TunerCallback` and `tuner_utils.SaveBestEpoch`, the callbacks the
  tuner adds to every `fit`, are made subclasses of the library's
  `keras.callbacks.Callback` (their base class is replaced in place, so existing
  references and subclasses follow). As Keras 3 callbacks, they fail in
  `tf_keras`'s `fit`, which calls `_implements_train_batch_hooks()` on each.

Patching the loaded modules, rather than hiding Keras 3 while keras-tuner is
imported, is used because it is the one mechanism that also works when the user
imported keras_tuner before the library: the module objects (and the classes the
user already holds) are adapted in place. It is idempotent and a no-op where
keras-tuner already uses the library's Keras: on the 2.14 line, and on any
keras-tuner release that honours `TF_USE_LEGACY_KERAS` (the proposed upstream
fix, keras-tuner pull request 1040). Keras 3 itself is still imported by
keras-tuner; nothing else in the process is changed.

Not adapted: `keras_tuner.applications` (HyperResNet, HyperXception,
HyperEfficientNet, HyperImageAugment) keeps building Keras 3 models, which the
adapted tuner rejects; build library models in your own hypermodel instead.
A TensorBoard callback passed to `search` gets TensorBoard's HParams callback,
which derives from `tf.keras`: that is the library's Keras only if
`TF_USE_LEGACY_KERAS=1` was set before TensorFlow resolved `tf.keras`
(`keras_efficient.backend` sets it when it is imported first).

Remove this module (and call `import keras_tuner` directly again) once the
keras-tuner release required by setup.py selects `tf_keras` under
`TF_USE_LEGACY_KERAS=1`: `keras_tuner_uses_library_keras()` is then True
straight after a plain `import keras_tuner` on the current line (the subprocess
test in `tests/tuning/test_keras_tuner_compat.py` prints it).
"""

import importlib
import sys
import threading

from keras_efficient.backend import keras

__all__ = ["import_keras_tuner", "keras_tuner_uses_library_keras"]

# keras-tuner 1.4.6-1.4.8 modules and classes that the adapter changes.
_CONFIG_MODULE = "keras_tuner.src.backend.config"
_BACKEND_PACKAGE = "keras_tuner.src.backend"
_KERAS_MODULE = "keras_tuner.src.backend.keras"
_TUNER_MODULE = "keras_tuner.src.engine.tuner"
_CALLBACK_CLASSES = (("keras_tuner.src.engine.tuner_utils", "TunerCallback"),
                     ("keras_tuner.src.engine.tuner_utils", "SaveBestEpoch"))
# Hypermodels that build their own Keras 3 models; left alone (see the module docstring).
_NOT_ADAPTED = "keras_tuner.src.applications"

_LOCK = threading.Lock()


def keras_tuner_uses_library_keras():
    """True if the imported keras-tuner checks models against the library's `keras.Model`.

    Imports keras_tuner (without adapting it) if it was not imported yet.
    """
    importlib.import_module("keras_tuner")
    tuner = sys.modules.get(_TUNER_MODULE)
    if tuner is None:  # a keras-tuner without the 1.4 backend layout used `tf.keras` directly
        return True
    tuner_keras = getattr(tuner, "keras", None)
    return getattr(getattr(tuner_keras, "models", None), "Model", None) is keras.models.Model


def _unsupported(what):
    import keras_tuner

    return ImportError(
        "keras-tuner {} uses another Keras than keras_efficient ({}), and "
        "keras_efficient.tuning.compat cannot adapt it: {}. The adapter is written for "
        "keras-tuner 1.4.6 to 1.4.8 (`pip install 'keras-tuner>=1.4.6,<1.5'`).".format(
            getattr(keras_tuner, "__version__", "?"), keras.__name__, what))


def _adapt():
    config = sys.modules.get(_CONFIG_MODULE)
    backend_keras = sys.modules.get(_KERAS_MODULE)
    if config is None or backend_keras is None or not hasattr(config, "_MULTI_BACKEND"):
        raise _unsupported("no `{}` with `_MULTI_BACKEND`".format(_CONFIG_MODULE))
    callbacks = []
    for module_name, class_name in _CALLBACK_CLASSES:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is None or [b.__name__ for b in cls.__bases__] != ["Callback"]:
            raise _unsupported("no `{}.{}(keras.callbacks.Callback)`".format(module_name,
                                                                           class_name))
        callbacks.append(cls)

    # The `tf.keras` code paths (checkpoint format, no build config, TensorFlow io).
    config._MULTI_BACKEND = False
    config.keras = keras
    # `from keras_tuner.src.backend import keras` in a module imported later.
    sys.modules[_BACKEND_PACKAGE].keras = keras
    # Every loaded engine module that bound `keras` to keras-tuner's Keras 3 API module.
    for name, module in list(sys.modules.items()):
        if (name.startswith("keras_tuner.") and not name.startswith(_NOT_ADAPTED)
                and getattr(module, "keras", None) is backend_keras):
            module.keras = keras
    # The callbacks the tuner adds to `fit` (their methods call `super()`, so the
    # classes themselves must change, not copies of them).
    for cls in callbacks:
        cls.__bases__ = (keras.callbacks.Callback,)


def import_keras_tuner():
    """Imports keras_tuner and makes it work with the library's Keras models.

    Safe to call any number of times, before or after the user imported
    keras_tuner (the loaded module is adapted in place); a no-op where
    keras-tuner already uses the library's Keras (the 2.14 line). See the
    module docstring for what is changed.

    Returns:
      The `keras_tuner` module.

    Raises:
      ImportError: keras-tuner is missing, or a keras-tuner release whose
        internals the adapter does not know uses another Keras.
    """
    keras_tuner = importlib.import_module("keras_tuner")
    with _LOCK:
        if not keras_tuner_uses_library_keras():
            _adapt()
    return keras_tuner
