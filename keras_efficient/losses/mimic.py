"""Head network distillation's mimic loss (ReBEL, Eq. 1)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import check_choice

__all__ = ["MimicLoss", "mimic_error"]

ELEMENT_REDUCTIONS = ("mean", "sum")


def mimic_error(teacher, student, element_reduction="mean"):
    """Per-sample ‖v' − v‖² of Eq. (1), divided by the size of v by default.

    Args:
      teacher: v = H(x), (batch, ...).
      student: v' = H₂(H₁(x)), the same shape.
      element_reduction: "mean" (default): ‖v' − v‖² / n with n the number of
        elements of v per sample, i.e. the mean squared error; "sum": ‖v' − v‖²
        exactly as written in Eq. (1).

    Returns:
      float32 tensor (batch,).

    Why the mean by default: Eq. (5) weighs L_M against L_C with fixed α = 1 and
    γ = 0.1, which only makes sense if L_M does not grow with the size of the
    teacher tensor. With the sum, L_M scales with n (8,192 values for a 16×16×32
    tensor, 800 K after ResNet-50's first stage at 224×224), so γ·L_C is a
    vanishing share of the gradient that reaches Head₁: z is shaped by the mimic
    loss alone, and a jointly trained early classifier learns only what that z
    happens to keep of the label. The mean keeps the ratio α:γ independent of
    the cut point; it rescales L_M by the constant 1/n and has the same minimiser.
    """
    element_reduction = check_choice("element_reduction", element_reduction, ELEMENT_REDUCTIONS)
    teacher = tf.cast(teacher, tf.float32)
    student = tf.cast(student, tf.float32)
    if (teacher.shape.rank is not None and student.shape.rank is not None
            and not teacher.shape[1:].is_compatible_with(student.shape[1:])):
        raise ValueError("MimicLoss: teacher output shape {} and student output shape {} "
                         "differ.".format(teacher.shape, student.shape))
    diff = tf.reshape(tf.square(student - teacher), [tf.shape(student)[0], -1])
    if element_reduction == "mean":
        return tf.reduce_mean(diff, axis=-1)
    return tf.reduce_sum(diff, axis=-1)


@register_serializable
class MimicLoss(keras.losses.Loss):
    """L_M = Σ_x ‖H₂(H₁(x)) − H(x)‖² (ReBEL, Eq. 1), per element by default.

    Per sample, the squared differences over every non-batch axis between the
    student's intermediate tensor v' = H₂(H₁(x)) (`y_pred`) and the frozen
    teacher head's v = H(x) (`y_true`), averaged over those elements
    (`element_reduction="mean"`, the mean squared error) or summed as written in
    Eq. (1) (`"sum"`); see `mimic_error` for why the mean is the default. The
    batch reduction is Keras's (mean by default; Eq. 1 sums, which only rescales
    the loss). Computed in float32.

    Args:
      element_reduction: "mean" or "sum" over the elements of v.
      reduction, name: as for `keras.losses.Loss`.
    """

    def __init__(self, element_reduction="mean", reduction=keras.losses.Reduction.AUTO,
                 name="mimic"):
        super().__init__(reduction=reduction, name=name)
        self.element_reduction = check_choice("element_reduction", element_reduction,
                                              ELEMENT_REDUCTIONS)

    def call(self, y_true, y_pred):
        return mimic_error(y_true, y_pred, self.element_reduction)

    def get_config(self):
        config = super().get_config()
        config["element_reduction"] = self.element_reduction
        return config
