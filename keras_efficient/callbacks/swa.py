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


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the trainable weights from `start_epoch` on and swaps the average in at the end.

    After epoch e >= start_epoch (0-based; every `frequency` epochs) the running
    mean w̄ ← w̄ + (w − w̄)/n over snapshots n = 1, 2, ... is updated. At the end
    of training the trainable weights are replaced by w̄ and, when the model has
    BatchNormalization layers, their statistics are re-estimated with one pass
    over `data` (`reestimate_batchnorm`), since the averaged weights change every
    layer's input distribution.

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
        self.num_snapshots = 0
        self._average = None

    def on_train_begin(self, logs=None):
        if self.reestimate_bn and self.data is None and _batchnorm_layers(self.model):
            raise ValueError(
                "StochasticWeightAveraging: the model has BatchNormalization layers; pass "
                "`data=` (the training batches) to re-estimate their statistics, or "
                "`reestimate_bn=False`.")
        self.num_snapshots = 0
        self._average = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch or (epoch - self.start_epoch) % self.frequency:
            return
        weights = [np.asarray(w.numpy(), np.float32) for w in self.model.trainable_weights]
        self.num_snapshots += 1
        if self._average is None:
            self._average = [w.copy() for w in weights]
        else:
            n = float(self.num_snapshots)
            for avg, w in zip(self._average, weights):
                avg += (w - avg) / n
        if logs is not None:
            logs["swa_snapshots"] = self.num_snapshots

    def on_train_end(self, logs=None):
        if self._average is None:
            tf.get_logger().warning("StochasticWeightAveraging: training ended before "
                                    "start_epoch=%d; weights left unchanged.", self.start_epoch)
            return
        for variable, avg in zip(self.model.trainable_weights, self._average):
            variable.assign(avg.astype(variable.dtype.as_numpy_dtype))
        if self.reestimate_bn and _batchnorm_layers(self.model):
            reestimate_batchnorm(self.model, self.data, self.bn_steps)

    def average(self):
        """The current average (a list of arrays), or None before the first snapshot."""
        return None if self._average is None else [a.copy() for a in self._average]


def _check_data(data):
    if data is not None and not hasattr(data, "__iter__"):
        raise invalid_argument("data", "a tf.data.Dataset or an iterable of batches", data,
                               TypeError)
