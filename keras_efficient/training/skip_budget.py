"""A compute budget for SLU gates: gated training that skips the share of block FLOPs asked for.

`skip_budget(model, target_skip)` attaches a `SkipBudget` to a built model made of
`GatedResidualBlock`s (E²-Train Sec. 3.2, SkipNet gates). A plain `compile` +
`fit` then trains the gates so that the FLOPs-weighted fraction of the gated
blocks' FLOPs that is skipped is `target_skip` (see `SkipBudget` for the
precise definition and the controller).
"""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.pruning.budget import BudgetValue
from keras_efficient.utils.attachment import attach_to_model
from keras_efficient.utils.validation import check_float

__all__ = ["SkipBudget", "get_skip_budget", "skip_budget"]

_ATTRIBUTE = "_keras_efficient_skip_budget"


@register_serializable
class SkipBudget(keras.layers.Layer):
    """Drives the SLU gates of a model to a target skip ratio of block FLOPs (see `skip_budget`).

    Quantities, per training step t, with B_k the gated blocks, F_k their FLOPs
    per sample and w_k = F_k / Σ_j F_j:

        r_k(t) = fraction of the batch whose gate k is open (hard decisions),
        C(t)   = Σ_k w_k · r_k(t)   (executed fraction of the gated blocks' FLOPs),
        s(t)   = 1 − C(t)           (skip ratio of the gated blocks' FLOPs).

    The constraint is C = 1 − s*, s* = `target_skip`, with the violation
    e(t) = C(t) − (1 − s*). Eq. (1)'s regulariser α·C(W, G) becomes an
    (augmented) Lagrangian

        L = task loss + μ · Σ_k w_k · mean_batch(d̂_k),   μ = α + λ + ρ · e(t − 1)

    whose per-block terms the blocks add themselves (`GatedResidualBlock` adds
    λ + ρ·e, read from this layer, to its `flops_weight` α; d̂_k is the
    straight-through decision, so the gradient reaches every gate). ρ·e is the
    gradient of the quadratic penalty (ρ/2)·e² taken at the last step's e: it
    damps the oscillation of the plain dual ascent. One global multiplier (not
    one per block): the blocks are free to share the skipping as the gates
    learn, only the FLOPs-weighted total is constrained. Once per training step,
    inside this layer's loss,

        λ ← λ + η · e(t),     θ ← θ + η_θ · e(t)

    λ is dual ascent on the equality constraint (unbounded below: a negative λ
    pushes gates open when α, or the gates' drift, skips too much). θ is the
    decision threshold of every gated block (its weight `threshold`, a logit
    offset: d_k = 1[g_k ≥ sigmoid(θ)]): the gradient terms teach the gates which
    samples to skip, θ calibrates how many. Both are frozen while the blocks'
    open phase lasts (`open_steps`: all gates forced open, C = 1), so they do
    not wind up. Under `tf.distribute`, r_k(t) is the mean over replicas (one
    global batch), so every replica makes the same update.

    Why θ: with the Lagrangian alone the gates' logits move through the user's
    optimizer, one learning-rate step at a time, and the skip oscillates around
    the target with a period of about a hundred steps. Measured on a small
    three-block model (Adam 0.01, 25 epochs of 8 steps, target 0.4): with
    η = 0.02, ρ = 1 and no θ the epoch means ranged 0.33-0.47 over the last ten
    epochs; with η_θ = 3 they ranged 0.39-0.42 (target 0.2: 0.19-0.22). The
    threshold acts on the decision directly, so the rate follows it within a
    step; it is saved with the model, so inference decides as training did.

    Achieved skip, as reported (the quantity the target is about): the mean of
    s(t) over the training steps of an epoch, the steps of the open phase not
    counted. It is the metric `skip_budget_skip` of `fit`'s logs, and after
    `fit` `result()["skip"]` is its value for the last epoch. Per block, the
    mean of r_k(t) over the same steps is in `result()["open_rates"]` (and in
    the logs as each block's `<block>_gate_rate`, which also counts the open
    phase). These are rates of the training forward passes; an inference pass
    decides with the same gates and θ, but on BatchNormalization's moving
    statistics.

    Rank decisions (blocks built with `decision="rank"`; all blocks of one
    budget must share the mode): the budget sets how many samples each block
    opens instead of moving λ and θ. After each training step it reads m_k, the
    mean gate probability of block k in that step, and allocates the next
    step's capacities by water filling (`allocate`):

        c_k = min(1, s · m_k),   s such that Σ_k w_k c_k = 1 − s*

    so the gates decide how the budget is shared between blocks (a block the
    task needs keeps its gates high and gets a larger share, up to every
    sample) and which samples run each block, while the executed fraction is
    the target at every step up to the rounding of round(c_k · n). λ, e and the
    common θ stay as they are (each block's θ then follows its own cut, for
    inference; see `GatedResidualBlock`).

    State (saved in checkpoints): `multiplier` (λ, float32), `violation` (e of
    the last step), `last_step` (int64, the blocks' `gate_step` at the last
    update, so λ and θ move only when that step has advanced: once per training
    step, never in `evaluate` or `predict`, also with `steps_per_execution > 1`),
    `epoch_sums` (what `result()` reports), and `gate_means` (m_k) and
    `capacities` (c_k, used by rank decisions only), all with aggregation
    `ONLY_FIRST_REPLICA`; θ is the blocks' weight `threshold` and the step their
    weight `gate_step`, so they are saved with the model itself.

    Metrics (in `fit`'s logs): `skip_budget_skip` (epoch mean of s(t)),
    `skip_budget_lambda` (λ at the last step).

    Args:
      target_skip: s* in [0, 1), the skip ratio of gated-block FLOPs to reach.
      multiplier_rate: η > 0, the dual step size.
      penalty: ρ >= 0, the weight of the quadratic penalty.
      threshold_rate: η_θ >= 0, the step size of the threshold (0: fixed θ, the
        Lagrangian alone).
      initial_multiplier: λ at the start.

    Call arguments:
      inputs: any tensor; returned unchanged (the budget acts through the blocks'
        losses and its own `budget_loss`).

    Input shape:
      Any.

    Output shape:
      Same as the input.
    """

    def __init__(self, target_skip, multiplier_rate=0.02, penalty=1.0, threshold_rate=2.0,
                 initial_multiplier=0.0, **kwargs):
        super().__init__(**kwargs)
        self.target_skip = check_float("target_skip", target_skip, low=0.0, high=1.0,
                                       high_inclusive=False)
        self.multiplier_rate = check_float("multiplier_rate", multiplier_rate, low=0.0,
                                           low_inclusive=False)
        self.penalty = check_float("penalty", penalty, low=0.0)
        self.threshold_rate = check_float("threshold_rate", threshold_rate, low=0.0)
        self.initial_multiplier = check_float("initial_multiplier", initial_multiplier)
        self._binding = None

    def build(self, input_shape=None):
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.multiplier = self.add_weight(
            name="multiplier", shape=(), dtype=tf.float32, trainable=False, aggregation=first,
            initializer=keras.initializers.Constant(self.initial_multiplier),
            experimental_autocast=False)
        self.last_step = self.add_weight(name="last_step", shape=(), dtype=tf.int64,
                                         initializer="zeros", trainable=False, aggregation=first,
                                         experimental_autocast=False)
        self.violation = self.add_weight(name="violation", shape=(), dtype=tf.float32,
                                         initializer="zeros", trainable=False, aggregation=first,
                                         experimental_autocast=False)
        self.skip_metric = keras.metrics.Mean("skip_budget_skip", dtype=tf.float32)
        self.lambda_metric = BudgetValue("skip_budget_lambda", dtype=tf.float32)
        self.budget_metrics = [self.skip_metric, self.lambda_metric]
        super().build(input_shape)

    # ------------------------------------------------------------------ binding

    def bind(self, blocks):
        """Reads the model: `blocks` are its `GatedResidualBlock`s, in order."""
        total = float(sum(b.counted_flops for b in blocks))
        if total <= 0.0:
            raise ValueError("The gated blocks count no FLOPs; pass `block_flops` to them.")
        self._binding = _Binding(blocks, [b.counted_flops / total for b in blocks])
        self.weights_by_block = list(self._binding.weights)
        self.open_steps = max(b.open_steps for b in blocks)
        decisions = sorted({getattr(b, "decision", "threshold") for b in blocks})
        if len(decisions) != 1:
            raise ValueError("The gated blocks of one skip budget must share one `decision` "
                             "mode; got {}.".format(decisions))
        self.decision = decisions[0]
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        # Rank decisions: m_k (mean gate probability of block k at the last training
        # step, written by the block) and c_k (the share of the batch block k opens).
        self.gate_means = self.add_weight(
            name="gate_means", shape=(len(blocks),), dtype=tf.float32, initializer="ones",
            trainable=False, aggregation=first, experimental_autocast=False)
        self.capacities = self.add_weight(
            name="capacities", shape=(len(blocks),), dtype=tf.float32,
            initializer=keras.initializers.Constant(1.0 - self.target_skip), trainable=False,
            aggregation=first, experimental_autocast=False)
        # Sums over the counted training steps of the current epoch (kept apart from the
        # metrics, which `evaluate` resets): s(t), r_k(t) and the number of steps.
        self.epoch_sums = self.add_weight(
            name="epoch_sums", shape=(len(blocks) + 2,), dtype=tf.float32, initializer="zeros",
            trainable=False, aggregation=first, experimental_autocast=False)

    def _require_bound(self):
        if getattr(self, "_binding", None) is None:
            raise ValueError("SkipBudget `{}` is not attached to a model: create it with "
                             "keras_efficient.training.skip_budget(model, ...).".format(self.name))
        return self._binding.blocks

    def multiplier_value(self):
        """μ = λ + ρ·e, float32 (read by the blocks in their forward pass)."""
        return self.multiplier + self.penalty * self.violation

    # ------------------------------------------------------------------ loss

    def allocate(self, gate_means):
        """Capacities c_k = min(1, s · m_k) with Σ_k w_k c_k = 1 − s* (rank decisions).

        Water filling: the blocks whose share would exceed 1 are opened fully and
        the rest of the budget is shared among the others in proportion to m_k.
        `gate_means` (m_k) are floored at 1e-6, so a block never gets a share of
        exactly 0 unless the budget is used up by fully open blocks.
        """
        w = tf.constant(self.weights_by_block, tf.float32)
        m = tf.maximum(tf.cast(gate_means, tf.float32), 1e-6)
        total = 1.0 - self.target_skip
        full = tf.zeros_like(m)
        for _ in range(len(self.weights_by_block)):
            remaining = total - tf.reduce_sum(w * full)
            scale = remaining / tf.maximum(tf.reduce_sum(w * m * (1.0 - full)), 1e-12)
            share = tf.where(full > 0.0, tf.ones_like(m), scale * m)
            full = tf.cast(share >= 1.0, tf.float32)
        return tf.clip_by_value(share, 0.0, 1.0)

    def capacity(self, index):
        """c_k of block `index` for the current step (rank decisions)."""
        return self.capacities[index]

    def record_gate_mean(self, index, value, valid=True):
        """Stores m_k, block `index`'s mean gate probability of this training step.

        `value` must be the same on every replica (the mean over the global batch);
        the whole vector is assigned, so the variable's `ONLY_FIRST_REPLICA`
        aggregation applies. Nothing changes when `valid` is False (an empty batch).
        """
        means = self.gate_means.read_value()
        updated = tf.tensor_scatter_nd_update(means, [[index]], [tf.cast(value, tf.float32)])
        return self.gate_means.assign(tf.where(valid, updated, means))

    def executed_fraction(self):
        """C of the last training step: Σ_k w_k · r_k from the blocks' `open_fraction`."""
        return self._executed(self._rates())

    def _rates(self):
        """[r_k] of the last training step (mean over replicas under a strategy)."""
        blocks = self._require_bound()
        rates = tf.stack([tf.cast(b.open_fraction.read_value(), tf.float32) for b in blocks])
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            rates = context.all_reduce(tf.distribute.ReduceOp.MEAN, rates)
        return rates

    def _executed(self, rates):
        return tf.reduce_sum(tf.constant(self.weights_by_block, tf.float32) * rates)

    def budget_loss(self):
        """Updates λ, e, θ, the sums and the metrics after a training step; its value is 0.

        Called by Keras (through `model.add_loss`) once per train and test step,
        after the forward pass (which wrote the blocks' `open_fraction` and
        advanced their `gate_step`). The Lagrangian's gradient terms are the
        blocks' own losses.
        """
        blocks = self._require_bound()
        step = blocks[0].gate_step.read_value()
        rates = self._rates()
        executed = self._executed(rates)
        violation = executed - (1.0 - self.target_skip)
        # The forward pass of this step ran at gate_step = step - 1: gates were free
        # iff step - 1 >= open_steps.
        counted = (step > self.last_step) & (step > self.open_steps)
        if self.decision == "rank":
            # The capacities meet the target by construction: no λ, e or θ to move. They
            # are allocated from the step that ends the open phase on (its m_k come from
            # gates that were not trained yet; the allocation follows them from then on).
            free = step >= self.open_steps
            updates = [
                self.capacities.assign(tf.where(free, self.allocate(self.gate_means.read_value()),
                                                self.capacities)),
                self.last_step.assign(tf.maximum(step, self.last_step)),
            ]
        else:
            rate = tf.where(counted, self.multiplier_rate, 0.0)
            threshold = blocks[0].threshold.read_value()
            threshold = threshold + tf.where(counted, self.threshold_rate, 0.0) * violation
            updates = [b.threshold.assign(threshold) for b in blocks] + [
                self.multiplier.assign_add(rate * violation),
                self.violation.assign(tf.where(counted, violation, self.violation)),
                self.last_step.assign(tf.maximum(step, self.last_step)),
            ]
        # The sums of `result()`: restarted at the first counted step after Keras reset
        # the metrics (a new epoch); untouched by evaluate/predict steps.
        weight = tf.cast(counted, tf.float32)
        keep = tf.cast(self.skip_metric.count > 0.0, tf.float32)
        row = tf.concat([[1.0 - executed], rates, [1.0]], axis=0)
        updates.append(self.epoch_sums.assign(
            tf.where(counted, keep * self.epoch_sums + row, self.epoch_sums)))
        with tf.control_dependencies(updates):
            updates.append(self.skip_metric.update_state(
                1.0 - executed, sample_weight=weight))
            updates.append(self.lambda_metric.update_state(self.multiplier.read_value()))
        with tf.control_dependencies(updates):
            return tf.zeros([], tf.float32)

    def result(self):
        """The budget's state now, as Python numbers.

        Returns:
          A dict: `target_skip`; `skip`, the mean of s(t) over the counted training
          steps of the current epoch (after `fit`: of its last epoch; `evaluate`
          does not change it; None before any counted step); `open_rates`, block
          name → mean of r_k(t) over the same steps; `flops_weights`, block name →
          w_k; `steps`, the number of those steps; `lambda`; `threshold` (the
          blocks' common θ); `step` (the blocks' step at the last update).
        """
        blocks = self._require_bound()
        sums = self.epoch_sums.numpy().astype(float)
        steps = sums[-1]
        mean = (lambda v: float(v / steps)) if steps > 0 else (lambda v: None)
        return {
            "target_skip": self.target_skip,
            "skip": mean(sums[0]),
            "open_rates": {b.name: mean(r) for b, r in zip(blocks, sums[1:-1])},
            "flops_weights": {b.name: w for b, w in zip(blocks, self.weights_by_block)},
            "steps": int(steps),
            "lambda": float(self.multiplier.numpy()),
            "threshold": float(blocks[0].threshold.numpy()),
            "step": int(self.last_step.numpy()),
        }

    def call(self, inputs):
        """Identity: the budget acts through the losses, not on a tensor."""
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "target_skip": self.target_skip,
            "multiplier_rate": self.multiplier_rate,
            "penalty": self.penalty,
            "threshold_rate": self.threshold_rate,
            "initial_multiplier": self.initial_multiplier,
        })
        return config


class _Binding:
    """What a budget reads from its model (a plain object: Keras neither tracks nor saves it)."""

    def __init__(self, blocks, weights):
        self.blocks = list(blocks)
        self.weights = list(weights)


def skip_budget(model, target_skip, multiplier_rate=0.02, penalty=1.0, threshold_rate=2.0,
                initial_multiplier=0.0, name="skip_budget"):
    """Attaches a compute budget to a built model with `GatedResidualBlock`s.

    After this call a plain `model.compile(...)` + `model.fit(...)` trains the
    gates so that the FLOPs-weighted skip ratio of the gated blocks is
    `target_skip` (see `SkipBudget`: one multiplier λ added to each block's α,
    updated by dual ascent on the executed fraction once per training step, and
    a common decision threshold θ updated by the same error). The achieved skip
    is the mean over an epoch's training steps (`skip_budget_skip` in the logs,
    `budget.result()["skip"]` after `fit`). Give the blocks an open phase
    (`gated_resnet(..., open_steps=N)`) to train the network with every gate
    open first; the budget waits for it to end.

    Each block's `flops_fraction` is set to FLOPs_k / Σ_j FLOPs_j (what
    `gated_resnet` does already), so the blocks' losses sum to μ·C.
    The budget is not a layer of the model's graph: it is a checkpoint
    dependency of the model named `skip_budget`, so `save_weights` /
    `load_weights`, `tf.train.Checkpoint` and `BackupAndRestore` save and
    restore λ and its step (the blocks' `gate_step` is a model weight);
    attach a budget to the model you restore into before loading. A saved
    model (`.keras`, SavedModel) reloads without it. Attach the budget to the
    model you train: after `convert_to_psg`, to the converted model. Call this
    before the first `fit` (a model already trained gets a new train function).

    Args:
      model: a built `keras.Model` with at least one top-level `GatedResidualBlock`.
      target_skip: s* in [0, 1), the skip ratio of the gated blocks' FLOPs.
      multiplier_rate: η, the dual step size of λ.
      penalty: ρ, the weight of the quadratic penalty (ρ/2)·e².
      threshold_rate: η_θ, the step size of the decision threshold θ in logits
        per unit of violation (0: the Lagrangian alone).
      initial_multiplier: λ at the start.
      name: name of the `SkipBudget`.

    Returns:
      The attached `SkipBudget`.

    Raises:
      ValueError: a model without gated blocks, or one that already has a budget;
        target_skip outside [0, 1).
    """
    from keras_efficient.layers.gated_residual import GatedResidualBlock  # circular import

    target_skip = check_float("target_skip", target_skip, low=0.0, high=1.0,
                              high_inclusive=False)
    if getattr(model, _ATTRIBUTE, None) is not None:
        raise ValueError("Model `{}` already has a skip budget ({}).".format(
            model.name, getattr(model, _ATTRIBUTE).name))
    blocks = [layer for layer in model.layers if isinstance(layer, GatedResidualBlock)]
    if not blocks:
        raise ValueError("skip_budget() needs a model with GatedResidualBlock layers (top-level); "
                         "model `{}` has none.".format(model.name))
    if not all(b.built for b in blocks):
        raise ValueError("skip_budget() needs a built model; call the model on an input first.")
    taken = [b.name for b in blocks if b.budget_slot.budget is not None]
    if taken:
        raise ValueError("Blocks {} already belong to a skip budget.".format(taken))
    with model.distribute_strategy.scope():
        budget = SkipBudget(target_skip, multiplier_rate=multiplier_rate, penalty=penalty,
                            threshold_rate=threshold_rate,
                            initial_multiplier=initial_multiplier, name=name)
        budget.build(None)
        budget.bind(blocks)
    for index, (block, weight) in enumerate(zip(blocks, budget.weights_by_block)):
        block.flops_fraction.assign(weight)
        block.budget_slot.budget = budget
        block.budget_slot.index = index
    attach_to_model(model, budget, "skip_budget", _ATTRIBUTE)
    return budget


def get_skip_budget(model):
    """The `SkipBudget` attached to `model`, or None."""
    return getattr(model, _ATTRIBUTE, None)
