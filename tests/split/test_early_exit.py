"""Early-exit decisions and exported device/server models (SavedModel, TFLite)."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.models import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model
from keras_efficient.split.codec import BottleneckCodec
from keras_efficient.split.early_exit import EarlyExitPredictor, early_exit_decision
from keras_efficient.split.export import (
    DeviceModule,
    ServerModule,
    export_device_model,
    export_device_tflite,
    export_server_model,
)
from keras_efficient.split.transmission import bytes_per_sample, dequantize_uint8, quantize_uint8


def _log_probs():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(probs), -1e4).astype("float32")


def test_thresholds_zero_and_one():
    lp = _log_probs()
    all_local = early_exit_decision(lp, 0.0)
    assert all_local["exited"].numpy().all()
    only_certain = early_exit_decision(lp, 1.0)
    np.testing.assert_array_equal(only_certain["exited"].numpy(), [True, False, False, False])
    mid = early_exit_decision(lp, 0.7)
    np.testing.assert_array_equal(mid["exited"].numpy(), [True, False, True, True])
    np.testing.assert_array_equal(mid["label"].numpy(), [0, 0, 2, 1])
    np.testing.assert_allclose(mid["confidence"].numpy(), [1.0, 0.5, 0.8, 0.7], rtol=1e-6)


def test_static_shapes_under_jit():
    fn = tf.function(lambda lp, t: early_exit_decision(lp, t), jit_compile=True)
    out = fn(tf.constant(_log_probs()), tf.constant(0.6))
    np.testing.assert_array_equal(out["exited"].numpy(), [True, False, True, True])
    graph = tf.function(lambda lp: early_exit_decision(lp, 0.6)).get_concrete_function(
        tf.TensorSpec([4, 3], tf.float32))
    assert all(o.shape == (4,) for o in tf.nest.flatten(graph.structured_outputs))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_threshold(bad):
    with pytest.raises((ValueError, TypeError), match="threshold"):
        early_exit_decision(_log_probs(), bad)


def test_bad_threshold_tensor_and_nan_log_probs():
    with pytest.raises(tf.errors.InvalidArgumentError, match="threshold"):
        early_exit_decision(_log_probs(), tf.constant(1.2))
    lp = _log_probs()
    lp[1, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        early_exit_decision(lp, 0.5)
    with pytest.raises(ValueError, match=r"\(batch, num_classes\)"):
        early_exit_decision(_log_probs()[0], 0.5)


@pytest.fixture(scope="module")
def rebel_model():
    keras.utils.set_random_seed(1)
    teacher = cifar_resnet(8, num_classes=3, input_shape=(8, 8, 3), base_filters=4)
    head, tail = split_functional_model(teacher, "stage2_block0")
    model = ReBEL(head, tail, 3, head_filters=(6, 6), latent_channels=2, decoder_filters=(6,),
                  components_per_class=2, covariance="diag", projection_dim=5)
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 3)).astype("float32")
    model(x)
    # Spread the classifier's outputs so that thresholds split the batch.
    model.classifier.means.assign(3.0 * np.random.default_rng(1).normal(
        size=model.classifier.means.shape).astype("float32"))
    return model, x


def _split_answers(device, server, predictor, x, thresholds):
    """For each threshold: the exported device and server signatures answer as the
    in-memory predictor does (exit decisions and merged labels). Yields (d, s, ref)."""
    for threshold in thresholds:
        device.threshold.assign(threshold)
        predictor.set_threshold(threshold)
        d = device.signatures["serving_default"](images=tf.constant(x))
        s = server.signatures["serving_default"](z=d["z"])
        ref = predictor(x)
        np.testing.assert_array_equal(d["exited"].numpy(), ref["exited"].numpy())
        np.testing.assert_array_equal(
            np.where(d["exited"].numpy(), d["label"].numpy(), s["label"].numpy()),
            ref["label"].numpy())
        yield d, s, ref


def test_predictor_matches_model(rebel_model):
    model, x = rebel_model
    out = model(x, training=False)
    conf = np.exp(out["log_probs"].numpy().max(-1))
    remote = out["logits"].numpy().argmax(-1)
    local = out["log_probs"].numpy().argmax(-1)
    predictor = EarlyExitPredictor(model.device_model(), model.server_model(), 0.0)
    np.testing.assert_array_equal(predictor(x)["label"].numpy(), local)
    predictor.set_threshold(1.0)
    np.testing.assert_array_equal(predictor(x)["label"].numpy(),
                                  np.where(conf >= 1.0, local, remote))
    t = float(np.median(conf))
    predictor.set_threshold(t)
    res = predictor(x)
    np.testing.assert_array_equal(res["exited"].numpy(), conf >= t)
    np.testing.assert_array_equal(res["label"].numpy(), np.where(conf >= t, local, remote))
    with pytest.raises(ValueError, match="threshold"):
        predictor.set_threshold(2.0)


def test_exported_saved_models_and_tflite(rebel_model, tmp_path):
    model, x = rebel_model
    out = model(x, training=False)
    conf = np.exp(out["log_probs"].numpy().max(-1))
    t = float(np.median(conf))
    device = tf.saved_model.load(export_device_model(model, str(tmp_path / "device"), t))
    server = tf.saved_model.load(export_server_model(model, str(tmp_path / "server")))
    d = device.signatures["serving_default"](images=tf.constant(x))
    s = server.signatures["serving_default"](z=d["z"])
    np.testing.assert_allclose(d["log_probs"].numpy(), out["log_probs"].numpy(), atol=1e-5)
    np.testing.assert_allclose(d["z"].numpy(), out["z"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(d["exited"].numpy(), conf >= t)
    np.testing.assert_allclose(s["logits"].numpy(), out["logits"].numpy(), atol=1e-4)
    # The split deployment (device answers where exited, server elsewhere) equals the
    # in-process predictor, including the extreme thresholds.
    predictor = EarlyExitPredictor(model.device_model(), model.server_model(), t)
    for d, _, ref in _split_answers(device, server, predictor, x, (t, 0.0, 1.0)):
        np.testing.assert_allclose(d["confidence"].numpy(), ref["confidence"].numpy(), atol=1e-6)
    # threshold 1: only confidence exactly 1 stays local (none in this batch; the case of
    # some exactly-1 confidences is covered by test_thresholds_zero_and_one).
    np.testing.assert_array_equal(d["exited"].numpy(), conf == 1.0)
    device.threshold.assign(0.0)
    assert device.signatures["serving_default"](images=tf.constant(x))["exited"].numpy().all()

    flatbuffer = export_device_tflite(model, str(tmp_path / "device.tflite"), t, batch_size=6)
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    lite = runner(images=x)
    np.testing.assert_allclose(lite["log_probs"], out["log_probs"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(lite["label"], out["log_probs"].numpy().argmax(-1))
    np.testing.assert_allclose(lite["confidence"], conf, atol=1e-5)
    np.testing.assert_array_equal(lite["exited"], conf >= t)
    np.testing.assert_allclose(lite["z"], out["z"].numpy(), atol=1e-5)
    assert (tmp_path / "device.tflite").stat().st_size == len(flatbuffer)


def test_uint8_transmission_in_exported_models(rebel_model, tmp_path):
    model, x = rebel_model
    out = model(x, training=False)
    z_float = out["z"].numpy()
    low, high = BottleneckCodec.calibrated(model.embed(x, project=False), tail=0.05).range
    conf = np.exp(out["log_probs"].numpy().max(-1))
    t = float(np.median(conf))
    device = tf.saved_model.load(export_device_model(
        model, str(tmp_path / "device"), t, z_dtype="uint8", z_range=(low, high)))
    server = tf.saved_model.load(export_server_model(
        model, str(tmp_path / "server"), z_dtype="uint8", z_range=(low, high)))
    np.testing.assert_allclose(server.codec.z_range.numpy(), [low, high], rtol=1e-6)
    d = device.signatures["serving_default"](images=tf.constant(x))
    q = d["z"].numpy()
    assert q.dtype == np.uint8 and q.shape == z_float.shape
    assert q[0].nbytes == bytes_per_sample(z_float.shape[1:], "uint8") == z_float[0].size
    # The codes are the NumPy quantiser's on the float z (±1 where the exported graph's z
    # and the in-memory z straddle a rounding boundary).
    ref_q = quantize_uint8(z_float, low, high)
    assert np.abs(q.astype(int) - ref_q.astype(int)).max() <= 1
    assert np.mean(q == ref_q) > 0.99
    # The server dequantises inside its signature: its logits equal the in-memory
    # server model's on the NumPy-dequantised z.
    s = server.signatures["serving_default"](z=tf.constant(q))
    expected = model.server_model()(dequantize_uint8(q, low, high), training=False)["logits"]
    np.testing.assert_allclose(s["logits"].numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_array_equal(s["label"].numpy(), expected.numpy().argmax(-1))
    # Early exit decisions and merged answers equal the in-memory predictor that feeds
    # the server the dequantised z.
    predictor = EarlyExitPredictor(model.device_model(), model.server_model(), t,
                                   codec=BottleneckCodec("uint8", (low, high)))
    for _, s, ref in _split_answers(device, server, predictor, x, (t, 0.0, 1.0)):
        np.testing.assert_array_equal(s["label"].numpy(), ref["remote_label"].numpy())
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError),
                       match="uint8"):
        server.signatures["serving_default"](z=tf.constant(z_float))
    # TFLite device model: z is uint8 there too, with builtin ops only (diagonal GMC).
    lite = tf.lite.Interpreter(model_content=export_device_tflite(
        model, None, t, batch_size=6, allow_select_ops=False, z_dtype="uint8",
        z_range=(low, high))).get_signature_runner()(images=x)
    assert lite["z"].dtype == np.uint8
    assert np.abs(lite["z"].astype(int) - ref_q.astype(int)).max() <= 1


def test_float16_transmission(rebel_model):
    # The serving functions in process (the saved path is the uint8 test's).
    model, x = rebel_model
    codec = BottleneckCodec("float16")
    device = DeviceModule(model.device_model(), 0.5, codec=codec)
    server = ServerModule(model.server_model(), codec=codec)
    z16 = device.serve(tf.constant(x))["z"]
    assert z16.dtype == tf.float16
    assert z16.numpy()[0].nbytes == bytes_per_sample(z16.shape[1:], "float16")
    expected = model.server_model()(z16.numpy().astype(np.float32), training=False)["logits"]
    np.testing.assert_allclose(server.serve(z16)["logits"].numpy(), expected.numpy(), atol=1e-4)
    with pytest.raises(TypeError, match="codec"):
        ServerModule(model.server_model(), codec="float16")


@pytest.mark.parametrize("kwargs,match", [
    ({"z_dtype": "uint8"}, "z_range"),
    ({"z_dtype": "int8"}, "z_dtype"),
    ({"z_dtype": "float16", "z_range": (0.0, 1.0)}, "z_range"),
    ({"z_dtype": "uint8", "z_range": (1.0, 0.0)}, "z_range"),
    ({"z_dtype": BottleneckCodec(), "z_range": (0.0, 1.0)}, "z_range"),
])
def test_export_rejects_bad_wire_format(rebel_model, tmp_path, kwargs, match):
    model, _ = rebel_model
    for export in (export_device_model, export_server_model):
        with pytest.raises((ValueError, TypeError), match=match):
            export(model, str(tmp_path / "m"), **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        export_device_tflite(model, None, **kwargs)
    assert not (tmp_path / "m").exists()


def test_predictor_rejects_bad_codec(rebel_model):
    model, _ = rebel_model
    with pytest.raises(TypeError, match="codec"):
        EarlyExitPredictor(model.device_model(), model.server_model(), 0.5, codec="uint8")


def test_export_rejects_other_models(tmp_path):
    with pytest.raises(TypeError, match="ReBEL"):
        export_device_model(keras.Sequential([keras.layers.Dense(2)]), str(tmp_path / "x"))


def test_full_covariance_device_tflite_uses_select_ops():
    keras.utils.set_random_seed(2)
    teacher = cifar_resnet(8, num_classes=3, input_shape=(8, 8, 3), base_filters=4)
    head, tail = split_functional_model(teacher, "stage2_block0")
    model = ReBEL(head, tail, 3, head_filters=(4,), latent_channels=2, decoder_filters=(4,),
                  components_per_class=2, covariance="full", projection_dim=5)
    x = np.random.default_rng(3).uniform(size=(2, 8, 8, 3)).astype("float32")
    expected = model(x, training=False)["log_probs"].numpy()
    runner = tf.lite.Interpreter(
        model_content=export_device_tflite(model, batch_size=2)).get_signature_runner()
    np.testing.assert_allclose(runner(images=x)["log_probs"], expected, atol=1e-4)
