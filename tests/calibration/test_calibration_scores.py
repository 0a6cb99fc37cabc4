"""gaussian_nll and crps_gaussian against SciPy (logpdf, numerical integration)."""

import numpy as np
import pytest
from scipy import integrate, stats

from keras_efficient import calibration


def _gaussians(n, d, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, (n, d))
    a = rng.normal(0.0, 0.5, (n, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    y = mean + rng.normal(0.0, 1.0, (n, d))
    return y, mean, cov


@pytest.mark.parametrize("d", [1, 2, 4])
def test_gaussian_nll_matches_scipy_logpdf(d):
    y, mean, cov = _gaussians(50, d, seed=d)
    expected = np.array([-stats.multivariate_normal(mean[i], cov[i]).logpdf(y[i])
                         for i in range(len(y))])
    got = calibration.gaussian_nll(y, mean, cov)
    assert got.shape == (50,)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_crps_matches_numerical_integration():
    """CRPS = int (F(x) - 1[x >= y])^2 dx, integrated with scipy.integrate.quad."""
    y, mean, cov = _gaussians(12, 2, seed=3)
    got = calibration.crps_gaussian(y, mean, cov)
    assert got.shape == (12, 2)
    for i in range(12):
        for k in range(2):
            mu, s, obs = mean[i, k], np.sqrt(cov[i, k, k]), y[i, k]
            left = integrate.quad(lambda x: stats.norm.cdf(x, mu, s) ** 2, -np.inf, obs)[0]
            right = integrate.quad(lambda x: stats.norm.sf(x, mu, s) ** 2, obs, np.inf)[0]
            np.testing.assert_allclose(got[i, k], left + right, rtol=1e-7)


def test_crps_properties():
    """Properties of the score: CRPS = E|X - y| - E|X - X'| / 2 (Monte Carlo, 5 standard
    errors); at y = mu it is s (sqrt(2) - 1) / sqrt(pi); it tends to |y - mu| as s -> 0."""
    rng = np.random.default_rng(11)
    mu, s, obs = 0.3, 0.7, 1.1
    got = calibration.crps_gaussian([[obs]], [[mu]], [[[s * s]]])[0, 0]
    x = rng.normal(mu, s, 400000)
    x2 = rng.normal(mu, s, 400000)
    terms = np.abs(x - obs) - 0.5 * np.abs(x - x2)
    assert abs(got - terms.mean()) < 5 * terms.std() / np.sqrt(terms.size)
    at_mean = calibration.crps_gaussian([[mu]], [[mu]], [[[s * s]]])[0, 0]
    np.testing.assert_allclose(at_mean, s * (np.sqrt(2) - 1) / np.sqrt(np.pi), rtol=1e-12)
    narrow = calibration.crps_gaussian([[obs]], [[mu]], [[[1e-12]]])[0, 0]
    np.testing.assert_allclose(narrow, abs(obs - mu), rtol=1e-5)


def test_scores_prefer_the_true_scale():
    """Proper scores: the mean NLL and CRPS over draws from N(mu, Sigma) are lowest for
    the true covariance, compared with half and double scale."""
    y, mean, cov = _gaussians(1, 2, seed=4)
    rng = np.random.default_rng(5)
    chol = np.linalg.cholesky(cov[0])
    draws = mean[0] + rng.standard_normal((20000, 2)) @ chol.T
    means = np.broadcast_to(mean[0], draws.shape)
    nll = {f: calibration.gaussian_nll(draws, means, f * f * cov[0]).mean() for f in (0.5, 1, 2)}
    crps = {f: calibration.crps_gaussian(draws, means, f * f * cov[0]).mean()
            for f in (0.5, 1, 2)}
    assert nll[1] < min(nll[0.5], nll[2])
    assert crps[1] < min(crps[0.5], crps[2])
