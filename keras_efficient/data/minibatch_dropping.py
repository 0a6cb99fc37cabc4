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

Resuming (`keras.callbacks.BackupAndRestore`, or `load_weights` + `initial_epoch`):
the pass counter of the plain stream above lives in the dataset object, and the
pipeline runs ahead of the training step (prefetch), so neither the counter nor
a checkpoint of it says where training stopped; a rebuilt pipeline starts at
pass 0 again. For an exact resume give the stream its position in state the
checkpoint restores, the optimizer's step counter:

    train = drop_minibatches(batches, 0.5, seed=0, position=model.optimizer.iterations)
    model.fit(train, steps_per_epoch=smd_steps_per_epoch(num_batches, 0.5),
              callbacks=[keras.callbacks.BackupAndRestore(backup_dir)], ...)

The returned stream is then infinite (no `.repeat()`), and every iteration over
it starts after the first `position` kept batches of the same stateless
sequence, read when the iteration starts (in `fit`, after `BackupAndRestore`
has restored the counter). Each performed step consumes one kept batch and
adds one to `iterations`, so the resumed run trains on exactly the batches the
uninterrupted run trained on from that step on.

Note on Keras 2 and datasets of unknown cardinality (any filtered dataset): at
the end of each epoch the call that meets the end of the data still runs the
optimizer's data-independent updates (decoupled `weight_decay` and the
`iterations` counter) once. That is once per epoch, not per dropped batch; use
an L2 `kernel_regularizer` instead of the optimizer's `weight_decay` to avoid it.
"""

import random

import numpy as np

from keras_efficient.backend import tf
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["DropCounter", "drop_minibatches", "smd_steps_per_epoch"]

class DropCounter(tf.Module):
    """Bookkeeping of nominal vs performed (kept) mini-batches, in two int64 variables.

    The counts are updated as the pipeline produces batches, so they may run a
    prefetch buffer ahead of the training step within an epoch; after an epoch
    they are exact.

    Resuming: with `drop_minibatches(..., position=...)` the counts are a
    function of the position. Every iteration over the stream first sets them
    to the counts of the stateless sequence up to the `position` consumed kept
    batches (`kept = position`, `nominal` = the draws up to and including the
    last consumed kept batch), then counts on. A run resumed by
    `keras.callbacks.BackupAndRestore` therefore ends with the counts of the
    uninterrupted run, with nothing saved but the optimizer's step counter.
    Without `position` the counts are those of this object; to have a
    checkpoint carry them, call `track(model)` (then `BackupAndRestore`,
    `tf.train.Checkpoint(model=...)` and `save_weights` in the TensorFlow
    format save and restore them), though the plain stream itself restarts at
    pass 0 in a rebuilt pipeline (see the module docstring).

    Attributes:
      nominal: batches the input produced (what standard training would step on).
      kept: batches passed on to the step.
    """

    _CHECKPOINT_NAME = "keras_efficient_drop_counter"

    def __init__(self):
        super().__init__(name="drop_counter")
        self.nominal = tf.Variable(0, dtype=tf.int64, trainable=False, name="smd_nominal")
        self.kept = tf.Variable(0, dtype=tf.int64, trainable=False, name="smd_kept")

    def track(self, model):
        """Makes `model`'s checkpoints carry the counts (dependency `keras_efficient_drop_counter`).

        `model.weights` and H5 / `.keras` files are unchanged. Returns `model`.
        """
        if not hasattr(model, "_track_trackable"):
            raise invalid_argument("model", "a keras.Model", model, TypeError)
        model._track_trackable(self, name=self._CHECKPOINT_NAME, overwrite=True)
        return model

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


def drop_minibatches(dataset, rate=0.5, seed=None, counter=None, position=None):
    """Skips every element (a mini-batch) of `dataset` with probability `rate`.

    The draw for batch i of epoch e (the e-th pass over `dataset`) is the
    stateless u = `tf.random.stateless_uniform([], seed=(seed, e·2^32 + i))`;
    the batch is kept iff u >= rate. The same seed gives the same batches in every
    run and context; each epoch draws afresh.

    Without `position`, every iteration over the returned dataset is one pass,
    and e counts the iterations of this dataset object (iterating it outside of
    training, e.g. to inspect it, also counts as an epoch). Not exact on resume:
    a rebuilt pipeline starts at e = 0 (see the module docstring).

    With `position` (an integer scalar variable, normally
    `model.optimizer.iterations`), the returned dataset is the infinite
    sequence of kept batches of passes e = 0, 1, 2, ..., and every iteration
    over it starts after its first `position` elements, `position` being read
    when the iteration starts. Finding the start evaluates only the draws (not
    the batches) of the skipped positions, plus the skipped batches of the one
    pass it starts in. Exact on resume as long as `position` counts the kept
    batches consumed before (true for `optimizer.iterations` when this stream
    is the model's only training input, fed with `steps_per_epoch`). Under a
    `tf.distribute` strategy the variable is read in cross-replica context.

    Args:
      dataset: a `tf.data.Dataset` of mini-batches (batch it first); with
        `position`, of known finite cardinality
        (`tf.data.experimental.assert_cardinality` declares it).
      rate: drop probability in [0, 1) (the paper uses 0.5).
      seed: an integer seed >= 0 for reproducible drops, or None (a random seed;
        pass a seed when resuming, or the rebuilt pipeline draws other batches).
      counter: an optional `DropCounter` updated with nominal and kept batches.
        With `position`, every iteration first sets it to the counts up to
        `position`, so its totals are exact after a resume.
      position: optional integer scalar `tf.Variable`: the number of kept
        batches already consumed.

    Returns:
      The filtered `tf.data.Dataset` with the same element spec.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise invalid_argument("dataset", "a tf.data.Dataset", type(dataset).__name__, TypeError)
    rate = check_float("rate", rate, low=0.0, high=1.0, high_inclusive=False)
    seed = check_int("seed", seed, low=0, allow_none=True)
    if counter is not None and not isinstance(counter, DropCounter):
        raise invalid_argument("counter", "a DropCounter or None", counter, TypeError)
    if position is not None:
        if (not isinstance(position, tf.Variable) or not position.dtype.is_integer
                or position.shape.rank != 0):
            raise invalid_argument("position", "an integer scalar tf.Variable (e.g. "
                                   "model.optimizer.iterations) or None", position, TypeError)
        num_batches = tf.get_static_value(dataset.cardinality())
        if num_batches is None or num_batches <= 0:
            raise invalid_argument(
                "dataset", "a dataset of known finite, non-zero cardinality when `position` is "
                "given (declare it with tf.data.experimental.assert_cardinality)",
                "cardinality {}".format(num_batches))
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 31)
    threshold = tf.constant(rate, tf.float32)
    seed_t = tf.constant(seed, tf.int64)

    def per_epoch(e):
        return dataset.enumerate().map(lambda i, batch: (e, i, batch))

    def kept(e, i):
        u = tf.random.stateless_uniform([], seed=tf.stack([seed_t, e * (2 ** 32) + i]))
        return u >= threshold

    def keep(e, i, batch):
        decision = kept(e, i)
        if counter is None:
            return decision
        updates = [counter.nominal.assign_add(1),
                   counter.kept.assign_add(tf.cast(decision, tf.int64))]
        with tf.control_dependencies(updates):
            return tf.identity(decision)

    if position is not None:
        n = tf.constant(int(num_batches), tf.int64)
        endless = np.iinfo(np.int64).max

        def passes_from(e0, i0):
            def one_pass(e):
                start = tf.where(tf.equal(e, e0), i0, tf.constant(0, tf.int64))
                return dataset.enumerate().skip(start).map(lambda i, batch: (e, i, batch))
            return tf.data.Dataset.range(e0, endless).flat_map(one_pass)

        def from_position(_):
            consumed = tf.cast(tf.convert_to_tensor(position), tf.int64)
            # Index (over all passes) just after the last consumed kept batch, from the
            # draws alone; the stream goes on from there and filters as usual.
            last = (tf.data.Dataset.range(endless)
                    .filter(lambda j: kept(j // n, j % n))
                    .skip(tf.maximum(consumed - 1, 0)).take(1))
            start = last.map(lambda j: tf.where(consumed > 0, j + 1, tf.constant(0, tf.int64)))
            if counter is not None:
                def resync(j):
                    with tf.control_dependencies([counter.nominal.assign(j),
                                                  counter.kept.assign(consumed)]):
                        return tf.identity(j)
                start = start.map(resync)
            return start.flat_map(lambda j: passes_from(j // n, j % n))

        stream = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(from_position)
        return stream.filter(keep).map(lambda e, i, batch: batch)

    epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="smd_epoch")
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
