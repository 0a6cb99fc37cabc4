"""Keras metrics Coverage and GaussianNLL: values against the NumPy/SciPy functions,
distribution and (mean, covariance) inputs, compile/fit/evaluate, config round trip."""

import json

import numpy as np
import pytest
import tensorflow_probability as tfp
from scipy import stats

from keras_efficient import calibration
from keras_efficient.backend import keras, tf
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood

tfd = tfp.distributions


def _gaussians(n, d, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, (n, d)).astype(np.float32)
    a = rng.normal(0.0, 0.5, (n, d, d))
    cov = (a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)).astype(np.float32)
    chol = np.linalg.cholesky(cov.astype(np.float64))
    y = (mean + 1.2 * np.einsum("nij,nj->ni", chol, rng.standard_normal((n, d)))).astype(np.float32)
    return y, mean, cov


@pytest.mark.parametrize("d", [1, 2, 3])
def test_metrics_match_numpy_functions_for_pairs_and_distributions(d):
    y, mean, cov = _gaussians(200, d, seed=d)
    dist = tfd.MultivariateNormalTriL(loc=mean, scale_tril=np.linalg.cholesky(cov))
    for y_pred in ((tf.constant(mean), tf.constant(cov)), dist):
        for level in (0.683, 0.954):
            metric = calibration.Coverage(level)
            metric.update_state(y, y_pred)
            assert float(metric.result()) == pytest.approx(
                calibration.coverage(y, mean, cov, level), abs=1e-6)
        for k in range(d):
            metric = calibration.Coverage(0.683, component=k)
            metric.update_state(y, y_pred)
            assert float(metric.result()) == pytest.approx(
                calibration.coverage(y, mean, cov, 0.683, marginal=True)[k], abs=1e-6)
        nll = calibration.GaussianNLL()
        nll.update_state(y, y_pred)
        expected = np.mean([-stats.multivariate_normal(mean[i], cov[i]).logpdf(y[i])
                            for i in range(len(y))])
        np.testing.assert_allclose(float(nll.result()), expected, rtol=1e-4)


def test_sample_weights_and_accumulation():
    y, mean, cov = _gaussians(40, 2, seed=3)
    inside = calibration.gaussian_nll(y, mean, cov)
    w = np.linspace(0.0, 2.0, 40).astype(np.float32)
    metric = calibration.GaussianNLL()
    metric.update_state(y[:15], (mean[:15], cov[:15]), sample_weight=w[:15])
    metric.update_state(y[15:], (mean[15:], cov[15:]), sample_weight=w[15:])
    np.testing.assert_allclose(float(metric.result()), np.sum(w * inside) / np.sum(w), rtol=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_default_names_and_config_round_trip():
    assert calibration.Coverage().name == "coverage_68.3"
    assert calibration.Coverage(0.954, component=1).name == "coverage_95.4_c1"
    assert calibration.GaussianNLL().name == "gaussian_nll"
    for metric in (calibration.Coverage(0.9, component=0, name="cov90"),
                   calibration.GaussianNLL(name="nll")):
        config = json.loads(json.dumps(keras.metrics.serialize(metric)))
        twin = keras.metrics.deserialize(config)
        assert type(twin) is type(metric)
        assert twin.get_config() == metric.get_config()
    assert keras.utils.get_registered_object("keras_efficient>Coverage") is calibration.Coverage


def test_compile_fit_evaluate_with_a_distribution_output():
    """The metrics read the MultivariateNormalHead's distribution inside fit/evaluate, and
    evaluate's values equal the NumPy functions on the model's predicted moments."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, :2] * 0.5 + 0.3 * rng.standard_normal((64, 2))).astype(np.float32)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, MultivariateNormalHead(2)(inputs))
    model.compile(keras.optimizers.Adam(1e-2), loss=NegativeLogLikelihood(),
                  metrics=[calibration.Coverage(0.683), calibration.Coverage(0.954, component=1),
                           calibration.GaussianNLL()])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert {"coverage_68.3", "coverage_95.4_c1", "gaussian_nll"} <= set(history)
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    dist = model(x)
    mean, cov = dist.mean().numpy(), dist.covariance().numpy()
    assert logs["coverage_68.3"] == pytest.approx(calibration.coverage(y, mean, cov, 0.683),
                                                  abs=1e-6)
    assert logs["coverage_95.4_c1"] == pytest.approx(
        calibration.coverage(y, mean, cov, 0.954, marginal=True)[1], abs=1e-6)
    np.testing.assert_allclose(logs["gaussian_nll"], calibration.gaussian_nll(y, mean, cov).mean(),
                               rtol=1e-4)
    np.testing.assert_allclose(logs["gaussian_nll"], logs["loss"], rtol=1e-4)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"level": 0.0}, ValueError, "level"),
    ({"level": 1.0}, ValueError, "level"),
    ({"level": "0.5"}, TypeError, "level"),
    ({"level": None}, TypeError, "level"),
    ({"component": -1}, ValueError, "component"),
    ({"component": 0.5}, TypeError, "component"),
])
def test_coverage_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        calibration.Coverage(**kwargs)


def test_bad_predictions():
    y, mean, cov = _gaussians(4, 2)
    with pytest.raises(TypeError, match="distribution"):
        calibration.GaussianNLL().update_state(y, tf.constant(mean))
    with pytest.raises(ValueError, match="covariance"):
        calibration.GaussianNLL().update_state(y, (mean, cov[..., 0]))
    with pytest.raises(ValueError, match="component"):
        calibration.Coverage(component=2).update_state(y, (mean, cov))
