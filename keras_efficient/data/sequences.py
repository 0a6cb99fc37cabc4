"""A synthetic sequence-to-label task for CTC models.

Each token of a vocabulary 1..V has a fixed random prototype feature vector.
An utterance is a random token string of length 1..L; each token is held for a
random number of frames (`min_frames`..`max_frames`) and consecutive tokens are
separated by 0..2 "silence" frames (a zero prototype). The rest of the fixed
`num_frames` is silence, so every example has the same static shape. Gaussian
noise of standard deviation `noise` is added to every frame. Token id 0 is the
padding value in `labels` and the CTC blank.

`make_speech_sequences` is a harder, more speech-like variant (confusable
tokens, longer outputs, speaking-rate variation, co-articulation smoothing,
variable lengths); `make_ctc_sequences` keeps the original task unchanged.
"""

import numpy as np

from keras_efficient.utils.validation import check_float, check_int

__all__ = ["make_ctc_sequences", "make_speech_sequences"]


def make_ctc_sequences(num_examples, vocab_size=10, max_label_length=6, feature_dim=16,
                       num_frames=64, min_frames=3, max_frames=5, noise=0.5, seed=0,
                       prototype_seed=1234):
    """Generates the synthetic CTC task.

    Args:
      num_examples: number of utterances.
      vocab_size: V, tokens are 1..V.
      max_label_length: L, the longest token string.
      feature_dim: F, features per frame.
      num_frames: T, frames per utterance (must fit the longest utterance).
      min_frames, max_frames: how long each token is held.
      noise: standard deviation of the additive Gaussian noise.
      seed: seed for the utterances.
      prototype_seed: seed for the token prototypes; keep it fixed across the
        train and test splits so both share one "language".

    Returns:
      dict with `features` float32 [N, T, F], `labels` int32 [N, L] (0-padded),
      `label_length` int32 [N].
    """
    num_examples = check_int("num_examples", num_examples, low=1)
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    max_label_length = check_int("max_label_length", max_label_length, low=1)
    feature_dim = check_int("feature_dim", feature_dim, low=1)
    num_frames = check_int("num_frames", num_frames, low=1)
    min_frames = check_int("min_frames", min_frames, low=1)
    max_frames = check_int("max_frames", max_frames, low=min_frames)
    noise = check_float("noise", noise, low=0.0)
    longest = max_label_length * (max_frames + 2)
    if num_frames < longest:
        raise ValueError(
            "Invalid value received for argument `num_frames`. Expected at least "
            "max_label_length * (max_frames + 2) = {}. Received: num_frames={}".format(
                longest, num_frames))
    prototypes = np.random.default_rng(prototype_seed).standard_normal(
        (vocab_size + 1, feature_dim)).astype("float32")
    prototypes[0] = 0.0
    rng = np.random.default_rng(seed)
    features = np.zeros((num_examples, num_frames, feature_dim), "float32")
    labels = np.zeros((num_examples, max_label_length), "int32")
    lengths = rng.integers(1, max_label_length + 1, size=num_examples).astype("int32")
    for i in range(num_examples):
        tokens = rng.integers(1, vocab_size + 1, size=lengths[i])
        labels[i, :lengths[i]] = tokens
        t = int(rng.integers(0, 3))
        for token in tokens:
            hold = int(rng.integers(min_frames, max_frames + 1))
            features[i, t:t + hold] = prototypes[token]
            t += hold + int(rng.integers(0, 3))
    features += noise * rng.standard_normal(features.shape).astype("float32")
    return {"features": features, "labels": labels, "label_length": lengths}


def _speech_prototypes(vocab_size, feature_dim, group_size, spread, prototype_seed):
    """[V + 1, F] token templates in confusable groups; row 0 (silence) is zero.

    Tokens 1..V fall into consecutive groups of `group_size`; each group has a
    centre c_g ~ N(0, I) and token t of it the template c_g + spread * e_t,
    e_t ~ N(0, I). Two tokens of one group are about spread * sqrt(2F) apart,
    two of different groups about sqrt(2F) (1 + spread²)^½.
    """
    rng = np.random.default_rng(prototype_seed)
    groups = -(-vocab_size // group_size)
    centres = rng.standard_normal((groups, feature_dim))
    offsets = rng.standard_normal((vocab_size, feature_dim))
    prototypes = np.zeros((vocab_size + 1, feature_dim), "float32")
    prototypes[1:] = centres[np.arange(vocab_size) // group_size] + spread * offsets
    return prototypes


def _smooth(frames, width):
    """Gaussian smoothing along time (std `width` frames, truncated at 2 std), per feature."""
    if width <= 0 or len(frames) < 2:
        return frames
    radius = max(1, int(np.ceil(2 * width)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / width) ** 2)
    taps /= taps.sum()
    padded = np.pad(frames, ((radius, radius), (0, 0)), mode="edge")
    out = np.zeros_like(frames)
    for j, tap in enumerate(taps):
        out += tap * padded[j:j + len(frames)]
    return out


def make_speech_sequences(num_examples, vocab_size=24, max_label_length=8, min_label_length=3,
                          feature_dim=16, num_frames=96, min_frames=5, max_frames=8,
                          group_size=3, spread=0.45, rate_range=(0.8, 1.25), smoothing=1.0,
                          noise=0.7, variable_length=True, seed=0, prototype_seed=1234):
    """A harder, more speech-like synthetic CTC task than `make_ctc_sequences`.

    Differences from `make_ctc_sequences` (each a knob; the defaults are the
    task of `keras-efficient reproduce adaptive-dropout`):

    * confusable tokens (`group_size`, `spread`): the templates come in groups of
      `group_size` near-identical tokens (see `_speech_prototypes`): a smaller
      `spread` makes the tokens of a group harder to tell apart;
    * longer outputs: `min_label_length`..`max_label_length` tokens, no token
      directly repeated (as phones rarely are; CTC then needs no blank between
      two equal tokens, so one output frame per token suffices);
    * speaking rate (`rate_range`): per utterance a rate r ~ U(rate_range) scales
      every hold, hold = max(4, round(r * U{min_frames..max_frames})) frames (4 =
      the encoder's time subsampling, so every token keeps an output frame);
      0..1 silence frames between tokens and 0..2 before the first;
    * co-articulation (`smoothing`): the clean frame sequence is smoothed along
      time with a Gaussian of std `smoothing` frames, so neighbouring tokens
      blend at their boundaries (0 = none);
    * additive Gaussian noise of std `noise` on the real frames;
    * `variable_length`: frames after the utterance are exact zeros (no noise),
      as an encoder built with `variable_length=True` expects; False fills them
      with noise as `make_ctc_sequences` does (from a separate stream: the
      utterances are the same either way).

    Labels as in `make_ctc_sequences`: 0 is padding and the CTC blank, tokens 1..V.

    Args:
      num_examples: number of utterances N.
      vocab_size: V.
      max_label_length, min_label_length: range of the token-string length.
      feature_dim: F.
      num_frames: T; must fit the longest possible utterance,
        2 + max_label_length * (hold_max + 1), hold_max = max(4, round(rate_max * max_frames)).
      min_frames, max_frames: nominal hold range, before the speaking rate.
      group_size: tokens per confusable group (1: no groups, every template independent).
      spread: within-group distance scale (relative to the group centres' scale).
      rate_range: (slowest, fastest) per-utterance rate factors (low <= high, both > 0).
      smoothing: co-articulation smoothing std in frames (>= 0).
      noise: std of the additive noise (>= 0).
      variable_length: zeros after the utterance (True) or noise (False).
      seed: seed of the utterances.
      prototype_seed: seed of the templates; keep it fixed across splits.

    Returns:
      dict with `features` float32 [N, T, F], `labels` int32 [N, max_label_length]
      (0-padded), `label_length` int32 [N], `frame_length` int32 [N] (frames up to and
      including the last token frame) and `prototypes` float32 [V + 1, F].
    """
    num_examples = check_int("num_examples", num_examples, low=1)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    max_label_length = check_int("max_label_length", max_label_length, low=1)
    min_label_length = check_int("min_label_length", min_label_length, low=1,
                                 high=max_label_length)
    feature_dim = check_int("feature_dim", feature_dim, low=1)
    num_frames = check_int("num_frames", num_frames, low=1)
    min_frames = check_int("min_frames", min_frames, low=1)
    max_frames = check_int("max_frames", max_frames, low=min_frames)
    group_size = check_int("group_size", group_size, low=1)
    spread = check_float("spread", spread, low=0.0)
    smoothing = check_float("smoothing", smoothing, low=0.0)
    noise = check_float("noise", noise, low=0.0)
    if (not isinstance(rate_range, (tuple, list)) or len(rate_range) != 2
            or not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rate_range)
            or not 0 < rate_range[0] <= rate_range[1]):
        raise ValueError("Invalid value received for argument `rate_range`. Expected a pair "
                         "(low, high) with 0 < low <= high. Received: rate_range={!r}".format(
                             rate_range))
    if not isinstance(variable_length, bool):
        raise ValueError("Invalid value received for argument `variable_length`. Expected a "
                         "bool. Received: variable_length={!r}".format(variable_length))
    hold_max = max(4, int(round(rate_range[1] * max_frames)))
    longest = 2 + max_label_length * (hold_max + 1)
    if num_frames < longest:
        raise ValueError(
            "Invalid value received for argument `num_frames`. Expected at least 2 + "
            "max_label_length * (max(4, round(rate_range[1] * max_frames)) + 1) = {}. "
            "Received: num_frames={}".format(longest, num_frames))
    prototypes = _speech_prototypes(vocab_size, feature_dim, group_size, spread, prototype_seed)
    rng = np.random.default_rng(seed)
    padding_rng = np.random.default_rng([seed, 1])  # padding noise: same utterances either way
    features = np.zeros((num_examples, num_frames, feature_dim), "float32")
    labels = np.zeros((num_examples, max_label_length), "int32")
    lengths = rng.integers(min_label_length, max_label_length + 1,
                           size=num_examples).astype("int32")
    frame_length = np.zeros(num_examples, "int32")
    for i in range(num_examples):
        tokens = [int(rng.integers(1, vocab_size + 1))]
        while len(tokens) < lengths[i]:   # no direct repeat: a draw among the V - 1 others
            nxt = int(rng.integers(1, vocab_size))
            tokens.append(nxt + (nxt >= tokens[-1]))
        labels[i, :lengths[i]] = tokens
        rate = rng.uniform(rate_range[0], rate_range[1])
        ids = [0] * int(rng.integers(0, 3))
        for j, token in enumerate(tokens):
            hold = max(4, int(round(rate * rng.integers(min_frames, max_frames + 1))))
            ids += [token] * hold
            if j + 1 < len(tokens):
                ids += [0] * int(rng.integers(0, 2))
        end = len(ids)
        clean = _smooth(prototypes[ids].astype("float64"), smoothing)
        features[i, :end] = clean + noise * rng.standard_normal(clean.shape)
        if not variable_length:
            features[i, end:] = noise * padding_rng.standard_normal((num_frames - end,
                                                                     feature_dim))
        frame_length[i] = end
    return {"features": features, "labels": labels, "label_length": lengths,
            "frame_length": frame_length, "prototypes": prototypes}
