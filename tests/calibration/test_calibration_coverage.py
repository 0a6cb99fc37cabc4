"""coverage / probability_integral_transform / reliability_curve against SciPy."""

import numpy as np
import pytest
from scipy import stats

from keras_efficient import calibration
from keras_efficient.calibration import _math


def _gaussians(n, d, seed=0, scale=1.0):
    """Random means, SPD covariances and targets drawn from N(mu, scale^2 Sigma)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, (n, d))
    a = rng.normal(0.0, 0.5, (n, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    chol = np.linalg.cholesky(cov)
    y = mean + scale * np.einsum("nij,nj->ni", chol, rng.standard_normal((n, d)))
    return y, mean, cov


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_chi2_and_normal_helpers_match_scipy(d):
    p = np.array([1e-4, 0.05, 0.3173, 0.5, 0.683, 0.9, 0.954, 0.99, 0.9999])
    np.testing.assert_allclose(_math.chi2_ppf(p, d), stats.chi2.ppf(p, d), rtol=1e-9)
    x = np.array([0.01, 0.5, 1.0, 2.3, 6.0, 20.0])
    np.testing.assert_allclose(_math.chi2_cdf(x, d), stats.chi2.cdf(x, d), rtol=1e-9)
    z = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(_math.normal_cdf(z), stats.norm.cdf(z), rtol=1e-12, atol=1e-300)
    for q in p:
        assert _math.normal_ppf(q) == pytest.approx(stats.norm.ppf(q), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("level", [0.3, 0.683, 0.954])
def test_joint_coverage_matches_scipy_chi2(d, level):
    y, mean, cov = _gaussians(500, d, seed=d)
    m2 = np.array([(y[i] - mean[i]) @ np.linalg.solve(cov[i], y[i] - mean[i])
                   for i in range(len(y))])
    expected = np.mean(m2 <= stats.chi2.ppf(level, d))
    assert calibration.coverage(y, mean, cov, level) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("level", [0.5, 0.683, 0.954])
def test_marginal_coverage_matches_scipy_intervals(level):
    y, mean, cov = _gaussians(400, 3, seed=4)
    std = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    lo, hi = stats.norm.interval(level, loc=mean, scale=std)
    expected = np.mean((y >= lo) & (y <= hi), axis=0)
    got = calibration.coverage(y, mean, cov, level, marginal=True)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_coverage_of_well_specified_gaussians_is_the_level():
    """Monte Carlo: 20,000 draws from the predicted Gaussians; 5 binomial standard errors."""
    n = 20000
    y, mean, cov = _gaussians(n, 2, seed=7)
    for level in (0.683, 0.954):
        tol = 5 * np.sqrt(level * (1 - level) / n)
        assert abs(calibration.coverage(y, mean, cov, level) - level) < tol
        np.testing.assert_array_less(
            np.abs(calibration.coverage(y, mean, cov, level, marginal=True) - level), tol)
    # Over-confident predictions (truth drawn with twice the predicted scale) under-cover:
    # P(chi2_2 <= 2.30 / 4) = 1 - exp(-0.2875) = 0.25.
    y2, mean2, cov2 = _gaussians(n, 2, seed=8, scale=2.0)
    expected = stats.chi2.cdf(stats.chi2.ppf(0.683, 2) / 4.0, 2)
    assert abs(calibration.coverage(y2, mean2, cov2, 0.683) - expected) < 5 * np.sqrt(0.25 / n)


def test_shared_covariance_and_leading_batch_dimensions():
    y, mean, cov = _gaussians(60, 2, seed=1)
    shared = cov[0]
    a = calibration.coverage(y, mean, shared, 0.683)
    b = calibration.coverage(y, mean, np.broadcast_to(shared, cov.shape), 0.683)
    assert a == b
    c = calibration.coverage(y.reshape(6, 10, 2), mean.reshape(6, 10, 2),
                             cov.reshape(6, 10, 2, 2), 0.683)
    assert c == calibration.coverage(y, mean, cov, 0.683)


def test_pit_matches_scipy_norm_cdf():
    y, mean, cov = _gaussians(300, 3, seed=2)
    std = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    got = calibration.probability_integral_transform(y, mean, cov)
    np.testing.assert_allclose(got, stats.norm.cdf(y, loc=mean, scale=std), rtol=1e-10)
    # Calibrated: uniform PIT values (Kolmogorov-Smirnov, seeded, per output).
    y, mean, cov = _gaussians(5000, 2, seed=3)
    pit = calibration.probability_integral_transform(y, mean, cov)
    for k in range(2):
        assert stats.kstest(pit[:, k], "uniform").pvalue > 1e-3


def test_reliability_curve_is_coverage_at_each_level():
    y, mean, cov = _gaussians(800, 2, seed=5, scale=1.3)
    levels = [0.1, 0.5, 0.683, 0.9]
    curve = calibration.reliability_curve(y, mean, cov, levels=levels)
    np.testing.assert_array_equal(curve["expected"], levels)
    np.testing.assert_allclose(curve["observed"],
                               [calibration.coverage(y, mean, cov, p) for p in levels])
    assert curve["num_examples"] == 800 and curve["marginal"] is False
    marginal = calibration.reliability_curve(y, mean, cov, levels=levels, marginal=True)
    assert marginal["observed"].shape == (4, 2)
    np.testing.assert_allclose(marginal["observed"][2],
                               calibration.coverage(y, mean, cov, 0.683, marginal=True))
    # Too narrow predictions lie below the diagonal.
    assert np.all(curve["observed"] < curve["expected"])
    default = calibration.reliability_curve(y, mean, cov)
    assert 0.683 in default["expected"] and 0.954 in default["expected"]
    assert np.all(np.diff(default["observed"]) >= 0)


def test_plot_reliability_returns_a_figure_with_the_curve():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, mean, cov = _gaussians(200, 2, seed=6)
    levels = [0.2, 0.683, 0.954]
    fig = calibration.plot_reliability(y, mean, cov, levels=levels, label="model")
    try:
        ax = fig.axes[0]
        curve = [line for line in ax.get_lines() if line.get_label() == "model"][0]
        np.testing.assert_allclose(curve.get_xdata(), levels)
        np.testing.assert_allclose(curve.get_ydata(),
                                   calibration.reliability_curve(y, mean, cov, levels)["observed"])
    finally:
        plt.close(fig)
    fig, ax = plt.subplots()
    try:
        out = calibration.plot_reliability(y, mean, cov, levels=levels, marginal=True, ax=ax,
                                           output_names=["e1", "e2"])
        assert out is fig
        assert {"e1", "e2"} <= {line.get_label() for line in ax.get_lines()}
        with pytest.raises(ValueError, match="output_names"):
            calibration.plot_reliability(y, mean, cov, marginal=True, ax=ax, output_names=["e1"])
    finally:
        plt.close(fig)


@pytest.mark.parametrize("level,error", [(0.0, ValueError), (1.0, ValueError), (-0.5, ValueError),
                                         (1.5, ValueError), (None, TypeError), ("0.6", TypeError),
                                         (True, TypeError)])
def test_bad_levels(level, error):
    y, mean, cov = _gaussians(5, 2)
    with pytest.raises(error, match="level"):
        calibration.coverage(y, mean, cov, level)


@pytest.mark.parametrize("levels", [[], [0.5, 1.0], [[0.5]], [0.0], "abc"])
def test_bad_reliability_levels(levels):
    y, mean, cov = _gaussians(5, 2)
    with pytest.raises((ValueError, TypeError), match="levels"):
        calibration.reliability_curve(y, mean, cov, levels=levels)


def test_bad_shapes_and_values():
    y, mean, cov = _gaussians(5, 2)
    with pytest.raises(ValueError, match="same shape"):
        calibration.coverage(y[:, :1], mean, cov, 0.5)
    with pytest.raises(ValueError, match="covariance"):
        calibration.coverage(y, mean, cov[:, :1], 0.5)
    with pytest.raises(ValueError, match="covariance"):
        calibration.coverage(y, mean, cov[:3], 0.5)
    bad = cov.copy()
    bad[0] = -np.eye(2)
    with pytest.raises(ValueError, match="positive definite"):
        calibration.coverage(y, mean, bad, 0.5)
    nan = y.copy()
    nan[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calibration.coverage(nan, mean, cov, 0.5)
    with pytest.raises(TypeError, match="marginal"):
        calibration.coverage(y, mean, cov, 0.5, marginal=1)
