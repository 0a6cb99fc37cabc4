"""GaussianMixtureClassifier against SciPy (Eq. 6 with Σ = LᵀL + I)."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from keras_efficient.backend import keras, tf
from keras_efficient.layers.gaussian_mixture_classifier import (
    GaussianMixtureClassifier,
    gaussian_mixture_params_size,
)
from keras_efficient.testing import run_layer_test



def _randomise(layer, rng, scale=0.3):
    layer.mixture_logits.assign(rng.normal(size=layer.mixture_logits.shape).astype("float32"))
    layer.means.assign(rng.normal(size=layer.means.shape).astype("float32"))
    layer.scale_entries.assign(
        (scale * rng.normal(size=layer.scale_entries.shape)).astype("float32"))


def _scipy_log_gamma(layer, z):
    """Independent reference: builds L from the raw entries with NumPy, then SciPy densities."""
    logits = layer.mixture_logits.numpy().astype(np.float64)
    log_pi = logits - logsumexp(logits)
    means = layer.means.numpy().astype(np.float64)
    entries = layer.scale_entries.numpy().astype(np.float64)
    c_num, k_num, d = means.shape
    rows, cols = np.tril_indices(d)  # row-major lower triangle
    out = np.zeros((len(z), c_num))
    for c in range(c_num):
        comps = []
        for k in range(k_num):
            if layer.covariance == "full":
                lower = np.zeros((d, d))
                lower[rows, cols] = entries[c, k]
                sigma = lower.T @ lower + np.eye(d)
            else:
                sigma = np.diag(entries[c, k] ** 2 + 1.0)
            comps.append(log_pi[c, k] + multivariate_normal(means[c, k], sigma).logpdf(z))
        out[:, c] = logsumexp(np.stack(comps, -1), axis=-1)
    return out - logsumexp(out, axis=-1, keepdims=True)


@pytest.mark.parametrize("covariance", ["full", "diag"])
@pytest.mark.parametrize("d,c_num,k_num", [(1, 3, 2), (5, 4, 3), (64, 3, 2)])
def test_matches_scipy(covariance, d, c_num, k_num):
    rng = np.random.default_rng(d + c_num)
    layer = GaussianMixtureClassifier(c_num, k_num, covariance=covariance)
    z = rng.normal(size=(7, d)).astype("float32") * 1.5
    layer(z)
    _randomise(layer, rng, scale=0.3 if d < 64 else 0.1)
    ours = layer(z).numpy()
    ref = _scipy_log_gamma(layer, z.astype(np.float64))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-3 if d == 64 else 2e-4)
    np.testing.assert_allclose(np.exp(ours).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_mixture_parameters(covariance):
    rng = np.random.default_rng(1)
    layer = GaussianMixtureClassifier(3, 2, covariance=covariance)
    layer(np.zeros((1, 4), "float32"))
    _randomise(layer, rng)
    weights, means, cov = [t.numpy() for t in layer.mixture_parameters()]
    logits = layer.mixture_logits.numpy()
    np.testing.assert_allclose(weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    np.testing.assert_allclose(means, layer.means.numpy())
    entries = layer.scale_entries.numpy()
    if covariance == "full":
        assert cov.shape == (3, 2, 4, 4)
        lower = np.zeros((4, 4))
        lower[np.tril_indices(4)] = entries[2, 1]
        np.testing.assert_allclose(cov[2, 1], lower.T @ lower + np.eye(4), rtol=1e-5, atol=1e-6)
        assert np.all(np.linalg.eigvalsh(cov.reshape(-1, 4, 4)) >= 1.0 - 1e-5)
    else:
        assert cov.shape == (3, 2, 4)
        np.testing.assert_allclose(cov, entries ** 2 + 1.0, rtol=1e-6)


def test_params_size():
    layer = GaussianMixtureClassifier(5, 3, covariance="full")
    layer(np.zeros((2, 6), "float32"))
    assert layer.count_params() == gaussian_mixture_params_size(5, 3, 6, "full") == 15 * (1 + 6 + 21)
    assert gaussian_mixture_params_size(100, 8, 434, "diag") == 800 * (1 + 2 * 434)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_run_layer_test(covariance):
    run_layer_test(
        GaussianMixtureClassifier,
        {"num_classes": 3, "components_per_class": 2, "covariance": covariance,
         "validate_args": True},
        input_shape=(4, 5),
        expected_output_shape=(4, 3),
        expected_output_dtype="float32",
        expected_mixed_precision_output_dtype="float32",
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
        expected_num_losses=0,
        supports_jit=True,
        fit_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        fit_targets=np.array([0, 1, 2, 1]),
        expect_nan_error=True,
        rtol=1e-5,
        atol=1e-5,
    )


def test_wrong_embedding_size():
    layer = GaussianMixtureClassifier(3, 2)
    layer(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        layer(np.zeros((2, 6), "float32"))


def test_bad_rank():
    with pytest.raises(ValueError, match=r"must have shape \(batch, d\)"):
        GaussianMixtureClassifier(3, 2)(np.zeros((2, 3, 4), "float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings(bad):
    layer = GaussianMixtureClassifier(3, 2, covariance="diag", validate_args=True)
    z = np.zeros((2, 4), "float32")
    z[1, 2] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        layer(z)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2.0}, "num_classes"),
    ({"num_classes": None}, "num_classes"),
    ({"num_classes": "3"}, "num_classes"),
    ({"num_classes": 3, "components_per_class": 0}, "components_per_class"),
    ({"num_classes": 3, "components_per_class": -2}, "components_per_class"),
    ({"num_classes": 3, "covariance": "tied"}, "covariance"),
    ({"num_classes": 3, "scale_initializer": "zeros"}, "scale_initializer"),
    ({"num_classes": 3, "validate_inputs": 1}, "validate_inputs"),
    ({"num_classes": 3, "validate_args": 1}, "validate_args"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixtureClassifier(**kwargs)


def test_mixed_precision_float16_inputs_stay_accurate(mixed_precision):
    rng = np.random.default_rng(3)
    layer = GaussianMixtureClassifier(4, 3, covariance="full")
    z = rng.normal(size=(6, 16)).astype("float32")
    layer(z)
    _randomise(layer, rng, 0.2)
    out = layer(tf.constant(z, tf.float16))
    assert out.dtype == tf.float32
    ref = _scipy_log_gamma(layer, z.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-3)


def _paper_size_run(covariance, batch):
    """d = 434, K = 8, C = 100 (the paper's sizes): returns log gamma and the gradients."""
    layer = GaussianMixtureClassifier(100, 8, covariance=covariance)
    rng = np.random.default_rng(0)
    z = tf.constant(3.0 * rng.normal(size=(batch, 434)).astype("float32"))
    labels = tf.constant(rng.integers(0, 100, size=batch))
    with tf.GradientTape() as tape:
        log_gamma = layer(z)
        loss = -tf.reduce_mean(tf.gather(log_gamma, labels, batch_dims=1))
    grads = tape.gradient(loss, layer.trainable_weights)
    return log_gamma.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def _assert_finite_and_normalised(log_gamma, grads):
    assert log_gamma.dtype == np.float32
    assert np.all(np.isfinite(log_gamma))
    # Eq. (6) posteriors are normalised over the classes (float32 rounding of log-densities
    # of magnitude ~1e3 leaves ~1e-4).
    np.testing.assert_allclose(logsumexp(log_gamma.astype(np.float64), axis=1), 0.0,
                               atol=1e-3)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert any(np.any(g != 0) for g in grads)


def test_paper_size_diag_finite_values_and_gradients():
    log_gamma, grads = _paper_size_run("diag", 16)
    assert log_gamma.shape == (16, 100)
    _assert_finite_and_normalised(log_gamma, grads)


@pytest.mark.slow
def test_paper_size_full_finite_values_and_gradients():
    log_gamma, grads = _paper_size_run("full", 4)
    assert log_gamma.shape == (4, 100)
    _assert_finite_and_normalised(log_gamma, grads)


@pytest.mark.slow
def test_paper_size_full_mixed_precision(mixed_precision):
    log_gamma, grads = _paper_size_run("full", 4)
    assert log_gamma.shape == (4, 100)
    _assert_finite_and_normalised(log_gamma, grads)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_cached_inference_factors(covariance):
    rng = np.random.default_rng(5)
    layer = GaussianMixtureClassifier(3, 2, covariance=covariance)
    z = rng.normal(size=(4, 6)).astype("float32")
    layer(z)
    _randomise(layer, rng)
    factors = layer.inference_factors()
    ref = _scipy_log_gamma(layer, z.astype(np.float64))
    np.testing.assert_allclose(layer.log_class_probs(z, factors).numpy(), ref, rtol=1e-4,
                               atol=2e-4)


def test_paper_size_diag_mixed_precision(mixed_precision):
    log_gamma, grads = _paper_size_run("diag", 16)
    assert log_gamma.shape == (16, 100)
    _assert_finite_and_normalised(log_gamma, grads)
