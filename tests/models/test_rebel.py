"""ReBEL model: teacher split, Eq. (5) loss composition, stages and deployment halves."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.models import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model


def _teacher():
    keras.utils.set_random_seed(0)
    return cifar_resnet(8, num_classes=4, input_shape=(8, 8, 3), base_filters=4)


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 4, size=n)


def _rebel(teacher, **kwargs):
    head, tail = split_functional_model(teacher, "stage2_block0")
    kwargs.setdefault("head_filters", (6, 6))
    kwargs.setdefault("decoder_filters", (6,))
    kwargs.setdefault("components_per_class", 2)
    return ReBEL(head, tail, 4, latent_channels=2, **kwargs)


def test_split_reproduces_teacher():
    teacher = _teacher()
    x, _ = _data()
    head, tail = split_functional_model(teacher, "stage2_block0")
    assert head.output_shape == (None, 4, 4, 8)
    np.testing.assert_allclose(tail(head(x)).numpy(), teacher(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="split_layer"):
        split_functional_model(teacher, "nope")


def _np_kl_diag(m0, v0, m1, v1):
    return 0.5 * np.sum(np.log(v1 / v0) - 1.0 + (m0 - m1) ** 2 / v1 + v0 / v1)


def test_loss_is_weighted_sum_of_terms():
    teacher = _teacher()
    x, y = _data()
    model = _rebel(teacher, alpha=0.7, beta=0.05, gamma=0.3)
    model.compile(keras.optimizers.SGD(0.0))
    results = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    out = {k: v.numpy().astype(np.float64) for k, v in model(x, training=False).items()}
    teacher_v = model.teacher_head(x).numpy()
    # Eq. (1)'s ‖v' − v‖² per sample, divided by the size of v (mimic_reduction="mean").
    mimic = ((out["reconstruction"] - teacher_v) ** 2).reshape(8, -1).sum(-1) / teacher_v[0].size
    nll = -out["log_probs"][np.arange(8), y]
    _, means, cov = [t.numpy() for t in model.classifier.mixture_parameters()]
    mu, var = out["mean"].reshape(8, -1), out["variance"].reshape(8, -1)
    kl = np.array([min(_np_kl_diag(mu[b], var[b], means[y[b], k], cov[y[b], k])
                       for k in range(2)) for b in range(8)])
    np.testing.assert_allclose(results["mimic_loss"], mimic.mean(), rtol=1e-4)
    np.testing.assert_allclose(results["early_classification_loss"], nll.mean(), rtol=1e-4)
    np.testing.assert_allclose(results["regularization_loss"], kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(results["loss"], (0.7 * mimic + 0.05 * kl + 0.3 * nll).mean(),
                               rtol=1e-4)
    local = (out["log_probs"].argmax(-1) == y).mean()
    np.testing.assert_allclose(results["local_accuracy"], local)


def test_mimic_reduction_sum_is_eq1_as_written():
    teacher = _teacher()
    x, y = _data()
    model = _rebel(teacher, mimic_reduction="sum")
    model.compile(keras.optimizers.SGD(0.0))
    results = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    out = model(x, training=False)["reconstruction"].numpy().astype(np.float64)
    mimic = ((out - model.teacher_head(x).numpy()) ** 2).reshape(8, -1).sum(-1)
    np.testing.assert_allclose(results["mimic_loss"], mimic.mean(), rtol=1e-4)
    assert model.get_config()["mimic_reduction"] == "sum"
    with pytest.raises(ValueError, match="mimic_reduction"):
        _rebel(teacher, mimic_reduction="max")


def test_fit_trains_heads_not_teacher_then_second_stage():
    teacher = _teacher()
    x, y = _data()
    model = _rebel(teacher, projection_dim=5, covariance="full")
    model.compile(keras.optimizers.Adam(1e-2))
    tail_before = [w.numpy().copy() for w in model.tail.weights]
    head_before = [w.numpy().copy() for w in model.teacher_head.weights]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for key in ("loss", "mimic_loss", "regularization_loss", "early_classification_loss",
                "local_accuracy", "remote_accuracy"):
        assert np.all(np.isfinite(history.history[key])), key
    assert history.history["loss"][-1] < history.history["loss"][0]
    for a, b in zip(tail_before + head_before, model.tail.weights + model.teacher_head.weights):
        np.testing.assert_array_equal(a, b.numpy())
    # Stage 2: only the tail moves.
    model.set_stage("tail")
    model.compile(keras.optimizers.SGD(0.1))
    h1 = [w.numpy().copy() for w in model.head1.weights + model.head2.weights]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(h1, model.head1.weights + model.head2.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert any(not np.array_equal(a, b.numpy())
               for a, b in zip(tail_before, model.tail.trainable_weights))


def test_device_and_server_halves_compose_to_model():
    teacher = _teacher()
    x, _ = _data()
    model = _rebel(teacher, projection_dim=6)
    out = model(x, training=False)
    device = model.device_model()(x)
    server = model.server_model()(device["z"])
    np.testing.assert_allclose(device["log_probs"].numpy(), out["log_probs"].numpy(), atol=1e-6)
    np.testing.assert_allclose(server["logits"].numpy(), out["logits"].numpy(), atol=1e-5)


def test_linear_classifier_and_mirrored_strategy(mirrored_strategy):
    teacher = _teacher()
    x, y = _data()
    with mirrored_strategy.scope():
        model = _rebel(teacher, classifier="linear", beta=0.001)  # KL vs N(w_c, I)
        model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["regularization_loss"][0])


def test_mixed_precision_fit(mixed_precision):
    teacher = _teacher()
    x, y = _data()
    model = _rebel(teacher)
    model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("kwargs,match", [
    ({"classifier": "svm"}, "classifier"),
    ({"gamma": -0.1}, "gamma"),
    ({"alpha": -1.0}, "alpha"),
    ({"covariance": "tied"}, "covariance"),
    ({"projection_dim": 0}, "projection_dim"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _rebel(_teacher(), **kwargs)


def test_labels_out_of_range():
    model = _rebel(_teacher())
    model.compile(keras.optimizers.SGD(0.0))
    x, _ = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        model.evaluate(x, np.full(8, 4), verbose=0)
