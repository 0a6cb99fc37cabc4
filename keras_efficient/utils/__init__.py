"""Small shared utilities: argument and input validation, the functional graph of a model."""

from keras_efficient.utils.graph import FunctionalGraph, LayerCall, TensorRef, is_functional
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
    "FunctionalGraph",
    "LayerCall",
    "TensorRef",
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
    "is_functional",
]
