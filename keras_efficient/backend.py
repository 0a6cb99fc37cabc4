"""The one place that chooses how Keras is imported.

keras_efficient uses the Keras 2 API on both supported release lines:

- the current line (TensorFlow >= 2.16, tested on 2.21): `tf_keras`, the Keras 2
  package that TensorFlow ships beside Keras 3. `TF_USE_LEGACY_KERAS=1` is set
  before TensorFlow is imported so that `tf.keras` inside TensorFlow Probability
  and tensorflow-model-optimization is the same Keras 2 (neither supports Keras 3);
- the 2.14 line (TensorFlow 2.14.1): TensorFlow's built-in Keras 2 (`tf.keras`).

Every other module imports `tf` and `keras` from here. A process that imported
TensorFlow before this module and asked it for Keras 3 keeps its `tf.keras`; the
library still uses `tf_keras` (the variable is read when `tf.keras` is first
resolved, so set it yourself if you mix `tf.keras` and library layers).

Known issue, TensorFlow 2.14 on Intel Xeons with AMX / AVX-512 FP16 (Sapphire
Rapids and later): TF 2.14's oneDNN CPU kernels corrupt the native heap
("double free or corruption" inside the first `model.fit` of
`keras-efficient reproduce e2-train --quick`). Before importing TensorFlow this
module therefore sets `TF_ENABLE_ONEDNN_OPTS=0` when, and only when, the
installed TensorFlow is 2.14.x (read from the package metadata, without importing
it) and /proc/cpuinfo lists `amx_tile` or `avx512_fp16` (Linux only); a value the
user set wins, and any failure to read leaves everything as it is. The decision
is `keras_efficient.cpu_features.onednn_workaround_needed`; `ONEDNN_WORKAROUND` says
whether it was applied in this process. Like `TF_USE_LEGACY_KERAS`, it has no
effect if TensorFlow was imported first.

The library keeps its syntax importable on Python 3.8 (the last Graphcore
TensorFlow wheels): no `match`, no `X | Y` annotations evaluated at runtime.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _apply_onednn_workaround():
    """`cpu_features.apply_onednn_workaround()`; False on any failure (never stops the import)."""
    try:
        from keras_efficient import cpu_features

        return bool(cpu_features.apply_onednn_workaround())
    except Exception:  # noqa: BLE001 - a start-up check must not stop the import
        return False


#: True when this import set TF_ENABLE_ONEDNN_OPTS=0 (TF 2.14 on an AMX / AVX-512 FP16 CPU).
ONEDNN_WORKAROUND = _apply_onednn_workaround()

import tensorflow as tf  # noqa: E402  (the variables above must be set first)


def _version_tuple(text):
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


TF_VERSION = _version_tuple(tf.__version__)

# True on the current line (TensorFlow >= 2.16 with tf_keras); False on the 2.14 line.
LEGACY_KERAS_PACKAGE = TF_VERSION >= (2, 16)

if LEGACY_KERAS_PACKAGE:
    try:
        import tf_keras as keras
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "keras_efficient needs the Keras 2 API. On TensorFlow {} it comes from the "
            "`tf-keras` package: `pip install tf-keras~={}.0`.".format(
                tf.__version__, ".".join(str(v) for v in TF_VERSION))) from error
else:
    keras = tf.keras

PACKAGE = "keras_efficient"


def register_serializable(cls=None, *, name=None):
    """Registers `cls` with Keras serialization under the `keras_efficient` package.

    Usable as `@register_serializable` or `@register_serializable(name="...")`.
    """
    decorator = keras.utils.register_keras_serializable(package=PACKAGE, name=name)
    if cls is None:
        return decorator
    return decorator(cls)


__all__ = ["tf", "keras", "PACKAGE", "register_serializable", "TF_VERSION",
           "LEGACY_KERAS_PACKAGE", "ONEDNN_WORKAROUND"]
