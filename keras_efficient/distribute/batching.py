"""Static-shape batches and `steps_per_execution` checks (needed on IPUs, fine everywhere)."""

import numpy as np

from keras_efficient.backend import tf
from keras_efficient.utils.validation import check_bool, check_int

__all__ = ["static_batches", "batches_per_epoch", "check_steps_per_execution"]


def static_batches(x, y=None, batch_size=32, shuffle=False, seed=None, repeat=False):
    """A `tf.data.Dataset` of equally sized batches (`drop_remainder=True`).

    IPUs compile one program per shape, so a last, smaller batch would either fail
    or trigger a second compilation; the remainder is dropped instead.

    Args:
      x: array (or dict/tuple of arrays) of inputs, first dimension N.
      y: optional targets with first dimension N.
      batch_size: examples per batch (per replica times replicas, as for `fit`).
      shuffle: shuffle every epoch (with `seed`).
      seed: shuffle seed.
      repeat: repeat forever (then pass `steps_per_epoch` to `fit`).

    Returns:
      The dataset, with fully defined batch dimension.

    Raises:
      ValueError: when there are fewer than `batch_size` examples.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("shuffle", shuffle)
    check_bool("repeat", repeat)
    n = len(tf.nest.flatten(x)[0])
    if n < batch_size:
        raise ValueError(
            "static_batches needs at least one full batch: {} examples < batch_size={}".format(
                n, batch_size))
    data = x if y is None else (x, y)
    data = tf.nest.map_structure(
        lambda a: a if np.asarray(a).dtype != np.float64 else np.asarray(a, np.float32), data)
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(2)


def batches_per_epoch(num_examples, batch_size, num_replicas=1):
    """Full batches per epoch and per replica: N // (batch_size * num_replicas)."""
    num_examples = check_int("num_examples", num_examples, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    num_replicas = check_int("num_replicas", num_replicas, low=1)
    return num_examples // (batch_size * num_replicas)


def check_steps_per_execution(steps_per_execution, steps_per_epoch, num_replicas=1):
    """Validates `steps_per_execution` for `compile` and returns it.

    On IPUs `steps_per_execution` counts steps per replica and must divide the
    batches of an epoch seen by each replica; the same rule is harmless elsewhere
    (Keras would otherwise run a shorter last execution).

    Args:
      steps_per_execution: the value for `model.compile`.
      steps_per_epoch: batches per epoch (all replicas together).
      num_replicas: data-parallel replicas (on IPUs see `ipu_replica_count`).

    Raises:
      ValueError: with the valid values in the message.
    """
    steps_per_execution = check_int("steps_per_execution", steps_per_execution, low=1)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
    num_replicas = check_int("num_replicas", num_replicas, low=1)
    if steps_per_epoch % num_replicas:
        raise ValueError(
            "steps_per_epoch={} is not divisible by the number of replicas {}.".format(
                steps_per_epoch, num_replicas))
    per_replica = steps_per_epoch // num_replicas
    if per_replica % steps_per_execution:
        valid = [d for d in range(1, per_replica + 1) if per_replica % d == 0]
        raise ValueError(
            "Invalid value received for argument `steps_per_execution`. Expected a divisor of "
            "the {} batches per epoch per replica ({} batches / {} replicas): one of {}. "
            "Received: steps_per_execution={}".format(
                per_replica, steps_per_epoch, num_replicas, valid, steps_per_execution))
    return steps_per_execution
