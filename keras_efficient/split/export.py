"""Export of ReBEL's device and server halves: SavedModels with serving signatures, device TFLite."""

import os

from keras_efficient.backend import tf
from keras_efficient.split.codec import BottleneckCodec
from keras_efficient.split.early_exit import early_exit_decision
from keras_efficient.split.transmission import BYTES_PER_ELEMENT
from keras_efficient.utils.validation import check_choice, check_float, check_int, invalid_argument

__all__ = ["DeviceModule", "ServerModule", "export_device_model", "export_server_model",
           "export_device_tflite"]

def _codec(z_dtype, z_range):
    if isinstance(z_dtype, BottleneckCodec):
        if z_range is not None:
            raise invalid_argument("z_range", "None when `z_dtype` is a BottleneckCodec",
                                   z_range)
        return z_dtype
    check_choice("z_dtype", z_dtype, tuple(BYTES_PER_ELEMENT))
    return BottleneckCodec(z_dtype, z_range)


def _check_codec(codec):
    if codec is None:
        return BottleneckCodec("float32")
    if not isinstance(codec, BottleneckCodec):
        raise invalid_argument("codec", "a BottleneckCodec or None", codec, TypeError)
    return codec


def _halves(model):
    if hasattr(model, "device_model") and hasattr(model, "server_model"):
        return model.device_model(), model.server_model()
    raise invalid_argument("model", "a ReBEL model (with device_model() and server_model())",
                           model, TypeError)

class DeviceModule(tf.Module):
    """Device side: images → wire-encoded z, log-probabilities, label, confidence, exited.

    `serve` is a `tf.function` with a fixed input signature (batch size `None`
    by default, or fixed for a static-shape graph), exported as the
    `serving_default` signature. The early-exit threshold is a variable. The
    early classifier works on the float32 z; only the transmitted z is encoded
    by `codec` (a `BottleneckCodec`; float32 when None).
    """

    def __init__(self, device_model, threshold=0.5, batch_size=None, codec=None,
                 name="rebel_device"):
        super().__init__(name=name)
        self.model = device_model
        self.codec = _check_codec(codec)
        self.threshold = tf.Variable(check_float("threshold", threshold, low=0.0, high=1.0),
                                     trainable=False, name="threshold")
        batch_size = check_int("batch_size", batch_size, low=1, allow_none=True)
        spec = tf.TensorSpec([batch_size] + list(device_model.input_shape[1:]), tf.float32,
                             name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        out = self.model(images, training=False)
        decision = early_exit_decision(out["log_probs"], self.threshold)
        return {"z": self.codec.encode(out["z"]), "log_probs": out["log_probs"],
                "label": decision["label"], "confidence": decision["confidence"],
                "exited": decision["exited"]}

class ServerModule(tf.Module):
    """Server side: z as received (float32, float16 or uint8) → logits and label.

    The `serving_default` signature takes z in the codec's wire dtype and
    decodes it (dequantises uint8 with the stored `z_range`) before Head₂.
    """

    def __init__(self, server_model, batch_size=None, codec=None, name="rebel_server"):
        super().__init__(name=name)
        self.model = server_model
        self.codec = _check_codec(codec)
        batch_size = check_int("batch_size", batch_size, low=1, allow_none=True)
        spec = tf.TensorSpec([batch_size] + list(server_model.input_shape[1:]),
                             self.codec.wire_dtype, name="z")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, z):
        logits = tf.cast(self.model(self.codec.decode(z), training=False)["logits"], tf.float32)
        return {"logits": logits, "label": tf.argmax(logits, axis=-1, output_type=tf.int32)}

def export_device_model(model, path, threshold=0.5, batch_size=None, z_dtype="float32",
                        z_range=None):
    """Writes Head₁ + projection + classifier (+ early-exit decision) as a SavedModel.

    Returns the path. Load with `tf.saved_model.load(path).signatures["serving_default"]`.

    `z_dtype` is the wire format of the `z` output: "float32" (4 B per element),
    "float16" (2 B) or "uint8" (1 B, uniform over the fixed range `z_range` =
    (low, high), e.g. `BottleneckCodec.calibrated(model.embed(x_train,
    project=False)).range`), or a `BottleneckCodec`. Export the server with the
    same format and range; bytes per sample = `bytes_per_sample(z_shape, z_dtype)`.
    """
    codec = _codec(z_dtype, z_range)
    device, _ = _halves(model)
    module = DeviceModule(device, threshold, batch_size, codec)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path

def export_server_model(model, path, batch_size=None, z_dtype="float32", z_range=None):
    """Writes Head₂ + tail as a SavedModel with a `serving_default` signature; returns the path.

    The signature takes z in the wire format `z_dtype` and decodes it inside.
    """
    codec = _codec(z_dtype, z_range)
    _, server = _halves(model)
    module = ServerModule(server, batch_size, codec)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path

def export_device_tflite(model, path=None, threshold=0.5, batch_size=1, allow_select_ops=True,
                         z_dtype="float32", z_range=None):
    """Converts the device half to TFLite (fixed batch size) and returns the flatbuffer bytes.

    The diagonal GMC converts to builtin ops only. The full-covariance GMC needs a
    Cholesky factorisation and a triangular solve, which TFLite lacks as builtins:
    they run through the select-TF-ops (Flex) delegate when `allow_select_ops`.
    The uint8 and float16 wire formats use builtin ops (MINIMUM/MAXIMUM, SUB, DIV,
    MUL, ROUND, CAST), so the `z` output is uint8 / float16 in TFLite too.
    """
    codec = _codec(z_dtype, z_range)
    device, _ = _halves(model)
    module = DeviceModule(device, threshold, check_int("batch_size", batch_size, low=1), codec)
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    flatbuffer = converter.convert()
    if path is not None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer
