"""SubsampledTimeMask, CTCBlankPadding and the variable-length Conformer encoder.

References: frame lengths and subsampled masks computed in NumPy; the CTC loss
of real frames by an exhaustive path sum; the encoder run on each utterance
alone (an encoder built for its length, with the same weights).
"""

import math

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import CTCBlankPadding, SubsampledTimeMask
from keras_efficient.models import ConformerEncoder, CTCLoss, ctc_greedy_decode
from keras_efficient.pruning import prune
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.testing import run_layer_test


def _padded_features(rng, lengths, frames, features):
    x = rng.standard_normal((len(lengths), frames, features)).astype(np.float32)
    for i, length in enumerate(lengths):
        x[i, length:] = 0.0
    return x


def test_subsampled_mask_matches_numpy_lengths():
    rng = np.random.default_rng(0)
    lengths = [16, 13, 9, 4, 1, 0]
    features = _padded_features(rng, lengths, 16, 3)
    features[1, 5] = 0.0  # a zero frame inside an utterance stays real
    x = tf.zeros((6, 4, 8))
    layer = SubsampledTimeMask((2, 2))
    mask = layer.compute_mask([x, tf.constant(features)]).numpy()
    expected_lengths = [math.ceil(math.ceil(n / 2) / 2) for n in lengths]
    expected = np.arange(4)[None, :] < np.asarray(expected_lengths)[:, None]
    np.testing.assert_array_equal(mask, expected)
    out = layer([x, tf.constant(features)])
    np.testing.assert_array_equal(out._keras_mask.numpy(), expected)


def test_blank_padding_makes_the_full_length_ctc_loss_exact(ctc_brute_force):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 6, 3)).astype(np.float32)
    lengths = [6, 4, 3]
    mask = np.arange(6)[None, :] < np.asarray(lengths)[:, None]
    labels = np.array([[1, 2, 0], [2, 2, 0], [1, 0, 0]], np.int32)
    padded = CTCBlankPadding()(tf.constant(logits), mask=tf.constant(mask))
    assert getattr(padded, "_keras_mask", None) is None
    loss = CTCLoss(reduction="none")(labels, padded).numpy()
    expected = [ctc_brute_force(logits[i, :n], [t for t in labels[i] if t])
                for i, n in enumerate(lengths)]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    decoded = ctc_greedy_decode(padded.numpy())
    assert decoded == [ctc_greedy_decode(logits[i:i + 1, :n])[0] for i, n in enumerate(lengths)]


def test_layers_contract():
    run_layer_test(CTCBlankPadding, {"padding_logit": 1e3}, input_shape=(4, 5, 3),
                   expected_output_shape=(4, 5, 3), supports_jit=True,
                   expect_trainable_weights_change=False)
    run_layer_test(SubsampledTimeMask, {"strides": [2]}, input_shape=[(4, 3, 2), (4, 6, 5)],
                   expected_output_shape=(4, 3, 2), supports_jit=True,
                   expect_trainable_weights_change=False)


@pytest.mark.parametrize("cls, kwargs, error, name", [
    (SubsampledTimeMask, {"strides": 2}, TypeError, "strides"),
    (SubsampledTimeMask, {"strides": (2, 0)}, ValueError, r"strides\[1\]"),
    (CTCBlankPadding, {"padding_logit": 0.0}, ValueError, "padding_logit"),
])
def test_invalid_arguments(cls, kwargs, error, name):
    with pytest.raises(error, match=name):
        cls(**kwargs)


def _encoder(frames, seed=0):
    return ConformerEncoder((frames, 6), vocab_size=4, num_blocks=2, model_dim=16, num_heads=2,
                            ffn_dim=24, kernel_size=5, dropout_rate=0.0, seed=seed,
                            variable_length=True, adaptive=True,
                            schedule=RetentionTargetSchedule())


def _randomise(model, rng):
    for w in model.weights:
        if w.dtype == tf.int64 or "retention_raw" in w.name:
            continue
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((0.3 * rng.standard_normal(w.shape)).astype(np.float32))


def test_variable_length_encoder_equals_each_utterance_alone_and_prunes():
    rng = np.random.default_rng(2)
    lengths = [24, 16, 8]  # multiples of 4: the front end's zero padding then matches
    model = _encoder(24)
    _randomise(model, rng)
    x = _padded_features(rng, lengths, 24, 6)
    # Zero padding instead of noise at the end must not change the real frames.
    out = model(x, training=False).numpy()
    for i, length in enumerate(lengths):
        alone = _encoder(length)
        alone.set_weights(model.get_weights())
        expected = alone(x[i:i + 1, :length], training=False).numpy()[0]
        np.testing.assert_allclose(out[i, :length // 4], expected, rtol=1e-4, atol=1e-4)
        blank = out[i, length // 4:]
        assert (blank[:, 0] == 0).all() and (blank[:, 1:] <= -1e3).all()
    # Prune some units: the pruned model keeps the masking and the outputs.
    for block in (model.get_layer("conformer_block_0"), model.get_layer("conformer_block_1")):
        for adl in block.adaptive_dropout_sites.values():
            keep = rng.uniform(size=adl.retention_raw.shape) < 0.6
            beta = np.where(keep, 1.0, -1.0) + adl.effective_threshold
            scale = np.sqrt(adl.gamma / adl.alpha)
            adl.retention_raw.assign(
                ((beta - float(adl.current_target)) / scale).astype(np.float32))
    pruned = prune(model)
    np.testing.assert_allclose(pruned(x, training=False).numpy(),
                               model(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_variable_length_encoder_fits_with_the_ctc_loss():
    rng = np.random.default_rng(3)
    model = _encoder(16)
    lengths = [16, 12, 8, 4]
    x = _padded_features(rng, lengths, 16, 6)
    labels = np.array([[1, 2], [3, 0], [4, 4], [1, 0]], np.int32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=CTCLoss())
    history = model.fit(x, labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # The Keras loss equals the mean CTC loss over each utterance's real frames.
    logits = model(x, training=False).numpy()
    per_example = CTCLoss(reduction="none")(labels, logits).numpy()
    reference = tf.nn.ctc_loss(labels, logits[:, :, :], label_length=[2, 1, 2, 1],
                               logit_length=[4, 3, 2, 1], logits_time_major=False,
                               blank_index=0).numpy()
    np.testing.assert_allclose(per_example, reference, rtol=1e-4)
    assert model.evaluate(x, labels, verbose=0) == pytest.approx(per_example.mean(), rel=1e-4)


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_variable_length_encoder_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(4)
    model = _encoder(16)
    _randomise(model, rng)
    x = _padded_features(rng, [16, 9, 4], 16, 6)
    expected = model(x, training=False).numpy()
    if fmt == "keras":
        path = str(tmp_path / "encoder.keras")
        model.save(path)
        restored = keras.models.load_model(path, compile=False)
        actual = restored(x, training=False).numpy()
    else:
        path = str(tmp_path / "encoder")
        tf.saved_model.save(model, path)
        restored = tf.saved_model.load(path)
        actual = restored.signatures["serving_default"](tf.constant(x))
        actual = next(iter(actual.values())).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
