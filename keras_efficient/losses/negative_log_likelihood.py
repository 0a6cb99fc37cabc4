"""Negative log-likelihood of the targets under a predicted distribution (Eq. 1)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import check_bool

__all__ = ["NegativeLogLikelihood"]


def _as_distribution(y_pred):
    if hasattr(y_pred, "log_prob"):
        return y_pred
    dist = getattr(y_pred, "_tfp_distribution", None)
    if dist is not None:
        return dist
    raise TypeError(
        "NegativeLogLikelihood expects the model output to be a TensorFlow Probability "
        "distribution (for example from `MultivariateNormalHead`). Received: y_pred={!r}".format(
            y_pred))


@register_serializable
class NegativeLogLikelihood(keras.losses.Loss):
    """L = -log p(y | x): the loss of Eq. 1 of the IPU/GPU cosmology paper.

    `y_pred` is the distribution p returned by the model (a TFP distribution, as
    produced by `MultivariateNormalHead`); `y_true` the target vector. The per
    example loss is `-p.log_prob(y_true)`, reduced over the batch as any Keras loss
    (mean by default). For a Bayesian network the KL terms of Eq. 2 are not part of
    this loss: the Bayesian layers add them through `add_loss`, and Keras adds
    `model.losses` to the compiled loss.

    Targets are cast to the distribution's dtype (float32). A target whose last
    dimension differs from the distribution's event size, or whose shape is not
    the distribution's batch shape + event shape (which `log_prob` would silently
    broadcast), raises ValueError; NaN or Inf targets raise
    `tf.errors.InvalidArgumentError` (when `check_finite`).

    Args:
      check_finite: assert that the targets are finite.
      reduction, name: as for `keras.losses.Loss`.
    """

    def __init__(self, check_finite=True, reduction=keras.losses.Reduction.AUTO,
                 name="negative_log_likelihood"):
        super().__init__(reduction=reduction, name=name)
        self.check_finite = check_bool("check_finite", check_finite)

    def call(self, y_true, y_pred):
        dist = _as_distribution(y_pred)
        y_true = tf.cast(y_true, dist.dtype)
        event_shape = dist.event_shape
        if event_shape.rank:
            expected = event_shape[-1]
            received = y_true.shape[-1] if y_true.shape.rank else None
            if y_true.shape.rank == 0 or (expected is not None and received is not None
                                          and expected != received):
                raise ValueError(
                    "NegativeLogLikelihood: the targets must have the distribution's event size "
                    "{} in their last dimension. Received: y_true.shape={}".format(
                        expected, y_true.shape))
        batch_shape = dist.batch_shape
        if y_true.shape.rank is not None and batch_shape.rank is not None and (
                event_shape.rank is not None):
            # log_prob broadcasts: a target of another rank (e.g. [batch, 1, d]) would
            # silently give a [batch, batch] loss instead of an error.
            expected_rank = batch_shape.rank + event_shape.rank
            if (y_true.shape.rank != expected_rank
                    or not y_true.shape[:batch_shape.rank].is_compatible_with(batch_shape)):
                raise ValueError(
                    "NegativeLogLikelihood: the targets must have shape batch_shape + "
                    "event_shape = {} + {} of the predicted distribution. Received: "
                    "y_true.shape={}".format(batch_shape, event_shape, y_true.shape))
        if self.check_finite:
            with tf.control_dependencies([tf.debugging.assert_all_finite(
                    y_true, "NegativeLogLikelihood received non-finite targets (NaN or Inf).")]):
                y_true = tf.identity(y_true)
        return -dist.log_prob(y_true)

    def get_config(self):
        config = super().get_config()
        config["check_finite"] = self.check_finite
        return config
