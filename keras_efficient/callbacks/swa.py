"""Stochastic weight averaging with BatchNormalization re-estimation (used with PSG in E²-Train)."""

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.utils.validation import check_bool, check_int, invalid_argument

__all__ = ["StochasticWeightAveraging", "reestimate_batchnorm"]


def _batchnorm_layers(model):
    seen, out = set(), []
    for module in model.submodules:
        if isinstance(module, keras.layers.BatchNormalization) and id(module) not in seen:
            seen.add(id(module))
            out.append(module)
    return out


def _inputs_of(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict) and "x" in batch:
        return batch["x"]
    return batch


def _counting_call(layer):
    """`layer.call` setting momentum (n − 1)/n before the layer's n-th training-mode call."""
    call = layer.call
    count = [0]

    def counted(inputs, *args, **kwargs):
        training = kwargs.get("training", args[0] if args else None)
        if training is not None and bool(training):
            count[0] += 1
            layer.momentum = (count[0] - 1.0) / count[0]
        return call(inputs, *args, **kwargs)

    return counted


def reestimate_batchnorm(model, data, steps=None):
    """Sets every BatchNormalization's moving statistics to their average over `data`.

    One forward pass in training mode (as SWA's `bn_update`): on the t-th batch a
    BN layer actually runs on (t = 1..T, counted per layer), its momentum is set to
    (t − 1)/t, so after the pass moving_mean = (1/T) Σ_t mean_t and
    moving_variance = (1/T) Σ_t var_t, the plain average of the per-batch
    statistics Keras computes (the biased batch variance for rank-2 inputs; the
    fused rank-4 kernel applies Bessel's correction n/(n − 1)). Counting per layer
    matters when a block is skipped for a whole batch (a closed SLU gate, a
    dropped stochastic-depth block): its BN layers average only the batches they
    saw, and their statistics from before the pass do not enter. Momenta are
    restored afterwards. Runs eagerly.

    Args:
      model: a Keras model.
      data: a `tf.data.Dataset` or an iterable of batches (`x` or `(x, y, ...)`).
      steps: optional maximum number of batches.

    Returns:
      The number of batches used.
    """
    layers = _batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.call = _counting_call(layer)
    t = 0
    try:
        for batch in data:
            if steps is not None and t >= steps:
                break
            t += 1
            model(_inputs_of(batch), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            del layer.call
            layer.momentum = momentum
    if t == 0:
        raise ValueError("`data` gave no batch to re-estimate the BatchNormalization statistics.")
    return t


_STATE_NAME = "keras_efficient_swa"


class _SWAState(tf.Module):
    """The running average of SWA and its bookkeeping, as variables.

    Tracked by the model as the checkpoint dependency `keras_efficient_swa` (not
    as a layer or weight: `model.weights`, `get_weights` and H5 / `.keras` files
    are unchanged), so `tf.train.Checkpoint(model=...)`, `model.save_weights`
    in the TensorFlow format and `keras.callbacks.BackupAndRestore` save and
    restore it with the weights.
    """

    def __init__(self, weights):
        super().__init__(name="swa_state")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
        self.last_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="last_epoch")
        self.average = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False, name="average")
                        for w in weights]


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the trainable weights from `start_epoch` on and swaps the average in at the end.

    After epoch e >= start_epoch (0-based; every `frequency` epochs) the running
    mean w̄ ← w̄ + (w − w̄)/n over snapshots n = 1, 2, ... is updated. At the end
    of training the trainable weights are replaced by w̄ and, when the model has
    BatchNormalization layers, their statistics are re-estimated with one pass
    over `data` (`reestimate_batchnorm`), since the averaged weights change every
    layer's input distribution.

    State and resuming: w̄, the snapshot count n and the last snapshot's epoch
    are variables of a `tf.Module` the callback attaches to the model as the
    checkpoint dependency `keras_efficient_swa` (created on the model's
    distribution strategy); the callback only updates them. A checkpoint of the
    model therefore holds the average, and a run interrupted and resumed with
    `keras.callbacks.BackupAndRestore` (the default `save_freq="epoch"`, listed
    before or after this callback) ends with exactly the average of the
    uninterrupted run: when the restored checkpoint was written before this
    callback took the snapshot of its epoch, the snapshot is taken at the
    start of the next epoch from the restored weights, which are that epoch's
    end weights. A new `fit` whose first epoch is not after the last snapshot
    (e.g. a second `fit` from epoch 0) starts a new average; one that continues
    (`initial_epoch` after it) extends it. With batch-level `save_freq` the
    average is exact when the last checkpoint was taken after an epoch's
    snapshot (any batch of a later epoch); a checkpoint written during the
    last batch of an epoch, before the snapshot, resumes without that snapshot.

    Args:
      start_epoch: first epoch (0-based) whose end weights enter the average.
      data: batches for the BatchNormalization pass (required when the model has
        BatchNormalization layers and `reestimate_bn`).
      frequency: snapshot every `frequency` epochs.
      reestimate_bn: re-estimate BatchNormalization statistics at the end.
      bn_steps: optional maximum number of batches for the re-estimation.

    Attributes:
      num_snapshots: how many snapshots were averaged.
    """

    def __init__(self, start_epoch, data=None, frequency=1, reestimate_bn=True, bn_steps=None):
        super().__init__()
        self.start_epoch = check_int("start_epoch", start_epoch, low=0)
        self.frequency = check_int("frequency", frequency, low=1)
        self.reestimate_bn = check_bool("reestimate_bn", reestimate_bn)
        self.bn_steps = check_int("bn_steps", bn_steps, low=1, allow_none=True)
        _check_data(data)
        self.data = data

    # -------------------------------------------------------------- state

    def _state(self, create=True):
        """The model's `_SWAState`, created and tracked on first use; None before weights exist."""
        model = self.model
        if model is None:
            return None
        state = model._lookup_dependency(_STATE_NAME)
        weights = model.trainable_weights
        if state is None:
            if not create or not weights:
                return None
            with model.distribute_strategy.scope():
                state = _SWAState(weights)
            model._track_trackable(state, name=_STATE_NAME, overwrite=True)
        shapes = [tuple(w.shape) for w in weights]
        if [tuple(a.shape) for a in state.average] != shapes:
            raise ValueError(
                "StochasticWeightAveraging: the model's trainable weights ({} tensors) no longer "
                "match its SWA average ({} tensors); the set of trainable weights changed "
                "during training.".format(len(shapes), len(state.average)))
        return state

    def _due(self, epoch):
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.frequency == 0

    def _snapshot(self, state, epoch):
        n = int(state.count.numpy()) + 1
        for avg, w in zip(state.average, self.model.trainable_weights):
            value = tf.cast(tf.convert_to_tensor(w), avg.dtype)
            if n == 1:
                avg.assign(value)
            else:
                avg.assign_add((value - avg) / tf.cast(n, avg.dtype))
        state.count.assign(n)
        state.last_epoch.assign(epoch)

    @property
    def num_snapshots(self):
        state = self._state(create=False) if self.model is not None else None
        return 0 if state is None else int(state.count.numpy())

    # -------------------------------------------------------------- hooks

    def on_train_begin(self, logs=None):
        if self.reestimate_bn and self.data is None and _batchnorm_layers(self.model):
            raise ValueError(
                "StochasticWeightAveraging: the model has BatchNormalization layers; pass "
                "`data=` (the training batches) to re-estimate their statistics, or "
                "`reestimate_bn=False`.")
        self._state()

    def on_epoch_begin(self, epoch, logs=None):
        state = self._state()
        if state is None:
            return
        last = int(state.last_epoch.numpy())
        if int(state.count.numpy()) and last >= epoch:
            # A new run of epochs, not a continuation: start a new average.
            state.count.assign(0)
            state.last_epoch.assign(-1)
            last = -1
        previous = epoch - 1
        if previous >= 0 and self._due(previous) and last < previous:
            # Resumed from a checkpoint written before the previous epoch's snapshot:
            # the restored weights are that epoch's end weights.
            self._snapshot(state, previous)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        state = self._state()
        if state is None:  # a model without trainable weights
            return
        if int(state.last_epoch.numpy()) < epoch:
            self._snapshot(state, epoch)
        if logs is not None:
            logs["swa_snapshots"] = int(state.count.numpy())

    def on_train_end(self, logs=None):
        state = self._state(create=False)
        if state is None or not int(state.count.numpy()):
            tf.get_logger().warning("StochasticWeightAveraging: training ended before "
                                    "start_epoch=%d; weights left unchanged.", self.start_epoch)
            return
        for variable, avg in zip(self.model.trainable_weights, state.average):
            variable.assign(tf.cast(avg, variable.dtype))
        if self.reestimate_bn and _batchnorm_layers(self.model):
            reestimate_batchnorm(self.model, self.data, self.bn_steps)

    def average(self):
        """The current average (a list of arrays), or None before the first snapshot."""
        state = self._state(create=False) if self.model is not None else None
        if state is None or not int(state.count.numpy()):
            return None
        return [np.array(a.numpy()) for a in state.average]


def _check_data(data):
    if data is not None and not hasattr(data, "__iter__"):
        raise invalid_argument("data", "a tf.data.Dataset or an iterable of batches", data,
                               TypeError)
