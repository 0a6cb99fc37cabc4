"""The retention target c(t) of adaptive dropout, Eq. (6) of Kubo et al.

    c(t) = max{ t/K * c_inf + (1 - t/K) * c_0 , c_inf }

A piecewise-linear decay from the initial target c_0 to the final target
c_inf over K steps, constant afterwards.
"""

from keras_efficient.backend import register_serializable, tf
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["RetentionTargetSchedule"]


@register_serializable
class RetentionTargetSchedule:
    """Piecewise-linear retention target c(t) of Eq. (6).

    c(t) = max(t / K * c_inf + (1 - t / K) * c_0, c_inf), computed in float32.

    A plain serializable object: a pure function of the step, like
    `keras.optimizers.schedules.LearningRateSchedule`.

    Args:
      initial_target: c_0, the target retention logit at step 0.
      final_target: c_inf < c_0, the target after `decay_steps` steps. It is also
        the default pruning threshold of `AdaptiveDropout`.
      decay_steps: K > 0, the number of steps of the linear decrease.

    Call arguments:
      step: a scalar (Python number or tensor) optimizer step t >= 0.

    Returns:
      A float32 scalar tensor c(t).
    """

    def __init__(self, initial_target=10.0, final_target=-2.0, decay_steps=100_000):
        self.initial_target = check_float("initial_target", initial_target)
        self.final_target = check_float("final_target", final_target)
        if not self.final_target < self.initial_target:
            raise invalid_argument(
                "final_target",
                "a float smaller than initial_target={}".format(self.initial_target),
                final_target)
        self.decay_steps = check_int("decay_steps", decay_steps, low=1)

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        frac = t / float(self.decay_steps)
        c0 = tf.constant(self.initial_target, tf.float32)
        cinf = tf.constant(self.final_target, tf.float32)
        return tf.maximum(frac * cinf + (1.0 - frac) * c0, cinf)

    def get_config(self):
        return {
            "initial_target": self.initial_target,
            "final_target": self.final_target,
            "decay_steps": self.decay_steps,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return "RetentionTargetSchedule(initial_target={}, final_target={}, decay_steps={})".format(
            self.initial_target, self.final_target, self.decay_steps)
