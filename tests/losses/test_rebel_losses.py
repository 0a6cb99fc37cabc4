"""MimicLoss (Eq. 1) and EarlyClassificationLoss (Eq. 4) against NumPy."""

import json

import numpy as np
import pytest
from scipy.special import log_softmax

from keras_efficient.backend import keras, tf
from keras_efficient.losses.early_classification import EarlyClassificationLoss
from keras_efficient.losses.mimic import MimicLoss, mimic_error


def test_mimic_sum_of_squares():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    v2 = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    per_sample = ((v2 - v) ** 2).reshape(4, -1).sum(-1)          # Eq. (1) per sample
    # Default: divided by the 18 elements of v (mean squared error per sample).
    np.testing.assert_allclose(MimicLoss()(v, v2).numpy(), per_sample.mean() / 18, rtol=1e-5)
    np.testing.assert_allclose(mimic_error(v, v2).numpy(), per_sample / 18, rtol=1e-5)
    # As written: the sum over elements.
    np.testing.assert_allclose(MimicLoss("sum")(v, v2).numpy(), per_sample.mean(), rtol=1e-5)
    total = MimicLoss("sum", reduction="sum")(v, v2).numpy()
    np.testing.assert_allclose(total, per_sample.sum(), rtol=1e-5)
    np.testing.assert_allclose(MimicLoss()(v, tf.constant(v, tf.float16)).numpy(), 0.0, atol=1e-3)


@pytest.mark.parametrize("bad", ["max", None, 0, "Mean"])
def test_mimic_element_reduction_invalid(bad):
    with pytest.raises(ValueError, match="element_reduction"):
        MimicLoss(element_reduction=bad)


def test_mimic_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        MimicLoss()(np.zeros((2, 3)), np.zeros((2, 4)))


def test_early_classification_nll():
    rng = np.random.default_rng(1)
    log_gamma = log_softmax(rng.normal(size=(6, 5)), axis=-1).astype("float32")
    labels = rng.integers(0, 5, size=6)
    expected = -log_gamma[np.arange(6), labels].mean()
    np.testing.assert_allclose(EarlyClassificationLoss()(labels, log_gamma).numpy(), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(EarlyClassificationLoss()(labels[:, None], log_gamma).numpy(),
                               expected, rtol=1e-5)


@pytest.mark.parametrize("labels", [[0, 5], [-1, 0]])
def test_early_classification_labels_out_of_range(labels):
    log_gamma = np.log(np.full((2, 5), 0.2, "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        EarlyClassificationLoss()(np.array(labels), log_gamma)


@pytest.mark.parametrize("cls", [MimicLoss, EarlyClassificationLoss])
def test_config_round_trip(cls):
    loss = cls(reduction="sum", name="x")
    if cls is MimicLoss:
        loss = cls(element_reduction="sum", reduction="sum", name="x")
    config = json.loads(json.dumps(keras.losses.serialize(loss)))
    rebuilt = keras.losses.deserialize(config)
    assert type(rebuilt) is cls and rebuilt.get_config() == loss.get_config()
