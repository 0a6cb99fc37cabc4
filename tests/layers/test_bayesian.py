"""Flipout and reparameterization layers: contract, closed-form KL (Eq. 2), 1/N scaling,
Monte Carlo moments, one weight sample per batch (reparameterization)."""

import logging
import warnings

import numpy as np
import pytest
import tensorflow_probability as tfp
from scipy import stats

from keras_efficient.backend import keras, tf
from keras_efficient.layers.bayesian import (
    FlipoutConv2D,
    FlipoutDense,
    ReparameterizationConv2D,
    ReparameterizationDense,
)
from keras_efficient.layers.bayesian_priors import (
    _normal_kl_to_centered_normal,
    _standard_normal_box_muller,
)
from keras_efficient.testing import run_layer_test


def _softplus(x):
    return np.log1p(np.exp(x))


def _kl_normal_vs_prior(mu, sigma, prior_scale):
    """Closed form KL(N(mu, sigma^2) || N(0, s^2)), summed over all weights (float64)."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    s = float(prior_scale)
    return np.sum(np.log(s / sigma) + (sigma ** 2 + mu ** 2) / (2 * s ** 2) - 0.5)


@pytest.mark.parametrize("prior_scale", [1.0, 0.5, 3.0])
def test_fused_kl_matches_numpy_closed_form(prior_scale):
    rng = np.random.default_rng(1)
    mu = rng.normal(0.0, 0.5, (3, 3, 8, 16)).astype(np.float32)
    # From tiny (the default posterior, about 1e-4) to larger than the prior.
    sigma = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), mu.shape)).astype(np.float32)
    expected = _kl_normal_vs_prior(mu, sigma, prior_scale)
    got = _normal_kl_to_centered_normal(mu, sigma, prior_scale).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Gradients: dKL/dmu = mu / s^2, dKL/dsigma = sigma / s^2 - 1 / sigma.
    mu_t, sigma_t = tf.constant(mu), tf.constant(sigma)
    with tf.GradientTape() as tape:
        tape.watch([mu_t, sigma_t])
        kl = _normal_kl_to_centered_normal(mu_t, sigma_t, prior_scale)
    d_mu, d_sigma = tape.gradient(kl, [mu_t, sigma_t])
    mu64, sigma64 = mu.astype(np.float64), sigma.astype(np.float64)
    np.testing.assert_allclose(d_mu.numpy(), mu64 / prior_scale ** 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_sigma.numpy(), sigma64 / prior_scale ** 2 - 1.0 / sigma64,
                               rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 3, 5, 7), (101,)])
def test_box_muller_draws_are_standard_normal(shape):
    draws = [_standard_normal_box_muller(shape, seed=(s, 7)).numpy() for s in range(400)]
    assert draws[0].shape == shape and draws[0].dtype == np.float32
    z = np.concatenate([d.ravel() for d in draws]).astype(np.float64)
    # Kolmogorov-Smirnov against the N(0, 1) CDF; seeded, so deterministic. With
    # 40-126 k draws a p-value below 1e-3 would mean a visibly wrong distribution.
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # Moments within 5 standard errors: mean, variance, kurtosis (3).
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(np.mean(z ** 4) - 3.0) < 5 * np.sqrt(96.0 / n)
    # All finite; |z| <= sqrt(-2 ln 2^-23) = 5.65 (float32 uniforms).
    assert np.all(np.isfinite(z)) and np.abs(z).max() <= 5.66
    np.testing.assert_array_equal(draws[3], _standard_normal_box_muller(shape, seed=(3, 7)))
    assert not np.array_equal(draws[3], draws[4])


# The harness compares outputs across round trips, so it calls the layers with
# use_mean=True (posterior means: deterministic). Sampling is tested below.
@pytest.mark.parametrize("cls", [FlipoutDense, ReparameterizationDense])
def test_dense_contract(cls):
    run_layer_test(
        cls, {"units": 3, "num_train_examples": 100, "activation": "relu",
              "validate_args": True},
        input_shape=(4, 5), call_kwargs={"use_mean": True},
        expected_output_shape=(4, 3), expected_output_dtype="float32",
        expected_num_trainable_weights=3, expected_num_non_trainable_weights=1,  # kl_warmup
        expected_num_losses=1, expected_mixed_precision_output_dtype="float32",
        supports_jit=True, expect_nan_error=True)


@pytest.mark.parametrize("cls", [FlipoutConv2D, ReparameterizationConv2D])
def test_conv2d_contract(cls):
    run_layer_test(
        cls, {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same",
                        "num_train_examples": 100, "validate_args": True},
        input_shape=(2, 8, 8, 3), call_kwargs={"use_mean": True},
        expected_output_shape=(2, 4, 4, 4), expected_output_dtype="float32",
        expected_num_trainable_weights=3, expected_num_non_trainable_weights=1,
        expected_num_losses=1,
        expected_mixed_precision_output_dtype="float32", supports_jit=True,
        expect_nan_error=True)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (FlipoutDense, {"units": 4}, (3, 6)),
    (FlipoutConv2D, {"filters": 3, "kernel_size": 2}, (2, 5, 5, 2)),
    (ReparameterizationDense, {"units": 4}, (3, 6)),
    (ReparameterizationConv2D, {"filters": 3, "kernel_size": 2}, (2, 5, 5, 2)),
])
@pytest.mark.parametrize("prior_scale,n", [(1.0, 1), (1.0, 250), (0.5, 40)])
def test_kl_matches_closed_form(cls, kwargs, shape, prior_scale, n):
    rng = np.random.default_rng(0)
    layer = cls(num_train_examples=n, prior_scale=prior_scale, **kwargs)
    layer(rng.standard_normal(shape).astype(np.float32))
    loc = layer.kernel_posterior.distribution.loc
    kernel_shape = tuple(loc.shape)
    mu = rng.normal(0.0, 0.7, kernel_shape).astype(np.float32)
    raw = rng.normal(-1.0, 0.5, kernel_shape).astype(np.float32)
    for var in layer.trainable_weights:
        if "kernel_posterior_loc" in var.name:
            var.assign(mu)
        elif "untransformed_scale" in var.name:
            var.assign(raw)
    # TFP's mean-field posterior: sigma = softplus(raw) + float32 eps.
    sigma = _softplus(raw.astype(np.float64)) + np.finfo(np.float32).eps
    expected = _kl_normal_vs_prior(mu, sigma, prior_scale) / n
    layer(rng.standard_normal(shape).astype(np.float32))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(layer.kl_divergence().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("cls,kwargs,shape,fan_in", [
    (FlipoutDense, {"units": 4}, (3, 6), 6),
    (FlipoutConv2D, {"filters": 3, "kernel_size": 2}, (2, 5, 5, 2), 2 * 2 * 2),
    (ReparameterizationConv2D, {"filters": 3, "kernel_size": (3, 2)}, (2, 5, 5, 4), 3 * 2 * 4),
])
def test_he_prior_scale_is_per_layer(cls, kwargs, shape, fan_in):
    """prior_scale="he": s = sqrt(2 / fan_in), the KL against N(0, s^2) in closed form, and
    TFP's prior distribution of the layer has the same scale."""
    rng = np.random.default_rng(3)
    layer = cls(num_train_examples=7, prior_scale="he", **kwargs)
    layer(rng.standard_normal(shape).astype(np.float32))
    s = np.sqrt(2.0 / fan_in)
    assert layer.prior_stddev == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(layer.kernel_prior.distribution.stddev().numpy(), s, rtol=1e-6)
    mu = layer.kernel_posterior.distribution.loc.numpy()
    sigma = layer.posterior_stddev().numpy()
    np.testing.assert_allclose(layer.kl_divergence().numpy(),
                               _kl_normal_vs_prior(mu, sigma, s) / 7, rtol=1e-5)
    config = layer.get_config()
    assert config["prior_scale"] == "he"
    assert cls.from_config(config).prior_scale == "he"


def test_kl_warmup_weight_multiplies_the_loss_only():
    layer = FlipoutDense(3, num_train_examples=5)
    layer(np.ones((2, 4), np.float32))
    full = float(layer.kl_divergence(warmup=False))
    assert float(layer.kl_warmup.numpy()) == 1.0 and not layer.kl_warmup.trainable
    np.testing.assert_allclose(float(layer.losses[0]), full, rtol=1e-6)
    layer.kl_warmup.assign(0.3)
    np.testing.assert_allclose(float(layer.losses[0]), 0.3 * full, rtol=1e-6)
    np.testing.assert_allclose(float(layer.kl_divergence()), 0.3 * full, rtol=1e-6)
    assert float(layer.kl_divergence(warmup=False)) == full
    assert "kl_warmup" in [w.name.split("/")[-1].split(":")[0] for w in layer.non_trainable_weights]


def test_kl_weight_scales_and_zero_disables():
    x = np.ones((2, 3), np.float32)
    a = FlipoutDense(2, num_train_examples=10, seed=1, kernel_loc_initializer="ones")
    b = FlipoutDense(2, num_train_examples=10, kl_weight=0.25, seed=1, kernel_loc_initializer="ones")
    c = FlipoutDense(2, num_train_examples=10, kl_weight=0.0)
    for layer in (a, b, c):
        layer(x)
    b.set_weights(a.get_weights())
    b(x)
    np.testing.assert_allclose(b.losses[0].numpy(), 0.25 * a.losses[0].numpy(), rtol=1e-6)
    assert c.losses[0].numpy() == 0.0


def test_model_losses_collect_kl_of_every_layer():
    inputs = keras.Input((6, 6, 2))
    h = FlipoutConv2D(3, 3, num_train_examples=20, name="c")(inputs)
    h = keras.layers.Flatten()(h)
    out = FlipoutDense(2, num_train_examples=20, name="d")(h)
    model = keras.Model(inputs, out)
    model(np.zeros((2, 6, 6, 2), np.float32))
    expected = 0.0
    for name in ("c", "d"):
        layer = model.get_layer(name)
        mu = layer.kernel_posterior.distribution.loc.numpy()
        raw = [w.numpy() for w in layer.weights if "untransformed_scale" in w.name][0]
        expected += _kl_normal_vs_prior(mu, _softplus(raw.astype(np.float64)) + 1.2e-7, 1.0) / 20
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-4)


@pytest.mark.parametrize("cls", [FlipoutDense, ReparameterizationDense])
def test_samples_differ_and_mean_path_is_deterministic(cls):
    layer = cls(3, posterior_scale_init=-1.0)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    a, b = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(layer(x, use_mean=True).numpy(), layer(x, use_mean=True).numpy())


@pytest.mark.parametrize("cls", [FlipoutDense, ReparameterizationDense])
def test_output_moments_monte_carlo(cls):
    """E[y_k] = sum_j x_j mu_jk + b_k and Var[y_k] = sum_j x_j^2 sigma_jk^2 (mean-field)."""
    rng = np.random.default_rng(5)
    layer = cls(2, posterior_scale_init=0.0)
    x1 = rng.standard_normal((1, 4)).astype(np.float32)
    layer(x1)
    mu = rng.normal(0, 1, (4, 2)).astype(np.float32)
    raw = rng.normal(-0.5, 0.3, (4, 2)).astype(np.float32)
    layer.set_weights([mu, raw, np.array([0.3, -0.2], np.float32), np.float32(1.0)])
    # Every call draws a new weight perturbation shared by the batch (Flipout only
    # decorrelates it by sign flips; reparameterization not at all), so draws are
    # pooled over many calls.
    calls, rows = 1500, 4
    batch = np.repeat(x1, rows, axis=0)
    draw = tf.function(lambda b: layer(b))  # stateful random ops: a new draw per call
    ys = np.concatenate([draw(batch).numpy() for _ in range(calls)]).astype(np.float64)
    sigma = _softplus(raw.astype(np.float64))
    mean = (x1.astype(np.float64) @ mu + np.array([0.3, -0.2]))[0]
    var = ((x1.astype(np.float64) ** 2) @ sigma ** 2)[0]
    # Tolerance: 5 standard errors, conservatively counting one independent draw per call.
    np.testing.assert_array_less(np.abs(ys.mean(0) - mean), 5 * np.sqrt(var / calls))
    np.testing.assert_array_less(np.abs(ys.var(0) - var), 5 * var * np.sqrt(2.0 / (calls - 1)))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"units": 0}, ValueError, "units"),
    ({"units": 2.5}, TypeError, "units"),
    ({"units": None}, TypeError, "units"),
    ({"units": 2, "num_train_examples": 0}, ValueError, "num_train_examples"),
    ({"units": 2, "num_train_examples": 10.0}, TypeError, "num_train_examples"),
    ({"units": 2, "kl_weight": -1.0}, ValueError, "kl_weight"),
    ({"units": 2, "kl_weight": "1"}, TypeError, "kl_weight"),
    ({"units": 2, "prior_scale": 0.0}, ValueError, "prior_scale"),
    ({"units": 2, "prior_scale": -1.0}, ValueError, "prior_scale"),
    ({"units": 2, "prior_scale": "glorot"}, ValueError, "prior_scale"),
    ({"units": 2, "prior_scale": None}, TypeError, "prior_scale"),
    ({"units": 2, "posterior_scale_init": None}, TypeError, "posterior_scale_init"),
    ({"units": 2, "use_bias": 1}, TypeError, "use_bias"),
    ({"units": 2, "seed": "1"}, TypeError, "seed"),
    ({"units": 2, "seed": 1.5}, TypeError, "seed"),
])
@pytest.mark.parametrize("cls", [FlipoutDense, ReparameterizationDense])
def test_dense_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"filters": 0, "kernel_size": 3}, ValueError, "filters"),
    ({"filters": 2, "kernel_size": 0}, ValueError, "kernel_size"),
    ({"filters": 2, "kernel_size": (3, 3, 3)}, ValueError, "kernel_size"),
    ({"filters": 2, "kernel_size": "3"}, ValueError, "kernel_size"),
    ({"filters": 2, "kernel_size": 3, "strides": -1}, ValueError, "strides"),
    ({"filters": 2, "kernel_size": 3, "padding": "full"}, ValueError, "padding"),
    ({"filters": 2, "kernel_size": 3, "prior_scale": 0}, ValueError, "prior_scale"),
])
@pytest.mark.parametrize("cls", [FlipoutConv2D, ReparameterizationConv2D])
def test_conv_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("conv_cls,dense_cls", [(FlipoutConv2D, FlipoutDense),
                                               (ReparameterizationConv2D, ReparameterizationDense)])
def test_bad_input_rank(conv_cls, dense_cls):
    with pytest.raises(ValueError, match="ndim=4"):
        conv_cls(2, 3)(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="min_ndim=2"):
        dense_cls(2)(np.zeros((5,), np.float32))


@pytest.mark.parametrize("cls,shape", [
    (ReparameterizationDense, (5,)),
    (ReparameterizationConv2D, (6, 6, 2)),
])
def test_reparameterization_shares_one_weight_sample_across_the_batch(cls, shape):
    """One W = mu + sigma * eps per call: identical inputs of a batch give identical
    outputs, while two calls (new eps) differ."""
    kwargs = {"units": 3} if cls is ReparameterizationDense else {"filters": 3, "kernel_size": 3}
    layer = cls(posterior_scale_init=-1.0, **kwargs)
    row = np.random.default_rng(2).standard_normal((1,) + shape).astype(np.float32)
    other = np.random.default_rng(3).standard_normal((1,) + shape).astype(np.float32)
    batch = np.concatenate([row, other, row, row])
    first, second = layer(batch).numpy(), layer(batch).numpy()
    for out in (first, second):
        np.testing.assert_array_equal(out[0], out[2])
        np.testing.assert_array_equal(out[0], out[3])
        assert not np.allclose(out[0], out[1])
    assert np.abs(first[0] - second[0]).max() > 1e-2
    # The mean path gives the same rows, which equal one sample only in expectation.
    mean = layer(batch, use_mean=True).numpy()
    np.testing.assert_array_equal(mean[0], mean[2])


def test_flipout_perturbs_identical_inputs_of_a_batch_differently():
    """The contrast to the test above: Flipout's per-example sign flips."""
    layer = FlipoutDense(3, posterior_scale_init=-1.0)
    row = np.random.default_rng(2).standard_normal((1, 5)).astype(np.float32)
    out = layer(np.repeat(row, 4, axis=0)).numpy()
    assert not np.allclose(out[0], out[1]) or not np.allclose(out[0], out[2])


def test_reparameterization_kernel_sample_moments_monte_carlo():
    """With x = I the Dense output rows are the sampled kernel W itself: per call one W,
    whose elements have mean mu, standard deviation sigma = softplus(rho) and are
    uncorrelated (mean field), pooled over calls."""
    rng = np.random.default_rng(7)
    layer = ReparameterizationDense(3, use_bias=False, posterior_scale_init=0.0)
    eye = np.eye(4, dtype=np.float32)
    layer(eye)
    mu = rng.normal(0, 1, (4, 3)).astype(np.float32)
    raw = rng.normal(-0.5, 0.3, (4, 3)).astype(np.float32)
    layer.set_weights([mu, raw, np.float32(1.0)])  # the last: the KL warm-up weight
    draw = tf.function(lambda b: layer(b))
    calls = 2000
    w = np.stack([draw(eye).numpy() for _ in range(calls)]).astype(np.float64)  # [calls, 4, 3]
    sigma = _softplus(raw.astype(np.float64)) + np.finfo(np.float32).eps
    # 5 standard errors for the mean and the variance of every element.
    np.testing.assert_array_less(np.abs(w.mean(0) - mu), 5 * sigma / np.sqrt(calls))
    np.testing.assert_array_less(np.abs(w.var(0) - sigma ** 2),
                                 5 * sigma ** 2 * np.sqrt(2.0 / (calls - 1)))
    # Standardised elements: correlations between two elements within 5 / sqrt(calls).
    z = ((w - mu) / sigma).reshape(calls, -1)
    corr = np.corrcoef(z, rowvar=False)
    off_diagonal = corr[~np.eye(corr.shape[0], dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / np.sqrt(calls)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build_recording(build):
    """Runs `build()` recording every Python warning and every log record of the root,
    `tensorflow` and `absl` loggers (TF's deprecation messages go through the latter)."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("tensorflow"), logging.getLogger("absl")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build()
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return [str(w.message) for w in caught], handler.messages


@pytest.mark.parametrize("cls,kwargs,shape", [
    (FlipoutDense, {"units": 4}, (3, 6)),
    (FlipoutConv2D, {"filters": 3, "kernel_size": 2}, (2, 5, 5, 2)),
    (ReparameterizationDense, {"units": 4}, (3, 6)),
    (ReparameterizationConv2D, {"filters": 3, "kernel_size": 2}, (2, 5, 5, 2)),
])
def test_building_emits_no_add_variable_deprecation(cls, kwargs, shape):
    """TFP's layers create their posteriors through `Layer.add_variable`, a deprecated alias
    that warns three times per layer; ours go through `add_weight`. TFP's own layer is the
    positive control (the recording does see the warning)."""
    x = np.zeros(shape, np.float32)

    def build_ours():
        layer = cls(num_train_examples=10, **kwargs)
        layer(x)
        assert len(layer.trainable_weights) == 3  # loc, untransformed scale, bias

    caught, logged = _build_recording(build_ours)
    assert not [m for m in caught if "add_variable" in m], caught
    assert not [m for m in logged if "add_variable" in m or "deprecat" in m.lower()], logged

    tfp_cls = {FlipoutDense: tfp.layers.DenseFlipout,
               FlipoutConv2D: tfp.layers.Convolution2DFlipout,
               ReparameterizationDense: tfp.layers.DenseReparameterization,
               ReparameterizationConv2D: tfp.layers.Convolution2DReparameterization}[cls]
    args = (kwargs["units"],) if "units" in kwargs else (kwargs["filters"], kwargs["kernel_size"])
    caught, _ = _build_recording(lambda: tfp_cls(*args)(x))
    assert [m for m in caught if "add_variable" in m]


# ----------------------------------------------------------------------------- replicas


def _per_replica(strategy, fn):
    """`fn` once per replica inside one `tf.function`; the local results as NumPy."""
    @tf.function(autograph=False)  # TF 2.14's AutoGraph mis-converts TFP's distribution methods
    def step():
        return strategy.run(fn)

    return [np.asarray(t) for t in strategy.experimental_local_results(step())]


@pytest.mark.parametrize("cls,args,shape,lead", [
    (FlipoutDense, (16,), (8, 32), (8,)),
    (FlipoutConv2D, (16, 3), (8, 5, 5, 32), (8,)),
])
def test_seeded_flipout_signs_differ_between_replicas_and_repeat(mirrored_strategy, cls, args,
                                                                  shape, lead):
    def make(seed):
        with mirrored_strategy.scope():
            layer = cls(*args, seed=seed)
            layer(tf.zeros(shape))
        return layer

    def signs(layer):
        def draw():
            s_in, s_out = layer.flipout_signs(tf.constant(lead), shape[-1], args[0], tf.float32)
            return tf.concat([tf.reshape(s_in, [-1]), tf.reshape(s_out, [-1])], 0)
        return _per_replica(mirrored_strategy, draw)

    a, b, other = make(3), make(3), make(4)
    first, second = signs(a)
    assert set(np.unique(first)) == {-1.0, 1.0}
    # Independent Rademacher draws of 384 entries agree on about half (5 standard
    # deviations: 0.5 +- 0.128); the same draw on both replicas agrees everywhere.
    agreement = float(np.mean(first == second))
    assert abs(agreement - 0.5) < 5 * 0.5 / np.sqrt(first.size), agreement
    # Reproducible for a seed: another layer with seed 3 flips the same signs per replica.
    for x, y in zip(signs(a), signs(b)):
        np.testing.assert_array_equal(x, y)
    assert np.mean(signs(other)[0] == first) < 0.75
    # And the replicas' sampled outputs differ.
    x = tf.ones(shape)
    outputs = _per_replica(mirrored_strategy, lambda: a(x))
    assert not np.allclose(outputs[0], outputs[1])
