"""Test configuration: two logical CPU devices for MirroredStrategy checks.

The split must happen before TensorFlow initialises its runtime, so it is done
here, at import time of the test session, before any test module runs an op.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402
from keras_efficient.testing import configure_logical_cpus, mirrored_cpu_strategy  # noqa: E402

configure_logical_cpus(2)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Every test starts and ends with the float32 policy and a fresh Keras session."""
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)
    keras.backend.clear_session()


_COLLECTIVE_KEY_BASE = [100_000]


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    """Gives every MirroredStrategy made during a test its own collective keys.

    In TF 2.14 each new MirroredStrategy starts at the same group and instance
    keys, so two strategies in one process whose all-reduces differ in shape
    collide ("Shape mismatch in the collective instance 100"). TensorFlow's own
    tests move `_collective_key_base` for the same reason. The base only grows.
    """
    _COLLECTIVE_KEY_BASE[0] += 1000
    tf.distribute.MirroredStrategy._collective_key_base = _COLLECTIVE_KEY_BASE[0]
    yield


@pytest.fixture
def mixed_precision():
    """Runs a test under the mixed_float16 policy and restores the previous one."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture
def mirrored_strategy():
    """The process-wide MirroredStrategy over the two logical CPU devices.

    Shared, not made anew per test: a second MirroredStrategy in one process can
    abort its all-reduces (collective instance keys are reused in TF 2.14).
    """
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("two logical CPU devices are not available in this process")
    return mirrored_cpu_strategy()


def _ctc_brute_force(logits, label):
    """-log sum over all frame paths that collapse to `label` (blank 0); exhaustive."""
    import itertools

    import numpy as np
    from scipy.special import log_softmax, logsumexp

    logp = log_softmax(np.asarray(logits, np.float64), axis=-1)
    t, v = logp.shape
    terms = []
    for path in itertools.product(range(v), repeat=t):
        collapsed = [p for i, p in enumerate(path) if p != 0 and (i == 0 or p != path[i - 1])]
        if collapsed == list(label):
            terms.append(sum(logp[i, p] for i, p in enumerate(path)))
    return -logsumexp(terms)


@pytest.fixture
def ctc_brute_force():
    """An independent CTC reference: the exhaustive path sum (small T and V only)."""
    return _ctc_brute_force
