"""Argument and input validation with Keras's wording.

Constructor arguments fail with
"Invalid value received for argument `alpha`. Expected a positive float. Received: alpha=-1".
Input checks fail with the received shape in the message.
"""

import numbers
import warnings

from keras_efficient.backend import tf

__all__ = [
    "invalid_argument",
    "check_bool",
    "check_float",
    "check_int",
    "check_choice",
    "check_axes",
    "check_input_rank",
    "check_last_dim_defined",
    "assert_finite",
    "assert_nonempty_batch",
    "VALIDATE_ARGS_DEFAULT",
    "validate_args_or_alias",
    "ValidateArgsMixin",
]

# Finiteness checks cost a full reduction over every input (measured in
# benchmarks/validate_args_cost.py); like TensorFlow Probability, they are off by default.
VALIDATE_ARGS_DEFAULT = False


def invalid_argument(name, expected, value, error=ValueError):
    """Returns (does not raise) the error for argument `name`."""
    return error(
        "Invalid value received for argument `{0}`. Expected {1}. Received: {0}={2!r}".format(
            name, expected, value
        )
    )


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise invalid_argument(name, "a bool", value, TypeError)
    return value


def check_float(name, value, low=None, high=None, low_inclusive=True, high_inclusive=True,
                allow_none=False):
    """Checks that `value` is a finite real number in the given interval; returns it as float."""
    if value is None and allow_none:
        return None
    if not _is_real(value):
        raise invalid_argument(name, "a float" + _interval(low, high, low_inclusive, high_inclusive),
                               value, TypeError)
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise invalid_argument(name, "a finite float", value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise invalid_argument(name, "a float" + _interval(low, high, low_inclusive, high_inclusive), value)
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise invalid_argument(name, "a float" + _interval(low, high, low_inclusive, high_inclusive), value)
    return value


def check_int(name, value, low=None, high=None, allow_none=False):
    """Checks that `value` is an integer (not a bool, not a float) within [low, high]."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_argument(name, "an integer" + _interval(low, high, True, True), value, TypeError)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid_argument(name, "an integer" + _interval(low, high, True, True), value)
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise invalid_argument(name, "one of {}".format(", ".join(repr(c) for c in choices)), value)
    return value


def check_axes(name, axes, allow_empty=True):
    """Normalises an int or a sequence of ints to a tuple of distinct ints."""
    if isinstance(axes, bool):
        raise invalid_argument(name, "an int or a sequence of ints", axes, TypeError)
    if isinstance(axes, numbers.Integral):
        axes = (int(axes),)
    try:
        axes = tuple(axes)
    except TypeError:
        raise invalid_argument(name, "an int or a sequence of ints", axes, TypeError) from None
    if any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes):
        raise invalid_argument(name, "a sequence of ints", axes, TypeError)
    axes = tuple(int(a) for a in axes)
    if len(set(axes)) != len(axes):
        raise invalid_argument(name, "distinct axes", axes)
    if not allow_empty and not axes:
        raise invalid_argument(name, "at least one axis", axes)
    return axes


def _interval(low, high, low_inclusive, high_inclusive):
    if low is None and high is None:
        return ""
    if high is None:
        if low == 0:
            return " >= 0" if low_inclusive else " > 0 (positive)"
        return " {} {}".format(">=" if low_inclusive else ">", low)
    if low is None:
        return " {} {}".format("<=" if high_inclusive else "<", high)
    return " in {}{}, {}{}".format("[" if low_inclusive else "(", low, high, "]" if high_inclusive else ")")


def check_input_rank(layer_name, input_shape, min_rank=None, max_rank=None, rank=None):
    """Raises ValueError naming the layer and the received shape when the rank is wrong."""
    shape = tf.TensorShape(input_shape)
    if shape.rank is None:
        return
    if rank is not None and shape.rank != rank:
        raise ValueError("Input 0 of layer `{}` must have rank {}. Received: input_shape={}".format(
            layer_name, rank, shape))
    if min_rank is not None and shape.rank < min_rank:
        raise ValueError("Input 0 of layer `{}` must have rank >= {}. Received: input_shape={}".format(
            layer_name, min_rank, shape))
    if max_rank is not None and shape.rank > max_rank:
        raise ValueError("Input 0 of layer `{}` must have rank <= {}. Received: input_shape={}".format(
            layer_name, max_rank, shape))


def assert_finite(x, name):
    """Fails with a clear message when `x` has NaN or Inf (in eager mode and in graphs)."""
    return tf.debugging.assert_all_finite(
        x, "`{}` received non-finite values (NaN or Inf).".format(name))


def assert_nonempty_batch(x, name):
    """Fails with a clear message when the batch dimension of `x` is 0."""
    static = x.shape[0] if x.shape.rank else None
    if static == 0:
        raise ValueError("`{}` received an empty batch. Received: shape={}".format(name, x.shape))
    return tf.debugging.assert_greater(
        tf.shape(x)[0], 0, message="`{}` received an empty batch.".format(name))


def check_last_dim_defined(layer_name, input_shape, what="last dimension"):
    """Raises ValueError naming the layer and the shape when the last dimension is unknown.

    Returns the last dimension as an int.
    """
    shape = tf.TensorShape(input_shape)
    if shape.rank is None or shape[-1] is None:
        raise ValueError("The {} of the input of layer `{}` must be defined. "
                         "Received: input_shape={}".format(what, layer_name, input_shape))
    return int(shape[-1])


class ValidateArgsMixin:
    """The `validate_args` convention of TensorFlow Probability, for Keras layers.

    Shape, rank and dtype checks are always on (in `build` and at trace time,
    with the shape or dtype in the message). Value checks that cost a pass over
    the data (NaN/Inf, an empty batch) run only when the layer was built with
    `validate_args=True`; they fail with `tf.errors.InvalidArgumentError` naming
    the layer, in eager mode and inside graphs (a batch known to be empty when
    traced fails at once with ValueError). Default: `VALIDATE_ARGS_DEFAULT` (False).

    Use: call `self._init_validate_args(validate_args)` in `__init__`, pass
    inputs through `self._validate_values(x)` in `call`, and add
    `self._validate_args_config()` to `get_config`.
    """

    def _init_validate_args(self, validate_args):
        self.validate_args = check_bool("validate_args", validate_args)

    def _validate_values(self, x, name=None):
        """`x`, after finiteness and non-empty-batch assertions when `validate_args`.

        The dtype is static and always checked: a non-float input raises TypeError.
        """
        name = name or self.name
        if not x.dtype.is_floating:
            raise TypeError("Layer `{}` expects a floating-point input. Received: dtype={}".format(
                name, x.dtype.name))
        if not self.validate_args:
            return x
        checks = [assert_finite(x, name)]
        if x.shape.rank:
            checks.append(assert_nonempty_batch(x, name))
        with tf.control_dependencies(checks):
            return tf.identity(x)

    def _validate_args_config(self):
        return {"validate_args": self.validate_args}


def validate_args_or_alias(cls_name, validate_args, old_name, old_value):
    """`validate_args` from the argument and its deprecated older spelling `old_name`.

    None means "not given" for both: neither given gives `VALIDATE_ARGS_DEFAULT`;
    only the old one given gives its value (with a DeprecationWarning), so configs
    saved with the old key load unchanged; both given must agree. Shared by the
    layers that had their own spelling before the `validate_args` convention.
    """
    if old_value is None:
        return VALIDATE_ARGS_DEFAULT if validate_args is None else validate_args
    old_value = check_bool(old_name, old_value)
    if validate_args is not None and check_bool("validate_args", validate_args) != old_value:
        raise ValueError(
            "`{0}` received `validate_args={1}` and its deprecated alias `{2}={3}`, which "
            "disagree. Pass only `validate_args`. Received: validate_args={1}, {2}={3}".format(
                cls_name, validate_args, old_name, old_value))
    warnings.warn("`{}`: the argument `{}` is deprecated; use `validate_args`.".format(
        cls_name, old_name), DeprecationWarning, stacklevel=3)
    return old_value
