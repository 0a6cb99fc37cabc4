"""predictive_moments (law of total covariance) and mixture_nll against NumPy/SciPy."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from keras_efficient import calibration


def _samples(s, n, d, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (s, n, d))
    a = rng.normal(0.0, 0.4, (s, n, d, d))
    covs = a @ np.swapaxes(a, -1, -2) + 0.05 * np.eye(d)
    return means, covs


def test_predictive_moments_law_of_total_covariance():
    means, covs = _samples(7, 5, 2)
    out = calibration.predictive_moments(means, covs)
    for i in range(5):
        mu = means[:, i]
        np.testing.assert_allclose(out["mean"][i], mu.mean(0), rtol=1e-12)
        np.testing.assert_allclose(out["aleatoric_covariance"][i], covs[:, i].mean(0), rtol=1e-12)
        np.testing.assert_allclose(out["epistemic_covariance"][i], np.cov(mu.T, bias=True),
                                   rtol=1e-12)
    np.testing.assert_allclose(out["covariance"],
                               out["aleatoric_covariance"] + out["epistemic_covariance"])


def test_predictive_moments_are_the_mixture_moments_monte_carlo():
    """Draws from the S-component equal-weight mixture have the returned mean and covariance
    (5 standard errors of each sample moment)."""
    means, covs = _samples(4, 1, 2, seed=3)
    rng = np.random.default_rng(4)
    n = 200000
    comp = rng.integers(0, 4, n)
    chol = np.linalg.cholesky(covs[:, 0])
    draws = means[comp, 0] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, 2)))
    out = calibration.predictive_moments(means, covs)
    cov = out["covariance"][0]
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(draws.mean(0) - out["mean"][0]), 5 * se_mean)
    centred = draws - draws.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.reshape(n, 4).std(0).reshape(2, 2) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(products.mean(0) - cov), 5 * se_cov)


def test_mixture_nll_matches_scipy():
    means, covs = _samples(6, 8, 3, seed=1)
    y = np.random.default_rng(2).normal(0.0, 1.0, (8, 3))
    got = calibration.mixture_nll(y, means, covs)
    for i in range(8):
        log_p = [stats.multivariate_normal(means[s, i], covs[s, i]).logpdf(y[i]) for s in range(6)]
        np.testing.assert_allclose(got[i], -(logsumexp(log_p) - np.log(6)), rtol=1e-10)
    # One sample: the Gaussian NLL. Far-away targets: no underflow (log-sum-exp).
    np.testing.assert_allclose(calibration.mixture_nll(y, means[:1], covs[:1]),
                               calibration.gaussian_nll(y, means[0], covs[0]), rtol=1e-12)
    far = calibration.mixture_nll(y + 1e3, means, covs)
    assert np.all(np.isfinite(far)) and np.all(far > 1e4)


def test_bad_sample_shapes():
    means, covs = _samples(3, 4, 2)
    with pytest.raises(ValueError, match="sample_covariances"):
        calibration.predictive_moments(means, covs[:, :, 0])
    with pytest.raises(ValueError, match="sample_means"):
        calibration.predictive_moments(means[0, 0], covs[0, 0])
    with pytest.raises(ValueError, match="y_true"):
        calibration.mixture_nll(np.zeros((3, 2)), means, covs)
