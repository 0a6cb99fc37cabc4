"""Per-sample gate decisions by rank, for SLU gates (`GatedResidualBlock(decision="rank")`).

A threshold decision d_i = 1[g_i >= sigmoid(θ)] switches whole batches when
the gate probabilities g_i of a batch are close to each other (early in
training they are), and the BatchNormalization statistics of the layers after
a gated block then mix batches that ran it with batches that skipped it. A
rank decision opens a set number of samples in every batch, those whose gates
are highest:

    k = round(r · n),   d_i = 1[rank_i < k]   (rank 0: the highest logit(g_i))

so every batch runs the block on k of its n samples. The threshold logit that
separates them, the midpoint of the k-th and the (k+1)-th highest logits, is
the "cut"; it is what an inference pass uses (see `GatedResidualBlock`).
"""

from keras_efficient.backend import tf

__all__ = ["gate_logits", "rank_decisions"]

_EPS = 1e-7


def gate_logits(prob):
    """logit(g) = log g − log(1 − g) in float32, g clipped to [1e-7, 1 − 1e-7]."""
    p = tf.clip_by_value(tf.cast(prob, tf.float32), _EPS, 1.0 - _EPS)
    return tf.math.log(p) - tf.math.log1p(-p)


def rank_decisions(prob, rate):
    """Opens the round(rate · n) samples of highest gate probability.

    Args:
      prob: `[n]` gate probabilities.
      rate: scalar in [0, 1], the share of the batch to open.

    Returns:
      `(hard, cut)`: `hard` `[n]` float32 0/1 decisions (ties broken by batch
      position, earlier first); `cut` the float32 threshold logit between the
      opened and the closed samples: the midpoint of the k-th and (k+1)-th
      highest logits, or, when every sample is opened (k = n), the lowest logit
      minus 1 (when none is, k = 0, the highest plus 1), so that
      1[logit(g_i) >= cut] reproduces `hard` up to ties.
    """
    logits = gate_logits(prob)
    n = tf.shape(logits)[0]
    k = tf.cast(tf.round(tf.cast(rate, tf.float32) * tf.cast(n, tf.float32)), tf.int32)
    k = tf.clip_by_value(k, 0, n)
    order = tf.argsort(logits, direction="DESCENDING", stable=True)
    ranks = tf.scatter_nd(order[:, None], tf.range(n), tf.expand_dims(n, 0))
    hard = tf.cast(ranks < k, tf.float32)
    # One padding entry keeps the gathers below in range for an empty batch.
    ordered = tf.concat([tf.gather(logits, order), tf.zeros([1], tf.float32)], axis=0)
    last = tf.maximum(n - 1, 0)
    above = tf.gather(ordered, tf.clip_by_value(k - 1, 0, last))
    below = tf.gather(ordered, tf.clip_by_value(k, 0, last))
    cut = tf.where(k >= n, below - 1.0, tf.where(k <= 0, above + 1.0, 0.5 * (above + below)))
    # An empty batch has no logits: the cut is then meaningless and set to 0.
    cut = tf.where(n > 0, cut, 0.0)
    return hard, cut
