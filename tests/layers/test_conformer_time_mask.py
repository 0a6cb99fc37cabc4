"""Time masks in the Conformer block: padded frames must not change the real frames.

The reference for a padded sequence is the same block run on the unpadded
sequence (no mask): with "same" zero padding in the depthwise convolution and
padded keys removed from the softmax, the two must agree at every real frame.
"""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import ConformerBlock
from keras_efficient.pruning import PrunedConformerBlock, prune

D, H, F, K, T = 16, 4, 24, 5, 12
LENGTHS = (12, 7, 3)


def _set_random_state(block, rng, prune_fraction=0.4):
    """Random weights, BatchNorm statistics and retention logits (some units pruned)."""
    for w in block.weights:
        if w.dtype == tf.int64:
            continue
        if "retention_raw" in w.name:
            continue
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((0.4 * rng.standard_normal(w.shape)).astype(np.float32))
    for adl in block.adaptive_dropout_sites.values():
        keep = rng.uniform(size=adl.retention_raw.shape) >= prune_fraction
        beta = np.where(keep, 1.0, -1.0) + adl.effective_threshold
        scale = np.sqrt(adl.gamma / adl.alpha)
        adl.retention_raw.assign(((beta - float(adl.current_target)) / scale).astype(np.float32))


def _padded_batch(rng, fill):
    x = rng.standard_normal((len(LENGTHS), T, D)).astype(np.float32)
    mask = np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]
    x = np.where(mask[..., None], x, fill).astype(np.float32)
    return x, mask


def _block(seed=0, **kwargs):
    block = ConformerBlock(D, H, F, K, dropout_rate=0.0, seed=seed, **kwargs)
    block.build((None, None, D))
    return block


@pytest.mark.parametrize("fill", [0.0, 50.0])
def test_real_frames_equal_the_unpadded_sequence_at_inference(fill):
    rng = np.random.default_rng(0)
    block = _block()
    _set_random_state(block, rng)
    x, mask = _padded_batch(rng, fill)
    padded = block(x, training=False, mask=tf.constant(mask)).numpy()
    unmasked = block(x, training=False).numpy()
    for i, length in enumerate(LENGTHS):
        alone = block(x[i:i + 1, :length], training=False).numpy()[0]
        np.testing.assert_allclose(padded[i, :length], alone, rtol=1e-5, atol=1e-5)
        if length < T:  # without the mask the padding leaks into the real frames
            assert np.abs(unmasked[i, :length] - alone).max() > 1e-3


def test_batchnorm_statistics_use_real_frames_only_in_training():
    rng = np.random.default_rng(1)
    x, mask = _padded_batch(rng, 3.0)
    length = LENGTHS[1]
    padded_block = _block(adaptive=False)
    alone_block = _block(adaptive=False)
    _set_random_state(padded_block, rng)
    alone_block.set_weights(padded_block.get_weights())
    padded = padded_block(x[1:2], training=True, mask=tf.constant(mask[1:2])).numpy()
    alone = alone_block(x[1:2, :length], training=True).numpy()
    np.testing.assert_allclose(padded[0, :length], alone[0], rtol=1e-5, atol=1e-5)
    bn_p, bn_a = padded_block.conv.batch_norm, alone_block.conv.batch_norm
    np.testing.assert_allclose(bn_p.moving_mean.numpy(), bn_a.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(bn_p.moving_variance.numpy(), bn_a.moving_variance.numpy(),
                               atol=1e-6)


def test_keras_masking_propagates_through_blocks_and_prune():
    rng = np.random.default_rng(2)
    inp = keras.Input((None, D))
    x = keras.layers.Masking(0.0)(inp)
    for i in range(2):
        x = ConformerBlock(D, H, F, K, dropout_rate=0.0, seed=i, name="block{}".format(i))(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    for i in range(2):
        _set_random_state(model.get_layer("block{}".format(i)), rng)
    # Every query unit of head 0 pruned: its output is the time average of the values,
    # which must also skip the padded frames.
    adl = model.get_layer("block0").attention.query_dropout
    raw = adl.retention_raw.numpy()
    scale = np.sqrt(adl.gamma / adl.alpha)
    raw[0] = (adl.effective_threshold - 1.0 - float(adl.current_target)) / scale
    adl.retention_raw.assign(raw)
    x, mask = _padded_batch(rng, 0.0)
    out = model(x, training=False)
    np.testing.assert_array_equal(out._keras_mask.numpy(), mask)
    pruned = prune(model)
    assert isinstance(pruned.get_layer("block0"), PrunedConformerBlock)
    assert pruned.get_layer("block0").attention.query_units[0] == 0
    pruned_out = pruned(x, training=False)
    np.testing.assert_array_equal(pruned_out._keras_mask.numpy(), mask)
    for i, length in enumerate(LENGTHS):
        alone = model(x[i:i + 1, :length], training=False).numpy()[0]
        np.testing.assert_allclose(out.numpy()[i, :length], alone, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pruned_out.numpy()[i, :length], alone, rtol=1e-5, atol=1e-5)


def test_mask_under_jit_and_a_fully_padded_sequence_stays_finite():
    rng = np.random.default_rng(3)
    block = _block()
    _set_random_state(block, rng)
    x, mask = _padded_batch(rng, 0.0)
    mask[2] = False
    eager = block(x, training=False, mask=tf.constant(mask)).numpy()
    jit = tf.function(lambda a, m: block(a, training=False, mask=m), jit_compile=True)
    compiled = jit(tf.constant(x), tf.constant(mask)).numpy()
    assert np.isfinite(eager).all()
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask, error, match", [
    (np.ones((3, T, 1), bool), ValueError, r"\[batch, time\]"),
    (np.ones((3, T), np.float32), TypeError, "boolean"),
    (np.ones((3, T + 1), bool), ValueError, "shape"),
])
def test_bad_masks_are_rejected(mask, error, match):
    block = _block()
    x = np.zeros((3, T, D), np.float32)
    with pytest.raises(error, match=match):
        block(x, training=False, mask=tf.constant(mask))


def test_mask_under_mixed_precision(mixed_precision):
    rng = np.random.default_rng(5)
    block = _block()
    _set_random_state(block, rng)
    x, mask = _padded_batch(rng, 50.0)
    padded = block(x, training=False, mask=tf.constant(mask))
    assert padded.dtype == tf.float16
    for i, length in enumerate(LENGTHS):
        alone = block(x[i:i + 1, :length], training=False).numpy()[0]
        np.testing.assert_allclose(padded.numpy()[i, :length], alone, rtol=2e-2, atol=2e-2)
