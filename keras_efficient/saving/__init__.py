"""Saving across release lines: `.keras` files of the TensorFlow 2.14 line on the current line.

`load_legacy_keras` / `convert_legacy_keras` read a 2.14 `.keras` file directly
(`legacy`); `export_portable` / `load_portable` move a model as config JSON plus a
TensorFlow checkpoint, which both lines read and write alike (`portable`).
"""

from keras_efficient.saving.legacy import convert_legacy_keras, load_legacy_keras
from keras_efficient.saving.portable import (
    PORTABLE_CHECKPOINT_PREFIX,
    PORTABLE_CONFIG_FILENAME,
    export_portable,
    load_portable,
)

__all__ = [
    "PORTABLE_CHECKPOINT_PREFIX",
    "PORTABLE_CONFIG_FILENAME",
    "convert_legacy_keras",
    "export_portable",
    "load_legacy_keras",
    "load_portable",
]
