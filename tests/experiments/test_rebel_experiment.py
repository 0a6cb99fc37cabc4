"""Helpers of the `rebel` experiment (the run itself is `keras-efficient reproduce rebel --quick`)."""

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.experiments import registry
from keras_efficient.experiments.rebel import _client_subsets, graph_flops


def test_registered_with_description():
    module = registry.load_experiment("rebel")
    assert module.DESCRIPTION and callable(module.run)


def test_graph_flops_counts_conv_and_dense():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, use_bias=False)(x))
    # Conv: 2·H·W·k²·Cin·Cout; Dense: 2·in·out (multiply-adds counted as 2 FLOPs).
    assert graph_flops(model, (8, 8, 3)) == 2 * 8 * 8 * 9 * 3 * 4 + 2 * 256 * 5


def test_client_subsets_follow_the_client_mix():
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, 2000), rng.integers(0, 10, 500)
    tr, te = _client_subsets(y_train, y_test, 0.05, 0, 400)
    train_mix = np.bincount(y_train[tr], minlength=10) / len(tr)
    test_mix = np.bincount(y_test[te], minlength=10) / len(te)
    assert np.abs(train_mix - test_mix).max() < 0.08
    assert set(np.flatnonzero(test_mix)) <= set(np.flatnonzero(train_mix))
