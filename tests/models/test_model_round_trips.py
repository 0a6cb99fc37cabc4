"""The library's model builders survive SavedModel and `.keras` round trips with every
weight moved off its initial value (so a weight a format forgets cannot hide behind a
constant initialiser)."""

import os

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.models import (
    ConformerEncoder,
    cifar_resnet,
    galaxy_shape_estimator,
    gated_resnet,
    stochastic_depth_resnet,
)
from keras_efficient.pruning import prune
from keras_efficient.schedules import RetentionTargetSchedule


def _perturb(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.dtype.is_floating:
            v = w.numpy()
            w.assign((v * (1 + 0.1 * rng.uniform(-1, 1, v.shape))
                      + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype))


def _conformer(**kwargs):
    return ConformerEncoder((16, 6), vocab_size=5, num_blocks=1, model_dim=16, num_heads=2,
                            ffn_dim=24, kernel_size=3, adaptive=True,
                            schedule=RetentionTargetSchedule(), **kwargs)


def _pruned_conformer():
    model = _conformer(adaptive_subsampling=True)  # front-end channels pruned too
    _perturb(model, seed=1)
    return prune(model)


BUILDERS = {
    "cifar_resnet": (lambda: cifar_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4),
                     (3, 8, 8, 3)),
    "gated_resnet": (lambda: gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4,
                                          mode="gather"), (3, 8, 8, 3)),
    "stochastic_depth_resnet": (lambda: stochastic_depth_resnet(
        depth=8, input_shape=(8, 8, 3), base_filters=4), (3, 8, 8, 3)),
    "conformer_encoder": (_conformer, (3, 16, 6)),
    "pruned_conformer_encoder": (_pruned_conformer, (3, 16, 6)),
    "galaxy_shape_estimator": (lambda: galaxy_shape_estimator(
        input_shape=(16, 16, 6), filters=(4, 8)), (3, 16, 16, 6)),
}


def _outputs(model, x):
    out = model(x, training=False)
    return np.asarray(out.mean() if hasattr(out, "mean") else out)


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_round_trip_keeps_outputs(name, fmt, tmp_path):
    build, shape = BUILDERS[name]
    keras.utils.set_random_seed(0)
    model = build()
    _perturb(model)
    x = np.random.default_rng(2).uniform(size=shape).astype(np.float32)
    expected = _outputs(model, x)
    assert np.all(np.isfinite(expected))
    path = os.path.join(str(tmp_path), "model.keras" if fmt == "keras" else "saved")
    if fmt == "keras":
        model.save(path)
    else:
        model.save(path, save_format="tf", save_traces=False)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_outputs(loaded, x), expected, rtol=1e-5,
                               atol=1e-6 * max(1.0, np.abs(expected).max()))
