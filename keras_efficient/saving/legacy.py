"""Models saved on the TensorFlow 2.14 line, loaded on the current line.

Why a `.keras` file of the 2.14 line does not load with tf-keras 2.21: both write the
same `config.json` and the same `model.weights.h5` format (one `vars` group per
object, datasets "0", "1", ... in the object's variable order), but they name the
groups differently. Keras walks the model's attributes and saves each layer at the
path of the first attribute that reaches it. Keras 2.14 walks `dir(obj)` in sorted
order, so a model's layers are first reached through the `_layer_checkpoint_dependencies`
property and saved under `_layer_checkpoint_dependencies/<layer>`; tf-keras 2.21
skips that property and walks `dir(obj)` in reverse order, so it saves and looks
for them under `layers/<layer>`. Keras reads a missing group as "no variables",
hence `Layer 'dense' expected 2 variables, but received 0 variables`. The files
hold the same values; only the group paths differ.

Two ways across:

- `load_legacy_keras` / `convert_legacy_keras`, on the current line, directly from
  the 2.14 `.keras` file: rebuild the model from `config.json`, walk it the way
  Keras 2.14 did to find each object's group, and load the values from there (every
  layer must find exactly its variables, and every saved model variable must be used);
  `convert_legacy_keras` then saves the model again as a `.keras` file of this line.
- `export_portable` / `load_portable`: the model's config as JSON and its variables
  as a TensorFlow object-graph checkpoint (`tf.train.Checkpoint`), a format that
  both lines read and write the same way. Export on either line, load on either.
"""

import contextlib
import importlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile

import h5py
import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.utils.validation import check_bool, invalid_argument

__all__ = ["load_legacy_keras", "convert_legacy_keras"]

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_LEGACY_ROOT = "_layer_checkpoint_dependencies"
_CURRENT_ROOT = "layers"

# Attributes Keras 2.14 does not follow when it walks a model (its `ATTR_SKIPLIST`).
# tf-keras 2.21 adds `_layer_checkpoint_dependencies` to it.
_LEGACY_SKIPLIST = frozenset({
    "_callable_losses", "_captured_weight_regularizer", "_checkpoint_dependencies",
    "_deferred_dependencies", "_eager_losses", "_inbound_nodes", "_inbound_nodes_value",
    "_output_layers", "_input_layers", "_keras_api_names", "_keras_api_names_v1",
    "_name_based_restores", "_non_trainable_weights", "_outbound_nodes",
    "_outbound_nodes_value", "_saved_model_arg_spec", "_self_name_based_restores",
    "_self_saveable_object_factories", "_self_tracked_trackables", "_saved_model_inputs_spec",
    "_self_unconditional_checkpoint_dependencies",
    "_self_unconditional_deferred_dependencies", "_self_unconditional_dependency_names",
    "_tf_api_names", "_tf_api_names_v1", "_trainable_weights",
    "_unconditional_checkpoint_dependencies", "_unconditional_dependency_names", "_updates",
    "_layer_call_argspecs", "inbound_nodes", "outbound_nodes", "input_shape", "output_shape",
    "submodules", "weights", "non_trainable_weights", "trainable_weights", "variables",
    "non_trainable_variables", "trainable_variables", "updates", "state_updates",
})

# Subpackages whose import registers serializable objects that a model config may name.
_REGISTERING_SUBPACKAGES = ("layers", "losses", "schedules", "models", "pruning", "training")

# --------------------------------------------------------------------------- helpers


def _check_path(name, value):
    if not isinstance(value, (str, os.PathLike)):
        raise invalid_argument(name, "a path (str or os.PathLike)", value, TypeError)
    return os.fspath(value)


def _check_custom_objects(custom_objects):
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise invalid_argument("custom_objects", "a dict or None", custom_objects, TypeError)
    return custom_objects


def _check_output_path(name, path, overwrite, suffix=None):
    if suffix is not None and not path.endswith(suffix):
        raise invalid_argument(name, "a path ending in `{}`".format(suffix), path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            "`{}` already exists: {}. Pass `overwrite=True` to replace it.".format(name, path))


def _register_library_objects():
    """Imports the subpackages that register objects; returns {name: import error}."""
    failures = {}
    for name in _REGISTERING_SUBPACKAGES:
        try:
            importlib.import_module("keras_efficient." + name)
        except ImportError as error:
            failures[name] = error
    return failures


def _object_sharing_scope():
    # Keras's loaders rebuild shared objects once inside this (private) scope.
    package = keras.__name__.split(".")[0]
    try:
        module = importlib.import_module(package + ".src.saving.serialization_lib")
        return module.ObjectSharingScope()
    except (ImportError, AttributeError):  # pragma: no cover - depends on the Keras build
        return contextlib.nullcontext()


def _resolvable(config, custom_objects):
    module = config.get("module") or ""
    if module.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
        return True
    known = custom_objects or {}
    name = config.get("registered_name") or config["class_name"]
    if name in known or config["class_name"] in known or \
            keras.saving.get_registered_object(name) is not None:
        return True
    try:  # Keras also finds an unregistered class through its module.
        return hasattr(importlib.import_module(module), config["class_name"])
    except ImportError:
        return False


def _unresolved_objects(config, custom_objects):
    """Class names in a serialized config that Keras cannot resolve."""
    missing = []
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str) and "config" in config and \
                not _resolvable(config, custom_objects):
            missing.append(config.get("registered_name") or config["class_name"])
        for value in config.values():
            missing.extend(_unresolved_objects(value, custom_objects))
    elif isinstance(config, list):
        for value in config:
            missing.extend(_unresolved_objects(value, custom_objects))
    return missing


def _rebuild_model(config, custom_objects, safe_mode, where):
    failures = _register_library_objects()
    try:
        with _object_sharing_scope():
            model = keras.saving.deserialize_keras_object(
                config, custom_objects=custom_objects, safe_mode=safe_mode)
    except Exception as error:
        missing = sorted(set(_unresolved_objects(config, custom_objects)))
        if not missing:
            raise ValueError("Could not rebuild the model from the config in {}: {}: {}".format(
                where, type(error).__name__, error)) from error
        note = "" if not failures else " (keras_efficient subpackages that failed to " \
            "import: {})".format("; ".join("{}: {}".format(k, v) for k, v in failures.items()))
        raise ValueError("Could not rebuild the model from the config in {}: unknown objects "
                         "{}{}. Pass objects defined outside keras_efficient through "
                         "`custom_objects`.".format(where, missing, note)) from error
    if not isinstance(model, keras.Model):
        raise ValueError("The config in {} describes a {}, not a Keras model.".format(
            where, type(model).__name__))
    return model


def _to_snake_case(name):
    # Keras's `generic_utils.to_snake_case`, which names objects inside containers.
    intermediate = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    insecure = re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()
    return insecure if insecure[0] != "_" else "private" + insecure


def _is_keras_trackable(obj):
    return isinstance(obj, (keras.layers.Layer, keras.optimizers.Optimizer,
                            keras.metrics.Metric, keras.losses.Loss))


def _join(path, name):
    return name if not path else path + "/" + name


def _legacy_walk(root):
    """[(h5 group path, object)] in the order and with the paths Keras 2.14 saves them."""
    visited, found = set(), []

    def visit(obj, path):
        if id(obj) in visited:
            return
        visited.add(id(obj))
        found.append((path, obj))
        for attr in dir(obj):  # sorted, as in Keras 2.14
            if attr.startswith("__") or attr in _LEGACY_SKIPLIST:
                continue
            try:
                child = getattr(obj, attr)
            except Exception:  # Keras also skips attributes that raise.
                continue
            if _is_keras_trackable(child):
                visit(child, _join(path, attr))
            elif isinstance(child, (list, dict, tuple, set)):
                visit_container(child, _join(path, attr))

    def visit_container(container, path):
        used = {}
        for obj in (container.values() if isinstance(container, dict) else container):
            if not _is_keras_trackable(obj) or id(obj) in visited:
                continue
            name = _to_snake_case(type(obj).__name__)
            used[name] = used[name] + 1 if name in used else 0
            visit(obj, _join(path, name if used[name] == 0 else
                             "{}_{}".format(name, used[name])))

    visit(root, "")
    return found


def _read_h5_groups(data):
    """{group path: {"0": array, ...}} for every `vars` group of a `model.weights.h5`."""
    groups = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        def collect(name, obj):
            if isinstance(obj, h5py.Group) and (name == "vars" or name.endswith("/vars")):
                values = {key: np.asarray(obj[key]) for key in obj.keys()}
                groups[name[:-len("vars")].rstrip("/")] = values
        h5.visititems(collect)
        top = set(h5.keys())
    return groups, top


def _describe(obj):
    return "{} '{}'".format(type(obj).__name__, getattr(obj, "name", "?"))


def _load_legacy_state(model, groups, where, compile):
    """Loads `groups` (read from a 2.14 file) into `model`; fails on any mismatch."""
    for path, obj in _legacy_walk(model):
        if not hasattr(obj, "load_own_variables"):
            continue
        store = groups.pop(path, {})
        if isinstance(obj, keras.optimizers.Optimizer):
            if len(store) != len(obj.variables):
                warnings.warn(
                    "The optimizer state in {} was not loaded: it holds {} variables, the "
                    "rebuilt optimizer {} (it is built by the first training step).".format(
                        where, len(store), len(obj.variables)), stacklevel=3)
                continue
        try:
            obj.load_own_variables(store)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
            raise ValueError(
                "Cannot load {} from the group `{}` of {}: {}".format(
                    _describe(obj), path or "/", where, error)) from error
    # Keras itself drops saved metric state (a compiled model's metrics are created by the
    # first step), and the optimizer's state when it does not compile the model.
    ignored = ("metrics",) if compile else ("metrics", "optimizer")
    unused = sorted(path for path, values in groups.items()
                    if values and path.split("/")[0] not in ignored)
    if unused:
        raise ValueError(
            "{} holds variables that no object of the rebuilt model claims, in the groups {}: "
            "the model rebuilt from config.json has different layers or variables than the "
            "one that was saved.".format(where, unused))


def _read_keras_archive(path):
    try:
        archive = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError("{} is not a `.keras` file (a zip archive): {}".format(
            path, error)) from error
    with archive:
        names = set(archive.namelist())
        if _CONFIG not in names or _WEIGHTS not in names:
            raise ValueError(
                "{} is not a `.keras` file with h5 weights: it lacks {}.".format(
                    path, " and ".join(n for n in (_CONFIG, _WEIGHTS) if n not in names)))
        if any(n.startswith("assets/") for n in names):
            raise ValueError("{} has assets (lookup tables, vocabularies), which this "
                             "converter does not carry over.".format(path))
        config = json.loads(archive.read(_CONFIG).decode("utf-8"))
        metadata = json.loads(archive.read(_METADATA).decode("utf-8")) \
            if _METADATA in names else {}
        weights = archive.read(_WEIGHTS)
    return config, metadata, weights


def _check_keras_file(path):
    path = _check_path("path", path)
    if not path.endswith(".keras"):
        raise invalid_argument("path", "a `.keras` file", path)
    if not os.path.isfile(path):
        raise FileNotFoundError("No `.keras` file at {}.".format(path))
    return path


# --------------------------------------------------------------------------- public API


def load_legacy_keras(path, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` file saved on the TensorFlow 2.14 line.

    Rebuilds the model from the file's `config.json` (with keras_efficient's
    registered objects and `custom_objects`), then loads every object's variables
    from the group that Keras 2.14 wrote them to (`_layer_checkpoint_dependencies/...`
    where the current line looks under `layers/...`; see the module docstring).
    Every layer must find exactly its variables with their shapes, and every saved
    model variable must be used. Saved metric state is dropped, as Keras does.

    Works on both lines; on the 2.14 line `keras.models.load_model` does the same.

    Args:
      path: the `.keras` file written by `model.save` on the 2.14 line.
      custom_objects: optional dict of objects defined outside keras_efficient.
      compile: whether to compile the model from its saved compile config and load
        the optimizer state (as `keras.models.load_model(..., compile=...)`).
      safe_mode: passed to Keras deserialization (refuses lambda layers' bytecode).

    Returns:
      The `keras.Model`.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is not a `.keras` archive, is already in the current layout,
        or a layer's saved variables do not match the rebuilt layer's (the message
        names the layer and the group).
    """
    path = _check_keras_file(path)
    _check_custom_objects(custom_objects)
    check_bool("compile", compile)
    check_bool("safe_mode", safe_mode)
    config, metadata, weights = _read_keras_archive(path)
    groups, top = _read_h5_groups(weights)
    if _LEGACY_ROOT not in top and _CURRENT_ROOT in top:
        raise ValueError(
            "{} is not in the 2.14 layout (saved by Keras {}, its layers are under `layers/`): "
            "load it with `keras.models.load_model`.".format(
                path, metadata.get("keras_version", "unknown")))
    if not compile:
        config["compile_config"] = None
    model = _rebuild_model(config, custom_objects, safe_mode, path)
    _load_legacy_state(model, groups, path, compile)
    return model


def convert_legacy_keras(path_in, path_out, custom_objects=None, overwrite=False,
                         safe_mode=True):
    """Rewrites a `.keras` file of the 2.14 line as a `.keras` file of this line.

    `load_legacy_keras(path_in)` followed by `model.save(path_out)`: the new file
    has the same config, weights, compile config and (if it was built) optimizer
    state, and loads with `keras.models.load_model` on the line that ran the
    conversion.

    Args:
      path_in: the `.keras` file written on the 2.14 line.
      path_out: where to write the new `.keras` file (must end in `.keras`).
      custom_objects: optional dict of objects defined outside keras_efficient.
      overwrite: whether to replace an existing `path_out`.
      safe_mode: passed to Keras deserialization.

    Returns:
      The converted `keras.Model` (the one that was saved).

    Raises:
      FileNotFoundError: `path_in` does not exist.
      FileExistsError: `path_out` exists and `overwrite` is False.
      ValueError: as `load_legacy_keras`, or `path_out` is `path_in`.
    """
    path_in = _check_keras_file(path_in)
    path_out = _check_path("path_out", path_out)
    check_bool("overwrite", overwrite)
    _check_output_path("path_out", path_out, overwrite, suffix=".keras")
    if os.path.abspath(path_out) == os.path.abspath(path_in):
        raise invalid_argument("path_out", "a path other than `path_in`", path_out)
    model = load_legacy_keras(path_in, custom_objects=custom_objects, safe_mode=safe_mode)
    directory = os.path.dirname(os.path.abspath(path_out))
    handle, temporary = tempfile.mkstemp(suffix=".keras", dir=directory)
    os.close(handle)
    try:
        model.save(temporary, overwrite=True)
        os.replace(temporary, path_out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return model
