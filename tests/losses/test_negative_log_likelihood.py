"""NegativeLogLikelihood (Eq. 1) against independent references and bad inputs."""

import json

import numpy as np
import pytest
import scipy.stats
import tensorflow_probability as tfp

from keras_efficient.backend import keras, tf
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood

tfd = tfp.distributions


def _random_tril(rng, batch, d):
    a = rng.standard_normal((batch, d, d)) * 0.3
    tril = np.tril(a)
    idx = np.arange(d)
    tril[:, idx, idx] = np.abs(tril[:, idx, idx]) + 0.5
    return tril


def test_equals_minus_scipy_logpdf_mean():
    rng = np.random.default_rng(0)
    batch, d = 12, 3
    loc = rng.standard_normal((batch, d))
    tril = _random_tril(rng, batch, d)
    y = rng.standard_normal((batch, d))
    dist = tfd.MultivariateNormalTriL(loc=loc.astype(np.float32), scale_tril=tril.astype(np.float32))
    expected = np.array([
        scipy.stats.multivariate_normal(loc[i], tril[i] @ tril[i].T).logpdf(y[i]) for i in range(batch)])
    loss = NegativeLogLikelihood()(y.astype(np.float32), dist).numpy()
    np.testing.assert_allclose(loss, -expected.mean(), rtol=1e-5)
    per_example = NegativeLogLikelihood(reduction="none")(y.astype(np.float32), dist).numpy()
    np.testing.assert_allclose(per_example, -expected, rtol=1e-5, atol=1e-5)


def test_sample_weight_and_sum_reduction():
    rng = np.random.default_rng(1)
    dist = tfd.MultivariateNormalDiag(loc=np.zeros((4, 2), np.float32))
    y = rng.standard_normal((4, 2)).astype(np.float32)
    w = np.array([1.0, 0.0, 2.0, 0.5], np.float32)
    ref = -scipy.stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(y)
    got = NegativeLogLikelihood(reduction="sum")(y, dist, sample_weight=w).numpy()
    np.testing.assert_allclose(got, np.sum(ref * w), rtol=1e-5)


def test_wrong_event_size():
    dist = tfd.MultivariateNormalDiag(loc=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="event size 2"):
        NegativeLogLikelihood()(np.zeros((4, 3), np.float32), dist)


@pytest.mark.parametrize("shape", [(4, 1, 2), (2,), (1, 2), (3, 2)])
def test_targets_that_would_broadcast(shape):
    """log_prob would broadcast these (e.g. [4, 1, 2] -> a [4, 4] loss): an error instead."""
    dist = tfd.MultivariateNormalDiag(loc=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="batch_shape \\+ event_shape"):
        NegativeLogLikelihood()(np.zeros(shape, np.float32), dist)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_targets(bad):
    dist = tfd.MultivariateNormalDiag(loc=np.zeros((4, 2), np.float32))
    y = np.zeros((4, 2), np.float32)
    y[1, 0] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite targets"):
        NegativeLogLikelihood()(y, dist)


def test_non_distribution_prediction():
    with pytest.raises(TypeError, match="distribution"):
        NegativeLogLikelihood()(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32))


def test_bad_argument():
    with pytest.raises(TypeError, match="check_finite"):
        NegativeLogLikelihood(check_finite="yes")


def test_config_round_trip():
    loss = NegativeLogLikelihood(check_finite=False, reduction="sum", name="nll")
    config = json.loads(json.dumps(keras.losses.serialize(loss)))
    rebuilt = keras.losses.deserialize(config)
    assert isinstance(rebuilt, NegativeLogLikelihood)
    assert rebuilt.get_config() == loss.get_config()
