"""get_strategy kinds and errors; MirroredStrategy on 2 logical CPUs matches 1 device."""

import json

import numpy as np
import pytest

from keras_efficient import distribute
from keras_efficient.backend import keras, tf
from keras_efficient.layers.bayesian import FlipoutDense
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator


def test_describe_devices_and_auto():
    devices = distribute.describe_devices()
    assert set(devices) == {"cpu", "gpu", "ipu"}
    assert devices["cpu"] >= 1
    assert devices["gpu"] == len(tf.config.list_physical_devices("GPU"))
    expected = "ipu" if devices["ipu"] else ("gpu" if devices["gpu"] else "cpu")
    assert distribute.resolve_strategy_kind("auto") == expected
    for kind in ("cpu", "gpu", "ipu", "multi_worker"):
        assert distribute.resolve_strategy_kind(kind) == kind


def test_cpu_kinds():
    assert distribute.get_strategy("cpu") is tf.distribute.get_strategy()
    strategy = distribute.get_strategy("cpu", num_devices=2)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    if distribute.resolve_strategy_kind("auto") == "cpu":
        assert distribute.get_strategy("auto") is tf.distribute.get_strategy()


@pytest.mark.parametrize("kind", ["tpu", "CPU", None, 1, ""])
def test_bad_kind(kind):
    with pytest.raises(ValueError, match="kind"):
        distribute.get_strategy(kind)


@pytest.mark.parametrize("num_devices,error", [(0, ValueError), (-2, ValueError),
                                               (1.5, TypeError), ("2", TypeError)])
def test_bad_num_devices(num_devices, error):
    with pytest.raises(error, match="num_devices"):
        distribute.get_strategy("cpu", num_devices=num_devices)


def test_too_many_cpu_devices():
    with pytest.raises(ValueError, match="logical CPU devices"):
        distribute.get_strategy("cpu", num_devices=64)


def test_no_gpu_error():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible; the no-GPU error path cannot be exercised")
    with pytest.raises(RuntimeError, match="found no GPU"):
        distribute.get_strategy("gpu")


def test_no_ipu_sdk_error():
    if distribute.ipu_sdk_available():
        pytest.skip("Graphcore's TensorFlow is installed; the missing-SDK path cannot run")
    assert distribute.describe_devices()["ipu"] is None
    with pytest.raises(RuntimeError, match="Poplar SDK"):
        distribute.get_strategy("ipu")


@pytest.mark.parametrize("tf_config,match", [
    (None, "not set"),
    ("{not json", "not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "cluster"),
    (json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}), "non-empty"),
    (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}),
     "host:port"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "task"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}),
     "out of range"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}),
     "not a job"),
])
def test_bad_tf_config(monkeypatch, tf_config, match):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi_worker")


def test_multi_worker_rejects_num_devices(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", distribute.local_cluster_tf_configs(1)[0])
    with pytest.raises(ValueError, match="num_devices"):
        distribute.get_strategy("multi_worker", num_devices=2)


def _galaxy_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16, 16, 6)).astype(np.float32)
    y = (0.3 * np.tanh(x[:, 6:10, 6:10, :2].mean(axis=(1, 2)) * 3)).astype(np.float32)
    return x, y


def _train(strategy, bayesian, weights, x, y, epochs=2):
    with strategy.scope():
        model = galaxy_shape_estimator(bayesian=bayesian, input_shape=(16, 16, 6),
                                       filters=(4,) if bayesian else (4, 8),
                                       num_train_examples=len(x), posterior_scale_init=-20.0,
                                       synchronized_batch_norm=True)
        if weights is not None:
            model.set_weights(weights)
        model.compile(keras.optimizers.SGD(1e-3), loss=NegativeLogLikelihood())
    start = model.get_weights()
    ds = distribute.static_batches(x, y, batch_size=8)
    history = model.fit(ds, epochs=epochs, verbose=0).history["loss"]
    return start, history, model.get_weights()


@pytest.mark.parametrize("bayesian", [False, True])
def test_mirrored_two_cpus_matches_one_device(bayesian):
    """Same initial weights, same batches: per-epoch losses and final weights agree.

    Tolerance: rtol 1e-3 on the losses (float32 reduction order differs between one
    device and two replicas; the Bayesian posterior scales are ~1e-7 so sampling
    noise is far below it).
    """
    keras.utils.set_random_seed(3)
    x, y = _galaxy_data(24)
    start, one, w_one = _train(tf.distribute.get_strategy(), bayesian, None, x, y)
    _, two, w_two = _train(distribute.get_strategy("cpu", num_devices=2), bayesian, start, x, y)
    assert one[-1] < one[0]
    np.testing.assert_allclose(two, one, rtol=1e-3)
    for a, b in zip(w_one, w_two):
        np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-4)


def test_static_batches_and_steps_per_execution_with_library_layers():
    """Every batch has the same static size; steps_per_execution > 1 trains the layers."""
    x, y = _galaxy_data(20)
    ds = distribute.static_batches(x, y, batch_size=4, shuffle=True, seed=0)
    assert ds.element_spec[0].shape.as_list() == [4, 16, 16, 6]
    steps = distribute.batches_per_epoch(len(x), 4)
    assert steps == 5
    spe = distribute.check_steps_per_execution(5, steps)
    model = galaxy_shape_estimator(bayesian=True, input_shape=(16, 16, 6), filters=(2,),
                                   num_train_examples=len(x))
    distribute.check_ipu_compatible(model)
    model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood(), steps_per_execution=spe)
    hist = model.fit(ds, epochs=2, verbose=0).history["loss"]
    assert len(hist) == 2 and np.all(np.isfinite(hist))
    # A head with a Bayesian params layer on a flat input, same pipeline.
    inputs = keras.Input((5,))
    head = MultivariateNormalHead(2, params_layer=FlipoutDense(5, num_train_examples=20))
    flat = keras.Model(inputs, head(inputs))
    flat.compile("adam", loss=NegativeLogLikelihood(), steps_per_execution=5)
    flat.fit(distribute.static_batches(x[:, 0, 0, :5], y, batch_size=4), epochs=1, verbose=0)


@pytest.mark.parametrize("spe,steps,replicas,match", [
    (3, 10, 1, "one of \\[1, 2, 5, 10\\]"),
    (4, 8, 4, "one of \\[1, 2\\]"),
    (1, 9, 2, "not divisible"),
    (0, 8, 1, "steps_per_execution"),
])
def test_steps_per_execution_errors(spe, steps, replicas, match):
    with pytest.raises(ValueError, match=match):
        distribute.check_steps_per_execution(spe, steps, num_replicas=replicas)


def test_static_batches_errors():
    with pytest.raises(ValueError, match="at least one full batch"):
        distribute.static_batches(np.zeros((3, 2), np.float32), batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        distribute.static_batches(np.zeros((3, 2), np.float32), batch_size=0)
    ds = distribute.static_batches(np.zeros((5, 2)), batch_size=2)
    assert ds.element_spec.dtype == tf.float32  # float64 is converted: IPUs have none
    assert sum(1 for _ in ds) == 2


def test_check_ipu_compatible_rejects_dynamic_shapes_and_float64():
    dynamic = keras.Model(*(lambda i: (i, keras.layers.Dense(2)(i)))(keras.Input((None, 3))))
    with pytest.raises(ValueError, match="fully defined"):
        distribute.check_ipu_compatible(dynamic)
    inputs = keras.Input((3,))
    f64 = keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(inputs))
    with pytest.raises(ValueError, match="float64"):
        distribute.check_ipu_compatible(f64)
