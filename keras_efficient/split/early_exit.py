"""Batch early exit with static shapes (ReBEL inference workflow, Sec. III-B)."""

from keras_efficient.backend import tf
from keras_efficient.split.codec import BottleneckCodec
from keras_efficient.utils.validation import check_float, invalid_argument

__all__ = ["early_exit_decision", "EarlyExitPredictor"]


def early_exit_decision(log_probs, threshold):
    """Per-sample (label, confidence, exited) for a whole batch.

    confidence = max_c γ_c(z) = exp(max_c log γ_c(z)); a sample exits early (is
    answered locally) when confidence >= threshold. So threshold 0 keeps every
    sample local and threshold 1 keeps only samples of confidence exactly 1.
    Shapes are static: masks, no data-dependent gathers.

    Args:
      log_probs: (batch, C) normalised class log-probabilities of the early classifier.
      threshold: float in [0, 1] or a scalar tensor (checked at run time).

    Returns:
      dict with `label` int32 (batch,), `confidence` float32 (batch,) and
      `exited` bool (batch,).
    """
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        threshold = check_float("threshold", threshold, low=0.0, high=1.0)
    elif not tf.is_tensor(threshold):
        raise invalid_argument("threshold", "a float in [0, 1]", threshold, TypeError)
    threshold = tf.cast(threshold, tf.float32)
    checks = [tf.debugging.assert_greater_equal(threshold, 0.0,
                                                message="`threshold` must be in [0, 1]."),
              tf.debugging.assert_less_equal(threshold, 1.0,
                                             message="`threshold` must be in [0, 1].")]
    log_probs = tf.cast(log_probs, tf.float32)
    if log_probs.shape.rank is not None and log_probs.shape.rank != 2:
        raise ValueError("`log_probs` must have shape (batch, num_classes). Received: "
                         "shape={}".format(log_probs.shape))
    checks.append(tf.debugging.assert_equal(
        tf.reduce_any(tf.math.is_nan(log_probs)), False,
        message="`log_probs` received NaN values."))
    with tf.control_dependencies(checks):
        confidence = tf.exp(tf.reduce_max(log_probs, axis=-1))
    label = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    return {"label": label, "confidence": confidence, "exited": confidence >= threshold}


class EarlyExitPredictor(tf.Module):
    """Device model + server model + threshold → one answer per sample, batched.

    For a batch of images, the device model gives z and log γ; samples with
    confidence >= threshold keep the local label, the others take the server's
    label on z. To keep shapes static the server model is evaluated on the whole
    batch and the answers are merged with `tf.where` (a deployment sends only
    the rows where `exited` is False). The threshold is a variable, so it can be
    changed after export.

    Args:
      device_model: images → {"z", "log_probs"} (e.g. `ReBEL.device_model()`).
      server_model: z → {"logits"} (e.g. `ReBEL.server_model()`).
      threshold: confidence threshold in [0, 1].
      codec: optional `BottleneckCodec`; the server then receives
        `codec.decode(codec.encode(z))`, e.g. the dequantised uint8 z a deployment
        would transmit (the early classifier still uses the float z).
    """

    def __init__(self, device_model, server_model, threshold=0.5, codec=None, name=None):
        super().__init__(name=name)
        self.device_model = device_model
        self.server_model = server_model
        if codec is not None and not isinstance(codec, BottleneckCodec):
            raise invalid_argument("codec", "a BottleneckCodec or None", codec, TypeError)
        self.codec = codec
        self.threshold = tf.Variable(check_float("threshold", threshold, low=0.0, high=1.0),
                                     trainable=False, dtype=tf.float32, name="threshold")

    def set_threshold(self, threshold):
        self.threshold.assign(check_float("threshold", threshold, low=0.0, high=1.0))

    def __call__(self, images):
        device = self.device_model(images, training=False)
        decision = early_exit_decision(device["log_probs"], self.threshold)
        z = device["z"]
        if self.codec is not None:
            z = self.codec.decode(self.codec.encode(z))
        logits = self.server_model(z, training=False)["logits"]
        remote = tf.argmax(logits, axis=-1, output_type=tf.int32)
        decision.update({
            "local_label": decision["label"],
            "remote_label": remote,
            "label": tf.where(decision["exited"], decision["label"], remote),
        })
        return decision
