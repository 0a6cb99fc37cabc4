"""`.keras` files of the TensorFlow 2.14 line on the current line, and the portable format.

The fixtures under data/ were written on the 2.14 line by make_fixtures.py (a model with a
`ResidualBlock` and an `AdaptiveDropout`, trained two steps): the `.keras` file, its
portable export, and an .npz with a fixed input, the inference output computed on 2.14 and
every weight. The tests run on both lines.
"""

import io
import json
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

import keras_efficient.layers  # noqa: F401  (registers the fixture's layers)
from keras_efficient.backend import LEGACY_KERAS_PACKAGE, keras
from keras_efficient.saving import (
    convert_legacy_keras,
    export_portable,
    load_legacy_keras,
    load_portable,
)
from make_fixtures import ARRAYS_FILE, KERAS_FILE, PORTABLE_DIR, build_model

ATOL = 1e-6


@pytest.fixture(scope="module")
def expected():
    with np.load(ARRAYS_FILE) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _assert_matches_fixture(model, expected):
    np.testing.assert_allclose(model(expected["x"], training=False).numpy(), expected["y"],
                               rtol=0, atol=ATOL)
    weights = [w.numpy() for w in model.weights]
    assert len(weights) == len([k for k in expected if k.startswith("weight_")])
    for i, value in enumerate(weights):
        np.testing.assert_array_equal(value, expected["weight_{}".format(i)])


def _h5_top_groups(path):
    with zipfile.ZipFile(path) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
            return set(h5.keys())


def _rewrite_keras_file(source, target, edit_config=None, edit_h5=None):
    """Copies a `.keras` archive, editing its config dict and/or its h5 file in place."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if edit_config is not None:
        config = json.loads(members["config.json"])
        edit_config(config)
        members["config.json"] = json.dumps(config).encode("utf-8")
    if edit_h5 is not None:
        buffer = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buffer, "a") as h5:
            edit_h5(h5)
        members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _layer_config(config, name):
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


# ------------------------------------------------------------------ the incompatibility


def test_2_14_file_uses_the_legacy_group_paths():
    assert "_layer_checkpoint_dependencies" in _h5_top_groups(KERAS_FILE)
    assert "layers" not in _h5_top_groups(KERAS_FILE)


def test_keras_cannot_load_the_2_14_file_on_the_current_line():
    if not LEGACY_KERAS_PACKAGE:
        pytest.skip("On the 2.14 line Keras loads its own files (see the next test).")
    with pytest.raises(ValueError, match="Layer 'stem' expected 2 variables, but received 0"):
        keras.models.load_model(KERAS_FILE)


def test_keras_loads_the_2_14_file_on_the_2_14_line(expected):
    if LEGACY_KERAS_PACKAGE:
        pytest.skip("The current line cannot load it (previous test).")
    _assert_matches_fixture(keras.models.load_model(KERAS_FILE), expected)


# ------------------------------------------------------------------ the 2.14 fixture


def test_load_legacy_keras_matches_the_2_14_outputs(expected):
    model = load_legacy_keras(KERAS_FILE)
    _assert_matches_fixture(model, expected)
    assert int(model.optimizer.iterations.numpy()) == int(expected["iterations"])


def test_load_legacy_keras_without_compile(expected):
    model = load_legacy_keras(KERAS_FILE, compile=False)
    assert model.optimizer is None
    _assert_matches_fixture(model, expected)


def test_convert_legacy_keras_writes_a_file_keras_loads(tmp_path, expected):
    target = str(tmp_path / "converted.keras")
    converted = convert_legacy_keras(KERAS_FILE, target)
    assert "layers" in _h5_top_groups(target) or not LEGACY_KERAS_PACKAGE
    model = keras.models.load_model(target)
    _assert_matches_fixture(model, expected)
    assert int(model.optimizer.iterations.numpy()) == int(expected["iterations"])
    assert len(model.optimizer.variables) == len(converted.optimizer.variables) > 1
    for a, b in zip(model.optimizer.variables, converted.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_portable_of_the_2_14_export(expected):
    model = load_portable(PORTABLE_DIR)
    assert model.optimizer is None
    _assert_matches_fixture(model, expected)


def test_export_portable_from_the_2_14_file(tmp_path, expected):
    directory = export_portable(KERAS_FILE, str(tmp_path / "portable"))
    _assert_matches_fixture(load_portable(directory), expected)


# ------------------------------------------------------------------ round trips on this line


def _trained_model():
    keras.utils.set_random_seed(1)
    model = build_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(1)
    model.fit(rng.normal(size=(8, 8, 8, 3)).astype("float32"), rng.randint(0, 3, size=(8,)),
              batch_size=4, verbose=0)
    return model, rng.normal(size=(3, 8, 8, 3)).astype("float32")


def _assert_same_model(a, b, x):
    np.testing.assert_allclose(a(x, training=False).numpy(), b(x, training=False).numpy(),
                               rtol=0, atol=ATOL)
    assert len(a.weights) == len(b.weights)
    for u, v in zip(a.weights, b.weights):
        np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_portable_round_trip(tmp_path):
    model, x = _trained_model()
    directory = str(tmp_path / "portable")
    assert export_portable(model, directory) == directory
    assert sorted(os.listdir(directory))[:2] == ["portable.json", "variables.data-00000-of-00001"]
    _assert_same_model(model, load_portable(directory), x)
    # Replacing an export needs overwrite=True and keeps other files.
    (tmp_path / "portable" / "notes.txt").write_text("kept")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_portable(model, directory)
    export_portable(model, directory, overwrite=True)
    assert (tmp_path / "portable" / "notes.txt").read_text() == "kept"


def test_load_legacy_keras_of_a_file_of_this_line(tmp_path):
    model, x = _trained_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    if LEGACY_KERAS_PACKAGE:
        with pytest.raises(ValueError, match="not in the 2.14 layout"):
            load_legacy_keras(path)
    else:
        _assert_same_model(model, load_legacy_keras(path), x)
    _assert_same_model(model, load_portable(export_portable(path, str(tmp_path / "p"))), x)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("function", [load_legacy_keras, load_portable,
                                      lambda p: convert_legacy_keras(p, "/tmp/never.keras"),
                                      lambda p: export_portable(p, "/tmp/never_portable")])
def test_missing_path(tmp_path, function):
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="missing"):
        function(missing)


@pytest.mark.parametrize("bad", [None, 3, 1.5, ["a.keras"]])
def test_path_must_be_a_path(bad):
    with pytest.raises(TypeError, match="Invalid value received for argument `path`"):
        load_legacy_keras(bad)
    with pytest.raises(TypeError, match="Invalid value received for argument `directory`"):
        load_portable(bad)


def test_wrong_file_types(tmp_path):
    with pytest.raises(ValueError, match="Expected a `.keras` file"):
        load_legacy_keras(str(tmp_path / "model.h5"))
    text = tmp_path / "text.keras"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="not a `.keras` file"):
        load_legacy_keras(str(text))
    no_weights = str(tmp_path / "no_weights.keras")
    with zipfile.ZipFile(no_weights, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="lacks model.weights.h5"):
        load_legacy_keras(no_weights)
    with pytest.raises(FileNotFoundError, match="not a portable export"):
        load_portable(str(tmp_path))
    with pytest.raises(TypeError, match="argument `model`"):
        export_portable(object(), str(tmp_path / "p"))


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="argument `compile`"):
        load_legacy_keras(KERAS_FILE, compile="yes")
    with pytest.raises(TypeError, match="argument `custom_objects`"):
        load_legacy_keras(KERAS_FILE, custom_objects=["Dense"])
    with pytest.raises(ValueError, match="argument `path_out`"):
        convert_legacy_keras(KERAS_FILE, str(tmp_path / "out.h5"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_legacy_keras(KERAS_FILE, KERAS_FILE)
    with pytest.raises(ValueError, match="a path other than `path_in`"):
        convert_legacy_keras(KERAS_FILE, KERAS_FILE, overwrite=True)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="is not built"):
        export_portable(unbuilt, str(tmp_path / "p"))


def test_shape_mismatch_names_the_layer(tmp_path):
    def widen(config):
        _layer_config(config, "logits")["config"]["units"] = 5
    path = _rewrite_keras_file(KERAS_FILE, str(tmp_path / "wide.keras"), edit_config=widen)
    with pytest.raises(ValueError, match="Dense 'logits' from the group "
                                         "`_layer_checkpoint_dependencies/dense_1`"):
        load_legacy_keras(path)


def test_count_mismatch_names_the_layer(tmp_path):
    def no_bias(config):
        _layer_config(config, "stem")["config"]["use_bias"] = False
    path = _rewrite_keras_file(KERAS_FILE, str(tmp_path / "no_bias.keras"), edit_config=no_bias)
    with pytest.raises(ValueError, match="Conv2D 'stem'.*expected 1 variables, but received 2"):
        load_legacy_keras(path)


def test_unclaimed_saved_variables_fail(tmp_path):
    def extra(h5):
        h5.create_group("_layer_checkpoint_dependencies/extra/vars").create_dataset(
            "0", data=np.zeros(3, "float32"))
    path = _rewrite_keras_file(KERAS_FILE, str(tmp_path / "extra.keras"), edit_h5=extra)
    with pytest.raises(ValueError, match="no object of the rebuilt model claims.*"
                                         "_layer_checkpoint_dependencies/extra"):
        load_legacy_keras(path)


def test_unknown_layer_says_how_to_pass_it(tmp_path):
    def rename(config):
        _layer_config(config, "adl")["class_name"] = "NoSuchLayer"
        _layer_config(config, "adl")["registered_name"] = "NoSuchLayer"
    path = _rewrite_keras_file(KERAS_FILE, str(tmp_path / "unknown.keras"), edit_config=rename)
    with pytest.raises(ValueError,
                       match="Could not rebuild the model.*NoSuchLayer.*custom_objects"):
        load_legacy_keras(path)


def test_portable_mismatch_fails(tmp_path):
    directory = str(tmp_path / "portable")
    shutil.copytree(PORTABLE_DIR, directory)
    config_path = os.path.join(directory, "portable.json")
    with open(config_path) as f:
        record = json.load(f)
    _layer_config(record["model"], "stem")["config"]["use_bias"] = False
    with open(config_path, "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="does not match the model rebuilt"):
        load_portable(directory)
    _layer_config(record["model"], "stem")["config"]["use_bias"] = True
    _layer_config(record["model"], "logits")["config"]["units"] = 5
    with open(config_path, "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="does not match the model rebuilt"):
        load_portable(directory)
    record["format"] = "something else"
    with open(config_path, "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="not a keras_efficient portable export"):
        load_portable(directory)
