"""Rank decisions of SLU gates against a NumPy reference."""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.layers.gate_decisions import gate_logits, rank_decisions


def _reference(prob, rate):
    p = np.clip(np.asarray(prob, np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(p) - np.log1p(-p)
    n = len(logits)
    k = int(np.clip(np.round(rate * n), 0, n))  # NumPy rounds half to even, as tf.round
    order = sorted(range(n), key=lambda i: (-logits[i], i))  # stable: earlier first on ties
    hard = np.zeros(n)
    hard[order[:k]] = 1.0
    s = logits[order]
    if k == n:
        cut = s[-1] - 1.0
    elif k == 0:
        cut = s[0] + 1.0
    else:
        cut = 0.5 * (s[k - 1] + s[k])
    return hard, cut


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.55, 0.9, 1.0])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_rank_decisions_match_numpy(rate, n):
    rng = np.random.default_rng(n)
    prob = rng.uniform(0.01, 0.99, size=n).astype(np.float32)
    hard, cut = rank_decisions(tf.constant(prob), rate)
    want_hard, want_cut = _reference(prob, rate)
    np.testing.assert_array_equal(hard.numpy(), want_hard)
    np.testing.assert_allclose(cut.numpy(), want_cut, rtol=1e-5, atol=1e-5)
    # The cut reproduces the decisions as a threshold on the logits.
    logits = gate_logits(prob).numpy()
    np.testing.assert_array_equal((logits >= cut.numpy()).astype(np.float32), want_hard)


def test_rank_decisions_open_k_samples_even_when_probabilities_are_equal():
    # A threshold at 0.5 would open all eight (or none); the rank opens exactly round(r * n).
    prob = tf.fill([8], 0.7)
    hard, _ = rank_decisions(prob, 0.25)
    np.testing.assert_array_equal(hard.numpy(), [1, 1, 0, 0, 0, 0, 0, 0])


def test_rank_decisions_empty_batch_and_graph_mode():
    hard, cut = rank_decisions(tf.zeros([0]), 0.5)
    assert hard.shape == (0,) and float(cut) == 0.0

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def fn(p):
        return rank_decisions(p, 0.5)

    prob = np.array([0.2, 0.9, 0.4, 0.6], np.float32)
    hard, cut = fn(prob)
    want_hard, want_cut = _reference(prob, 0.5)
    np.testing.assert_array_equal(hard.numpy(), want_hard)
    np.testing.assert_allclose(cut.numpy(), want_cut, rtol=1e-6, atol=1e-6)


def test_gate_logits_inverts_the_sigmoid():
    x = np.array([-5.0, -0.3, 0.0, 2.0, 7.0], np.float32)
    np.testing.assert_allclose(gate_logits(tf.sigmoid(x)).numpy(), x, rtol=1e-3, atol=1e-3)
