"""Galaxy shape estimator: parameter counts, all variants train, sampling behaviour."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers.bayesian import (
    FlipoutConv2D,
    FlipoutDense,
    ReparameterizationConv2D,
    ReparameterizationDense,
    bayesian_layers,
)
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import (
    VariationalModel,
    galaxy_shape_estimator,
    predict_with_samples,
)


def _network_params(model):
    """count_params() without the KL warm-up scalars (training state, not parameters)."""
    return sum(int(np.prod(w.shape)) for w in model.weights if "kl_warmup" not in w.name)


def _expected_counts(input_shape, filters, k, d):
    """Parameter counts from the architecture, counted by hand (no Keras)."""
    h, w, c = input_shape
    det = 4 * c  # BatchNorm: gamma, beta, moving mean, moving variance
    kernels = 0
    for f in filters:
        for stride in (1, 2):
            kernels += k * k * c * f
            det += k * k * c * f + f
            h, w, c = h // stride, w // stride, f
            det += h * w * c  # PReLU: one slope per element
    p = d + d * (d + 1) // 2
    det += h * w * c * p + p
    bayes = det + kernels + h * w * c * p  # a second (scale) tensor per kernel
    return det, bayes


def test_parameter_counts_match_the_paper():
    det_expected, bayes_expected = _expected_counts((64, 64, 6), (32, 64, 128, 256), 3, 2)
    assert (det_expected, bayes_expected) == (1500829, 2693469)
    det = galaxy_shape_estimator(bayesian=False)
    bnn = galaxy_shape_estimator(bayesian=True, num_train_examples=8000)
    assert det.count_params() == det_expected
    # Plus one non-trainable KL warm-up scalar per Bayesian layer (8 convolutions + Dense).
    assert bnn.count_params() == bayes_expected + 9
    assert _network_params(bnn) == bayes_expected
    # The paper: 1.5 M and 2.7 M parameters.
    assert abs(det.count_params() - 1.5e6) / 1.5e6 < 0.01
    assert abs(bnn.count_params() - 2.7e6) / 2.7e6 < 0.01
    assert [l.name for l in det.layers] == [l.name for l in bnn.layers]
    assert len(det.losses) == 0 and len(bnn.losses) == 9
    assert isinstance(bnn.get_layer("conv1_a"), FlipoutConv2D)  # the default estimator


def test_reparameterization_variant_has_the_same_parameter_count():
    _, bayes_expected = _expected_counts((64, 64, 6), (32, 64, 128, 256), 3, 2)
    model = galaxy_shape_estimator(bayesian=True, estimator="reparameterization",
                                   num_train_examples=8000)
    assert _network_params(model) == bayes_expected == 2693469
    assert model.count_params() == bayes_expected + 9
    assert model.name == "galaxy_estimator_bnn_reparameterization"
    assert len(model.losses) == 9
    convs = [l for l in model.layers if l.name.startswith("conv")]
    assert len(convs) == 8
    assert all(type(l) is ReparameterizationConv2D for l in convs)
    assert type(model.get_layer("head").params) is ReparameterizationDense
    assert not any(isinstance(l, (FlipoutConv2D, FlipoutDense)) for l in model.layers)
    flipout = galaxy_shape_estimator(bayesian=True, num_train_examples=8000)
    assert [l.name for l in model.layers] == [l.name for l in flipout.layers]
    assert [w.shape for w in model.weights] == [w.shape for w in flipout.weights]


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
def test_head_scope_makes_only_the_head_bayesian(estimator):
    det_expected, _ = _expected_counts((64, 64, 6), (32, 64, 128, 256), 3, 2)
    model = galaxy_shape_estimator(bayesian=True, estimator=estimator, bayesian_scope="head",
                                   num_train_examples=8000)
    assert bayesian_layers(model) == [model.get_layer("head").params]
    convs = [l for l in model.layers if l.name.startswith("conv")]
    assert len(convs) == 8 and all(type(l) is keras.layers.Conv2D for l in convs)
    # The deterministic network plus one posterior-scale tensor for the head's kernel
    # (4096 x 5), plus its KL warm-up scalar.
    assert model.count_params() == det_expected + 4096 * 5 + 1
    assert len(model.losses) == 1
    assert model.name.endswith("_head")
    det = galaxy_shape_estimator(bayesian=False)
    assert [l.name for l in det.layers] == [l.name for l in model.layers]


def _small(bayesian, **kwargs):
    return galaxy_shape_estimator(bayesian=bayesian, input_shape=(16, 16, 6), filters=(4, 8),
                                  **kwargs)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16, 16, 6)).astype(np.float32)
    y = np.tanh(x[:, 6:10, 6:10, :2].mean(axis=(1, 2)) * 3).astype(np.float32) * 0.3
    return x, y


@pytest.mark.parametrize("bayesian,estimator", [(False, "flipout"), (True, "flipout"),
                                                (True, "reparameterization")])
def test_trains_and_loss_decreases(bayesian, estimator):
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _small(bayesian, num_train_examples=len(x), posterior_scale_init=-5.0,
                   estimator=estimator)
    model.compile(keras.optimizers.Adam(3e-3), loss=NegativeLogLikelihood())
    hist = model.fit(x, y, batch_size=8, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(hist))
    assert hist[-1] < hist[0]


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
def test_fit_logs_nll_and_kl_separately(estimator):
    """The Bayesian estimator (a VariationalModel) logs the data term `nll` and the KL term
    `kl` by default, in training and validation; per epoch loss = nll + kl (the terms of
    the same forward pass and weights)."""
    keras.utils.set_random_seed(2)
    x, y = _data(24)
    model = _small(True, num_train_examples=len(x), estimator=estimator)
    assert isinstance(model, VariationalModel)
    assert not isinstance(_small(False), VariationalModel)
    model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood())
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:8], y[:8]),
                        verbose=0).history
    assert {"loss", "nll", "kl", "val_loss", "val_nll", "val_kl"} <= set(history)
    np.testing.assert_allclose(history["loss"], np.add(history["nll"], history["kl"]),
                               rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"],
                               np.add(history["val_nll"], history["val_kl"]), rtol=1e-5)
    np.testing.assert_allclose(history["val_kl"][-1], float(model.kl_divergence()), rtol=1e-5)
    # The metric totals are not model weights.
    assert not [w for w in model.weights if "nll" in w.name or w.name.startswith("kl/")]


def test_building_the_bayesian_estimator_emits_no_add_variable_warning():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _small(True, num_train_examples=10)
    assert not [w for w in caught if "add_variable" in str(w.message)]


def test_default_posterior_and_prior_let_the_posterior_move():
    """Defaults (prior "he", posterior_scale_init=-5): each layer's posterior sigma starts
    at a few % to a third of its prior scale sqrt(2 / fan_in), so the sampled weights give a
    visible epistemic spread; the paper's recipe (N(0, 1) prior, -9: sigma ~ 1.2e-4) starts
    at 1e-4 of its prior and the BNN predicts like a deterministic network. Adam moves every
    untransformed scale by at most about lr per step, which is why the start matters."""
    keras.utils.set_random_seed(4)
    x, y = _data(32)
    default = _small(True, num_train_examples=len(x))
    paper = _small(True, num_train_examples=len(x), prior_scale=1.0, posterior_scale_init=-9.0)
    for layer in bayesian_layers(default):
        fan_in = int(np.prod(layer.kernel_posterior.distribution.loc.shape[:-1]))
        assert layer.prior_stddev == pytest.approx(np.sqrt(2.0 / fan_in))
        ratio = np.median(layer.posterior_stddev().numpy()) / layer.prior_stddev
        assert 0.02 < ratio < 0.35, (layer.name, ratio)
    for layer in bayesian_layers(paper):
        assert np.median(layer.posterior_stddev().numpy()) / layer.prior_stddev < 2e-4

    def epistemic_share(model):
        out = predict_with_samples(model, x, num_samples=8, batch_size=32)
        return float(np.mean(np.trace(out["epistemic_covariance"], axis1=1, axis2=2)
                             / np.trace(out["covariance"], axis1=1, axis2=2)))

    share_default, share_paper = epistemic_share(default), epistemic_share(paper)
    assert share_default > 1e-3 and share_paper < 1e-2 * share_default, (share_default,
                                                                         share_paper)
    # The KL per example at the start is far smaller than with the paper's recipe.
    assert float(default.kl_divergence()) < 0.5 * float(paper.kl_divergence())
    # Adam: |delta rho| <= about lr per step.
    rho = [w for w in default.trainable_weights if "untransformed_scale" in w.name]
    before = [w.numpy() for w in rho]
    lr, steps = 1e-2, 8
    default.compile(keras.optimizers.Adam(lr), loss=NegativeLogLikelihood())
    default.fit(x, y, batch_size=8, epochs=2, verbose=0)
    moved = np.concatenate([np.abs(w.numpy() - b).ravel() for w, b in zip(rho, before)])
    assert 0.1 * lr * steps < moved.mean() <= 1.05 * lr * steps


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
def test_bayesian_loss_is_nll_plus_scaled_kl(estimator):
    keras.utils.set_random_seed(1)
    x, y = _data(8)
    # Posterior scales ~1e-7 make the sampled NLL reproducible to ~1e-5 between calls.
    model = _small(True, num_train_examples=1000, posterior_scale_init=-20.0,
                   estimator=estimator)
    model.compile(keras.optimizers.SGD(0.0), loss=NegativeLogLikelihood())
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    nll = -model(x).log_prob(y).numpy().mean()
    kl = float(tf.add_n(model.losses))  # depends on the weights only, not on the batch
    assert kl > 0
    np.testing.assert_allclose(logs["loss"], nll + kl, rtol=1e-4)
    # The two terms are logged separately (the VariationalModel's `nll` and `kl`).
    np.testing.assert_allclose(logs["nll"], nll, rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], kl, rtol=1e-5)


def test_predictions_vary_only_for_the_bayesian_model():
    x, _ = _data(6)
    det = predict_with_samples(_small(False), x, num_samples=3, batch_size=4)
    np.testing.assert_allclose(det["epistemic_std"], 0.0, atol=1e-6)
    bnn = predict_with_samples(_small(True, num_train_examples=100, posterior_scale_init=-2.0),
                               x, num_samples=5, batch_size=4)
    assert bnn["samples"].shape == (5, 6, 2)
    assert np.all(bnn["epistemic_std"] > 1e-4)
    np.testing.assert_allclose(bnn["mean"], bnn["samples"].mean(0), rtol=1e-6)
    assert np.all(bnn["aleatoric_std"] > 0)


def test_predict_with_samples_reparameterization():
    x, _ = _data(6)
    model = _small(True, num_train_examples=100, posterior_scale_init=-2.0,
                   estimator="reparameterization")
    out = predict_with_samples(model, x, num_samples=5, batch_size=4)
    assert out["samples"].shape == (5, 6, 2)
    assert np.all(out["epistemic_std"] > 1e-4)
    np.testing.assert_allclose(out["mean"], out["samples"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(out["epistemic_std"], out["samples"].std(0), rtol=1e-5)
    assert np.all(out["aleatoric_std"] > 0)
    # One weight sample per batch: a repeated image gets the same prediction in a pass.
    twice = np.concatenate([x[:1], x[:1]])
    rep = predict_with_samples(model, twice, num_samples=3, batch_size=2)["samples"]
    np.testing.assert_allclose(rep[:, 0], rep[:, 1], rtol=1e-5, atol=1e-6)
    assert np.abs(rep[0, 0] - rep[1, 0]).max() > 1e-4


def test_predict_with_samples_predictive_covariance_matches_numpy():
    """Law of total covariance and the mixture NLL, recomputed in NumPy (SciPy densities)
    from the returned per-pass means and covariances."""
    from scipy import stats
    from scipy.special import logsumexp

    keras.utils.set_random_seed(5)
    x, y = _data(5)
    x *= 0.2  # small inputs: well-conditioned predicted covariances at initialisation
    model = _small(True, num_train_examples=100, posterior_scale_init=-3.0)
    out = predict_with_samples(model, x, num_samples=6, batch_size=4, y=y)
    mu = out["samples"].astype(np.float64)                 # [S, N, d]
    cov = out["sample_covariances"].astype(np.float64)     # [S, N, d, d]
    assert mu.shape == (6, 5, 2) and cov.shape == (6, 5, 2, 2)
    aleatoric = cov.mean(0)
    epistemic = np.stack([np.cov(mu[:, i].T, bias=True) for i in range(5)])
    np.testing.assert_allclose(out["aleatoric_covariance"], aleatoric, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out["epistemic_covariance"], epistemic, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(out["covariance"], aleatoric + epistemic, rtol=1e-5, atol=1e-9)
    assert np.all(np.linalg.eigvalsh(out["epistemic_covariance"].astype(np.float64)) > 1e-9)
    # The old keys are the diagonals of the new ones.
    np.testing.assert_allclose(out["epistemic_std"] ** 2,
                               np.diagonal(epistemic, axis1=1, axis2=2), rtol=1e-4)
    np.testing.assert_allclose(out["aleatoric_std"] ** 2,
                               np.diagonal(aleatoric, axis1=1, axis2=2), rtol=1e-5)
    np.testing.assert_allclose(out["mean"], mu.mean(0), rtol=1e-5, atol=1e-7)
    for i in range(5):
        log_p = [stats.multivariate_normal(mu[s, i], cov[s, i]).logpdf(y[i]) for s in range(6)]
        np.testing.assert_allclose(out["mixture_nll"][i], np.log(6) - logsumexp(log_p),
                                   rtol=1e-4, atol=1e-4)
        total = aleatoric[i] + epistemic[i]
        np.testing.assert_allclose(out["gaussian_nll"][i],
                                   -stats.multivariate_normal(mu[:, i].mean(0), total).logpdf(y[i]),
                                   rtol=1e-4, atol=1e-4)


def test_predict_with_samples_deterministic_model_has_no_epistemic_part():
    x, y = _data(6)
    model = _small(False)
    out = predict_with_samples(model, x, num_samples=3, batch_size=4, y=y)
    dist = model(x, training=False)
    np.testing.assert_allclose(out["epistemic_covariance"], 0.0, atol=1e-10)
    np.testing.assert_allclose(out["covariance"], dist.covariance().numpy(), rtol=1e-5, atol=1e-7)
    # Identical passes: the mixture NLL is the single pass's NLL.
    np.testing.assert_allclose(out["mixture_nll"], -dist.log_prob(y).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["gaussian_nll"], out["mixture_nll"], rtol=1e-4, atol=1e-4)
    assert "mixture_nll" not in predict_with_samples(model, x, num_samples=1)
    with pytest.raises(ValueError, match="`y`"):
        predict_with_samples(model, x, num_samples=1, y=y[:, :1])


@pytest.mark.parametrize("kwargs,error,match", [
    ({"input_shape": (60, 64, 6)}, ValueError, "divisible"),
    ({"input_shape": (64, 64)}, ValueError, "input_shape"),
    ({"input_shape": (None, 64, 6)}, TypeError, "input_shape"),
    ({"filters": ()}, ValueError, "filters"),
    ({"filters": (8, 0)}, ValueError, "filters"),
    ({"kernel_size": 0}, ValueError, "kernel_size"),
    ({"event_size": 0}, ValueError, "event_size"),
    ({"bayesian": "yes"}, TypeError, "bayesian"),
    ({"bayesian": True, "num_train_examples": 0}, ValueError, "num_train_examples"),
    ({"bayesian": True}, ValueError, "needs `num_train_examples`.*len\\(x_train\\)"),
    ({"bayesian": True, "num_train_examples": None}, ValueError, "needs `num_train_examples`"),
    ({"bayesian": True, "num_train_examples": 100.0}, TypeError, "num_train_examples"),
    ({"bayesian": True, "num_train_examples": 10, "prior_scale": "glorot"}, ValueError,
     "prior_scale"),
    ({"bayesian": True, "estimator": "local_reparameterization"}, ValueError, "`estimator`"),
    ({"bayesian": True, "estimator": "Flipout"}, ValueError, "`estimator`"),
    ({"bayesian": True, "estimator": None}, ValueError, "`estimator`"),
    ({"estimator": ""}, ValueError, "estimator"),
    ({"bayesian": True, "num_train_examples": 10, "bayesian_scope": "last"}, ValueError,
     "bayesian_scope"),
    ({"bayesian_scope": None}, ValueError, "bayesian_scope"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        galaxy_shape_estimator(**kwargs)


def test_predict_with_samples_bad_arguments():
    model = _small(False)
    with pytest.raises(ValueError, match="num_samples"):
        predict_with_samples(model, np.zeros((2, 16, 16, 6), np.float32), num_samples=0)
    with pytest.raises(ValueError, match="empty batch"):
        predict_with_samples(model, np.zeros((0, 16, 16, 6), np.float32))


@pytest.mark.parametrize("bayesian,estimator", [(False, "flipout"), (True, "flipout"),
                                                (True, "reparameterization")])
def test_nan_images_raise(bayesian, estimator):
    x, _ = _data(2)
    x[0, 3, 3, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        _small(bayesian, estimator=estimator, num_train_examples=10)(x)


def test_kl_losses_readable_after_construction_and_loading(tmp_path):
    model = _small(True, num_train_examples=50)
    kl = float(tf.add_n(model.losses))  # no forward pass needed
    assert kl > 0
    path = str(tmp_path / "bnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(float(tf.add_n(loaded.losses)), kl, rtol=1e-6)


def test_reparameterization_model_round_trips(tmp_path):
    """.keras and SavedModel (no traces): same layer classes, configs, weights and KL terms;
    with posterior scales ~1e-7 the sampled predictions agree to float32 noise."""
    x, _ = _data(4)
    model = _small(True, num_train_examples=50, posterior_scale_init=-20.0,
                   estimator="reparameterization")
    rng = np.random.default_rng(4)
    for var in model.trainable_weights:
        if "untransformed_scale" not in var.name:
            var.assign(var + rng.normal(0.0, 0.05, var.shape).astype(np.float32))
    expected = model(x).mean().numpy()
    kl = float(tf.add_n(model.losses))
    keras_path = str(tmp_path / "bnn.keras")
    model.save(keras_path)
    saved_path = str(tmp_path / "bnn_saved")
    model.save(saved_path, save_format="tf", save_traces=False)
    for loaded in (keras.models.load_model(keras_path), keras.models.load_model(saved_path)):
        for layer in model.layers:
            twin = loaded.get_layer(layer.name)
            assert type(twin) is type(layer)
            assert twin.get_config() == layer.get_config()
        for a, b in zip(model.weights, loaded.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_allclose(float(tf.add_n(loaded.losses)), kl, rtol=1e-6)
        np.testing.assert_allclose(loaded(x).mean().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_reparameterization_static_batches_and_steps_per_execution():
    """The IPU recipe (drop_remainder batches, steps_per_execution > 1) with the
    reparameterization layers: trains, no float64 weights."""
    from keras_efficient import distribute

    x, y = _data(20)
    ds = distribute.static_batches(x, y, batch_size=4, shuffle=True, seed=0)
    spe = distribute.check_steps_per_execution(5, distribute.batches_per_epoch(len(x), 4))
    model = galaxy_shape_estimator(bayesian=True, estimator="reparameterization",
                                   input_shape=(16, 16, 6), filters=(2,), num_train_examples=20)
    distribute.check_ipu_compatible(model)
    model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood(), steps_per_execution=spe)
    hist = model.fit(ds, epochs=2, verbose=0).history["loss"]
    assert len(hist) == 2 and np.all(np.isfinite(hist))
