"""Replicas of a MirroredStrategy draw independent noise; a seed makes the draws reproducible.

Before the stateless draws, `AdaptiveDropout(seed=3)` drew the identical mask on
both replicas (one op seed, copied into each replica's graph).
"""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.layers import (
    AdaptiveDropout,
    FlipoutDense,
    ReparameterizationDense,
    VariationalHead,
)
from keras_efficient.schedules import RetentionTargetSchedule


def _per_replica(strategy, fn):
    """Runs `fn` once per replica inside one `tf.function`; the local results as NumPy."""
    @tf.function(autograph=False)  # TF 2.14's AutoGraph mis-converts TFP's distribution methods
    def step():
        return strategy.run(fn)

    out = step()
    return [np.asarray(t) for t in strategy.experimental_local_results(out)]


def _adl(strategy, seed, units=256):
    with strategy.scope():
        # beta = c0 = 0 at every step of interest: keep probability 1/2 per entry.
        layer = AdaptiveDropout(RetentionTargetSchedule(0.0, -1.0, 10 ** 6), seed=seed)
        layer(tf.zeros((1, units)))
    return layer


def _masks(strategy, layer, rows=8, units=256):
    x = tf.ones((rows, units))
    return _per_replica(strategy, lambda: layer(x, training=True))


@pytest.mark.parametrize("seed", [3, None])
def test_adaptive_dropout_masks_differ_between_replicas(mirrored_strategy, seed):
    layer = _adl(mirrored_strategy, seed)
    first, second = _masks(mirrored_strategy, layer)
    assert set(np.unique(first)) <= {0.0, 1.0}
    # Two independent Bernoulli(1/2) masks of 2048 entries agree on about half of them;
    # identical masks (the old behaviour) agree on all. 5 standard deviations: 0.5 +- 0.055.
    agreement = float(np.mean(first == second))
    assert abs(agreement - 0.5) < 5 * 0.5 / np.sqrt(first.size), agreement
    # Both replicas advanced one shared step counter once.
    assert int(layer.step) == 1


def test_adaptive_dropout_replica_masks_reproducible_for_a_seed(mirrored_strategy):
    a = _adl(mirrored_strategy, 3)
    b = _adl(mirrored_strategy, 3)
    other = _adl(mirrored_strategy, 4)
    a0, b0, o0 = (_masks(mirrored_strategy, layer) for layer in (a, b, other))
    for x, y in zip(a0, b0):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a0[0], o0[0])
    # The next step draws new masks, again the same for the same seed.
    a1, b1 = _masks(mirrored_strategy, a), _masks(mirrored_strategy, b)
    for x, y in zip(a1, b1):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a0[0], a1[0])
    # A layer set to step 1 (as a checkpoint restores it) draws what step 1 drew.
    c = _adl(mirrored_strategy, 3)
    c.step_counter.assign(1)
    for x, y in zip(_masks(mirrored_strategy, c), a1):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cls, seed", [
    (FlipoutDense, None),
    (FlipoutDense, 3),  # the seed fixes the sign flips; the kernel noise is unseeded
    (ReparameterizationDense, None),
    (ReparameterizationDense, 3),  # the replica id is folded into the seeded draw
])
def test_bayesian_dense_samples_differ_between_replicas(mirrored_strategy, cls, seed):
    with mirrored_strategy.scope():
        layer = cls(16, seed=seed)
        layer(tf.zeros((1, 8)))
    x = tf.ones((4, 8))
    first, second = _per_replica(mirrored_strategy, lambda: layer(x))
    assert np.all(np.isfinite(first))
    assert not np.allclose(first, second)


def test_variational_head_samples_differ_between_replicas(mirrored_strategy):
    with mirrored_strategy.scope():
        head = VariationalHead(filters=(4,), latent_channels=2, strides=(1,))
        head(tf.zeros((1, 6, 6, 3)))
    x = tf.ones((2, 6, 6, 3))
    first, second = _per_replica(mirrored_strategy, lambda: head(x, training=True)[0])
    means = _per_replica(mirrored_strategy, lambda: head(x, training=False)[0])
    np.testing.assert_allclose(means[0], means[1], rtol=1e-6)  # same weights, same input
    assert not np.allclose(first, second)


def test_seeded_reparameterization_replica_draws_reproducible(mirrored_strategy):
    def make(seed):
        with mirrored_strategy.scope():
            layer = ReparameterizationDense(16, seed=seed)
            layer(tf.zeros((1, 8)))
        return layer

    a, b, other = make(3), make(3), make(4)
    for layer in (b, other):
        layer.set_weights(a.get_weights())
    x = tf.ones((4, 8))
    draws = [_per_replica(mirrored_strategy, lambda layer=layer: layer(x))
             for layer in (a, b, other)]
    for first, second in zip(draws[0], draws[1]):
        np.testing.assert_array_equal(first, second)
    assert not np.allclose(draws[0][0], draws[2][0])
