"""Mixture KL regulariser (ReBEL Eq. 3) vs NumPy closed form and Monte Carlo."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from keras_efficient.backend import keras, tf
from keras_efficient.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_efficient.layers.random_projection import RandomProjection
from keras_efficient.losses.mixture_kl import (
    gaussian_mixture_kl,
    linear_softmax_prior,
    mixture_kl_divergence,
)


def _np_kl(m0, s0, m1, s1):
    """KL(N(m0, S0) || N(m1, S1)) for full matrices, float64."""
    d = len(m0)
    inv = np.linalg.inv(s1)
    diff = m1 - m0
    return 0.5 * (np.trace(inv @ s0) + diff @ inv @ diff - d
                  + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1])


def _random_spd(rng, c, k, d):
    a = rng.normal(size=(c, k, d, d)) * 0.4
    return np.einsum("ckji,ckjl->ckil", a, a) + np.eye(d)


def _problem(rng, b=5, c=3, k=4, d=3, d_in=None):
    d_in = d_in or d
    mean = rng.normal(size=(b, d_in))
    var = rng.uniform(0.2, 2.0, size=(b, d_in))
    labels = rng.integers(0, c, size=b)
    mus = rng.normal(size=(c, k, d))
    return mean, var, labels, mus


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_closed_form(covariance_type):
    rng = np.random.default_rng(0)
    mean, var, labels, mus = _problem(rng)
    full = _random_spd(rng, 3, 4, 3)
    cov = full if covariance_type == "full" else rng.uniform(0.5, 3.0, size=(3, 4, 3))
    ours = gaussian_mixture_kl(mean, var, labels, mus, cov, covariance_type).numpy()
    for b in range(len(mean)):
        c = labels[b]
        kls = [_np_kl(mean[b], np.diag(var[b]), mus[c, k],
                      cov[c, k] if covariance_type == "full" else np.diag(cov[c, k]))
               for k in range(4)]
        np.testing.assert_allclose(ours[b], min(kls), rtol=1e-4, atol=1e-4)


def test_monte_carlo():
    """KL = E_{z~q}[log q(z) - log p(z)]; 200k samples, tolerance 4 standard errors."""
    rng = np.random.default_rng(1)
    mean, var, labels, mus = _problem(rng, b=1, c=2, k=1, d=2)
    cov = _random_spd(rng, 2, 1, 2)
    ours = gaussian_mixture_kl(mean, var, labels, mus, cov, "full").numpy()[0]
    q = multivariate_normal(mean[0], np.diag(var[0]))
    p = multivariate_normal(mus[labels[0], 0], cov[labels[0], 0])
    z = q.rvs(size=200_000, random_state=2)
    terms = q.logpdf(z) - p.logpdf(z)
    assert abs(ours - terms.mean()) < 4 * terms.std() / np.sqrt(len(terms)) + 1e-4


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_projected_equals_kl_of_projected_gaussians(covariance_type):
    rng = np.random.default_rng(2)
    d_in, d = 7, 4
    mean, var, labels, mus = _problem(rng, b=4, c=3, k=2, d=d, d_in=d_in)
    proj = rng.normal(size=(d, d_in))
    cov = (_random_spd(rng, 3, 2, d) if covariance_type == "full"
           else rng.uniform(0.5, 2.0, size=(3, 2, d)))
    ours = gaussian_mixture_kl(mean, var, labels, mus, cov, covariance_type, projection=proj)
    for b in range(4):
        m0 = proj @ mean[b]
        s0 = proj @ np.diag(var[b]) @ proj.T
        c = labels[b]
        kls = [_np_kl(m0, s0, mus[c, k], cov[c, k] if covariance_type == "full"
                      else np.diag(cov[c, k])) for k in range(2)]
        np.testing.assert_allclose(ours.numpy()[b], min(kls), rtol=1e-4, atol=1e-3)


def test_with_classifier_and_projection_layer():
    rng = np.random.default_rng(3)
    clf = GaussianMixtureClassifier(3, 2, covariance="full")
    proj = RandomProjection(4, seed=1)
    mean = rng.normal(size=(5, 9)).astype("float32")
    var = rng.uniform(0.5, 1.5, size=(5, 9)).astype("float32")
    labels = np.array([0, 1, 2, 1, 0])
    clf(proj(mean))
    clf.scale_entries.assign(0.3 * rng.normal(size=clf.scale_entries.shape).astype("float32"))
    r = proj.matrix().numpy().astype(np.float64)
    _, mus, cov = [t.numpy().astype(np.float64) for t in clf.mixture_parameters()]
    ours = mixture_kl_divergence(mean, var, labels, clf, projection=proj).numpy()
    for b in range(5):
        kls = [_np_kl(r @ mean[b], r @ np.diag(var[b]) @ r.T, mus[labels[b], k],
                      cov[labels[b], k]) for k in range(2)]
        np.testing.assert_allclose(ours[b], min(kls), rtol=1e-3, atol=1e-3)


def test_gradients_reach_head_and_classifier():
    clf = GaussianMixtureClassifier(2, 2, covariance="diag")
    clf(np.zeros((1, 3), "float32"))
    mean = tf.Variable(np.ones((2, 3), "float32"))
    log_var = tf.Variable(np.zeros((2, 3), "float32"))
    with tf.GradientTape() as tape:
        kl = tf.reduce_mean(mixture_kl_divergence(mean, tf.exp(log_var), [0, 1], clf))
    grads = tape.gradient(kl, [mean, log_var] + clf.trainable_weights)
    assert grads[-3] is None or np.all(tf.convert_to_tensor(grads[-3]).numpy() == 0)  # π unused
    for g in grads[:2] + grads[-2:]:
        assert g is not None and np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))


def test_bad_inputs():
    rng = np.random.default_rng(4)
    mean, var, labels, mus = _problem(rng)
    cov = rng.uniform(0.5, 1.0, size=(3, 4, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        gaussian_mixture_kl(mean, var, [0, 1, 3, 0, 0], mus, cov, "diag")
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        gaussian_mixture_kl(mean, var, [0, -1, 2, 0, 0], mus, cov, "diag")
    bad = mean.copy()
    bad[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        gaussian_mixture_kl(bad, var, labels, mus, cov, "diag")
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        gaussian_mixture_kl(mean, -var, labels, mus, cov, "diag")
    with pytest.raises(ValueError, match="covariance_type"):
        gaussian_mixture_kl(mean, var, labels, mus, cov, "tied")
    with pytest.raises(ValueError, match="projection"):
        gaussian_mixture_kl(mean, var, labels, mus, cov, "diag", projection=np.ones((5, 3)))
    with pytest.raises(ValueError, match="built"):
        mixture_kl_divergence(mean, var, labels, GaussianMixtureClassifier(3))


def test_mismatched_shapes_raise_instead_of_broadcasting():
    """Size-1 axes would broadcast into a finite but meaningless KL: they must be rejected."""
    rng = np.random.default_rng(5)
    mean, var, labels, mus = _problem(rng, d=4)
    cov = rng.uniform(0.5, 1.0, size=(3, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        gaussian_mixture_kl(mean, var[:, :1], labels, mus, cov, "diag")
    with pytest.raises(ValueError, match="posterior has 1 dimensions"):
        gaussian_mixture_kl(mean[:, :1], var[:, :1], labels, mus, cov, "diag")
    with pytest.raises(ValueError, match="posterior has 5 dimensions"):
        gaussian_mixture_kl(rng.normal(size=(5, 5)), rng.uniform(0.5, 1.0, size=(5, 5)),
                            labels, mus, cov, "diag")
    with pytest.raises(ValueError, match="projection"):
        gaussian_mixture_kl(mean, var, labels, mus, cov, "diag", projection=np.ones((4, 6)))
    with pytest.raises(ValueError, match="covariances"):
        gaussian_mixture_kl(mean, var, labels, mus, _random_spd(rng, 3, 4, 4), "diag")
    with pytest.raises(ValueError, match=r"\(batch, d_in\)"):
        gaussian_mixture_kl(mean[0], var[0], labels[:1], mus, cov, "diag")
    clf = GaussianMixtureClassifier(3, 2, covariance="diag")
    clf(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="posterior has 6 dimensions"):
        mixture_kl_divergence(np.zeros((2, 6), "float32"), np.ones((2, 6), "float32"), [0, 1],
                              clf)


def _dense(rng, d, c, activation=None):
    layer = keras.layers.Dense(c, activation=activation)
    layer.build((None, d))
    layer.kernel.assign(rng.normal(size=(d, c)).astype("float32"))
    layer.bias.assign(rng.normal(size=c).astype("float32"))
    return layer


def test_linear_softmax_prior_reproduces_the_softmax():
    """π_c N(z; w_c, I), normalised over c, equals softmax(Wᵀz + b) (SciPy densities)."""
    rng = np.random.default_rng(6)
    layer = _dense(rng, 5, 4)
    weights, means, cov = [t.numpy().astype(np.float64) for t in linear_softmax_prior(layer)]
    assert weights.shape == (4, 1) and means.shape == (4, 1, 5) and cov.shape == (4, 1, 5)
    np.testing.assert_allclose(cov, 1.0)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    z = rng.normal(size=(6, 5))
    w = layer.kernel.numpy().astype(np.float64)
    logits = z @ w + layer.bias.numpy()
    expected = logits - logsumexp(logits, axis=-1, keepdims=True)
    joint = np.stack([np.log(weights[c, 0]) + multivariate_normal(means[c, 0], np.eye(5)).logpdf(z)
                      for c in range(4)], axis=-1)
    np.testing.assert_allclose(joint - logsumexp(joint, axis=-1, keepdims=True), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("projected", [False, True])
def test_linear_classifier_kl_closed_form(projected):
    """KL(N(m, S) ‖ N(w_c, I)) = ½[−log|S| − d + ‖m − w_c‖² + tr S], m = Rμ, S = R diag σ Rᵀ."""
    rng = np.random.default_rng(7)
    d_in, d, c = 16, (4 if projected else 16), 3
    layer = _dense(rng, d, c)
    proj = None
    r = np.eye(d_in)
    if projected:
        proj = RandomProjection(d, seed=3)
        proj(np.zeros((1, d_in), "float32"))
        r = proj.matrix().numpy().astype(np.float64)
        assert np.linalg.matrix_rank(r) == d  # S = R diag σ Rᵀ non-singular
    mean = rng.normal(size=(5, d_in)).astype("float32")
    var = rng.uniform(0.3, 2.0, size=(5, d_in)).astype("float32")
    labels = np.array([0, 2, 1, 1, 2])
    ours = mixture_kl_divergence(mean, var, labels, layer, projection=proj).numpy()
    w = layer.kernel.numpy().astype(np.float64)
    for b in range(5):
        m = r @ mean[b]
        s = r @ np.diag(var[b].astype(np.float64)) @ r.T
        expected = 0.5 * (-np.linalg.slogdet(s)[1] - d + np.sum((m - w[:, labels[b]]) ** 2)
                          + np.trace(s))
        np.testing.assert_allclose(ours[b], expected, rtol=1e-4, atol=1e-4)


def test_linear_softmax_prior_errors():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="built"):
        linear_softmax_prior(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="without activation"):
        linear_softmax_prior(_dense(rng, 4, 3, activation="softmax"))
    with pytest.raises(TypeError, match="classifier"):
        linear_softmax_prior(GaussianMixtureClassifier(3))
