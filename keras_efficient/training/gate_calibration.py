"""Inference thresholds of SLU gates, calibrated in inference mode to the training open rates.

A gate's probability depends on its block's input, and that input differs
between a training pass (BatchNormalization on batch statistics) and an
inference pass (moving statistics). Early in training, or whenever a network's
gate probabilities lie close together, that shift moves every sample across a
threshold θ learned in training at once, and an inference pass then runs a
block for all samples or for none. `calibrate_gates` sets each gated block's
`threshold` from an inference-mode pass instead:

    θ_k = mean over the calibration batches b of cut_k(b)

where cut_k(b) is the threshold logit that opens round(r_k · n_b) of batch b's
samples (`keras_efficient.layers.gate_decisions.rank_decisions`) and r_k is the
open rate block k had in training. During the pass every block already decides
by that rank, so block k is calibrated on the inputs the calibrated blocks
before it produce. The mean of per-batch cuts is an estimate of the
(1 − r_k)-quantile of the logits; it is exact for one batch.
"""

from keras_efficient.backend import tf
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["calibrate_gates", "gated_blocks"]


class CalibrationPass:
    """What a `GatedResidualBlock` reads while a calibration pass runs (plain object)."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.sums = tf.Variable(tf.zeros([2], tf.float32), trainable=False)

    def record(self, cut, count):
        """Adds one batch's cut (nothing for an empty batch: `count` 0)."""
        valid = tf.cast(count > 0, tf.float32)
        return self.sums.assign_add(tf.stack([valid * tf.cast(cut, tf.float32), valid]))

    def threshold(self):
        total, count = self.sums.numpy().tolist()
        return total / count if count > 0 else None


def gated_blocks(model):
    """`model`'s top-level `GatedResidualBlock`s, in order (ValueError if there is none)."""
    from keras_efficient.layers.gated_residual import GatedResidualBlock  # circular import

    blocks = [layer for layer in model.layers if isinstance(layer, GatedResidualBlock)]
    if not blocks:
        raise ValueError("calibrate_gates() needs a model with GatedResidualBlock layers "
                         "(top-level); model `{}` has none.".format(model.name))
    return blocks


def _rates_by_block(blocks, open_rates):
    if isinstance(open_rates, dict):
        missing = [b.name for b in blocks if b.name not in open_rates]
        if missing:
            raise invalid_argument("open_rates", "a rate for every gated block (missing: {})"
                                   .format(missing), sorted(open_rates))
        rates = [open_rates[b.name] for b in blocks]
    else:
        rates = list(open_rates)
        if len(rates) != len(blocks):
            raise invalid_argument("open_rates", "{} rates, one per gated block".format(
                len(blocks)), rates)
    return [check_float("open_rates", r, low=0.0, high=1.0) for r in rates]


def calibrate_gates(model, data, open_rates, steps=None):
    """Sets each gated block's `threshold` so that inference opens it at its training rate.

    Args:
      model: a built model with top-level `GatedResidualBlock`s.
      data: a `tf.data.Dataset` (or any iterable) of input batches, or of
        `(inputs, ...)` tuples whose first element is the input; a few batches
        of training data suffice (e.g. 1,024 images).
      open_rates: the open rate r_k to reproduce for each block: a dict block
        name → rate, or a sequence in block order (e.g. the mean of each block's
        `<block>_gate_rate` over the last training epoch).
      steps: the number of batches to use (None: all of `data`; pass it for a
        repeating dataset, which would never end).

    Returns:
      A dict block name → the new threshold θ_k (a logit).

    Raises:
      ValueError: a model without gated blocks, rates missing or outside [0, 1],
        or data without a batch.
    """
    blocks = gated_blocks(model)
    rates = _rates_by_block(blocks, open_rates)
    if steps is not None:
        steps = check_int("steps", steps, low=1)
    passes = [CalibrationPass(r) for r in rates]
    for block, calibration in zip(blocks, passes):
        block.budget_slot.calibration = calibration

    @tf.function
    def forward(x):
        return model(x, training=False)

    try:
        count = 0
        for batch in data:
            if steps is not None and count >= steps:
                break
            forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
            count += 1
    finally:
        for block in blocks:
            block.budget_slot.calibration = None
    if count == 0:
        raise ValueError("calibrate_gates() got no batch from `data`.")
    result = {}
    for block, calibration in zip(blocks, passes):
        threshold = calibration.threshold()
        block.threshold.assign(threshold)
        result[block.name] = threshold
    return result
