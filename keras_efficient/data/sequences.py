"""A synthetic sequence-to-label task for CTC models.

Each token of a vocabulary 1..V has a fixed random prototype feature vector.
An utterance is a random token string of length 1..L; each token is held for a
random number of frames (`min_frames`..`max_frames`) and consecutive tokens are
separated by 0..2 "silence" frames (a zero prototype). The rest of the fixed
`num_frames` is silence, so every example has the same static shape. Gaussian
noise of standard deviation `noise` is added to every frame. Token id 0 is the
padding value in `labels` and the CTC blank.
"""

import numpy as np

from keras_efficient.utils.validation import check_float, check_int

__all__ = ["make_ctc_sequences"]


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
