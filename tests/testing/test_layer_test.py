"""The harness passes a correct layer and fails each deliberately broken one."""

import numpy as np
import pytest

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.testing import run_layer_test


@register_serializable(name="HarnessGoodScale")
class GoodScale(keras.layers.Layer):
    """y = factor * w * x with a trainable w per feature and a counter weight."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="random_normal")
        self.count = self.add_weight("count", shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.add_loss(tf.reduce_sum(self.w ** 2) * 1e-3)
        return tf.cast(self.factor, x.dtype) * tf.cast(self.w, x.dtype) * x

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@register_serializable(name="HarnessMissingArg")
class MissingArgInConfig(GoodScale):
    def get_config(self):
        config = super().get_config()
        del config["factor"]
        return config


@register_serializable(name="HarnessSilentlyDroppedArg")
class SilentlyDroppedArg(GoodScale):
    """Names `factor` in the config but always stores the default: rebuilt outputs differ."""

    def get_config(self):
        return {**super().get_config(), "factor": 2.0}


@register_serializable(name="HarnessChangesAfterReload")
class ChangesAfterReload(keras.layers.Layer):
    """Draws a random constant when built, outside its weights: a reload changes the outputs."""

    def build(self, input_shape):
        self._offset = np.random.normal(size=(input_shape[-1],)).astype("float32")

    def call(self, x):
        return x + tf.cast(self._offset, x.dtype)


@register_serializable(name="HarnessUntracked")
class UntrackedWeight(keras.layers.Layer):
    """Keeps its variable where Keras cannot see it."""

    def build(self, input_shape):
        object.__setattr__(self, "_hidden", tf.Variable(tf.random.normal((input_shape[-1],))))

    def call(self, x):
        return x * tf.cast(self._hidden, x.dtype)


class _Parameter(tf.Module):
    def __init__(self, value):
        super().__init__()
        self.variable = tf.Variable(value)


@register_serializable(name="HarnessModuleHeldWeight")
class ModuleHeldWeight(keras.layers.Layer):
    """Holds its weight in a tf.Module (tracked, but not saved by the `.keras` format),
    initialised to ones: only weights that moved from their initial value reveal it."""

    def build(self, input_shape):
        self._param = _Parameter(tf.ones((input_shape[-1],)))

    def call(self, x):
        return x * tf.cast(self._param.variable, x.dtype)


class Unregistered(GoodScale):
    pass


FAST = dict(run_saved_model=False, run_keras_format=False, run_mixed_precision=False,
            run_distributed=False, run_training_check=False)


def test_good_layer_passes_every_check():
    report = run_layer_test(
        GoodScale, {"factor": 3.0}, input_shape=(4, 3),
        expected_output_shape=(4, 3), expected_output_dtype="float32",
        expected_num_trainable_weights=1, expected_num_non_trainable_weights=1,
        expected_num_losses=1, supports_jit=True)
    assert all(v == "passed" for v in report.values()), report


@pytest.mark.parametrize("count_kw, value", [
    ("expected_num_trainable_weights", 2),
    ("expected_num_non_trainable_weights", 0),
    ("expected_num_losses", 0),
])
def test_wrong_counts_fail(count_kw, value):
    with pytest.raises(AssertionError, match="expected"):
        run_layer_test(GoodScale, {}, input_shape=(4, 3), **{count_kw: value}, **FAST)


def test_wrong_output_shape_fails():
    with pytest.raises(AssertionError, match="Output shape"):
        run_layer_test(GoodScale, {}, input_shape=(4, 3), expected_output_shape=(4, 2), **FAST)


def test_config_missing_an_argument_fails():
    with pytest.raises(AssertionError, match="missing constructor arguments.*factor"):
        run_layer_test(MissingArgInConfig, {"factor": 3.0}, input_shape=(4, 3), **FAST)


def test_config_that_drops_a_value_fails():
    with pytest.raises(AssertionError, match="rebuilt from its JSON config"):
        run_layer_test(SilentlyDroppedArg, {"factor": 3.0}, input_shape=(4, 3), **FAST)


def test_unregistered_layer_fails():
    with pytest.raises(AssertionError, match="not registered"):
        run_layer_test(Unregistered, {}, input_shape=(4, 3), **FAST)


def test_untracked_weight_fails():
    with pytest.raises(AssertionError, match="not tracked"):
        run_layer_test(UntrackedWeight, {}, input_shape=(4, 3), **FAST)


def test_outputs_that_change_after_reload_fail():
    with pytest.raises(AssertionError, match="round trip changed the outputs|different outputs"):
        run_layer_test(ChangesAfterReload, {}, input_shape=(4, 3), run_keras_format=False,
                       run_mixed_precision=False, run_distributed=False, run_training_check=False)


def test_weight_lost_by_keras_format_fails_even_at_a_constant_initialiser():
    with pytest.raises(AssertionError, match="`.keras` round trip changed the outputs"):
        run_layer_test(ModuleHeldWeight, {}, input_shape=(4, 3), run_saved_model=False,
                       run_mixed_precision=False, run_distributed=False, run_training_check=False)


def test_nan_check_fails_for_a_layer_that_accepts_nan():
    with pytest.raises(AssertionError, match="NaN"):
        run_layer_test(GoodScale, {}, input_shape=(4, 3), expect_nan_error=True, **FAST)


def test_needs_exactly_one_input_spec():
    with pytest.raises(ValueError, match="exactly one"):
        run_layer_test(GoodScale, {})
