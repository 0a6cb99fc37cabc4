"""A model as its config (JSON) and a TensorFlow checkpoint of its variables.

The TensorFlow object-graph checkpoint (`tf.train.Checkpoint`) is read and written
the same way on the 2.14 line and on the current line, so `export_portable` on one
line and `load_portable` on the other move a model across, whichever `.keras`
layout each line's Keras uses (see `keras_efficient.saving.legacy`).
"""

import importlib.metadata
import json
import os
import tempfile

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.saving.legacy import (
    _LEGACY_ROOT,
    _check_custom_objects,
    _check_keras_file,
    _check_path,
    _read_h5_groups,
    _read_keras_archive,
    _rebuild_model,
    _register_library_objects,
    load_legacy_keras,
)
from keras_efficient.utils.validation import check_bool, invalid_argument
from keras_efficient.version import __version__

__all__ = ["export_portable", "load_portable", "PORTABLE_CONFIG_FILENAME",
           "PORTABLE_CHECKPOINT_PREFIX"]

PORTABLE_CONFIG_FILENAME = "portable.json"
PORTABLE_CHECKPOINT_PREFIX = "variables"
_PORTABLE_FORMAT = "keras_efficient.portable"
_PORTABLE_FORMAT_VERSION = 1


def _portable_files(directory):
    """The files of a portable export in `directory` (only these are replaced)."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory)
                  if name == PORTABLE_CONFIG_FILENAME
                  or name.startswith(PORTABLE_CHECKPOINT_PREFIX + "."))


def _keras_version():
    package = keras.__name__.split(".")[0]  # "keras" (tf.keras of 2.14) or "tf_keras"
    try:
        return "{} {}".format(package, importlib.metadata.version(package))
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - unusual installs
        return package


def _clone_with_weights(model, config):
    """The model rebuilt from `config`, holding `model`'s values (copied by checkpoint)."""
    clone = _rebuild_model(json.loads(json.dumps(config)), None, True,
                           "the config of model '{}'".format(model.name))
    with tempfile.TemporaryDirectory() as scratch:
        prefix = tf.train.Checkpoint(model=model).write(os.path.join(scratch, "model"))
        try:
            tf.train.Checkpoint(model=clone).read(prefix).expect_partial() \
                .assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise ValueError("Model '{}' rebuilt from its config does not have the model's "
                             "variables: {}".format(model.name, error)) from error
    ours = [(w.name, tuple(w.shape)) for w in model.weights]
    theirs = [(w.name, tuple(w.shape)) for w in clone.weights]
    if [s for _, s in ours] != [s for _, s in theirs] or not all(
            np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, clone.weights)):
        raise ValueError("Model '{}' rebuilt from its config does not have the same weights "
                         "(a layer creates state that its config does not describe): {} "
                         "against {}.".format(model.name, ours, theirs))
    return clone


def export_portable(model, directory, overwrite=False):
    """Writes a model as its config (JSON) and a TensorFlow checkpoint of its variables.

    The directory holds `portable.json` (format, versions and the Keras
    serialization of the model, without compile config) and the checkpoint
    `variables.index` / `variables.data-*` of `tf.train.Checkpoint(model=...)`. The
    checkpoint is taken from a copy of the model rebuilt from that config (weights
    copied through a checkpoint), so the export fails here, not at load time, if the
    config does not rebuild the same variables. Optimizer state is not exported.

    Args:
      model: a built `keras.Model`, or the path of a `.keras` file (of this line, or of
        the 2.14 line on either line).
      directory: the output directory; created if missing.
      overwrite: whether to replace a portable export already in `directory` (other
        files there are left alone).

    Returns:
      `directory` as a str.

    Raises:
      TypeError: `model` is neither a `keras.Model` nor a path.
      ValueError: the model is not built, or its config does not rebuild it.
      FileExistsError: `directory` holds a portable export and `overwrite` is False.
    """
    directory = _check_path("directory", directory)
    check_bool("overwrite", overwrite)
    if os.path.isfile(directory):
        raise invalid_argument("directory", "a directory, not a file", directory)
    existing = _portable_files(directory)
    if existing and not overwrite:
        raise FileExistsError("`directory` already holds a portable export: {}. Pass "
                              "`overwrite=True` to replace it.".format(directory))
    if isinstance(model, (str, os.PathLike)):
        path = _check_keras_file(model)
        _, _, weights = _read_keras_archive(path)
        if _LEGACY_ROOT in _read_h5_groups(weights)[1]:
            model = load_legacy_keras(path, compile=False)
        else:
            _register_library_objects()
            model = keras.models.load_model(path, compile=False)
    elif not isinstance(model, keras.Model):
        raise invalid_argument("model", "a keras.Model or the path of a `.keras` file", model,
                               TypeError)
    if not model.built:
        raise ValueError("Model '{}' is not built: call it on a batch (or `build` it) before "
                         "exporting.".format(model.name))
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    clone = _clone_with_weights(model, config)
    for name in existing:
        os.remove(os.path.join(directory, name))
    os.makedirs(directory, exist_ok=True)
    tf.train.Checkpoint(model=clone).write(os.path.join(directory, PORTABLE_CHECKPOINT_PREFIX))
    record = {
        "format": _PORTABLE_FORMAT,
        "format_version": _PORTABLE_FORMAT_VERSION,
        "keras_efficient_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": _keras_version(),
        "model": config,
    }
    with open(os.path.join(directory, PORTABLE_CONFIG_FILENAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    return directory


def load_portable(directory, custom_objects=None, safe_mode=True):
    """Loads a model written by `export_portable`, on either line.

    Rebuilds the model from `portable.json` (with keras_efficient's registered objects
    and `custom_objects`) and restores the checkpoint. Every variable of the rebuilt
    model must be in the checkpoint and every checkpointed value must be used. The
    model is not compiled.

    Args:
      directory: a directory written by `export_portable`.
      custom_objects: optional dict of objects defined outside keras_efficient.
      safe_mode: passed to Keras deserialization.

    Returns:
      The `keras.Model`.

    Raises:
      FileNotFoundError: `directory` or its files do not exist.
      ValueError: `directory` is not a portable export, or the checkpoint does not
        match the rebuilt model (the message lists what is unmatched).
    """
    directory = _check_path("directory", directory)
    _check_custom_objects(custom_objects)
    check_bool("safe_mode", safe_mode)
    if not os.path.isdir(directory):
        raise FileNotFoundError("No portable export at {}: not a directory.".format(directory))
    config_path = os.path.join(directory, PORTABLE_CONFIG_FILENAME)
    prefix = os.path.join(directory, PORTABLE_CHECKPOINT_PREFIX)
    if not os.path.isfile(config_path) or not os.path.isfile(prefix + ".index"):
        raise FileNotFoundError("{} is not a portable export: it needs {} and {}.index (written "
                                "by `export_portable`).".format(
                                    directory, PORTABLE_CONFIG_FILENAME,
                                    PORTABLE_CHECKPOINT_PREFIX))
    try:
        with open(config_path, encoding="utf-8") as f:
            record = json.load(f)
    except ValueError as error:
        raise ValueError("{} is not valid JSON: {}".format(config_path, error)) from error
    if not isinstance(record, dict) or record.get("format") != _PORTABLE_FORMAT:
        raise ValueError("{} is not a keras_efficient portable export (expected "
                         "\"format\": \"{}\").".format(config_path, _PORTABLE_FORMAT))
    if record.get("format_version") != _PORTABLE_FORMAT_VERSION:
        raise ValueError("{} has format_version {!r}; this keras_efficient reads version {}."
                         .format(config_path, record.get("format_version"),
                                 _PORTABLE_FORMAT_VERSION))
    model = _rebuild_model(record["model"], custom_objects, safe_mode, config_path)
    try:
        tf.train.Checkpoint(model=model).read(prefix).assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError("The checkpoint in {} does not match the model rebuilt from {}: {}"
                         .format(directory, PORTABLE_CONFIG_FILENAME, error)) from error
    return model
