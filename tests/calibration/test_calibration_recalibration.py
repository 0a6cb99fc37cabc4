"""Post-hoc recalibration: the NLL-minimising covariance scale (closed form and Newton,
against SciPy's optimisers), recovery of a known mis-scaling (Monte Carlo), coverage after
recalibration, and the calibrated predictor's save / reload / serving signature."""

import json

import numpy as np
import pytest
from scipy import optimize, stats

from keras_efficient import calibration
from keras_efficient.backend import keras, tf
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead


def _predictions(n, d, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, (n, d))
    a = rng.normal(0.0, 0.5, (n, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    return mean, cov


def _draw(mean, cov, scales, seed):
    """y ~ N(mean, D cov D), D = diag(scales) (a float: s^2 cov)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov)
    d = mean.shape[-1]
    s = np.broadcast_to(np.asarray(scales, np.float64), (d,))
    return mean + s * np.einsum("nij,nj->ni", chol, rng.standard_normal(mean.shape))


def _total_nll(y, mean, cov, s):
    s = np.broadcast_to(np.asarray(s, np.float64), (mean.shape[-1],))
    scaled = cov * s[:, None] * s[None, :]
    return calibration.gaussian_nll(y, mean, scaled).sum()


def test_single_scale_closed_form_minimises_the_nll():
    mean, cov = _predictions(300, 2, seed=1)
    y = _draw(mean, cov, 1.4, seed=2)
    s = calibration.covariance_scale_mle(y, mean, cov)
    m2 = np.array([(y[i] - mean[i]) @ np.linalg.solve(cov[i], y[i] - mean[i]) for i in range(300)])
    assert s == pytest.approx(np.sqrt(m2.mean() / 2), rel=1e-12)
    best = optimize.minimize_scalar(lambda v: _total_nll(y, mean, cov, v), bounds=(0.1, 10),
                                    method="bounded", options={"xatol": 1e-10})
    assert s == pytest.approx(best.x, rel=1e-6)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_per_output_newton_matches_scipy_minimize(d):
    mean, cov = _predictions(400, d, seed=d)
    y = _draw(mean, cov, [0.5, 1.0, 2.5][:d], seed=10 + d)
    s = calibration.covariance_scale_mle(y, mean, cov, per_output=True)
    assert s.shape == (d,)
    best = optimize.minimize(lambda log_s: _total_nll(y, mean, cov, np.exp(log_s)),
                             np.zeros(d), method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(s, np.exp(best.x), rtol=1e-5)
    if d == 1:
        np.testing.assert_allclose(s, calibration.covariance_scale_mle(y, mean, cov), rtol=1e-9)


def test_per_output_with_diagonal_covariances_is_the_closed_form():
    mean, cov = _predictions(500, 3, seed=4)
    cov = cov * np.eye(3)
    y = _draw(mean, cov, [0.3, 1.0, 3.0], seed=5)
    expected = np.sqrt(np.mean((y - mean) ** 2 / np.diagonal(cov, axis1=1, axis2=2), axis=0))
    np.testing.assert_allclose(calibration.covariance_scale_mle(y, mean, cov, per_output=True),
                               expected, rtol=1e-8)


def test_recovers_a_known_single_scale_and_restores_coverage():
    """Targets drawn with covariance s^2 Sigma, s = 1.7. The MLE s_hat^2 = mean m^2 / d with
    m^2 ~ s^2 chi2_d, so sd(s_hat) = s / sqrt(2 n d); tolerance 5 standard deviations."""
    n, d, s_true = 5000, 2, 1.7
    mean, cov = _predictions(n, d, seed=7)
    y = _draw(mean, cov, s_true, seed=8)
    layer = calibration.fit_covariance_scale((mean, cov), y)
    assert isinstance(layer, calibration.CovarianceScale)
    s_hat = layer.initial_scale
    assert abs(s_hat - s_true) < 5 * s_true / np.sqrt(2 * n * d)
    # Fresh test data: coverage before (too narrow) and after recalibration.
    n_test = 20000
    mean_t, cov_t = _predictions(n_test, d, seed=9)
    y_t = _draw(mean_t, cov_t, s_true, seed=10)
    dist = layer((tf.constant(mean_t, tf.float32), tf.constant(cov_t, tf.float32)))
    cov_cal = dist.covariance().numpy().astype(np.float64)
    np.testing.assert_allclose(cov_cal, s_hat ** 2 * cov_t, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dist.mean().numpy(), mean_t, rtol=1e-6, atol=1e-6)
    for level in (0.683, 0.954):
        before = calibration.coverage(y_t, mean_t, cov_t, level)
        after = calibration.coverage(y_t, mean_t, cov_cal, level)
        expected_before = stats.chi2.cdf(stats.chi2.ppf(level, d) / s_true ** 2, d)
        assert abs(before - expected_before) < 5 * np.sqrt(0.25 / n_test)
        # Tolerance: 5 sd of (binomial noise of n_test draws + the coverage change that a
        # 1-sd error of s_hat causes: d coverage / d ln s = 2 q f_chi2(q)).
        q = stats.chi2.ppf(level, d)
        slope = 2 * q * stats.chi2.pdf(q, d)
        sd = np.sqrt(level * (1 - level) / n_test + (slope / np.sqrt(2 * n * d)) ** 2)
        assert abs(after - level) < 5 * sd, (level, after)


def test_recovers_known_per_output_scales():
    """Sigma -> D Sigma D with D = diag(0.6, 2.0). Tolerance: 5 asymptotic standard errors
    from the Fisher information of t = 1/s, I = diag(s^2) + mean_i Sigma_i^-1 o (D Sigma_i D)."""
    n, s_true = 6000, np.array([0.6, 2.0])
    mean, cov = _predictions(n, 2, seed=11)
    y = _draw(mean, cov, s_true, seed=12)
    s_hat = np.asarray(calibration.fit_covariance_scale({"mean": mean, "covariance": cov}, y,
                                                        per_output=True).initial_scale)
    dsd = cov * s_true[:, None] * s_true[None, :]
    info = np.diag(s_true ** 2) + np.mean(np.linalg.inv(cov) * dsd, axis=0)
    se_t = np.sqrt(np.diag(np.linalg.inv(info)) / n)
    se_s = s_true ** 2 * se_t
    np.testing.assert_array_less(np.abs(s_hat - s_true), 5 * se_s)


def _head_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="features")
    return keras.Model(inputs, MultivariateNormalHead(2, name="head")(inputs), name="base")


def test_fit_covariance_scale_on_a_model_and_export(tmp_path):
    """A model whose targets are drawn from its own Gaussians with the covariance scaled by
    s = 0.5: the fitted predictor recovers s (5 sd), serves the scaled covariance, and keeps
    mean and covariance through SavedModel (rebuilt from config), .keras and the serving
    signature loaded with tf.saved_model.load."""
    model = _head_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    dist = model(x)
    mean, cov = dist.mean().numpy().astype(np.float64), dist.covariance().numpy().astype(np.float64)
    y = _draw(mean, cov, 0.5, seed=1).astype(np.float32)
    predictor = calibration.fit_covariance_scale(model, (x, y), batch_size=512)
    assert isinstance(predictor, calibration.CalibratedPredictor)
    assert abs(predictor.scale - 0.5) < 5 * 0.5 / np.sqrt(2 * 3000 * 2)
    out = predictor(x[:8])
    np.testing.assert_allclose(out.mean().numpy(), mean[:8], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.covariance().numpy(), predictor.scale ** 2 * cov[:8],
                               rtol=1e-4, atol=1e-7)
    expected_mean, expected_cov = out.mean().numpy(), out.covariance().numpy()

    saved = str(tmp_path / "calibrated")
    predictor.save(saved, save_format="tf", save_traces=False,
                   signatures={"serving_default": predictor.serve})
    keras_path = str(tmp_path / "calibrated.keras")
    predictor.save(keras_path)
    for loaded in (keras.models.load_model(saved), keras.models.load_model(keras_path)):
        assert isinstance(loaded, calibration.CalibratedPredictor)
        assert loaded.scale == pytest.approx(predictor.scale, rel=1e-7)
        again = loaded(x[:8])
        np.testing.assert_allclose(again.mean().numpy(), expected_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(again.covariance().numpy(), expected_cov, rtol=1e-6, atol=1e-8)
    serving = tf.saved_model.load(saved).signatures["serving_default"]
    result = serving(inputs=tf.constant(x[:8]))
    np.testing.assert_allclose(result["mean"].numpy(), expected_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result["covariance"].numpy(), expected_cov, rtol=1e-6, atol=1e-8)


def test_per_output_predictor_and_config_round_trip():
    model = _head_model(1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 4)).astype(np.float32)
    dist = model(x)
    y = _draw(dist.mean().numpy().astype(np.float64), dist.covariance().numpy().astype(np.float64),
              [0.7, 1.5], seed=3).astype(np.float32)
    predictor = calibration.fit_covariance_scale(model, (x, y), per_output=True, batch_size=500)
    assert predictor.scale.shape == (2,)
    config = json.loads(json.dumps(keras.utils.serialize_keras_object(predictor)))
    twin = keras.utils.deserialize_keras_object(config)
    assert isinstance(twin, calibration.CalibratedPredictor)
    assert twin.get_config()["scale"] == predictor.get_config()["scale"]
    twin.base_model.set_weights(model.get_weights())
    np.testing.assert_allclose(twin(x[:4]).covariance().numpy(),
                               predictor(x[:4]).covariance().numpy(), rtol=1e-6)
    layer = calibration.CovarianceScale([0.5, 2.0], name="cs")
    assert calibration.CovarianceScale.from_config(layer.get_config()).get_config() == \
        layer.get_config()


def test_several_passes_use_the_law_of_total_covariance():
    """A deterministic model: num_samples passes give the single-pass covariance."""
    model = _head_model(3)
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    one = calibration.CalibratedPredictor(model, scale=1.3)(x)
    three = calibration.CalibratedPredictor(model, scale=1.3, num_samples=3)(x)
    np.testing.assert_allclose(three.covariance().numpy(), one.covariance().numpy(), rtol=1e-5)
    np.testing.assert_allclose(one.covariance().numpy(), 1.69 * model(x).covariance().numpy(),
                               rtol=1e-5)


class _CountingShift(keras.layers.Layer):
    """Pass k (k = 1, 2, ...) of the model returns the mean x[:, :2] + k·c and a fixed Σ."""

    def build(self, input_shape):
        self.count = self.add_weight(name="count", shape=(), initializer="zeros",
                                     trainable=False)

    def call(self, x):
        k = self.count.assign_add(1.0)
        mean = x[:, :2] + k * tf.constant([1.0, -2.0])
        cov = tf.broadcast_to(tf.constant([[0.5, 0.1], [0.1, 0.3]]), tf.concat(
            [tf.shape(x)[:1], [2, 2]], axis=0))
        return mean, cov


def test_several_differing_passes_add_the_covariance_of_their_means():
    """Passes whose means differ by k·c: mean = x + c·(S + 1)/2 and covariance
    s²·(Σ + c cᵀ·(S² − 1)/12) (the 1/S variance of k = 1..S), a closed form."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _CountingShift()(inputs))
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    samples, scale = 4, 1.3
    dist = calibration.CalibratedPredictor(model, scale=scale, num_samples=samples)(x)
    c = np.array([1.0, -2.0])
    sigma = np.array([[0.5, 0.1], [0.1, 0.3]])
    expected_cov = scale ** 2 * (sigma + np.outer(c, c) * (samples ** 2 - 1) / 12.0)
    np.testing.assert_allclose(dist.mean().numpy(), x[:, :2] + c * (samples + 1) / 2.0,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.covariance().numpy(),
                               np.broadcast_to(expected_cov, (3, 2, 2)), rtol=1e-5)


@pytest.mark.parametrize("scale,error", [(0.0, ValueError), (-1.0, ValueError), ([], ValueError),
                                         ([1.0, -2.0], ValueError), ("1", TypeError),
                                         (None, TypeError), (float("nan"), ValueError)])
def test_covariance_scale_bad_scales(scale, error):
    with pytest.raises(error, match="scale"):
        calibration.CovarianceScale(scale)


def test_bad_arguments():
    mean, cov = _predictions(10, 2)
    y = _draw(mean, cov, 1.0, seed=0)
    with pytest.raises(TypeError, match="per_output"):
        calibration.fit_covariance_scale((mean, cov), y, per_output=1)
    with pytest.raises(TypeError, match="model_or_predictions"):
        calibration.fit_covariance_scale("model", y)
    with pytest.raises(ValueError, match="validation_data"):
        calibration.fit_covariance_scale(_head_model(), y)
    with pytest.raises(ValueError, match="num_samples"):
        calibration.CalibratedPredictor(_head_model(), num_samples=0)
    with pytest.raises(TypeError, match="model"):
        calibration.CalibratedPredictor("model")
    with pytest.raises(ValueError, match="per-output scales"):
        calibration.CovarianceScale([1.0, 2.0, 3.0])((tf.constant(mean), tf.constant(cov)))
    with pytest.raises(ValueError, match="residuals are zero"):
        calibration.covariance_scale_mle(mean, mean, cov)


def test_bayesian_estimator_predictor_round_trip(tmp_path):
    """A Bayesian galaxy estimator (VariationalModel of Flipout layers) behind a predictor
    with several passes: fitted, saved (SavedModel without traces) and reloaded with its
    scale, config and weights; with posterior scales ~1e-9 the passes agree, so the reloaded
    predictor serves the same mean and covariance."""
    from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator

    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 16, 16, 6)).astype(np.float32)
    y = (0.3 * np.tanh(x[:, 6:10, 6:10, :2].mean(axis=(1, 2)) * 3)).astype(np.float32)
    model = galaxy_shape_estimator(bayesian=True, input_shape=(16, 16, 6), filters=(2,),
                                   num_train_examples=40, posterior_scale_init=-20.0)
    predictor = calibration.fit_covariance_scale(model, (x, y), num_samples=3, batch_size=20)
    assert predictor.num_samples == 3 and predictor.scale > 0
    expected = predictor(x[:5])
    path = str(tmp_path / "bnn_predictor")
    predictor.save(path, save_format="tf", save_traces=False)
    loaded = keras.models.load_model(path)
    assert loaded.get_config()["scale"] == predictor.get_config()["scale"]
    assert loaded.num_samples == 3
    assert type(loaded.base_model) is type(model)
    for a, b in zip(model.get_weights(), loaded.base_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = loaded(x[:5])
    np.testing.assert_allclose(again.mean().numpy(), expected.mean().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(again.covariance().numpy(), expected.covariance().numpy(),
                               rtol=1e-3, atol=1e-6)
