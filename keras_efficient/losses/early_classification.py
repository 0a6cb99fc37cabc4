"""ReBEL's early classification loss: negative log-likelihood of the label (Eq. 4)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.losses.mixture_kl import check_labels
from keras_efficient.utils.validation import assert_finite

__all__ = ["EarlyClassificationLoss", "early_classification_nll"]


def early_classification_nll(labels, log_probs):
    """Per-sample −log γ_{l(x)}(z) (Eq. 4) from class log-probabilities (batch, C)."""
    log_probs = tf.cast(log_probs, tf.float32)
    num_classes = tf.compat.dimension_value(log_probs.shape[-1])
    labels = check_labels(labels, num_classes)
    with tf.control_dependencies([assert_finite(log_probs, "log_probs")]):
        return -tf.gather(log_probs, labels, axis=1, batch_dims=1)


@register_serializable
class EarlyClassificationLoss(keras.losses.Loss):
    """L_C = −Σ_x log γ_{l(x)}(z) (ReBEL, Eq. 4), averaged over the batch by default.

    `y_pred` are normalised class log-probabilities log γ_c(z), as returned by
    `GaussianMixtureClassifier` (or a log-softmax). `y_true` are integer labels
    (batch,) or (batch, 1); a label outside [0, C) raises
    `tf.errors.InvalidArgumentError`. Unlike `SparseCategoricalCrossentropy`, no
    softmax is applied again and no clipping hides a wrong input.

    Args:
      reduction, name: as for `keras.losses.Loss` (Eq. 4 sums over x; the Keras
        default averages, which rescales all ReBEL terms alike).
    """

    def __init__(self, reduction=keras.losses.Reduction.AUTO, name="early_classification"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return early_classification_nll(y_true, y_pred)
