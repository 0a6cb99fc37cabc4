"""keras-tuner search space for adaptive-dropout pruning (c0, c_inf, K, alpha)."""

import numbers

from keras_efficient.schedules.retention_target import RetentionTargetSchedule
from keras_efficient.utils.validation import check_float, invalid_argument

__all__ = ["adaptive_dropout_hyperparameters"]


def _range(name, value, positive=False, integer=False):
    """A fixed number or a (low, high) pair, validated."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise invalid_argument(name, "a number or a (low, high) pair", value)
        low = check_float(name, value[0], low=0.0 if positive else None, low_inclusive=False)
        high = check_float(name, value[1], low=0.0 if positive else None, low_inclusive=False)
        if not low < high:
            raise invalid_argument(name, "a (low, high) pair with low < high", value)
        if integer and not all(float(v).is_integer() for v in value):
            raise invalid_argument(name, "integer bounds", value, TypeError)
        return (int(low), int(high)) if integer else (low, high)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid_argument(name, "a number or a (low, high) pair", value, TypeError)
    value = check_float(name, value, low=0.0 if positive else None, low_inclusive=False)
    if integer and not float(value).is_integer():
        raise invalid_argument(name, "an integer", value, TypeError)
    return int(value) if integer else value


def adaptive_dropout_hyperparameters(hp, initial_target=(4.0, 12.0), final_target=(-4.0, -1.0),
                                     decay_steps=(100, 100_000), alpha=(1e-8, 1e-4), gamma=1e-5,
                                     prefix="adl_"):
    """Declares c0, c_inf, K and alpha as hyperparameters; returns AdaptiveDropout kwargs.

    Each search argument is a fixed number (declared with `hp.Fixed`) or a
    (low, high) pair: c0 and c_inf are sampled linearly, K (an integer) and
    alpha log-uniformly. The ranges of c_inf and c0 must not overlap, so every
    sample satisfies c_inf < c0 (Eq. 6).

    Args:
      hp: a `keras_tuner.HyperParameters`.
      initial_target: c0 or its range.
      final_target: c_inf or its range.
      decay_steps: K or its range (> 0).
      alpha: the Eq. (5) weight or its range (> 0).
      gamma: the L2 weight of the other parameters (fixed, > 0).
      prefix: prefix of the hyperparameter names.

    Returns:
      dict(schedule=RetentionTargetSchedule(c0, c_inf, K), alpha=..., gamma=...),
      ready for `AdaptiveDropout(**kwargs)` or `ConformerBlock(..., **kwargs)`.
    """
    c0 = _range("initial_target", initial_target)
    cinf = _range("final_target", final_target)
    steps = _range("decay_steps", decay_steps, positive=True, integer=True)
    alpha_range = _range("alpha", alpha, positive=True)
    gamma = check_float("gamma", gamma, low=0.0, low_inclusive=False)
    top = cinf[1] if isinstance(cinf, tuple) else cinf
    bottom = c0[0] if isinstance(c0, tuple) else c0
    if not top < bottom:
        raise invalid_argument("final_target", "values below every initial_target "
                               "(initial_target={})".format(initial_target), final_target)

    def declare(name, value, **kwargs):
        full = prefix + name
        if isinstance(value, tuple):
            if isinstance(value[0], int) and kwargs.pop("integer", False):
                return hp.Int(full, value[0], value[1], **kwargs)
            kwargs.pop("integer", None)
            return hp.Float(full, value[0], value[1], **kwargs)
        return hp.Fixed(full, value)

    c0_value = declare("initial_target", c0)
    cinf_value = declare("final_target", cinf)
    steps_value = declare("decay_steps", steps, sampling="log", integer=True)
    alpha_value = declare("alpha", alpha_range, sampling="log")
    return {
        "schedule": RetentionTargetSchedule(float(c0_value), float(cinf_value), int(steps_value)),
        "alpha": float(alpha_value),
        "gamma": gamma,
    }
