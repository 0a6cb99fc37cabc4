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


@register_serializable(name="HarnessReplicaDependent")
class ReplicaDependent(GoodScale):
    """Scales its output by (1 + replica id): one device and two replicas disagree."""

    def call(self, x):
        context = tf.distribute.get_replica_context()  # None while building in the scope
        replica = 0 if context is None else context.replica_id_in_sync_group
        return super().call(x) * tf.cast(1 + replica, x.dtype)


@register_serializable(name="HarnessFloat16Cancellation")
class Float16Cancellation(GoodScale):
    """Adds and subtracts 1000 in the compute dtype: exact enough in float32, but float16's
    spacing at 1000 is 0.5, so under mixed_float16 the output is off by up to 0.25."""

    def call(self, x):
        offset = tf.cast(1000.0, x.dtype)
        return (super().call(x) + offset) - offset


@register_serializable(name="HarnessDropoutScale")
class DropoutScale(GoodScale):
    """GoodScale followed by dropout in training mode: random, so replicas cannot match."""

    def call(self, x, training=None):
        y = super().call(x)
        if training:
            y = tf.nn.dropout(y, rate=0.5)
        return y


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


NO_ROUND_TRIPS = dict(run_saved_model=False, run_keras_format=False, run_training_check=False)


def test_distributed_check_fails_when_the_output_depends_on_the_replica():
    with pytest.raises(AssertionError, match=r"MirroredStrategy loss \(training=True\) differs"):
        run_layer_test(ReplicaDependent, {}, input_shape=(4, 3), run_mixed_precision=False,
                       **NO_ROUND_TRIPS)
    # Inference mode does not hide it either, and the message names the mode.
    with pytest.raises(AssertionError, match=r"training=False \(distributed_training=False\)"):
        run_layer_test(ReplicaDependent, {}, input_shape=(4, 3), run_mixed_precision=False,
                       distributed_training=False, **NO_ROUND_TRIPS)
    # distributed_gradients=False still compares the loss.
    with pytest.raises(AssertionError, match=r"MirroredStrategy loss"):
        run_layer_test(ReplicaDependent, {}, input_shape=(4, 3), run_mixed_precision=False,
                       distributed_gradients=False, distributed_rtol=1e-2, **NO_ROUND_TRIPS)


def test_distributed_check_compares_gradients_not_only_losses(monkeypatch):
    from keras_efficient.testing import layer_test

    original = layer_test._one_step
    calls = []

    def broken_gradients(model, data, targets, training):
        loss, grads = original(model, data, targets, training)
        calls.append(loss)
        if len(calls) == 2:  # the MirroredStrategy run: same loss, wrong gradient
            grads = [g * 1.01 for g in grads]
        return loss, grads

    monkeypatch.setattr(layer_test, "_one_step", broken_gradients)
    with pytest.raises(AssertionError, match="global-batch gradient of .*w"):
        run_layer_test(GoodScale, {}, input_shape=(4, 3), run_mixed_precision=False,
                       **NO_ROUND_TRIPS)


def test_random_training_output_needs_inference_mode_comparison():
    with pytest.raises(AssertionError, match=r"MirroredStrategy .*\(training=True\)"):
        run_layer_test(DropoutScale, {}, input_shape=(4, 3), run_mixed_precision=False,
                       **NO_ROUND_TRIPS)
    report = run_layer_test(DropoutScale, {}, input_shape=(4, 3), run_mixed_precision=False,
                            distributed_training=False, **NO_ROUND_TRIPS)
    assert report["mirrored_strategy"] == "passed"


def test_mixed_precision_check_fails_for_a_large_float16_error():
    with pytest.raises(AssertionError, match="mixed_float16 output differs from the float32"):
        run_layer_test(Float16Cancellation, {}, input_shape=(4, 3), run_distributed=False,
                       **NO_ROUND_TRIPS)
    # The same layer is within tolerance of itself in float32 (every other check passes).
    run_layer_test(Float16Cancellation, {}, input_shape=(4, 3), run_distributed=False,
                   run_mixed_precision=False, **NO_ROUND_TRIPS)


def test_nan_check_fails_for_a_layer_that_accepts_nan():
    with pytest.raises(AssertionError, match="NaN"):
        run_layer_test(GoodScale, {}, input_shape=(4, 3), expect_nan_error=True, **FAST)


def test_needs_exactly_one_input_spec():
    with pytest.raises(ValueError, match="exactly one"):
        run_layer_test(GoodScale, {})
