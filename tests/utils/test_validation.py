"""Validation helpers: Keras's wording, the argument's name and the received value."""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.utils import (
    assert_finite,
    assert_nonempty_batch,
    check_axes,
    check_bool,
    check_choice,
    check_float,
    check_input_rank,
    check_int,
    check_last_dim_defined,
)


@pytest.mark.parametrize("value, kwargs, error", [
    (-1.0, {"low": 0.0, "low_inclusive": False}, ValueError),
    (0.0, {"low": 0.0, "low_inclusive": False}, ValueError),
    (1.5, {"low": 0.0, "high": 1.0}, ValueError),
    (float("nan"), {}, ValueError),
    ("0.1", {}, TypeError),
    (None, {}, TypeError),
    (True, {}, TypeError),
])
def test_check_float_rejects(value, kwargs, error):
    with pytest.raises(error, match=r"argument `alpha`.*Received: alpha="):
        check_float("alpha", value, **kwargs)


def test_check_float_accepts_and_converts():
    assert check_float("alpha", 1, low=0.0) == 1.0
    assert check_float("alpha", None, allow_none=True) is None
    assert check_float("alpha", 1.0, low=0.0, high=1.0) == 1.0


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.0, TypeError), ("3", TypeError),
                                          (None, TypeError), (False, TypeError)])
def test_check_int_rejects(value, error):
    with pytest.raises(error, match="argument `units`"):
        check_int("units", value, low=1)


def test_check_int_bool_choice_axes():
    assert check_int("units", np.int64(3), low=1) == 3
    assert check_bool("flag", True) is True
    with pytest.raises(TypeError, match="`flag`"):
        check_bool("flag", 1)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="one of 'a', 'b'"):
        check_choice("mode", "c", ("a", "b"))
    assert check_axes("axes", -1) == (-1,)
    assert check_axes("axes", [1, 2]) == (1, 2)
    with pytest.raises(ValueError, match="distinct"):
        check_axes("axes", (1, 1))
    with pytest.raises(TypeError, match="`axes`"):
        check_axes("axes", (1.0,))


def test_shape_checks_name_the_layer_and_shape():
    with pytest.raises(ValueError, match=r"layer `dense`.*rank 3.*\(2, 4\)"):
        check_input_rank("dense", (2, 4), rank=3)
    with pytest.raises(ValueError, match="rank >= 3"):
        check_input_rank("dense", (2, 4), min_rank=3)
    check_input_rank("dense", None, rank=3)  # unknown rank: nothing to check yet
    assert check_last_dim_defined("conv", (None, 4, 4, 3)) == 3
    with pytest.raises(ValueError, match="channel dimension of the input of layer `conv`"):
        check_last_dim_defined("conv", (None, 4, 4, None), "channel dimension")


def test_tensor_assertions():
    with pytest.raises(tf.errors.InvalidArgumentError, match="`x` received non-finite"):
        assert_finite(tf.constant([1.0, np.nan]), "x")
    with pytest.raises(ValueError, match="empty batch"):
        assert_nonempty_batch(tf.zeros((0, 3)), "x")

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def f(x):
        with tf.control_dependencies([assert_nonempty_batch(x, "x")]):
            return tf.identity(x)

    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        f(tf.zeros((0, 3)))


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_check_float_rejects_infinities_even_without_bounds(value):
    with pytest.raises(ValueError, match="a finite float"):
        check_float("alpha", value)
    with pytest.raises(ValueError, match="a finite float"):
        check_float("alpha", value, low=0.0)


# ----------------------------------------------------------------------------- validate_args


def _probe(validate_args):
    from keras_efficient.backend import keras, tf
    from keras_efficient.utils.validation import ValidateArgsMixin

    class Probe(ValidateArgsMixin, keras.layers.Layer):
        def __init__(self, validate_args=False, **kwargs):
            super().__init__(**kwargs)
            self._init_validate_args(validate_args)

        def call(self, inputs):
            return 2.0 * self._validate_values(tf.convert_to_tensor(inputs))

    return Probe(validate_args=validate_args, name="probe")


@pytest.mark.parametrize("graph", [False, True])
def test_validate_args_checks_values_only_when_asked(graph):
    import numpy as np

    from keras_efficient.backend import tf

    bad = {"nan": np.array([[1.0, np.nan]], np.float32),
           "inf": np.array([[np.inf, 0.0]], np.float32),
           "empty batch": np.zeros((0, 2), np.float32)}
    for validate in (False, True):
        layer = _probe(validate)
        call = tf.function(layer) if graph else layer
        np.testing.assert_allclose(call(np.ones((1, 2), np.float32)), [[2.0, 2.0]])
        for what, x in bad.items():
            if validate:
                # A batch known to be empty when traced fails at once (ValueError).
                errors = (ValueError, tf.errors.InvalidArgumentError)
                with pytest.raises(errors, match="probe"):
                    call(x)
            else:
                assert np.asarray(call(x)).shape == x.shape, what


def test_validate_args_must_be_bool():
    for value in (1, "yes", None):
        with pytest.raises(TypeError, match="validate_args"):
            _probe(value)


def test_validate_args_default_is_off():
    from keras_efficient.utils.validation import VALIDATE_ARGS_DEFAULT

    assert VALIDATE_ARGS_DEFAULT is False
