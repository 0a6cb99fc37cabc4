"""Export of ReBEL's device and server halves: SavedModels with serving signatures, device TFLite."""

import os

from keras_efficient.backend import tf
from keras_efficient.split.early_exit import early_exit_decision
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["DeviceModule", "ServerModule", "export_device_model", "export_server_model",
           "export_device_tflite"]

def _halves(model):
    if hasattr(model, "device_model") and hasattr(model, "server_model"):
        return model.device_model(), model.server_model()
    raise invalid_argument("model", "a ReBEL model (with device_model() and server_model())",
                           model, TypeError)

class DeviceModule(tf.Module):
    """Device side: images → z, class log-probabilities, label, confidence, exited.

    `serve` is a `tf.function` with a fixed input signature (batch size `None`
    by default, or fixed for a static-shape graph), exported as the
    `serving_default` signature. The early-exit threshold is a variable.
    """

    def __init__(self, device_model, threshold=0.5, batch_size=None, name="rebel_device"):
        super().__init__(name=name)
        self.model = device_model
        self.threshold = tf.Variable(check_float("threshold", threshold, low=0.0, high=1.0),
                                     trainable=False, name="threshold")
        batch_size = check_int("batch_size", batch_size, low=1, allow_none=True)
        spec = tf.TensorSpec([batch_size] + list(device_model.input_shape[1:]), tf.float32,
                             name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        out = self.model(images, training=False)
        decision = early_exit_decision(out["log_probs"], self.threshold)
        return {"z": tf.cast(out["z"], tf.float32), "log_probs": out["log_probs"],
                "label": decision["label"], "confidence": decision["confidence"],
                "exited": decision["exited"]}

class ServerModule(tf.Module):
    """Server side: z → logits and label (`serving_default` signature)."""

    def __init__(self, server_model, batch_size=None, name="rebel_server"):
        super().__init__(name=name)
        self.model = server_model
        batch_size = check_int("batch_size", batch_size, low=1, allow_none=True)
        spec = tf.TensorSpec([batch_size] + list(server_model.input_shape[1:]), tf.float32,
                             name="z")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, z):
        logits = tf.cast(self.model(z, training=False)["logits"], tf.float32)
        return {"logits": logits, "label": tf.argmax(logits, axis=-1, output_type=tf.int32)}

def export_device_model(model, path, threshold=0.5, batch_size=None):
    """Writes Head₁ + projection + classifier (+ early-exit decision) as a SavedModel.

    Returns the path. Load with `tf.saved_model.load(path).signatures["serving_default"]`.
    """
    device, _ = _halves(model)
    module = DeviceModule(device, threshold, batch_size)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path

def export_server_model(model, path, batch_size=None):
    """Writes Head₂ + tail as a SavedModel with a `serving_default` signature; returns the path."""
    _, server = _halves(model)
    module = ServerModule(server, batch_size)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path

def export_device_tflite(model, path=None, threshold=0.5, batch_size=1, allow_select_ops=True):
    """Converts the device half to TFLite (fixed batch size) and returns the flatbuffer bytes.

    The diagonal GMC converts to builtin ops only. The full-covariance GMC needs a
    Cholesky factorisation and a triangular solve, which TFLite lacks as builtins:
    they run through the select-TF-ops (Flex) delegate when `allow_select_ops`.
    """
    device, _ = _halves(model)
    module = DeviceModule(device, threshold, check_int("batch_size", batch_size, low=1))
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
