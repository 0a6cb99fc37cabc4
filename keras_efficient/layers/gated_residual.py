"""Selective layer update (SLU, E²-Train Sec. 3.2): a residual block behind a SkipNet gate."""


from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.gate_decisions import gate_logits, rank_decisions
from keras_efficient.layers.recurrent_gate import (
    RecurrentGate,
    _GateSlot,
    _is_keras_tensor,
    _LegacyState,
    _producer,
    _upstream_gated_block,
)
from keras_efficient.training.flops import residual_block_flops
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    assert_finite,
    check_bool,
    check_choice,
    check_float,
    check_input_rank,
    check_int,
    check_last_dim_defined,
    invalid_argument,
)

__all__ = ["GatedResidualBlock"]


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
    """Holds the `SkipBudget` a block belongs to and the block's index in it, and a running
    `calibrate_gates` pass (plain object: Keras neither tracks nor saves it)."""

    def __init__(self):
        self.budget = None
        self.index = None
        self.calibration = None


@register_serializable
class GatedResidualBlock(ValidateArgsMixin, keras.layers.Layer):
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

    Gate sharing and the recurrent state: pass one `RecurrentGate` object to
    every gated block of a network. The first block constructed with it owns it
    (tracks and saves its weights, config `gate`: the gate's config); the others
    share it (config `gate`: the gate's name). The LSTM state (h, c) is explicit:
    a block built with `return_state=True` returns `[y, h, c]`, and the next one
    is called as `block(y, state=[h, c])`. The owner may be called without a
    state (it starts from (h_0, c_0) = 0); a sharing block called without one
    raises ValueError. In a functional model a sharing block is linked to the
    gate of the block that produced its `state` when it is called, so a model
    rebuilt from its config (`from_config`, `.keras`, SavedModel) shares one gate
    again; the state may skip other layers (shape-changing blocks) on its way.

    Legacy implicit form (configs of earlier releases: `gate=None`, called on a
    single tensor, no `return_state`): in a functional model the block shares the
    gate of the nearest gated block upstream of its input, and reads the state
    that block left in the same graph and replica during the same forward pass.
    If that state is missing or comes from another graph or replica (the block
    run on its own, in a separate `tf.function`, or a new-form block upstream) it
    raises ValueError instead of restarting from zero. It supports one chain of
    blocks run as a whole model; rebuild such models with `gated_resnet` (and
    copy the weights) for anything else. While Keras builds a functional model
    (symbolic shape inference) it uses the zero state; those values are never
    computed.

    Rank decisions (`decision="rank"`; `keras_efficient.layers.gate_decisions`):
    in training, block k opens the k = round(c·n) samples of the batch with the
    highest gate probability, c being the block's capacity: the share a
    `SkipBudget` allocates it (see `SkipBudget.allocate`), or without a budget
    mean_batch(g), the gates' own expected rate. So every batch runs the block
    on part of its samples, never on all or none because the probabilities of a
    batch happen to lie on one side of a threshold, and BatchNormalization
    statistics after the block never mix such batches. The straight-through
    gradient is unchanged. The threshold logit between opened and closed
    samples ("cut") is followed by θ (a running mean over the first 100 steps
    after the open phase, then an exponential average with weight 0.01), and an
    inference pass decides d = 1[g >= sigmoid(θ)]. As inference-mode inputs
    differ from training-mode ones (BatchNormalization statistics), set θ from
    an inference pass with `keras_efficient.training.calibrate_gates` (the
    callback `keras_efficient.callbacks.GateCalibration` does it during `fit`).

    Args:
      block: an identity-shaped residual layer (a `ResidualBlock`), or its config.
      gate: a `RecurrentGate` (owned by the first block constructed with it, shared by
        the others), its config (owner), its name (a block sharing a gate owned by a
        block upstream in the same functional model), or None (legacy implicit form).
      projection_dim: size of the projected pooled features fed to the LSTM.
      mode: "gather" or "mask".
      flops_weight: α of Eq. (1), >= 0.
      block_flops: FLOPs per sample of `block`; None counts them from the block's
        `conv1`/`bn1`/`conv2`/`bn2`/`shortcut` sublayers.
      open_steps: number of training steps (counted by `gate_step`) during which
        every gate is forced open and not trained; 0: the gates decide from the
        first step.
      decision: how a training pass turns gate probabilities into decisions:
        "threshold" (d = 1[g >= sigmoid(θ)], θ set by a `SkipBudget` or fixed) or
        "rank" (per-sample routing: every batch opens the round(c·n) samples of
        highest g, see below).
      return_state: return `[y, h, c]` (the output and the gate's new LSTM state)
        instead of y.
      validate_args: also check the input values (NaN/Inf over the whole input, empty
        batch) and the state at every call (`ValidateArgsMixin`; off by default). The
        NaN/Inf check of the pooled input (one reduction the gate needs anyway) is
        always on.

    Call arguments:
      inputs: `[batch, height, width, channels]`.
      state: `[h, c]` returned by the previous gated block (`return_state=True`),
        each `[batch, hidden_units]` float32; required unless the block owns its gate
        (then None: the zero state) or is of the legacy form.
      training: BatchNormalization mode; in training the open fraction is kept in
        the weight `open_fraction` (read by `ComputeMeter`) and reported as the
        metric `<name>_gate_rate` (training only: Keras shows a validation copy of it
        that stays 0).
      decisions: optional `[batch]` 0/1 tensor replacing the hard decisions (tests,
        forced gates); the straight-through gradient still reaches the gate.

    Input shape: `[batch, height, width, channels]`.
    Output shape: same as input; with `return_state`, `[that, [batch, hidden_units],
    [batch, hidden_units]]`.
    """

    def __init__(self, block, gate=None, projection_dim=10, mode="gather", flops_weight=0.0,
                 block_flops=None, open_steps=0, decision="threshold", return_state=False,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
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
        if gate is not None and not isinstance(gate, (RecurrentGate, str)):
            raise invalid_argument("gate", "a RecurrentGate, its name or None", gate, TypeError)
        if gate == "":
            raise invalid_argument("gate", "a RecurrentGate, its name or None", gate)
        self.block = block
        # `gate`: the owned RecurrentGate (tracked and saved with this block) or None;
        # `_shared.gate`: the gate of another block this one uses (not tracked).
        self._shared = _GateSlot()
        if isinstance(gate, RecurrentGate) and getattr(gate, "_owner_name", None) is None:
            gate._owner_name = self.name
            self.gate = gate
        else:
            self.gate = None
            if isinstance(gate, RecurrentGate):
                self._shared.gate = gate
        #: The name of the gate this block uses (None: legacy implicit form).
        self.gate_name = gate if isinstance(gate, str) or gate is None else gate.name
        self.return_state = check_bool("return_state", return_state)
        self._init_validate_args(validate_args)
        self._legacy_state = _LegacyState()
        self._symbolic_call = False
        self.projection_dim = check_int("projection_dim", projection_dim, low=1)
        self.mode = check_choice("mode", mode, ("gather", "mask"))
        self.flops_weight = check_float("flops_weight", flops_weight, low=0.0)
        self.block_flops = check_int("block_flops", block_flops, low=0, allow_none=True)
        self.open_steps = check_int("open_steps", open_steps, low=0)
        self.decision = check_choice("decision", decision, ("threshold", "rank"))
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

    @property
    def recurrent_gate(self):
        """The `RecurrentGate` this block uses: its own or the shared one (None until linked)."""
        return self.gate if self.gate is not None else self._shared.gate

    def __call__(self, inputs, *args, **kwargs):
        # Functional construction (Keras tensors): link a sharing block to its gate through
        # the graph, and let the legacy form infer shapes from the zero state.
        symbolic = _is_keras_tensor(inputs)
        if symbolic and self.gate is None:
            state = kwargs.get("state", args[2] if len(args) > 2 else None)
            self._link(inputs, state)
        self._symbolic_call = symbolic
        try:
            return super().__call__(inputs, *args, **kwargs)
        finally:
            self._symbolic_call = False

    def _link(self, inputs, state):
        """Finds the gate (and for the legacy form the state's source) in the functional graph."""
        if state is not None:
            producer = _producer(state[0]) if isinstance(state, (list, tuple)) and state else None
            gate = producer.recurrent_gate if isinstance(producer, GatedResidualBlock) else None
            if gate is None:
                if self._shared.gate is None:
                    raise ValueError(
                        "GatedResidualBlock `{}` shares the gate `{}`, but its `state` does not come "
                        "from a GatedResidualBlock (it comes from `{}`): pass the RecurrentGate object "
                        "as `gate`.".format(self.name, self.gate_name,
                                            getattr(producer, "name", None)))
                return
            if self._shared.gate is not None and self._shared.gate is not gate:
                raise ValueError(
                    "GatedResidualBlock `{}` shares the gate `{}` but receives the state of the gate "
                    "`{}` (from block `{}`).".format(self.name, self._shared.gate.name, gate.name,
                                                     producer.name))
            if self.gate_name is not None and gate.name != self.gate_name:
                raise ValueError(
                    "GatedResidualBlock `{}` shares the gate `{}` but receives the state of the gate "
                    "`{}` (from block `{}`).".format(self.name, self.gate_name, gate.name,
                                                     producer.name))
            self._shared.gate = gate
            return
        if self.gate_name is not None:
            return  # a sharing block called without a state: `call` raises.
        source = _upstream_gated_block(inputs)
        if source is not None:
            self._shared.source = source
            self._shared.gate = source.recurrent_gate

    def _gate_and_state(self, state):
        gate = self.recurrent_gate
        if gate is None:
            if self.gate_name is None:
                raise ValueError(
                    "GatedResidualBlock `{}` has no gate of its own and no preceding block with a "
                    "RecurrentGate ran in this forward pass. Give the first gated block of the network "
                    "`gate=RecurrentGate()`, and the others the same object (or, for the legacy form "
                    "without a state, call them in one functional model after it).".format(self.name))
            raise ValueError(
                "GatedResidualBlock `{}` shares the gate `{}` but is not linked to it: call it in a "
                "functional model with `state=` returned by a block that uses that gate, or pass "
                "the RecurrentGate object as `gate`.".format(self.name, self.gate_name))
        if state is not None:
            if not isinstance(state, (list, tuple)) or len(state) != 2:
                raise ValueError(
                    "GatedResidualBlock `{}` expects `state=[h, c]`, the state returned by the "
                    "previous gated block (`return_state=True`). Received: state={!r}".format(
                        self.name, state))
            return gate, list(state)
        if self.gate is not None:
            return gate, None  # the owner starts the recurrence from the zero state
        if self.gate_name is not None:
            raise ValueError(
                "GatedResidualBlock `{}` shares the gate `{}` and needs the recurrent state: call it "
                "as `block(x, state=[h, c])` with the state returned by the previous gated block "
                "(built with `return_state=True`).".format(self.name, self.gate_name))
        if self._symbolic_call:
            return gate, None  # functional construction: shapes only, never computed
        source = self._shared.source
        legacy = None if source is None else source._legacy_state.get()
        if legacy is None:
            raise ValueError(
                "GatedResidualBlock `{}` (legacy form: no gate of its own, no `state`) found no "
                "usable recurrent state from block `{}` in this graph and replica: the state of "
                "the implicit form passes only between blocks run in order within one forward "
                "pass of one model. Pass the state explicitly (`return_state=True`, "
                "`state=[h, c]`) instead.".format(self.name, getattr(source, "name", None)))
        return gate, legacy

    def call(self, inputs, training=None, decisions=None, state=None):
        if self.validate_args:
            inputs = self._validate_values(inputs)
        pooled, x = _pool(inputs)
        # A NaN or Inf anywhere in x makes its spatial mean non-finite, so checking the
        # pooled [batch, channels] tensor rejects such inputs without another pass over x.
        pooled = assert_finite(pooled, self.name)
        gate, state = self._gate_and_state(state)
        if state is not None and self.validate_args:
            state = [self._validate_values(tf.convert_to_tensor(s), self.name + "/state")
                     for s in state]
        prob, new_state = gate(self.projection(pooled), states=state)
        y = self._apply(x, prob, training, decisions)
        if self.return_state:
            return [y] + list(new_state)
        self._legacy_state.put(new_state)
        return y

    def _decide(self, prob, training, forced_decisions=False):
        """(hard decisions, state updates) before the open phase and `decisions` apply."""
        slot = self.budget_slot
        if slot.calibration is not None and not training:
            hard, cut = rank_decisions(prob, slot.calibration.rate)
            return hard, [slot.calibration.record(cut, tf.size(prob))]
        if self.decision == "rank" and training:
            prob32 = tf.cast(prob, tf.float32)
            n = tf.size(prob32)
            total, count = tf.reduce_sum(prob32), tf.cast(n, tf.float32)
            updates = []
            if slot.budget is not None:
                context = tf.distribute.get_replica_context()
                if context is not None and context.num_replicas_in_sync > 1:
                    # m_k of the global batch, the same on every replica.
                    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
                capacity = slot.budget.capacity(slot.index)
                updates.append(slot.budget.record_gate_mean(
                    slot.index, tf.math.divide_no_nan(total, count), count > 0))
            else:
                capacity = tf.math.divide_no_nan(total, count)  # the gates' own rate
            hard, cut = rank_decisions(prob32, capacity)
            # θ follows the cut once the gates decide: a running mean over their first
            # 100 steps, then an exponential average (weight 0.01).
            steps = tf.cast(self.gate_step.read_value() - self.open_steps, tf.float32)
            follow = (steps >= 0.0) & (n > 0) & (not forced_decisions)
            weight = tf.where(follow, tf.maximum(0.01, 1.0 / (steps + 1.0)), 0.0)
            theta = self.threshold.read_value()
            updates.append(self.threshold.assign(theta + weight * (cut - theta)))
            return hard, updates
        # Compared as logits: a cut beyond the float32 range of sigmoid still separates.
        return tf.cast(gate_logits(prob) >= self.threshold, tf.float32), []

    def _apply(self, x, prob, training, decisions):
        hard, updates = self._decide(prob, training, forced_decisions=decisions is not None)
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
            with tf.control_dependencies(updates):
                updates = updates + [self.open_fraction.assign(rate),
                                     self.gate_step.assign_add(1)]
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
        shape = tf.TensorShape(input_shape)
        if not self.return_state:
            return shape
        gate = self.recurrent_gate
        state = tf.TensorShape([shape[0], None if gate is None else gate.hidden_units])
        return [shape, state, state]

    def get_config(self):
        config = super().get_config()
        config.update({
            "block": keras.layers.serialize(self.block),
            "gate": keras.layers.serialize(self.gate) if self.gate is not None else self.gate_name,
            "projection_dim": self.projection_dim,
            "mode": self.mode,
            "flops_weight": self.flops_weight,
            "block_flops": self.block_flops,
            "open_steps": self.open_steps,
            "decision": self.decision,
            "return_state": self.return_state,
            **self._validate_args_config(),
        })
        return config
