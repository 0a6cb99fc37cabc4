"""A callback that calibrates SLU gates' inference thresholds during and after `fit`."""

from keras_efficient.backend import keras
from keras_efficient.training.gate_calibration import calibrate_gates, gated_blocks
from keras_efficient.utils.validation import check_int

__all__ = ["GateCalibration"]


class GateCalibration(keras.callbacks.Callback):
    """Runs `calibrate_gates` before each validation and at the end of training.

    The open rate r_k reproduced for block k is its `<block>_gate_rate` metric
    of the current training epoch (the mean over the epoch's steps so far, as
    Keras logs it). Before a validation pass inside `fit` the thresholds are
    calibrated and, after it, put back (a `SkipBudget` or a rank-decision
    block goes on training from its own θ); at the end of training they are
    calibrated and kept, so `evaluate`, `predict` and a saved model decide with
    them.

    Order: put it after `StochasticWeightAveraging` (its BatchNormalization
    re-estimate at the end of training changes the gates' inputs; it also runs
    the gated blocks in training mode, which moves their training state, so the
    calibration has to come after it) and after callbacks that restore weights
    at the end of training (`EarlyStopping(restore_best_weights=True)`); a
    `ModelCheckpoint` saved during training holds training's thresholds (call
    `calibrate_gates` on a model loaded from it). With threshold decisions and a
    `SkipBudget`, training again after calibration starts from block 0's
    calibrated θ as the common threshold.

    Args:
      data: a few batches of training inputs (see `calibrate_gates`; a
        repeating dataset needs `steps`).
      steps: the number of batches of `data` to use (None: all).
      during_training: also calibrate for the validation passes inside `fit`.
    """

    def __init__(self, data, steps=None, during_training=True):
        super().__init__()
        self.data = data
        self.steps = None if steps is None else check_int("steps", steps, low=1)
        self.during_training = bool(during_training)
        self._supports_tf_logs = True
        self._logs = None
        self._saved = None
        self.thresholds = None

    def _rates(self):
        rates = {}
        logs = self._logs or {}
        for layer in gated_blocks(self.model):
            value = logs.get(layer.name + "_gate_rate")
            if value is None:
                value = layer.open_fraction
            rates[layer.name] = min(1.0, max(0.0, float(value)))
        return rates

    def _calibrate(self):
        self.thresholds = calibrate_gates(self.model, self.data, self._rates(), steps=self.steps)

    def on_train_begin(self, logs=None):
        self._logs = None

    def on_train_batch_end(self, batch, logs=None):
        self._logs = logs

    def on_test_begin(self, logs=None):
        if not self.during_training or self._logs is None:
            return  # an evaluate() outside fit, or no training step yet
        self._saved = [(layer, float(layer.threshold.numpy()))
                       for layer in gated_blocks(self.model)]
        self._calibrate()

    def on_test_end(self, logs=None):
        if self._saved is not None:
            for layer, value in self._saved:
                layer.threshold.assign(value)
            self._saved = None

    def on_train_end(self, logs=None):
        if self._logs is not None:
            self._calibrate()
        self._logs = None
