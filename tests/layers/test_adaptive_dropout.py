import os

import numpy as np
import pytest
from scipy import integrate, special

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.testing import run_layer_test


def _set_logits(layer, beta):
    """Sets beta' so that beta = sqrt(gamma/alpha) beta' + c(t) equals `beta` (NumPy, float64)."""
    scale = np.sqrt(layer.gamma / layer.alpha)
    c = float(layer.schedule(int(layer.step_counter.numpy())))
    layer.retention_raw.assign(((np.asarray(beta, np.float64) - c) / scale).astype(np.float32))


def _logistic_expectation_of_sigmoid_prime(beta, power=1, upper=60.0):
    """E[sigma'(beta + eps)^power * 1{eps < upper}], eps ~ Logistic(0, 1), by numerical
    integration over the logistic density (SciPy)."""
    def integrand(e):
        s = special.expit(beta + e)
        return (s * (1.0 - s)) ** power * special.expit(e) * (1.0 - special.expit(e))
    value, _ = integrate.quad(integrand, -60.0, upper, limit=200)
    return value


def test_run_layer_test_2d():
    run_layer_test(
        AdaptiveDropout,
        dict(schedule=RetentionTargetSchedule(3.0, -1.0, 10), alpha=1e-3, gamma=1e-2, seed=1,
             validate_args=True),
        input_shape=(4, 6),
        expected_output_shape=(4, 6),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1,
        expected_num_losses=1,
        supports_jit=True,
        expect_nan_error=True,
        # The dropout masks are random in training: MirroredStrategy is compared in
        # inference mode.
        distributed_training=False,
    )


def test_run_layer_test_per_head_units_with_shared_time_axis():
    run_layer_test(
        AdaptiveDropout,
        dict(unit_axes=(-2, -1), shared_axes=(1,), inference="expected", threshold=0.5),
        input_shape=(2, 5, 3, 4),
        expected_output_shape=(2, 5, 3, 4),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1,
        expected_num_losses=1,
        supports_jit=True,
        distributed_training=False,  # random masks in training, as above
    )


def test_weight_shape_follows_unit_axes():
    layer = AdaptiveDropout(unit_axes=(-2, -1))
    layer(tf.zeros((2, 7, 3, 4)))
    assert tuple(layer.retention_raw.shape) == (3, 4)
    assert tuple(layer.retention_logits.shape) == (3, 4)
    layer = AdaptiveDropout(unit_axes=(1,))
    layer(tf.zeros((2, 7, 3)))
    assert tuple(layer.retention_raw.shape) == (7,)


def test_initial_logits_equal_initial_target():
    layer = AdaptiveDropout(RetentionTargetSchedule(4.0, -1.0, 10))
    layer(tf.zeros((1, 3)))
    np.testing.assert_allclose(layer.retention_logits.numpy(), [4.0] * 3)
    np.testing.assert_allclose(layer.retention_probabilities.numpy(), [special.expit(4.0)] * 3,
                               rtol=1e-6)


def test_training_keep_rate_matches_sigmoid_within_binomial_tolerance():
    betas = np.array([-3.0, -1.0, 0.0, 0.7, 2.5, 5.0])
    layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), alpha=1e-2, gamma=1e-2,
                            seed=3)
    n = 20000
    layer(tf.ones((1, betas.size)))
    _set_logits(layer, betas)
    y = layer(tf.ones((n, betas.size)), training=True).numpy()
    assert set(np.unique(y)) <= {0.0, 1.0}  # exact step function forward, no 1/p rescaling
    rate = y.mean(axis=0)
    p = special.expit(betas)
    tol = 5.0 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(rate - p) <= tol), (rate, p, tol)


def test_training_masks_are_independent_across_units_and_positions():
    # Eq. (3) draws a fresh eps for every unit and every (non-shared) position: the joint
    # keep rate of two mask entries must be the product of their sigma(beta).
    betas = np.array([0.0, 0.0, 1.2])
    layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), alpha=1e-2, gamma=1e-2,
                            seed=7)
    n, steps = 20000, 3
    layer(tf.ones((1, steps, betas.size)))
    _set_logits(layer, betas)
    m = layer(tf.ones((n, steps, betas.size)), training=True).numpy().reshape(n, -1)
    p = np.tile(special.expit(betas), steps)
    rate = m.mean(axis=0)
    assert np.all(np.abs(rate - p) <= 5.0 * np.sqrt(p * (1 - p) / n)), (rate, p)
    joint = (m.T @ m) / n
    expected = np.outer(p, p)
    tol = 5.0 * np.sqrt(expected * (1 - expected) / n)
    off = ~np.eye(p.size, dtype=bool)
    assert np.all(np.abs(joint - expected)[off] <= tol[off]), (joint, expected)


def test_shared_axes_share_one_sample():
    layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), shared_axes=(1,), seed=5)
    y = layer(tf.ones((64, 9, 4)), training=True).numpy()
    # Along the shared time axis every position has the same mask.
    assert np.all(y == y[:, :1, :])
    # Different batch entries are independent: not all equal.
    assert not np.all(y == y[:1])


def test_inference_hard_and_expected():
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    betas = np.array([-4.0, -2.5, -2.0, -1.0, 0.5, 3.0])
    hard = AdaptiveDropout(RetentionTargetSchedule(1.0, -2.0, 10))
    hard(x)
    _set_logits(hard, betas)
    expected_hard = x * (betas >= -2.0)  # threshold defaults to the final target
    np.testing.assert_allclose(hard(x, training=False).numpy(), expected_hard, rtol=1e-6)
    np.testing.assert_array_equal(hard.keep_mask.numpy(), betas >= -2.0)
    assert float(hard.surviving_fraction) == pytest.approx(4 / 6)

    custom = AdaptiveDropout(RetentionTargetSchedule(1.0, -2.0, 10), threshold=0.0)
    custom(x)
    _set_logits(custom, betas)
    np.testing.assert_allclose(custom(x).numpy(), x * (betas >= 0.0), rtol=1e-6)

    soft = AdaptiveDropout(RetentionTargetSchedule(1.0, -2.0, 10), inference="expected")
    soft(x)
    _set_logits(soft, betas)
    np.testing.assert_allclose(soft(x, training=False).numpy(), x * special.expit(betas),
                               rtol=1e-5, atol=1e-6)


def test_gradient_matches_logistic_integral_including_dropped_units():
    alpha, gamma = 1e-4, 1e-2
    scale = np.sqrt(gamma / alpha)
    betas = np.array([-6.0, -2.0, 0.0, 1.5, 4.0])
    xs = np.array([1.0, -2.0, 0.5, 3.0, -1.0], np.float32)
    n = 40000
    layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), alpha=alpha, gamma=gamma,
                            seed=11)
    x = tf.constant(np.tile(xs, (n, 1)))
    layer(x[:1])
    _set_logits(layer, betas)
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        objective = tf.reduce_sum(y) / n  # data term only; layer.losses not included
    grad = tape.gradient(objective, layer.retention_raw).numpy()
    mean = np.array([_logistic_expectation_of_sigmoid_prime(b) for b in betas])
    expected = scale * mean * xs
    # Monte Carlo over n independent rows: 5 standard errors, the standard deviation of
    # sigma'(beta + eps) also from the integral (Var = E[sigma'^2] - E[sigma']^2).
    sd = np.sqrt([_logistic_expectation_of_sigmoid_prime(b, power=2) - m ** 2
                  for b, m in zip(betas, mean)])
    tol = 5.0 * scale * np.abs(xs) * sd / np.sqrt(n)
    assert np.all(np.abs(grad - expected) <= tol), (grad, expected, tol)

    # The part of the gradient that comes from positions whose sampled mask was 0
    # (beta + eps <= 0): weight the upstream gradient by 1 - m (m read from the forward
    # output, not differentiated). Reference: the integral over eps < -beta only.
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        dropped = tf.stop_gradient(tf.cast(tf.equal(y, 0.0), tf.float32))
        objective = tf.reduce_sum(y * dropped) / n
    grad0 = tape.gradient(objective, layer.retention_raw).numpy()
    mean0 = np.array([_logistic_expectation_of_sigmoid_prime(b, upper=-b) for b in betas])
    sd0 = np.sqrt([_logistic_expectation_of_sigmoid_prime(b, power=2, upper=-b) - m ** 2
                   for b, m in zip(betas, mean0)])
    tol0 = 5.0 * scale * np.abs(xs) * sd0 / np.sqrt(n)
    expected0 = scale * mean0 * xs
    assert np.all(np.abs(expected0) > 3.0 * tol0), (expected0, tol0)  # a real signal
    assert np.all(np.abs(grad0 - expected0) <= tol0), (grad0, expected0, tol0)

    # A unit whose sampled mask was 0 everywhere still gets a (non-zero) gradient.
    small = tf.constant(np.ones((64, 1), np.float32))
    lone = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), alpha=alpha, gamma=gamma,
                           seed=2)
    lone(small[:1])
    _set_logits(lone, [-12.0])
    with tf.GradientTape() as tape:
        y = lone(small, training=True)
        obj = tf.reduce_sum(y)
    assert float(tf.reduce_max(y)) == 0.0
    assert float(tape.gradient(obj, lone.retention_raw)[0]) > 0.0


@pytest.mark.parametrize("shape, kwargs, independent", [
    ((20000, 5, 2), dict(unit_axes=(1,)), 2),            # unit axis not trailing
    ((20000, 2, 5), dict(shared_axes=(1,)), 1),           # one sample shared along axis 1
    ((10000, 2, 5), dict(unit_axes=(-1,)), 2),            # trailing units, rank 3 (flattened)
])
def test_gradient_matches_logistic_integral_for_other_layouts(shape, kwargs, independent):
    # Same reference as above, for inputs the layer does not view as [positions, units]
    # (and one it does): the unit gradient is summed over every non-unit axis.
    alpha, gamma = 1e-4, 1e-2
    scale = np.sqrt(gamma / alpha)
    betas = np.array([-2.0, 0.0, 1.5, 4.0, -0.5])
    xs = np.array([1.0, -2.0, 0.5, 3.0, -1.0], np.float32)
    unit_axis = kwargs.get("unit_axes", (-1,))[0] % len(shape)
    x = np.ones(shape, np.float32) * np.expand_dims(xs, [a for a in range(len(shape))
                                                          if a != unit_axis])
    layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), alpha=alpha, gamma=gamma,
                            seed=13, **kwargs)
    layer(x[:1])
    _set_logits(layer, betas)
    positions = x.size // xs.size
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(layer(x, training=True)) / positions
    grad = tape.gradient(objective, layer.retention_raw).numpy()
    mean = np.array([_logistic_expectation_of_sigmoid_prime(b) for b in betas])
    sd = np.sqrt([_logistic_expectation_of_sigmoid_prime(b, power=2) - m ** 2
                  for b, m in zip(betas, mean)])
    samples = shape[0] * independent  # independent eps per unit
    tol = 5.0 * scale * np.abs(xs) * sd / np.sqrt(samples)
    expected = scale * mean * xs
    assert np.all(np.abs(grad - expected) <= tol), (grad, expected, tol)


@pytest.mark.parametrize("t", [0, 50, 100, 200])
def test_loss_equals_uncentred_l2_of_eq5(t):
    alpha, gamma = 1e-3, 1e-5
    schedule = RetentionTargetSchedule(10.0, -2.0, 100)
    layer = AdaptiveDropout(schedule, alpha=alpha, gamma=gamma)
    layer(tf.zeros((1, 4)))
    layer.step_counter.assign(t)
    raw = np.array([0.3, -1.2, 2.0, 0.0], np.float32)
    layer.retention_raw.assign(raw)
    c = 10.0 + (-2.0 - 10.0) * min(t / 100.0, 1.0)  # Eq. (6), independently
    beta = np.sqrt(gamma / alpha) * raw.astype(np.float64) + c  # Eq. (7)
    np.testing.assert_allclose(layer.retention_logits.numpy(), beta, rtol=1e-5, atol=1e-5)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), alpha * np.sum((beta - c) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(layer.current_target), c, rtol=1e-6, atol=1e-6)


def _step_model(steps_per_execution=1):
    inp = keras.Input((4,))
    h = AdaptiveDropout(RetentionTargetSchedule(1.0, -1.0, 100), name="adl")(inp)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=steps_per_execution)
    return model


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 1)).astype(
        np.float32)


def test_step_counter_once_per_step_with_steps_per_execution():
    x, y = _data()
    model = _step_model(steps_per_execution=4)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert int(model.get_layer("adl").step) == 24 == int(model.optimizer.iterations.numpy())
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert int(model.get_layer("adl").step) == 24


def test_step_counter_once_per_global_step_with_two_replicas(mirrored_strategy):
    x, y = _data(64)
    with mirrored_strategy.scope():
        model = _step_model(steps_per_execution=4)
    # 8 global steps of global batch 8 (4 per replica): two executions of four steps.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert mirrored_strategy.num_replicas_in_sync == 2
    assert int(model.get_layer("adl").step) == 8 == int(model.optimizer.iterations.numpy())


def test_step_counter_restored_from_checkpoint(tmp_path):
    x, y = _data()
    model = _step_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = model.save_weights(os.path.join(str(tmp_path), "ckpt"))
    fresh = _step_model()
    fresh(x[:1])
    assert int(fresh.get_layer("adl").step) == 0
    fresh.load_weights(os.path.join(str(tmp_path), "ckpt"))
    assert int(fresh.get_layer("adl").step) == 6
    del path


def test_learning_prunes_noise_features():
    # Units that carry no signal end near beta = c_inf (their beta' random-walks
    # around 0 once the next layer's weight is ~0), informative ones well above
    # c0. The threshold is set between the two groups, one unit above c_inf.
    rng = np.random.default_rng(0)
    n, k = 2048, 4
    informative = rng.standard_normal((n, k)).astype(np.float32)
    noise = rng.standard_normal((n, k)).astype(np.float32)
    x = np.concatenate([informative, noise], axis=1)
    y = informative @ np.array([[1.5], [-2.0], [1.0], [2.5]], np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((2 * k,))
    adl = AdaptiveDropout(RetentionTargetSchedule(3.0, -3.0, 200), alpha=1e-4, gamma=1e-4,
                          threshold=-2.0, name="adl")
    out = keras.layers.Dense(1)(adl(inp))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.02), "mse")
    model.fit(x, y, batch_size=64, epochs=20, verbose=0)
    beta = adl.retention_logits.numpy()
    keep = adl.keep_mask.numpy()
    assert keep[:k].all() and np.all(beta[:k] > 2.0), beta
    assert not keep[k:].any() and np.all(beta[k:] < -2.5), beta
    # Pruned inference drops the noise features entirely.
    probe = x[:8].copy()
    probe[:, k:] = 0.0
    np.testing.assert_allclose(model.predict(x[:8], verbose=0), model.predict(probe, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_input_with_other_unit_size_is_rejected():
    layer = AdaptiveDropout()
    layer(tf.zeros((2, 5)))
    with pytest.raises(ValueError, match="incompatible"):
        layer(tf.zeros((2, 6)))


@pytest.mark.parametrize("shape,kwargs", [
    ((3,), {}),
    ((2, 4), dict(unit_axes=(0,))),
    ((2, 4), dict(unit_axes=(2,))),
    ((2, 4, 3), dict(unit_axes=(-1,), shared_axes=(3,))),
])
def test_bad_input_shapes(shape, kwargs):
    with pytest.raises(ValueError, match="input_shape"):
        AdaptiveDropout(**kwargs)(tf.zeros(shape))


def test_unknown_unit_dimension_is_rejected():
    with pytest.raises(ValueError, match="known sizes"):
        AdaptiveDropout(unit_axes=(1,))(keras.Input((None, 3)))


def test_views_require_build():
    with pytest.raises(ValueError, match="not built"):
        AdaptiveDropout().retention_logits


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(alpha=0.0), "alpha", ValueError),
    (dict(alpha=-1.0), "alpha", ValueError),
    (dict(alpha="x"), "alpha", TypeError),
    (dict(alpha=None), "alpha", TypeError),
    (dict(gamma=0), "gamma", ValueError),
    (dict(gamma=-1e-5), "gamma", ValueError),
    (dict(alpha=float("inf")), "alpha", ValueError),
    (dict(gamma=float("inf")), "gamma", ValueError),
    (dict(threshold="low"), "threshold", TypeError),
    (dict(threshold=float("nan")), "threshold", ValueError),
    (dict(unit_axes=()), "unit_axes", ValueError),
    (dict(unit_axes=None), "unit_axes", TypeError),
    (dict(unit_axes=(1.5,)), "unit_axes", TypeError),
    (dict(unit_axes=(-1, -1)), "unit_axes", ValueError),
    (dict(shared_axes=(-1,)), "shared_axes", ValueError),
    (dict(shared_axes="a"), "shared_axes", TypeError),
    (dict(inference="soft"), "inference", ValueError),
    (dict(inference=None), "inference", ValueError),
    (dict(seed=1.5), "seed", TypeError),
    (dict(schedule=3.0), "schedule", TypeError),
    (dict(schedule="linear"), "schedule", TypeError),
])
def test_invalid_constructor_arguments(kwargs, name, error):
    with pytest.raises(error, match="`{}`".format(name)):
        AdaptiveDropout(**kwargs)


def _mask(layer, rows=16, units=64):
    return layer(tf.ones((rows, units)), training=True).numpy()


def test_seeded_noise_is_a_function_of_seed_and_step():
    # Stateless draws keyed by (seed, step, replica id): a layer at step t draws what any
    # layer with the same seed drew at step t (as after restoring a checkpoint), whatever
    # ran before in the process; the next step and another seed draw other masks.
    schedule = RetentionTargetSchedule(0.0, -1.0, 10 ** 6)
    a, b, c = (AdaptiveDropout(schedule, seed=s) for s in (3, 3, 4))
    for layer in (a, b, c):
        layer(tf.zeros((1, 64)))
    a0, a1 = _mask(a), _mask(a)
    assert not np.array_equal(a0, a1)
    b.step_counter.assign(1)
    np.testing.assert_array_equal(_mask(b), a1)
    b.step_counter.assign(0)
    np.testing.assert_array_equal(tf.function(lambda: b(tf.ones((16, 64)), training=True))(),
                                  a0)  # graph mode draws the same as eager
    assert not np.array_equal(_mask(c), a0)
    assert int(a.step) == 2


def test_unseeded_layers_draw_different_masks_and_set_random_seed_reproduces():
    schedule = RetentionTargetSchedule(0.0, -1.0, 10 ** 6)
    keras.utils.set_random_seed(1)
    a, b = AdaptiveDropout(schedule), AdaptiveDropout(schedule)
    keras.utils.set_random_seed(1)
    c = AdaptiveDropout(schedule)
    for layer in (a, b, c):
        layer(tf.zeros((1, 64)))
    assert not np.array_equal(_mask(a), _mask(b))
    a.step_counter.assign(0)
    np.testing.assert_array_equal(_mask(a), _mask(c))
    assert c.get_config()["seed"] is None  # the drawn seed stays out of the config


def test_step_counter_once_per_step_under_xla_with_steps_per_execution():
    x, y = _data()
    inp = keras.Input((4,))
    adl = AdaptiveDropout(RetentionTargetSchedule(1.0, -1.0, 100), seed=0, name="adl")
    model = keras.Model(inp, keras.layers.Dense(1)(adl(inp)))
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3, jit_compile=True)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert int(adl.step) == 24 == int(model.optimizer.iterations.numpy())
    assert np.all(np.isfinite(history.history["loss"]))
