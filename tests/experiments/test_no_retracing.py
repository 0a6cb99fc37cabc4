"""No tf.function retracing warnings from the experiments' inference.

TensorFlow counts traces per Python code object, so every `keras.Model.predict`
of a new model counts against the same `Model.make_predict_function.<locals>.
predict_function`: the ReBEL experiment (teacher, five bottlenecks, device /
server models, client GMCs, Kumar et al.'s features) logged "N out of the last M
calls ... triggered tf.function retracing". `keras_efficient.experiments.inference.
predict` traces each model once with an unknown batch dimension and calls the
concrete function, which neither retraces nor is counted.

`model.fit` is left to Keras: in the tiny ReBEL run each of the six trained
networks traces its train function once and runs two steps, which TensorFlow's
heuristic (5 traced calls among the last 10, per code object, across models)
still reports for `make_train_function`; no model retraces. The subprocess test
therefore allows that one message and no other.
"""

import logging
import subprocess
import sys

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.experiments.inference import inference_function, predict


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def tf_warnings():
    handler = _Collect()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    return keras.Model(inputs, {"a": keras.layers.Dense(3)(hidden),
                                "b": keras.layers.Dense(2)(hidden)})


def test_predict_matches_the_model_and_never_retraces(tf_warnings):
    rng = np.random.default_rng(0)
    for seed in range(8):   # more models than the warning's threshold of five traces
        model = _model(seed)
        for n in (7, 300, 513, 1):   # partial last batches of every size
            x = rng.normal(size=(n, 5))   # float64: cast to floatx like Keras
            out = predict(model, x, batch_size=256)
            ref = model(x.astype("float32"), training=False)
            assert set(out) == {"a", "b"}
            for key in out:
                assert isinstance(out[key], np.ndarray) and out[key].shape[0] == n
                np.testing.assert_allclose(out[key], ref[key].numpy(), rtol=1e-5, atol=1e-6)
        # one graph per model and input shape, reused for every batch size
        assert inference_function(model, x) is inference_function(model, x[:3])
    assert not [m for m in tf_warnings if "retracing" in m]


def test_predict_single_output_and_list_outputs():
    inputs = keras.Input((3,))
    single = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    x = np.ones((5, 3), "float32")
    assert predict(single, x, batch_size=2).shape == (5, 2)
    pair = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)])
    a, b = predict(pair, x, batch_size=4)
    assert a.shape == (5, 2) and b.shape == (5, 1)


@pytest.mark.slow
def test_rebel_tiny_run_logs_no_retracing(tmp_path):
    command = [sys.executable, "-m", "keras_efficient.cli", "reproduce", "rebel", "--quick",
               "--out", str(tmp_path / "run"), "--option", "teacher_epochs=1", "epochs=1",
               "tail_epochs=0", "depth=8", "filters=4", "projection_dim=8", "train_size=128",
               "test_size=64"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    retracing = [line for line in (done.stderr + done.stdout).splitlines()
                 if "retracing" in line]
    assert not [line for line in retracing if "make_train_function" not in line], retracing
