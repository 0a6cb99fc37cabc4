"""The one place that chooses how Keras is imported.

keras_efficient targets TensorFlow 2.14 and its built-in Keras 2 (`tf.keras`).
Every other module imports `tf` and `keras` from here, so a move to another
Keras (for example `tf_keras` on a later TensorFlow) is a change to this file.

The library keeps its syntax importable on Python 3.8 (the last Graphcore
TensorFlow wheels): no `match`, no `X | Y` annotations evaluated at runtime.
"""

import tensorflow as tf

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


__all__ = ["tf", "keras", "PACKAGE", "register_serializable"]
