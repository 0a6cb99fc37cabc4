"""MultivariateNormalHead: contract, log_prob vs independent references, round trips."""

import os

import numpy as np
import pytest
import scipy.stats
import tensorflow_probability as tfp

from keras_efficient.backend import keras, tf
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.testing import run_layer_test

tfd = tfp.distributions


def _mean(dist):
    # A tf.function (the jit check) returns the distribution as a tensor: its mean,
    # since convert_to_tensor="mean".
    return dist.mean() if hasattr(dist, "mean") else dist


def test_layer_contract():
    report = run_layer_test(
        MultivariateNormalHead,
        {"event_size": 2},
        input_shape=(4, 7),
        output_fn=_mean,
        expected_output_shape=(4, 2),
        expected_output_dtype="float32",
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        expected_num_losses=0,
        fit_loss=NegativeLogLikelihood(),
        expected_mixed_precision_output_dtype="float32",
        expect_nan_error=True,
        supports_jit=True,
    )
    assert report["saved_model"] == "passed"


@pytest.mark.parametrize("event_size,expected", [(1, 2), (2, 5), (3, 9), (5, 20)])
def test_params_size(event_size, expected):
    assert MultivariateNormalHead.params_size(event_size) == expected
    layer = MultivariateNormalHead(event_size)
    layer(np.zeros((2, 4), np.float32))
    assert layer.params.kernel.shape == (4, expected)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"event_size": 0}, ValueError, "event_size"),
    ({"event_size": -1}, ValueError, "event_size"),
    ({"event_size": 2.0}, TypeError, "event_size"),
    ({"event_size": None}, TypeError, "event_size"),
    ({"event_size": "2"}, TypeError, "event_size"),
    ({"event_size": 2, "convert_to_tensor": "mode"}, ValueError, "convert_to_tensor"),
    ({"event_size": 2, "validate_args": 1}, TypeError, "validate_args"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultivariateNormalHead(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="rank >= 2"):
        MultivariateNormalHead(2)(np.zeros((3,), np.float32))


def _independent_log_prob(layer, features, targets):
    """log N(y; mu, L L^T) from the Dense weights with NumPy/SciPy only."""
    kernel, bias = [w.astype(np.float64) for w in layer.params.get_weights()]
    params = features.astype(np.float64) @ kernel + bias
    d = layer.event_size
    out = []
    for p, y in zip(params, targets):
        mu = p[:d]
        # tfb.FillScaleTriL: fill_triangular (row-major, "clockwise spiral" order) of the
        # remaining entries, then softplus + 1e-5 on the diagonal. Rebuilt here with
        # tfp.math.fill_triangular only for the index layout.
        tril = np.asarray(tfp.math.fill_triangular(p[d:].astype(np.float32))).astype(np.float64)
        tril = np.tril(tril)
        diag = np.log1p(np.exp(np.diag(tril))) + 1e-5
        tril[np.diag_indices(d)] = diag
        cov = tril @ tril.T
        out.append(scipy.stats.multivariate_normal(mean=mu, cov=cov).logpdf(y))
    return np.array(out)


def test_log_prob_matches_scipy_and_tfd():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((16, 5)).astype(np.float32)
    targets = rng.standard_normal((16, 3)).astype(np.float32)
    layer = MultivariateNormalHead(3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))
    dist = layer(features)
    ours = dist.log_prob(targets).numpy()

    # Separately constructed TFP distribution from the raw Dense outputs.
    params = layer.params(features)
    loc, raw = params[..., :3], params[..., 3:]
    scale_tril = tfp.bijectors.FillScaleTriL(diag_shift=1e-5)(raw)
    reference_tfd = tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril).log_prob(targets)
    np.testing.assert_allclose(ours, reference_tfd.numpy(), rtol=1e-5, atol=1e-5)

    reference_scipy = _independent_log_prob(layer, features, targets)
    np.testing.assert_allclose(ours, reference_scipy, rtol=1e-4, atol=1e-4)

    loss = NegativeLogLikelihood()(targets, dist).numpy()
    np.testing.assert_allclose(loss, -reference_scipy.mean(), rtol=1e-4, atol=1e-4)


def test_covariance_is_positive_definite_for_extreme_params():
    layer = MultivariateNormalHead(2, kernel_initializer=keras.initializers.RandomNormal(stddev=10.0))
    dist = layer(np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32) * 10)
    # A lower-triangular factor with a positive diagonal makes L L^T positive definite.
    tril = dist.scale.to_dense().numpy()
    np.testing.assert_array_equal(tril, np.tril(tril))
    assert np.all(np.diagonal(tril, axis1=1, axis2=2) >= 1e-5)
    assert np.all(np.isfinite(dist.log_prob(np.zeros((32, 2), np.float32)).numpy()))


@pytest.mark.parametrize("fmt", ["tf", "keras"])
def test_round_trip_mean_stddev_log_prob(tmp_path, fmt):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, MultivariateNormalHead(2)(keras.layers.Dense(6)(inputs)))
    model.compile(keras.optimizers.Adam(1e-2), loss=NegativeLogLikelihood())
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    before = model(x)
    path = os.path.join(str(tmp_path), "model.keras" if fmt == "keras" else "saved")
    if fmt == "tf":
        model.save(path, save_format="tf", save_traces=False)
    else:
        model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded(x)
    for name in ("mean", "stddev"):
        np.testing.assert_array_equal(getattr(before, name)().numpy(), getattr(after, name)().numpy())
    np.testing.assert_array_equal(before.log_prob(y).numpy(), after.log_prob(y).numpy())
    assert isinstance(loaded.loss, NegativeLogLikelihood)


def test_convert_to_tensor_mean_is_deterministic():
    layer = MultivariateNormalHead(2)
    x = np.ones((3, 4), np.float32)
    a = tf.convert_to_tensor(layer(x))
    b = tf.convert_to_tensor(layer(x))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy(), layer(x).mean().numpy())


def test_bayesian_params_layer_round_trip(tmp_path):
    from keras_efficient.layers.bayesian import FlipoutDense

    head = MultivariateNormalHead(
        2, params_layer=FlipoutDense(MultivariateNormalHead.params_size(2), num_train_examples=10))
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    head(x)
    assert len(head.losses) == 1  # the Flipout layer's KL term
    inputs = keras.Input((6,))
    model = keras.Model(inputs, head(inputs))
    path = os.path.join(str(tmp_path), "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1].params, FlipoutDense)
    assert loaded.layers[-1].get_config() == head.get_config()


def test_params_layer_with_wrong_width():
    with pytest.raises(ValueError, match="params_size"):
        MultivariateNormalHead(2, params_layer=keras.layers.Dense(4))(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="params_layer"):
        MultivariateNormalHead(2, params_layer="dense")
