"""Small shared utilities: argument and input validation."""

from keras_efficient.utils.validation import (
    assert_finite,
    assert_nonempty_batch,
    check_axes,
    check_bool,
    check_choice,
    check_float,
    check_input_rank,
    check_last_dim_defined,
    check_int,
    invalid_argument,
)

__all__ = [
    "assert_finite",
    "assert_nonempty_batch",
    "check_axes",
    "check_bool",
    "check_choice",
    "check_float",
    "check_input_rank",
    "check_last_dim_defined",
    "check_int",
    "invalid_argument",
]
