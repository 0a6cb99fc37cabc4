"""Head network distillation's mimic loss (ReBEL, Eq. 1)."""

from keras_efficient.backend import keras, register_serializable, tf

__all__ = ["MimicLoss"]


@register_serializable
class MimicLoss(keras.losses.Loss):
    """L_M = Σ_x ‖H₂(H₁(x)) − H(x)‖² (ReBEL, Eq. 1).

    Per sample, the sum of squared differences over every non-batch axis between
    the student's intermediate tensor v' = H₂(H₁(x)) (`y_pred`) and the frozen
    teacher head's v = H(x) (`y_true`); the batch reduction is Keras's (mean by
    default; Eq. 1 sums, which only rescales the loss). Computed in float32.

    Args:
      reduction, name: as for `keras.losses.Loss`.
    """

    def __init__(self, reduction=keras.losses.Reduction.AUTO, name="mimic"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        if (y_true.shape.rank is not None and y_pred.shape.rank is not None
                and not y_true.shape[1:].is_compatible_with(y_pred.shape[1:])):
            raise ValueError("MimicLoss: teacher output shape {} and student output shape {} "
                             "differ.".format(y_true.shape, y_pred.shape))
        diff = tf.square(y_pred - y_true)
        return tf.reduce_sum(tf.reshape(diff, [tf.shape(diff)[0], -1]), axis=-1)
