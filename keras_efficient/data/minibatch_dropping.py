"""Stochastic mini-batch dropping (SMD, E²-Train Sec. 3.1).

Every mini-batch of an epoch is skipped with probability `rate` *in the input
pipeline*, so a dropped batch never reaches the training step: no forward, no
backward, no optimizer update (momentum, weight decay and `optimizer.iterations`
stay where they were). Other training protocols are unchanged; the energy ratio
of the paper is performed steps / nominal steps ≈ 1 − rate.

Using it with `model.fit`: Keras 2 fixes the number of steps of every epoch to
that of the first epoch when the input has unknown cardinality (and stops with
"Your input ran out of data" when a later epoch is shorter), while SMD's epochs
differ in length. Repeat the dropped stream and give the steps per epoch:

    train = drop_minibatches(batches, 0.5, seed=0).repeat()
    model.fit(train, steps_per_epoch=smd_steps_per_epoch(num_batches, 0.5), ...)

Every pass over `batches` is a new draw (a new epoch for the stateless seeds)
and a Keras epoch is then (1 − rate)·num_batches performed steps on average.

Note on Keras 2 and datasets of unknown cardinality (any filtered dataset): at
the end of each epoch the call that meets the end of the data still runs the
optimizer's data-independent updates (decoupled `weight_decay` and the
`iterations` counter) once. That is once per epoch, not per dropped batch; use
an L2 `kernel_regularizer` instead of the optimizer's `weight_decay` to avoid it.
"""

import random

from keras_efficient.backend import tf
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["DropCounter", "drop_minibatches", "smd_steps_per_epoch"]

class DropCounter:
    """Bookkeeping of nominal vs performed (kept) mini-batches, in two int64 variables.

    The counts are updated as the pipeline produces batches, so they may run a
    prefetch buffer ahead of the training step within an epoch; after an epoch
    they are exact.

    Attributes:
      nominal: batches the input produced (what standard training would step on).
      kept: batches passed on to the step.
    """

    def __init__(self):
        self.nominal = tf.Variable(0, dtype=tf.int64, trainable=False, name="smd_nominal")
        self.kept = tf.Variable(0, dtype=tf.int64, trainable=False, name="smd_kept")

    @property
    def dropped(self):
        return int(self.nominal.numpy() - self.kept.numpy())

    @property
    def energy_ratio(self):
        """Performed / nominal steps (1.0 before any batch)."""
        nominal = int(self.nominal.numpy())
        return float(self.kept.numpy()) / nominal if nominal else 1.0

    def reset(self):
        self.nominal.assign(0)
        self.kept.assign(0)

    def result(self):
        return {"nominal_steps": int(self.nominal.numpy()),
                "performed_steps": int(self.kept.numpy()),
                "dropped_steps": self.dropped, "energy_ratio": self.energy_ratio}


def drop_minibatches(dataset, rate=0.5, seed=None, counter=None):
    """Skips every element (a mini-batch) of `dataset` with probability `rate`.

    The draw for batch i of epoch e (the e-th iteration over the returned
    dataset) is the stateless u = `tf.random.stateless_uniform([], seed=(seed, e·2^32 + i))`;
    the batch is kept iff u >= rate. The same seed gives the same batches in every
    run and context; each epoch draws afresh. Iterating the returned dataset
    outside of training (e.g. to inspect it) also counts as an epoch.

    Args:
      dataset: a `tf.data.Dataset` of mini-batches (batch it first).
      rate: drop probability in [0, 1) (the paper uses 0.5).
      seed: an integer seed >= 0 for reproducible drops, or None (a random seed).
      counter: an optional `DropCounter` updated with nominal and kept batches.

    Returns:
      The filtered `tf.data.Dataset` with the same element spec.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise invalid_argument("dataset", "a tf.data.Dataset", type(dataset).__name__, TypeError)
    rate = check_float("rate", rate, low=0.0, high=1.0, high_inclusive=False)
    seed = check_int("seed", seed, low=0, allow_none=True)
    if counter is not None and not isinstance(counter, DropCounter):
        raise invalid_argument("counter", "a DropCounter or None", counter, TypeError)
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 31)
    epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="smd_epoch")
    threshold = tf.constant(rate, tf.float32)
    seed_t = tf.constant(seed, tf.int64)

    def per_epoch(e):
        return dataset.enumerate().map(lambda i, batch: (e, i, batch))

    def keep(e, i, batch):
        u = tf.random.stateless_uniform([], seed=tf.stack([seed_t, e * (2 ** 32) + i]))
        decision = u >= threshold
        if counter is None:
            return decision
        updates = [counter.nominal.assign_add(1),
                   counter.kept.assign_add(tf.cast(decision, tf.int64))]
        with tf.control_dependencies(updates):
            return tf.identity(decision)

    epochs = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: epoch.assign_add(1))
    out = epochs.flat_map(per_epoch).filter(keep).map(lambda e, i, batch: batch)
    out._smd_epoch_variable = epoch  # keeps the counter alive with the dataset
    return out


def smd_steps_per_epoch(num_batches, rate):
    """Expected performed steps of one SMD epoch, round((1 − rate)·num_batches), at least 1."""
    num_batches = check_int("num_batches", num_batches, low=1)
    rate = check_float("rate", rate, low=0.0, high=1.0, high_inclusive=False)
    return max(1, int(round((1.0 - rate) * num_batches)))
