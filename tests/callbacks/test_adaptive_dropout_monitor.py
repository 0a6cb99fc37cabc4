import glob
import os

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import AdaptiveDropoutMonitor
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.schedules import RetentionTargetSchedule


def _model():
    inp = keras.Input((5,))
    h = keras.layers.Dense(6, activation="relu", name="d1")(inp)
    h = AdaptiveDropout(RetentionTargetSchedule(2.0, -1.0, 8), alpha=1e-2, gamma=1e-2,
                        name="adl")(h)
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def test_logs_match_retention_logits_and_eq6(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    model = _model()
    log_dir = os.path.join(str(tmp_path), "tb")
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0,
                        callbacks=[AdaptiveDropoutMonitor(log_dir=log_dir)])
    logs = history.history
    adl = model.get_layer("adl")
    beta = adl.retention_logits.numpy().astype(np.float64)
    assert logs["adl/adl/surviving_fraction"][-1] == pytest.approx(np.mean(beta >= -1.0))
    assert logs["adl/adl/mean_retention"][-1] == pytest.approx(
        np.mean(1 / (1 + np.exp(-beta))), rel=1e-5)
    # 4 steps per epoch; c(t) of Eq. (6) with c0=2, c_inf=-1, K=8.
    expected_targets = [2.0 + (-1.0 - 2.0) * min(t / 8.0, 1.0) for t in (4, 8, 12)]
    np.testing.assert_allclose(logs["adl/adl/target"], expected_targets, rtol=1e-6, atol=1e-6)
    assert logs["adl/surviving_fraction"][-1] == logs["adl/adl/surviving_fraction"][-1]

    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert files
    tags = set()
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
    assert "adl/adl/beta" in tags and "adl/adl/surviving_fraction" in tags


def test_model_without_adaptive_dropout_fails_loudly():
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no AdaptiveDropout"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 1)), verbose=0,
                  callbacks=[AdaptiveDropoutMonitor()])


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(histogram_freq=0), "histogram_freq", ValueError),
    (dict(histogram_freq=1.5), "histogram_freq", TypeError),
    (dict(log_dir=3), "log_dir", TypeError),
    (dict(prefix=None), "prefix", TypeError),
])
def test_invalid_arguments(kwargs, name, error):
    with pytest.raises(error, match="`{}`".format(name)):
        AdaptiveDropoutMonitor(**kwargs)
