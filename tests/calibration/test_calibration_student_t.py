"""Student-t predictions: coverage, PIT, reliability, NLL and CRPS against SciPy; the
maximum-likelihood (scale, df) against SciPy's optimiser and a known truth; the served
Student-t of `fit_covariance_scale(..., family="student_t")` through SavedModel."""

import json

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from keras_efficient import calibration
from keras_efficient.backend import keras, tf
from keras_efficient.calibration import _math
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead


def _predictions(n, d, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, (n, d))
    a = rng.normal(0.0, 0.5, (n, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    return mean, cov


def _draw_t(mean, cov, df, scale=1.0, seed=0):
    """y ~ t_df with covariance scale^2 cov: scale matrix S = (df - 2) / df * scale^2 cov."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov) * scale * np.sqrt((df - 2.0) / df)
    z = rng.standard_normal(mean.shape)
    w = rng.chisquare(df, mean.shape[:-1])[..., None] / df
    return mean + np.einsum("nij,nj->ni", chol, z) / np.sqrt(w)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("df", [2.5, 5.0, 30.0])
def test_radius_and_t_helpers_match_scipy(d, df):
    p = np.array([0.05, 0.3, 0.5, 0.683, 0.95, 0.999])  # 0.5: where TFP's betaincinv errs
    np.testing.assert_allclose(_math.t_radius_ppf(p, d, df), d * stats.f.ppf(p, d, df),
                               rtol=1e-8)
    m = np.array([0.01, 0.5, 2.0, 9.0, 100.0])
    np.testing.assert_allclose(_math.t_radius_cdf(m, d, df), stats.f.cdf(m / d, d, df),
                               rtol=1e-8)
    z = np.array([-7.0, -1.0, 0.0, 0.3, 2.5])
    np.testing.assert_allclose(_math.t_cdf(z, df), stats.t.cdf(z, df), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(_math.t_pdf(z, df), stats.t.pdf(z, df), rtol=1e-10)


@pytest.mark.parametrize("d,df,level", [(1, 3.0, 0.683), (2, 4.5, 0.683), (2, 4.5, 0.95),
                                        (3, 10.0, 0.9)])
def test_joint_and_marginal_coverage_match_scipy(d, df, level):
    mean, cov = _predictions(500, d, seed=d)
    y = _draw_t(mean, cov, 3.0, seed=7)  # any targets; the regions are what is checked
    scale = cov * (df - 2.0) / df
    radius = np.array([(y[i] - mean[i]) @ np.linalg.solve(scale[i], y[i] - mean[i])
                       for i in range(len(y))])
    expected = np.mean(stats.f.cdf(radius / d, d, df) <= level)
    assert calibration.coverage(y, mean, cov, level, df=df) == pytest.approx(expected, abs=1e-12)
    half = stats.t.ppf(0.5 * (1.0 + level), df) * np.sqrt(np.diagonal(scale, axis1=1, axis2=2))
    np.testing.assert_allclose(calibration.coverage(y, mean, cov, level, marginal=True, df=df),
                               np.mean(np.abs(y - mean) <= half, axis=0), atol=1e-12)
    curve = calibration.reliability_curve(y, mean, cov, levels=[0.2, level], df=df)
    assert curve["observed"][1] == pytest.approx(expected, abs=1e-12)


def test_well_specified_t_predictions_are_calibrated_and_gaussian_regions_are_not():
    """Targets drawn from t_4: the t regions hold the level (4 binomial sd); the chi-square
    ellipses of the same covariance over-cover at 68.3% and under-cover at 99%."""
    n, df = 20000, 4.0
    mean, cov = _predictions(n, 2, seed=3)
    y = _draw_t(mean, cov, df, seed=4)
    for level in (0.5, 0.683, 0.95, 0.99):
        sd = np.sqrt(level * (1.0 - level) / n)
        assert abs(calibration.coverage(y, mean, cov, level, df=df) - level) < 4 * sd
    assert calibration.coverage(y, mean, cov, 0.683) > 0.683 + 0.03
    assert calibration.coverage(y, mean, cov, 0.99) < 0.99 - 0.005
    pit = calibration.probability_integral_transform(y, mean, cov, df=df)
    for k in range(2):
        assert stats.kstest(pit[:, k], "uniform").pvalue > 1e-3


def test_pit_matches_scipy_t_cdf():
    mean, cov = _predictions(50, 2, seed=5)
    y = _draw_t(mean, cov, 6.0, seed=6)
    df = 6.0
    s = np.sqrt(np.diagonal(cov, axis1=1, axis2=2) * (df - 2.0) / df)
    np.testing.assert_allclose(calibration.probability_integral_transform(y, mean, cov, df=df),
                               stats.t.cdf((y - mean) / s, df), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_student_t_nll_matches_scipy_multivariate_t(d):
    mean, cov = _predictions(20, d, seed=d)
    y = _draw_t(mean, cov, 5.0, seed=d + 10)
    df = 3.7
    expected = [-stats.multivariate_t(mean[i], cov[i] * (df - 2.0) / df, df=df).logpdf(y[i])
                for i in range(20)]
    np.testing.assert_allclose(calibration.student_t_nll(y, mean, cov, df), expected, rtol=1e-10)
    # Large df: the Gaussian NLL.
    np.testing.assert_allclose(calibration.student_t_nll(y, mean, cov, 1e7),
                               calibration.gaussian_nll(y, mean, cov), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("df", [2.5, 4.0, 20.0])
def test_crps_student_t_matches_numerical_integration(df):
    mean, cov = _predictions(3, 2, seed=8)
    y = _draw_t(mean, cov, 4.0, seed=9)
    crps = calibration.crps_student_t(y, mean, cov, df)
    for i in range(3):
        for k in range(2):
            s = np.sqrt(cov[i, k, k] * (df - 2.0) / df)
            cdf = lambda x: stats.t.cdf(x, df, loc=mean[i, k], scale=s)  # noqa: E731
            below = integrate.quad(lambda x: cdf(x) ** 2, -np.inf, y[i, k], limit=200)[0]
            above = integrate.quad(lambda x: (1.0 - cdf(x)) ** 2, y[i, k], np.inf, limit=200)[0]
            assert crps[i, k] == pytest.approx(below + above, rel=1e-6)
    np.testing.assert_allclose(calibration.crps_student_t(y, mean, cov, 1e7),
                               calibration.crps_gaussian(y, mean, cov), rtol=1e-5)


def test_student_t_mle_matches_scipy_optimiser_and_recovers_the_truth():
    n = 4000
    mean, cov = _predictions(n, 2, seed=11)
    y = _draw_t(mean, cov, 5.0, scale=1.7, seed=12)
    s, df = calibration.student_t_scale_mle(y, mean, cov)

    def total_nll(p):
        return calibration.student_t_nll(y, mean, cov * np.exp(2 * p[0]), 2.0 + np.exp(p[1])).sum()

    best = optimize.minimize(total_nll, [0.0, 1.0], method="Nelder-Mead",
                             options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 4000})
    assert s == pytest.approx(np.exp(best.x[0]), rel=1e-5)
    assert df == pytest.approx(2.0 + np.exp(best.x[1]), rel=1e-4)
    assert s == pytest.approx(1.7, rel=0.05)
    assert 4.0 < df < 6.5


def test_student_t_mle_of_gaussian_residuals_is_nearly_gaussian():
    n = 4000
    mean, cov = _predictions(n, 2, seed=13)
    rng = np.random.default_rng(14)
    y = mean + 0.6 * np.einsum("nij,nj->ni", np.linalg.cholesky(cov), rng.standard_normal((n, 2)))
    s, df = calibration.student_t_scale_mle(y, mean, cov)
    assert df > 30.0
    assert s == pytest.approx(calibration.covariance_scale_mle(y, mean, cov), rel=0.02)


def test_student_t_recalibration_fixes_both_levels_where_one_scale_cannot():
    """Heavy-tailed residuals (t_3.5 with covariance 2.25 Sigma): the Gaussian MLE scale
    over-covers 68.3% and under-covers 99%; the Student-t fit (on a validation half) is
    calibrated at both on the other half (4 binomial sd)."""
    n = 20000
    mean, cov = _predictions(n, 2, seed=15)
    y = _draw_t(mean, cov, 3.5, scale=1.5, seed=16)
    val, test = slice(0, n // 2), slice(n // 2, n)
    gauss = calibration.fit_covariance_scale((mean[val], cov[val]), y[val])
    t_layer = calibration.fit_covariance_scale((mean[val], cov[val]), y[val], family="student_t")
    assert t_layer.initial_df == pytest.approx(3.5, rel=0.15)
    g_cov = gauss.initial_scale ** 2 * cov[test]
    t_cov = t_layer.initial_scale ** 2 * cov[test]
    m = n // 2
    assert calibration.coverage(y[test], mean[test], g_cov, 0.683) > 0.683 + 4 * 0.0047
    assert calibration.coverage(y[test], mean[test], g_cov, 0.99) < 0.99 - 4 * 0.001
    for level in (0.683, 0.95, 0.99):
        sd = np.sqrt(level * (1.0 - level) / m)
        observed = calibration.coverage(y[test], mean[test], t_cov, level, df=t_layer.initial_df)
        assert abs(observed - level) < 4 * sd, (level, observed)
    # The layer serves that Student-t.
    dist = t_layer((tf.constant(mean[:5], tf.float32), tf.constant(cov[:5], tf.float32)))
    np.testing.assert_allclose(dist.covariance().numpy(), t_layer.initial_scale ** 2 * cov[:5],
                               rtol=1e-4, atol=1e-6)
    expected = [stats.multivariate_t(mean[i], t_layer.initial_scale ** 2 * cov[i]
                                     * (t_layer.initial_df - 2) / t_layer.initial_df,
                                     df=t_layer.initial_df).logpdf(y[i]) for i in range(5)]
    np.testing.assert_allclose(dist.log_prob(tf.constant(y[:5], tf.float32)).numpy(), expected,
                               rtol=1e-4)


def _head_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, MultivariateNormalHead(2, name="head")(inputs), name="base")


def test_student_t_predictor_survives_savedmodel_and_keras_export(tmp_path):
    model = _head_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 4)).astype(np.float32)
    dist = model(x)
    mean, cov = dist.mean().numpy().astype(np.float64), dist.covariance().numpy().astype(np.float64)
    y = _draw_t(mean, cov, 4.0, scale=0.8, seed=1).astype(np.float32)
    predictor = calibration.fit_covariance_scale(model, (x, y), batch_size=500,
                                                 family="student_t")
    assert predictor.df == pytest.approx(4.0, rel=0.3)
    assert predictor.scale == pytest.approx(0.8, rel=0.1)
    out = predictor(x[:8])
    np.testing.assert_allclose(out.covariance().numpy(), predictor.scale ** 2 * cov[:8],
                               rtol=1e-4, atol=1e-7)
    expected_lp = out.log_prob(y[:8]).numpy()
    saved = str(tmp_path / "calibrated_t")
    predictor.save(saved, save_format="tf", save_traces=False,
                   signatures={"serving_default": predictor.serve})
    keras_path = str(tmp_path / "calibrated_t.keras")
    predictor.save(keras_path)
    for loaded in (keras.models.load_model(saved), keras.models.load_model(keras_path)):
        assert isinstance(loaded, calibration.CalibratedPredictor)
        assert loaded.df == pytest.approx(predictor.df, rel=1e-6)
        np.testing.assert_allclose(loaded(x[:8]).log_prob(y[:8]).numpy(), expected_lp,
                                   rtol=1e-5, atol=1e-6)
    serving = tf.saved_model.load(saved).signatures["serving_default"]
    result = serving(inputs=tf.constant(x[:8]))
    np.testing.assert_allclose(result["covariance"].numpy(), out.covariance().numpy(),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(result["df"].numpy(), np.full(8, predictor.df), rtol=1e-6)
    config = json.loads(json.dumps(keras.utils.serialize_keras_object(predictor)))
    assert keras.utils.deserialize_keras_object(config).get_config()["df"] == \
        predictor.get_config()["df"]


@pytest.mark.parametrize("df,error", [(2.0, ValueError), (1.0, ValueError), (-3.0, ValueError),
                                      ("4", TypeError), (True, TypeError),
                                      (float("inf"), ValueError)])
def test_bad_df(df, error):
    mean, cov = _predictions(4, 2)
    with pytest.raises(error, match="df"):
        calibration.coverage(mean, mean, cov, 0.683, df=df)
    with pytest.raises(error, match="df"):
        calibration.CovarianceScale(1.0, df=df)


def test_student_t_family_bad_combinations():
    mean, cov = _predictions(10, 2)
    with pytest.raises(ValueError, match="per_output"):
        calibration.fit_covariance_scale((mean, cov), mean + 0.1, per_output=True,
                                         family="student_t")
    with pytest.raises(ValueError, match="family"):
        calibration.fit_covariance_scale((mean, cov), mean + 0.1, family="laplace")
    with pytest.raises(ValueError, match="one covariance scale"):
        calibration.CovarianceScale([1.0, 2.0], df=4.0)


@pytest.mark.parametrize("component", [None, 0, 1])
def test_coverage_metric_on_a_student_t_output_matches_numpy(component):
    mean, cov = _predictions(300, 2, seed=21)
    y = _draw_t(mean, cov, 3.0, seed=22)
    df, level = 3.5, 0.683
    layer = calibration.CovarianceScale(1.0, df=df)
    dist = layer((tf.constant(mean, tf.float32), tf.constant(cov, tf.float32)))
    metric = calibration.Coverage(level, component=component)
    metric.update_state(tf.constant(y, tf.float32), dist)
    if component is None:
        expected = calibration.coverage(y, mean, cov, level, df=df)
    else:
        expected = calibration.coverage(y, mean, cov, level, marginal=True, df=df)[component]
    # float32 moments: a value on a region's border may flip; allow one example.
    assert float(metric.result()) == pytest.approx(expected, abs=1.0 / 300 + 1e-9)
    gaussian = calibration.coverage(y, mean, cov, level, marginal=component is not None)
    assert float(metric.result()) != pytest.approx(
        gaussian if component is None else gaussian[component], abs=1.0 / 300 + 1e-9)
