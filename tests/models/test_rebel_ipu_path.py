"""ReBEL trained with labels as inputs (loss via add_loss): the path Keras 2.6 / IPUs run.

Graphcore's TensorFlow 2.6 runs Keras 2.6's stock `train_step`, which never calls
`compute_loss`/`compute_metrics`. `_keras26_train_step` below writes that step out
(TF 2.14's `compiled_loss` is the same `LossesContainer` logic), so the loss it sees can
be compared with Eq. (5) computed in NumPy and with the `fit(images, labels)` path.
"""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.distribute import static_batches
from keras_efficient.models import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model

N = 8
C = 4


def _teacher():
    keras.utils.set_random_seed(0)
    return cifar_resnet(8, num_classes=C, input_shape=(8, 8, 3), base_filters=4)


def _data(n=N):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, C, size=n)


def _rebel(**kwargs):
    head, tail = split_functional_model(_teacher(), "stage2_block0")
    kwargs.setdefault("head_filters", (6, 6))
    kwargs.setdefault("decoder_filters", (6,))
    kwargs.setdefault("components_per_class", 2)
    kwargs.setdefault("projection_dim", 5)
    return ReBEL(head, tail, C, latent_channels=2, **kwargs)


def _keras26_train_step(model, data):
    """Keras 2.6's `Model.train_step`, verbatim in substance; returns the loss it minimises."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model.compiled_loss(y, y_pred, sample_weight, regularization_losses=model.losses)
    model.optimizer.minimize(loss, model.trainable_variables, tape=tape)
    model.compiled_metrics.update_state(y, y_pred, sample_weight)
    return loss, y_pred, {m.name: m.result() for m in model.metrics}


def _np_kl_diag(m0, s0, m1, v1):
    """KL(N(m0, S0) ‖ N(m1, diag v1)), float64."""
    return 0.5 * (np.sum(np.log(v1)) - np.linalg.slogdet(s0)[1] - len(m0)
                  + np.sum((m0 - m1) ** 2 / v1) + np.sum(np.diag(s0) / v1))


def _np_eq5(model, x, y, out, prior, alpha, beta, gamma):
    """Per-sample α·L_M + β·L_R + γ·L_C from the model's outputs, in NumPy (float64)."""
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    n = len(y)
    teacher_v = model.teacher_head(x, training=False).numpy().astype(np.float64)
    # Eq. (1)'s ‖v' − v‖² per sample over the size of v (the default mimic_reduction="mean").
    mimic = ((out["reconstruction"] - teacher_v) ** 2).reshape(n, -1).sum(-1) / teacher_v[0].size
    nll = -out["log_probs"][np.arange(n), y]
    r = model.projection.matrix().numpy().astype(np.float64)
    assert np.linalg.matrix_rank(r) == r.shape[0]
    means, cov = prior
    mu, var = out["mean"].reshape(n, -1), out["variance"].reshape(n, -1)
    kl = np.array([min(_np_kl_diag(r @ mu[b], r @ np.diag(var[b]) @ r.T, means[y[b], k],
                                   cov[y[b], k]) for k in range(means.shape[1]))
                   for b in range(n)])
    return alpha * mimic + beta * kl + gamma * nll, (mimic, kl, nll)


def _np_prior(model):
    """(means (C, K, d), covariance diagonals (C, K, d)) read from the classifier's weights."""
    if model.classifier_type == "linear":
        w = model.classifier.kernel.numpy().astype(np.float64)  # μ_c = w_c, Σ = I
        return w.T[:, None, :], np.ones_like(w.T)[:, None, :]
    _, means, cov = [t.numpy().astype(np.float64) for t in model.classifier.mixture_parameters()]
    return means, cov


@pytest.mark.parametrize("classifier", ["gmc", "linear"])
def test_keras26_step_minimises_eq5_like_the_fit_path(classifier):
    x, y = _data()
    weights = dict(alpha=0.7, beta=0.05, gamma=0.3)
    model = _rebel(classifier=classifier, covariance="diag", **weights)
    lr = 0.1
    model.compile(keras.optimizers.SGD(lr))  # no loss: Eq. (5) arrives through add_loss
    model(x)
    prior = _np_prior(model)
    before = [w.numpy().copy() for w in model.trainable_variables]

    # TF 2.14 path: fit(images, labels) -> compute_loss; gradient of the same forward pass.
    tf.random.set_seed(3)
    with tf.GradientTape() as tape:
        out_fit = model(x, training=True)
        assert not model.losses
        loss_fit = model.compute_loss(x, y, out_fit)
    grads_fit = tape.gradient(loss_fit, model.trainable_variables)
    model.reset_metrics()

    # Keras 2.6 path: labels in the inputs, stock step, compiled loss None.
    tf.random.set_seed(3)
    loss26, out26, logs = _keras26_train_step(model, {"images": x, "labels": y})
    np.testing.assert_array_equal(out26["z"].numpy(), out_fit["z"].numpy())  # same ε
    assert len(model.losses) == 1
    np.testing.assert_allclose(loss26.numpy(), model.losses[0].numpy(), rtol=1e-6)

    total, (mimic, kl, nll) = _np_eq5(model, x, y, {k: v.numpy() for k, v in out26.items()},
                                      prior, **weights)
    np.testing.assert_allclose(loss26.numpy(), total.mean(), rtol=1e-4)
    np.testing.assert_allclose(loss_fit.numpy(), total.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"].numpy(), total.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["regularization_loss"].numpy(), kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["mimic_loss"].numpy(), mimic.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["early_classification_loss"].numpy(), nll.mean(),
                               rtol=1e-4)
    local = (out26["log_probs"].numpy().argmax(-1) == y).mean()
    np.testing.assert_allclose(logs["local_accuracy"].numpy(), local)
    # The step took the fit path's gradient (counted once): w - lr·g.
    for w0, g, w in zip(before, grads_fit, model.trainable_variables):
        g = np.zeros_like(w0) if g is None else tf.convert_to_tensor(g).numpy()
        np.testing.assert_allclose(w.numpy(), w0 - lr * g, rtol=1e-4, atol=1e-6)


def test_evaluate_reports_the_same_loss_both_ways():
    """Inference mode (z = μ): both input forms give Eq. (5), counted once."""
    x, y = _data()
    model = _rebel(classifier="linear", alpha=1.0, beta=0.01, gamma=0.1)
    model.compile(keras.optimizers.SGD(0.0))
    a = model.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    b = model.evaluate({"images": x, "labels": y}, batch_size=N, verbose=0, return_dict=True)
    c = model.evaluate({"images": x}, y, batch_size=N, verbose=0, return_dict=True)
    np.testing.assert_allclose(c["loss"], a["loss"], rtol=1e-6)
    total, _ = _np_eq5(model, x, y, model(x, training=False), _np_prior(model), 1.0, 0.01, 0.1)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(b["loss"], total.mean(), rtol=1e-4)


def _fit_checks(model, x, y, epochs=2):
    assert model.built
    head1 = [w.numpy().copy() for w in model.head1.weights]
    frozen = [w.numpy().copy() for w in model.tail.weights + model.teacher_head.weights]
    data = static_batches({"images": x, "labels": y}, batch_size=4)  # drop_remainder=True
    history = model.fit(data, epochs=epochs, verbose=0)
    for key in ("loss", "mimic_loss", "regularization_loss", "early_classification_loss",
                "local_accuracy", "remote_accuracy"):
        assert np.all(np.isfinite(history.history[key])), key
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(head1, model.head1.weights))
    for a, b in zip(frozen, model.tail.weights + model.teacher_head.weights):
        np.testing.assert_array_equal(a, b.numpy())
    return history


def test_labels_as_inputs_fit_trains_head1_not_tail_then_second_stage():
    x, y = _data()
    model = _rebel(covariance="full")
    model(x[:1])
    model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=2)
    history = _fit_checks(model, x, y)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.set_stage("tail")
    model.compile(keras.optimizers.SGD(0.1), steps_per_execution=2)
    heads = [w.numpy().copy() for w in model.head1.weights + model.head2.weights]
    tail = [w.numpy().copy() for w in model.tail.trainable_weights]
    model.fit(static_batches({"images": x, "labels": y}, batch_size=4), verbose=0)
    for a, b in zip(heads, model.head1.weights + model.head2.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(tail, model.tail.trainable_weights))


def test_labels_as_inputs_under_mirrored_strategy(mirrored_strategy):
    x, y = _data()
    with mirrored_strategy.scope():
        model = _rebel(classifier="linear", alpha=0.5, beta=0.02, gamma=0.2)
        model.compile(keras.optimizers.Adam(1e-2))
        model(x[:1])
    prior = _np_prior(model)
    # Per replica the 2.6 step's loss is the local batch mean / replicas; summed = global mean.
    data = mirrored_strategy.experimental_distribute_dataset(
        static_batches({"images": x, "labels": y}, batch_size=N))

    @tf.function
    def losses(batch):
        def replica(d):
            out = model(d, training=True)
            loss = model.compiled_loss(None, out, None, regularization_losses=model.losses)
            return loss, out, d["labels"], d["images"]
        return mirrored_strategy.run(replica, args=(batch,))

    loss, out, labels, images = losses(next(iter(data)))
    local = mirrored_strategy.experimental_local_results
    assert len(local(loss)) == 2
    cat = {k: np.concatenate([t.numpy() for t in local(v)]) for k, v in out.items()}
    labels = np.concatenate([t.numpy() for t in local(labels)])
    images = np.concatenate([t.numpy() for t in local(images)])
    total, _ = _np_eq5(model, images, labels, cat, prior, 0.5, 0.02, 0.2)
    summed = mirrored_strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    np.testing.assert_allclose(summed.numpy(), total.mean(), rtol=1e-4)
    model.reset_metrics()
    _fit_checks(model, x, y, epochs=1)


def _perturbed_model():
    """A built ReBEL whose weights all differ from their initial values (as after training)."""
    x, y = _data()
    model = _rebel(classifier="linear")
    model({"images": x, "labels": y})
    rng = np.random.default_rng(1)
    for v in model.weights:
        v.assign(v + 0.01 * rng.normal(size=v.shape).astype(v.dtype.as_numpy_dtype))
    return model, x, y


def _assert_same_outputs(model, loaded, x, y):
    for inputs in (x, {"images": x, "labels": y}):
        ours, theirs = model(inputs, training=False), loaded(inputs, training=False)
        for key in ours:
            np.testing.assert_allclose(theirs[key].numpy(), ours[key].numpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=key)
    np.testing.assert_allclose(loaded.losses[0].numpy(), model.losses[0].numpy(), rtol=1e-5)


def test_savedmodel_round_trip_with_labels_as_inputs(tmp_path):
    model, x, y = _perturbed_model()
    path = str(tmp_path / "rebel_tf")
    model.save(path, save_format="tf", save_traces=False)
    loaded = keras.models.load_model(path, compile=False)
    assert isinstance(loaded, ReBEL) and loaded.classifier_type == "linear"
    _assert_same_outputs(model, loaded, x, y)
    loaded.compile(keras.optimizers.Adam(1e-2))
    history = loaded.fit({"images": x, "labels": y}, batch_size=4, verbose=0)
    assert np.isfinite(history.history["regularization_loss"][0])


def test_keras_format_round_trip_with_labels_as_inputs(tmp_path):
    model, x, y = _perturbed_model()
    path = str(tmp_path / "rebel.keras")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert isinstance(loaded, ReBEL) and loaded.get_config() == model.get_config()
    for a, b in zip(model.weights, loaded.weights):  # GDN's reparam_* included
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.name)
    _assert_same_outputs(model, loaded, x, y)


def test_labels_given_twice_or_missing_or_bad_keys_raise():
    x, y = _data()
    model = _rebel()
    model.compile(keras.optimizers.SGD(0.0))
    with pytest.raises(ValueError, match="both"):
        model.fit({"images": x, "labels": y}, y, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="'images'"):
        model({"image": x, "labels": y})
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        model({"images": x, "labels": np.full(N, C)})
    model = _rebel()  # a fresh model: the failed trace above stays cached in `train_function`
    model.compile(keras.optimizers.SGD(0.0))
    with pytest.raises(ValueError, match="needs integer labels"):
        model.fit(x, batch_size=4, verbose=0)
