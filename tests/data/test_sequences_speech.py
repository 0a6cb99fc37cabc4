"""make_speech_sequences: shapes, label convention, determinism, lengths, difficulty knobs."""

import numpy as np
import pytest

from keras_efficient.data import make_ctc_sequences, make_speech_sequences
from keras_efficient.data.sequences import _smooth, _speech_prototypes


def test_shapes_dtypes_and_label_convention():
    data = make_speech_sequences(60, vocab_size=9, max_label_length=6, min_label_length=2,
                                 feature_dim=5, num_frames=80, seed=3)
    assert data["features"].shape == (60, 80, 5) and data["features"].dtype == np.float32
    assert data["labels"].shape == (60, 6) and data["labels"].dtype == np.int32
    assert data["label_length"].dtype == np.int32 and data["frame_length"].dtype == np.int32
    assert data["prototypes"].shape == (10, 5)
    np.testing.assert_array_equal(data["prototypes"][0], 0.0)      # 0 = blank / silence
    for labels, length in zip(data["labels"], data["label_length"]):
        assert 2 <= length <= 6
        assert np.all(labels[:length] >= 1) and np.all(labels[:length] <= 9)  # tokens 1..V
        assert np.all(labels[length:] == 0)                                    # 0 = padding
        assert np.all(labels[1:length] != labels[:length - 1])                 # no direct repeat
    assert set(np.unique(data["label_length"])) == {2, 3, 4, 5, 6}


def test_determinism_by_seed_and_shared_templates():
    a = make_speech_sequences(8, seed=0)
    b = make_speech_sequences(8, seed=0)
    c = make_speech_sequences(8, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["features"], c["features"])
    np.testing.assert_array_equal(a["prototypes"], c["prototypes"])   # one "language"
    d = make_speech_sequences(8, seed=0, prototype_seed=5)
    assert not np.array_equal(a["prototypes"], d["prototypes"])


def test_variable_lengths_end_in_exact_zeros():
    data = make_speech_sequences(40, seed=2)
    lengths = data["frame_length"]
    assert lengths.min() < lengths.max()                       # lengths vary
    nonzero = np.any(data["features"] != 0, axis=-1)
    # The last non-zero frame is the utterance's last frame (what variable_length encoders use).
    last = nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=-1)
    np.testing.assert_array_equal(last, lengths)
    fixed = make_speech_sequences(40, seed=2, variable_length=False)
    assert np.all(np.any(fixed["features"] != 0, axis=-1))     # noise everywhere
    np.testing.assert_array_equal(fixed["labels"], data["labels"])
    real = np.arange(96)[None, :] < lengths[:, None]
    np.testing.assert_array_equal(fixed["features"][real], data["features"][real])


def _nearest_token_frames(data):
    """Noiseless, unsmoothed frames mapped back to token ids (0 for silence)."""
    protos = data["prototypes"]
    feats = data["features"]
    return np.argmin(((feats[..., None, :] - protos) ** 2).sum(-1), axis=-1)


def _collapse(seq):
    out = []
    for t in seq:
        if t != 0 and (not out or out[-1] != t):
            out.append(t)
    return out


def test_clean_frames_encode_the_labels_with_holds_of_at_least_four_frames():
    data = make_speech_sequences(30, noise=0.0, smoothing=0.0, seed=4)
    ids = _nearest_token_frames(data)
    for row, labels, length, end in zip(ids, data["labels"], data["label_length"],
                                        data["frame_length"]):
        assert _collapse(list(row[:end])) == list(labels[:length])
        runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, row[:end], -1]) != 0))
        values = row[:end][np.r_[0, np.cumsum(runs)[:-1]]]
        assert np.all(runs[values != 0] >= 4)      # every token keeps an output frame


def test_speaking_rate_scales_the_holds():
    slow = make_speech_sequences(200, rate_range=(1.2, 1.2), noise=0.0, seed=5)
    fast = make_speech_sequences(200, rate_range=(0.8, 0.8), noise=0.0, seed=5)
    per_token = lambda d: np.mean(d["frame_length"] / d["label_length"])  # noqa: E731
    assert per_token(slow) > 1.3 * per_token(fast)


def test_spread_and_group_size_set_the_confusability():
    protos = _speech_prototypes(12, 16, group_size=3, spread=0.1, prototype_seed=0)[1:]
    dist = np.linalg.norm(protos[:, None] - protos[None], axis=-1)
    group = np.arange(12) // 3
    same = dist[(group[:, None] == group[None]) & ~np.eye(12, dtype=bool)]
    other = dist[group[:, None] != group[None]]
    assert same.max() < 0.5 * other.min()                       # groups of near tokens
    wide = _speech_prototypes(12, 16, group_size=3, spread=1.0, prototype_seed=0)[1:]
    wide_dist = np.linalg.norm(wide[:, None] - wide[None], axis=-1)
    assert np.mean(wide_dist[(group[:, None] == group[None]) & ~np.eye(12, dtype=bool)]) > \
        5 * np.mean(same)
    singles = _speech_prototypes(12, 16, group_size=1, spread=0.1, prototype_seed=0)[1:]
    single_dist = np.linalg.norm(singles[:, None] - singles[None], axis=-1)
    assert single_dist[~np.eye(12, dtype=bool)].min() > same.max()


def test_noise_and_smoothing():
    clean = make_speech_sequences(20, noise=0.0, smoothing=0.0, seed=6)
    noisy = make_speech_sequences(20, noise=0.5, smoothing=0.0, seed=6)
    real = np.arange(96)[None, :] < clean["frame_length"][:, None]
    residual = (noisy["features"] - clean["features"])[real]
    assert abs(residual.std() - 0.5) < 0.02                    # additive noise of std `noise`
    np.testing.assert_array_equal(noisy["features"][~real], 0.0)
    smooth = make_speech_sequences(20, noise=0.0, smoothing=1.5, seed=6)
    # Co-articulation: smoothing blurs token boundaries (less squared frame-to-frame change) ...
    inner = real[:, 1:] & real[:, :-1]
    jump = lambda d: (np.diff(d["features"], axis=1) ** 2).sum(-1)[inner].sum()  # noqa: E731
    assert jump(smooth) < 0.7 * jump(clean)
    # ... and is a normalised Gaussian filter (a constant stays constant).
    const = np.ones((10, 3))
    np.testing.assert_allclose(_smooth(const, 1.5), const, rtol=1e-12)
    np.testing.assert_array_equal(_smooth(const, 0.0), const)


def test_the_original_generator_is_unchanged():
    data = make_ctc_sequences(4, seed=0)
    assert data["features"].shape == (4, 64, 16) and set(data) == {"features", "labels",
                                                                   "label_length"}


@pytest.mark.parametrize("kwargs, arg", [
    ({"num_examples": 0}, "num_examples"),
    ({"num_examples": 2.5}, "num_examples"),
    ({"num_examples": 3, "vocab_size": 1}, "vocab_size"),
    ({"num_examples": 3, "min_label_length": 9}, "min_label_length"),
    ({"num_examples": 3, "noise": -1.0}, "noise"),
    ({"num_examples": 3, "spread": -0.1}, "spread"),
    ({"num_examples": 3, "smoothing": None}, "smoothing"),
    ({"num_examples": 3, "group_size": 0}, "group_size"),
    ({"num_examples": 3, "num_frames": 40}, "num_frames"),
    ({"num_examples": 3, "rate_range": (1.2, 0.8)}, "rate_range"),
    ({"num_examples": 3, "rate_range": (0.0, 1.0)}, "rate_range"),
    ({"num_examples": 3, "rate_range": "fast"}, "rate_range"),
    ({"num_examples": 3, "variable_length": 1}, "variable_length"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match="`{}`".format(arg)):
        make_speech_sequences(**kwargs)
