"""Selective layer update (SLU, E²-Train Sec. 3.2): a residual block behind a SkipNet gate."""


from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.recurrent_gate import RecurrentGate, _set_context, gate_context
from keras_efficient.training.flops import residual_block_flops
from keras_efficient.utils.validation import (
    assert_finite,
    check_choice,
    check_float,
    check_input_rank,
    check_int,
    check_last_dim_defined,
    invalid_argument,
)

__all__ = ["GatedResidualBlock"]


def _usable_state(state):
    """False for a state left by another graph (e.g. Keras's per-layer shape-inference graphs)."""
    t = state[0]
    if tf.executing_eagerly():
        return not tf.is_symbolic_tensor(t)
    return tf.is_symbolic_tensor(t) and t.graph is tf.compat.v1.get_default_graph()


@tf.custom_gradient
def _pool(x):
    """(mean of x over height and width in float32, x): the gate's input and x itself.

    Backward: ∂L/∂x + ∂L/∂pooled / (H·W) broadcast over height and width, as one
    broadcasting add (TensorFlow's own mean gradient tiles it to full size, scales
    it and adds it, three full-size passes).
    """
    pooled = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2])

    def grad(g_pooled, g_x):
        if g_pooled is None:
            return g_x
        size = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        g_mean = tf.cast(g_pooled / size, x.dtype)[:, None, None, :]
        return g_mean if g_x is None else g_x + g_mean

    return (pooled, tf.identity(x)), grad


@tf.custom_gradient
def _route(x, idx):
    """(x[idx], x): the rows of the open samples, and x passed on to `_merge`.

    Backward: the incoming gradient of x with the rows `idx` replaced by the gradient
    of x[idx] (one row scatter). That the passed-on x's gradient may carry anything in
    the rows `idx` is what lets `_merge` skip zeroing them: its only consumer is
    `_merge`, whose gradient for those rows is overwritten here.
    """
    x_open = tf.gather(x, idx)

    def grad(g_open, g_x):
        if g_open is None:
            g_open = tf.zeros_like(x_open)
        return tf.tensor_scatter_nd_update(g_x, idx[:, None], g_open), None

    return (x_open, tf.identity(x)), grad


@tf.custom_gradient
def _merge(x, idx, y_open, x_open, factor_open):
    """Rows `idx` of x replaced by y_open: the value of x + f·(y − x) at f = d = 1.

    Straight-through gradient of y = x + f·(F(x) − x) on the open rows without its
    full-size elementwise ops: ∂y/∂F = f = 1, ∂y/∂x_open = 1 − f = 0 (on open rows f
    is d̂·d with value d = 1), ∂L/∂f_i = ⟨∂L/∂y_i, F(x_i) − x_i⟩ in float32.
    The gradient passed to x keeps whatever it holds in the rows `idx`; `_route`
    overwrites them (see there).
    """

    def grad(g):
        g_open = tf.gather(g, idx)
        g_factor = tf.reduce_sum(tf.cast(g_open, tf.float32)
                                 * tf.cast(y_open - x_open, tf.float32), axis=[1, 2, 3])
        return g, None, g_open, None, tf.cast(g_factor, factor_open.dtype)

    return tf.tensor_scatter_nd_update(x, idx[:, None], y_open), grad


class _BudgetSlot:
    """Holds the `SkipBudget` a block belongs to (a plain object: Keras does not track it)."""

    def __init__(self):
        self.budget = None


@register_serializable
class GatedResidualBlock(keras.layers.Layer):
    """Runs an identity-shaped residual block only for the samples whose gate is open.

    Gate (SkipNet's recurrent gate): z_k = P_k · GAP(x) (a per-block projection),
    (g_k, state_k) = `RecurrentGate`(z_k, state_{k-1}). Hard decision forward with a
    straight-through gradient:

        d_k = 1[g_k >= sigmoid(θ)],   d̂_k = g_k + stop_gradient(d_k − g_k)   (value d_k)
        y = x + d̂_k · d_k · (F(x) − x)

    (θ: the non-trainable weight `threshold`, a logit offset, 0 unless a
    `SkipBudget` calibrates it), so y = F(x) where the gate is open and y = x
    (identity) where it is closed. The gate receives the task-loss gradient
    ⟨F(x) − x, ∂L/∂y⟩ through open samples only (the skipped block's output is
    never computed, in either mode, so both modes agree), and the regulariser
    gradient through every sample. Eq. (1)'s regulariser, per block:

        α · C_k(W, G) = α · (FLOPs_k / FLOPs_total) · mean_batch(d̂_k)

    where FLOPs_k is counted from the block's layers (`residual_block_flops`) and
    FLOPs_total, the sum over all gated blocks of the network, is set through the
    non-trainable weight `flops_fraction` (1.0 alone) by `gated_resnet`, or for any
    other model by `keras_efficient.models.set_gate_flops_fractions(model)`. Summed
    over blocks this is α·C with C the executed fraction of gateable FLOPs.

    Modes:
      "gather": `tf.gather` the open samples, run the block on them only, and
        `tf.tensor_scatter_nd_update` them back (forward and backward really skip;
        BatchNormalization sees only open samples). Dynamic shapes. Two custom
        gradients keep the backward pass to row gathers/scatters: the gradient of x
        is the incoming gradient with the open rows replaced (no zero fill, segment
        sum or add), and the straight-through product d̂·d·(F(x) − x) is never formed
        (its value on open rows is F(x); only ⟨∂L/∂y, F(x) − x⟩ per open sample is
        computed for the gate). The block runs under `tf.cond` only when at least
        one gate is open (BatchNormalization on an empty batch would write NaN into
        its moving statistics).
      "mask": run the block on the whole batch and multiply (static shapes, for XLA
        and IPUs; saves nothing but accounting; in training BatchNormalization
        statistics include the closed samples).

    Open phase and skip budget (SkipNet's recipe: train the network with every
    gate open, then learn the gates): while the block's step counter `gate_step`
    (a checkpointed non-trainable int64 weight that counts training-mode calls,
    i.e. optimizer steps under `fit`) is below `open_steps`, every gate is forced
    open (d = 1 in training and inference) and the gate receives no gradient (d̂
    is the constant 1), so the network trains as a plain ResNet; from step
    `open_steps` on, the gates decide and learn. A `SkipBudget`
    (`keras_efficient.training.skip_budget`) adds its multiplier λ to α: the
    block's loss is then (α + λ) · (FLOPs_k / FLOPs_total) · mean_batch(d̂_k).

    Gate sharing: the first gated block of a network owns the `RecurrentGate`
    (`gate=RecurrentGate(...)`); later blocks take `gate=None` and use the owner's
    gate and recurrent state, passed along the forward pass in a per-thread context.

    Args:
      block: an identity-shaped residual layer (a `ResidualBlock`), or its config.
      gate: a `RecurrentGate` (this block owns it and restarts the recurrence) or None.
      projection_dim: size of the projected pooled features fed to the LSTM.
      mode: "gather" or "mask".
      flops_weight: α of Eq. (1), >= 0.
      block_flops: FLOPs per sample of `block`; None counts them from the block's
        `conv1`/`bn1`/`conv2`/`bn2`/`shortcut` sublayers.
      open_steps: number of training steps (counted by `gate_step`) during which
        every gate is forced open and not trained; 0: the gates decide from the
        first step.

    Call arguments:
      inputs: `[batch, height, width, channels]`.
      training: BatchNormalization mode; in training the open fraction is kept in
        the weight `open_fraction` (read by `ComputeMeter`) and reported as the
        metric `<name>_gate_rate` (training only: Keras shows a validation copy of it
        that stays 0).
      decisions: optional `[batch]` 0/1 tensor replacing the hard decisions (tests,
        forced gates); the straight-through gradient still reaches the gate.

    Input shape: `[batch, height, width, channels]`. Output shape: same as input.
    """

    def __init__(self, block, gate=None, projection_dim=10, mode="gather", flops_weight=0.0,
                 block_flops=None, open_steps=0, **kwargs):
        # `compile_gate` (XLA for the gate's small ops) was removed: it gave no gain in
        # interleaved A/B runs. Configs saved with it (always False by default) still load.
        if kwargs.pop("compile_gate", False):
            raise invalid_argument("compile_gate", "nothing (the option was removed; the gate "
                                   "always runs as plain ops)", True)
        super().__init__(**kwargs)
        if isinstance(block, dict):
            block = keras.layers.deserialize(block)
        if not isinstance(block, keras.layers.Layer):
            raise invalid_argument("block", "a Keras layer", block, TypeError)
        if isinstance(gate, dict):
            gate = keras.layers.deserialize(gate)
        if gate is not None and not isinstance(gate, RecurrentGate):
            raise invalid_argument("gate", "a RecurrentGate or None", gate, TypeError)
        self.block = block
        self.gate = gate
        self.projection_dim = check_int("projection_dim", projection_dim, low=1)
        self.mode = check_choice("mode", mode, ("gather", "mask"))
        self.flops_weight = check_float("flops_weight", flops_weight, low=0.0)
        self.block_flops = check_int("block_flops", block_flops, low=0, allow_none=True)
        self.open_steps = check_int("open_steps", open_steps, low=0)
        # The SkipBudget whose multiplier this block adds to α (set by `skip_budget`).
        # Held in a plain object: neither tracked nor walked by the saving code (the
        # budget is a checkpoint dependency of the model, not of the block).
        self.budget_slot = _BudgetSlot()
        self.projection = keras.layers.Dense(self.projection_dim, dtype="float32",
                                             name="gate_projection")

    def build(self, input_shape):
        check_input_rank(self.name, input_shape, rank=4)
        input_shape = tf.TensorShape(input_shape)
        check_last_dim_defined(self.name, input_shape, "channel dimension")
        if not self.block.built:
            self.block.build(input_shape)
        out = tf.TensorShape(self.block.compute_output_shape(input_shape))
        if out[1:].as_list() != input_shape[1:].as_list():
            raise ValueError(
                "GatedResidualBlock `{}` needs a block whose output shape equals its input shape "
                "(a skipped block is the identity); block `{}` maps {} to {}.".format(
                    self.name, self.block.name, input_shape, out))
        if self.block_flops is None:
            if getattr(self.block, "conv1", None) is None:
                raise ValueError("Cannot count the FLOPs of block `{}` (no conv1/conv2 sublayers); "
                                 "pass `block_flops`.".format(self.block.name))
            self.counted_flops = residual_block_flops(self.block, input_shape)
        else:
            self.counted_flops = self.block_flops
        self.projection.build((None, int(input_shape[-1])))
        if self.gate is not None:
            self.gate.build((None, self.projection_dim))
        self.flops_fraction = self.add_weight(name="flops_fraction", shape=(), dtype="float32",
                                              initializer="ones", trainable=False)
        self.open_fraction = self.add_weight(
            name="open_fraction", shape=(), dtype="float32", initializer="ones", trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN)
        self.threshold = self.add_weight(
            name="threshold", shape=(), dtype=tf.float32, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, experimental_autocast=False)
        self.gate_step = self.add_weight(
            name="gate_step", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, experimental_autocast=False)
        super().build(input_shape)

    def _multiplier(self):
        """α + λ (λ of the attached `SkipBudget`, 0 without one); None when both are off."""
        budget = self.budget_slot.budget
        if budget is None:
            return None if self.flops_weight == 0.0 else tf.constant(self.flops_weight)
        return self.flops_weight + budget.multiplier_value()

    def _gate_and_state(self):
        if self.gate is not None:
            return self.gate, None
        context = gate_context()
        if context is None:
            raise ValueError(
                "GatedResidualBlock `{}` has no gate of its own and no preceding block with a "
                "RecurrentGate ran in this forward pass. Give the first gated block of the network "
                "`gate=RecurrentGate()`.".format(self.name))
        gate, state = context
        return gate, (state if _usable_state(state) else None)

    def call(self, inputs, training=None, decisions=None):
        pooled, x = _pool(inputs)
        # A NaN or Inf anywhere in x makes its spatial mean non-finite, so checking the
        # pooled [batch, channels] tensor rejects such inputs without another pass over x.
        pooled = assert_finite(pooled, self.name)
        gate, state = self._gate_and_state()
        prob, new_state = gate(self.projection(pooled), states=state)
        _set_context(gate, new_state)
        hard = tf.cast(prob >= tf.sigmoid(self.threshold), tf.float32)
        straight = prob + tf.stop_gradient(hard - prob)
        active = None
        if self.open_steps > 0:
            # Open phase: every gate open, no gradient to the gate.
            forced = self.gate_step.read_value() < self.open_steps
            hard = tf.where(forced, tf.ones_like(hard), hard)
            straight = tf.where(forced, tf.ones_like(straight), straight)
            active = 1.0 - tf.cast(forced, tf.float32)
        if decisions is not None:
            hard = tf.reshape(tf.cast(decisions, tf.float32), tf.shape(prob))
            straight = prob + tf.stop_gradient(hard - prob)
        multiplier = self._multiplier()
        if multiplier is not None:
            fraction = tf.cast(self.flops_fraction, tf.float32)
            term = multiplier * fraction * tf.reduce_mean(straight)
            self.add_loss(term if active is None else active * term)
        rate = tf.reduce_mean(hard)
        if training:
            self.add_metric(rate, name=self.name + "_gate_rate", aggregation="mean")
            updates = [self.open_fraction.assign(rate), self.gate_step.assign_add(1)]
        else:
            updates = []
        with tf.control_dependencies(updates):
            if self.mode == "mask":
                factor = tf.cast(straight * hard, x.dtype)
                y = tf.cast(self.block(x, training=training), x.dtype)
                return x + factor[:, None, None, None] * (y - x)
            return self._gather_call(x, hard, straight, training)

    def _gather_call(self, x, hard, straight, training):
        idx = tf.where(hard > 0.5)[:, 0]
        x_open, x_rest = _route(x, idx)

        def run():
            # The block takes a tensor of the branch (not the captured x_open), so that
            # custom gradients inside the block (e.g. PSG layers) refer to tensors
            # cond's gradient can reach.
            return tf.cast(self.block(tf.identity(x_open), training=training), x.dtype)

        y_open = tf.cond(tf.size(idx) > 0, run, lambda: x_open)
        return _merge(x_rest, idx, y_open, x_open, tf.gather(straight, idx))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "block": keras.layers.serialize(self.block),
            "gate": None if self.gate is None else keras.layers.serialize(self.gate),
            "projection_dim": self.projection_dim,
            "mode": self.mode,
            "flops_weight": self.flops_weight,
            "block_flops": self.block_flops,
            "open_steps": self.open_steps,
        })
        return config
