"""Synthetic CTC sequences: shapes, labels, and frames that encode the labels."""

import numpy as np
import pytest

from keras_efficient.data import make_ctc_sequences


def test_shapes_and_label_padding():
    data = make_ctc_sequences(50, vocab_size=7, max_label_length=5, feature_dim=8, num_frames=40,
                              seed=3)
    assert data["features"].shape == (50, 40, 8) and data["features"].dtype == np.float32
    assert data["labels"].shape == (50, 5) and data["labels"].dtype == np.int32
    for labels, length in zip(data["labels"], data["label_length"]):
        assert 1 <= length <= 5
        assert np.all(labels[:length] >= 1) and np.all(labels[:length] <= 7)
        assert np.all(labels[length:] == 0)


def _collapse(seq):
    """Drops silence, then merges repeats (adjacent equal tokens are indistinguishable)."""
    out = []
    for t in seq:
        if t != 0 and (not out or out[-1] != t):
            out.append(t)
    return out


def test_noiseless_frames_decode_to_the_labels():
    """Noiseless frames, mapped to the nearest token prototype and CTC-collapsed, give the labels."""
    vocab, feat = 5, 16
    data = make_ctc_sequences(30, vocab_size=vocab, feature_dim=feat, noise=0.0, seed=1,
                              num_frames=48, prototype_seed=7)
    protos = np.random.default_rng(7).standard_normal((vocab + 1, feat)).astype("float32")
    protos[0] = 0.0
    for feats, labels, length in zip(data["features"], data["labels"], data["label_length"]):
        ids = np.argmin(((feats[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)
        assert _collapse(list(ids)) == _collapse(list(labels[:length]))


def test_seed_determinism_and_shared_language():
    a = make_ctc_sequences(5, seed=0)
    b = make_ctc_sequences(5, seed=0)
    c = make_ctc_sequences(5, seed=1)
    np.testing.assert_array_equal(a["features"], b["features"])
    assert not np.array_equal(a["features"], c["features"])


@pytest.mark.parametrize("kwargs, arg", [
    ({"num_examples": 0}, "num_examples"),
    ({"num_examples": 2.5}, "num_examples"),
    ({"num_examples": 3, "noise": -1.0}, "noise"),
    ({"num_examples": 3, "num_frames": 10}, "num_frames"),
    ({"num_examples": 3, "vocab_size": None}, "vocab_size"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match="`{}`".format(arg)):
        make_ctc_sequences(**kwargs)
