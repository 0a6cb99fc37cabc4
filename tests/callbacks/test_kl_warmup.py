"""KLWarmup: the schedule, the loss it produces (nll + w kl), state in the layers' weights
(restored by checkpoints), and the error for a model without Bayesian layers."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import KLWarmup
from keras_efficient.layers.bayesian import FlipoutDense, bayesian_layers
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16, 16, 6)).astype(np.float32)
    y = (0.3 * np.tanh(x[:, 6:10, 6:10, :2].mean(axis=(1, 2)) * 3)).astype(np.float32)
    return x, y


def _model(n=32, **kwargs):
    model = galaxy_shape_estimator(bayesian=True, input_shape=(16, 16, 6), filters=(2,),
                                   num_train_examples=n, **kwargs)
    model.compile(keras.optimizers.SGD(0.0), loss=NegativeLogLikelihood())
    return model


def _warmup_values(model):
    return [float(layer.kl_warmup.numpy()) for layer in bayesian_layers(model)]


def test_weight_schedule():
    cb = KLWarmup(epochs=4)
    assert [cb.weight(p) for p in (0, 1, 2, 4, 7)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    cb = KLWarmup(epochs=2, initial_weight=0.2)
    assert [cb.weight(p) for p in (0, 0.5, 2)] == pytest.approx([0.2, 0.4, 1.0])


def test_per_epoch_warmup_loss_is_nll_plus_weighted_kl():
    """With a frozen model (SGD(0), posterior scales ~1e-9) each epoch's loss is
    nll + w * kl, w = 0, 1/3, 2/3, 1, 1 at the starts of the epochs."""
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _model(posterior_scale_init=-20.0)
    history = model.fit(x, y, batch_size=8, epochs=5, verbose=0,
                        callbacks=[KLWarmup(epochs=3, per_batch=False)]).history
    np.testing.assert_allclose(history["kl_warmup"], [0, 1 / 3, 2 / 3, 1, 1], rtol=1e-6)
    expected = np.array(history["nll"]) + np.array(history["kl_warmup"]) * np.array(history["kl"])
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-5)
    assert history["kl"][0] > 1.0  # the KL itself is logged unweighted
    assert _warmup_values(model) == [1.0, 1.0, 1.0]


def test_per_batch_warmup_moves_within_an_epoch():
    x, y = _data()
    model = _model()
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(_warmup_values(self.model)[0])

    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[KLWarmup(epochs=2, initial_weight=0.2), Probe()])
    expected = [0.2 + 0.8 * (e + b / 4) / 2 for e in range(2) for b in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_warmup_state_is_restored_by_checkpoints(tmp_path):
    """The weight is a non-trainable layer weight: save_weights / a tf.train.Checkpoint
    restore it into a fresh model."""
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[KLWarmup(epochs=4, per_batch=False)])
    assert _warmup_values(model) == [0.0, 0.0, 0.0]
    cb = KLWarmup(epochs=4, per_batch=False)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(1)
    assert _warmup_values(model) == [0.25, 0.25, 0.25]
    path = str(tmp_path / "weights")
    model.save_weights(path)
    checkpoint = tf.train.Checkpoint(model=model)
    ckpt_path = checkpoint.save(str(tmp_path / "ckpt"))
    fresh = _model()
    assert _warmup_values(fresh) == [1.0, 1.0, 1.0]
    fresh.load_weights(path)
    assert _warmup_values(fresh) == [0.25, 0.25, 0.25]
    other = _model()
    tf.train.Checkpoint(model=other).restore(ckpt_path).assert_existing_objects_matched()
    assert _warmup_values(other) == [0.25, 0.25, 0.25]
    # The loss reads the restored weight: 0.25 of the full KL.
    np.testing.assert_allclose(float(tf.add_n(other.losses)),
                               0.25 * float(other.kl_divergence()), rtol=1e-6)


def test_layers_nested_in_the_head_are_found():
    """The Dense params layer inside MultivariateNormalHead is warmed up too."""
    model = _model()
    names = [layer.name for layer in bayesian_layers(model)]
    assert sorted(names) == ["conv1_a", "conv1_b", "params"]
    single = FlipoutDense(3)
    assert bayesian_layers(single) == [single]


def test_model_without_bayesian_layers_fails_with_a_message():
    x, y = _data(8)
    model = galaxy_shape_estimator(bayesian=False, input_shape=(16, 16, 6), filters=(2,))
    model.compile("sgd", loss=NegativeLogLikelihood())
    with pytest.raises(ValueError, match="no Bayesian layer.*FlipoutDense"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[KLWarmup(epochs=2)])


@pytest.mark.parametrize("kwargs,error,match", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": 2.5}, TypeError, "epochs"),
    ({"epochs": None}, TypeError, "epochs"),
    ({"epochs": 2, "initial_weight": 1.0}, ValueError, "initial_weight"),
    ({"epochs": 2, "initial_weight": -0.1}, ValueError, "initial_weight"),
    ({"epochs": 2, "initial_weight": "0"}, TypeError, "initial_weight"),
    ({"epochs": 2, "per_batch": 1}, TypeError, "per_batch"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        KLWarmup(**kwargs)
