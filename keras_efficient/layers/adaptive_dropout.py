"""Adaptive dropout: unit-wise learned retention probabilities (Kubo et al.).

A dropout layer whose every unit d has its own retention logit beta_d, learned by
back-propagation through a Gumbel-sigmoid straight-through estimator and pulled
towards a decreasing target c(t), so that units the task does not need end with
a small retention probability and can be removed (`keras_efficient.pruning`).
"""

import numbers
import random

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.schedules.retention_target import RetentionTargetSchedule
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_axes,
    check_choice,
    check_float,
    check_input_rank,
    check_int,
    invalid_argument,
)

__all__ = ["AdaptiveDropout"]

_INFERENCE_MODES = ("hard", "expected")


_BACKWARD_KERNELS = {}


def _backward_kernel(reduce_axes):
    """The XLA-compiled backward pass of `_adaptive_dropout`, one per set of reduce axes.

    One compiled call replaces about ten TensorFlow elementwise ops: XLA on CPU
    computes the input gradient in one parallel loop and the per-element unit
    gradient in another, then sums the latter over the reduce axes. The sum is
    fastest over the single leading axis of a [positions, units] matrix (the
    layout `AdaptiveDropout` passes when it can): 14-28 % less kernel time on
    the Conformer sites than over the leading axes of the unflattened input.
    """
    key = tuple(reduce_axes)
    if key not in _BACKWARD_KERNELS:
        def kernel(upstream, inputs, uniform, p):
            g = tf.cast(upstream, tf.float32)
            keep = uniform > 1.0 - p
            grad_inputs = tf.cast(tf.where(keep, g, tf.zeros_like(g)), upstream.dtype)
            # sigma'(beta + eps) = p (1 - p) u (1 - u) / D^2, D = (1 - p) + u (2p - 1);
            # u >= 1e-7 keeps D > 0 when p rounds to 1 (the factor p (1 - p) is then 0).
            u = tf.maximum(uniform, 1e-7)
            d = (1.0 - p) + u * (2.0 * p - 1.0)
            t = g * tf.cast(inputs, tf.float32) * (u * (1.0 - u)) / (d * d)
            grad_beta = tf.reduce_sum(t, axis=key, keepdims=True) if key else t
            return grad_inputs, grad_beta * (p * (1.0 - p))

        _BACKWARD_KERNELS[key] = tf.function(kernel, jit_compile=True, autograph=False)
    return _BACKWARD_KERNELS[key]


def _adaptive_dropout(inputs, logits, uniform, reduce_axes):
    """y = H(beta + eps) * x forward (Eqs. 1, 3); d sigma(beta + eps)/d beta backward (Eq. 4).

    eps = log(u) - log(1 - u) is standard logistic for u ~ U(0, 1). Neither pass
    evaluates a per-element exp/log: with p = sigma(beta) (one per unit),
    beta + eps > 0  <=>  u > 1 - p, and sigma(beta + eps) = u p / D with
    D = u p + (1 - u)(1 - p), so sigma'(beta + eps) = p (1 - p) u (1 - u) / D^2,
    where the per-unit factor p (1 - p) is applied after the sum over positions.

    Args:
      inputs: x.
      logits: beta, float32, broadcastable to `uniform`.
      uniform: u ~ U[0, 1), float32 of the noise shape (not differentiated).
      reduce_axes: the axes along which `logits` is broadcast (summed in the gradient).
    """
    kernel = _backward_kernel(reduce_axes)

    @tf.custom_gradient
    def site(x, beta):
        p = tf.sigmoid(beta)
        y = tf.where(uniform > 1.0 - p, x, tf.zeros_like(x))

        def grad(upstream):
            return kernel(upstream, x, uniform, p)

        return y, grad

    return site(inputs, logits)


def _replica_id():
    """The replica's index in its sync group as an int64 scalar; 0 outside a strategy."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: one computation, like replica 0
        return tf.constant(0, tf.int64)
    return tf.cast(context.replica_id_in_sync_group, tf.int64)


def _noise_key(seed, step, replica_id):
    """The stateless seed of one training call: (seed, step) with the replica id folded in.

    Philox throughout, so the key (and hence the draw) is a pure function of the
    three integers; `stateless_fold_in` mixes each into the key, so different
    steps and different replicas get unrelated streams.
    """
    key = tf.stack([tf.constant(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(key, step, alg="philox")
    return tf.random.experimental.stateless_fold_in(key, replica_id, alg="philox")


def _resolve_schedule(schedule):
    if schedule is None:
        return RetentionTargetSchedule()
    if isinstance(schedule, dict):
        schedule = keras.utils.deserialize_keras_object(schedule)
    if not callable(schedule) or not hasattr(schedule, "get_config"):
        raise invalid_argument("schedule", "a RetentionTargetSchedule (or a serializable callable "
                               "step -> target), a config dict or None", schedule, TypeError)
    return schedule


@register_serializable
class AdaptiveDropout(ValidateArgsMixin, keras.layers.Layer):
    """Dropout with a learned retention probability per unit, for pruning.

    Each unit d (an index over the `unit_axes` dimensions) has a raw parameter
    beta'_d, initialised to 0, and the retention logit (Eq. 7)

        beta_d = sqrt(gamma / alpha) * beta'_d + c(t),

    where c(t) is the retention target of `schedule` (Eq. 6) at the layer's step t.
    The layer adds the loss gamma * sum_d beta'_d^2, which equals the uncentred L2
    term of Eq. (5), alpha * sum_d (beta_d - c(t))^2.

    Training (Eqs. 1-4): y = m * x with m = H(beta + eps), eps ~ Logistic(0, 1),
    drawn independently for every position of the input except along
    `shared_axes`; there is no 1/p rescaling. The forward pass uses the exact
    step function H; the backward pass uses the gradient of sigma(beta + eps)
    (straight-through), so a unit receives gradient also when its sampled mask
    was 0. Both are computed from u ~ U(0, 1) with eps = logit(u) and
    p = sigma(beta) per unit: m = 1[u > 1 - p] and sigma(beta + eps) =
    u p / (u p + (1 - u)(1 - p)), without per-element exp/log. The backward pass
    (the input gradient m * g and the unit gradient) is one XLA-compiled call
    (`tf.function(jit_compile=True)`); when the unit axes are the trailing axes
    and nothing is shared, the layer works on the input viewed as a
    [positions, units] matrix. On an IPU the whole step is XLA-compiled anyway.

    Inference: `inference="hard"` gives m = 1[beta >= threshold] (the paper's
    evaluation: units with beta < threshold are pruned); `"expected"` gives
    m = sigma(beta).

    The step t is the layer's own non-trainable int64 weight `step`, saved in
    checkpoints. It is advanced by one in every training-mode call (read before
    the increment), which is once per optimizer step in `model.fit`, including
    `steps_per_execution > 1` (the increment is an op inside the compiled step)
    and `jit_compile=True`. Under a `tf.distribute` strategy the variable has
    aggregation `ONLY_FIRST_REPLICA`, so it advances once per global step, not
    once per replica. A layer called several times per step in training mode
    (weight sharing) advances once per call: share an `AdaptiveDropout` only at
    inference, or account for it in `decay_steps`. Any other training-mode call
    also advances it (e.g. `reestimate_batchnorm`'s pass after SWA).

    Noise and resumption: u is drawn statelessly
    (`tf.random.stateless_uniform`, Philox) from a key that is a pure function
    of (seed, t, replica id in the sync group) -- no random-op state. Hence:
    a run interrupted and resumed from a checkpoint (which restores t, e.g.
    `keras.callbacks.BackupAndRestore`) draws at step t exactly what the
    uninterrupted run drew; two runs with the same `seed` draw the same masks;
    and the replicas of a `tf.distribute` strategy draw independent masks
    (replica r folds r into the key). Without `seed` the layer draws a random
    integer seed from Python's `random` module when it is constructed (so
    `keras.utils.set_random_seed` makes it reproducible) and keeps it out of
    the config: runs differ, replicas still differ, and a resumed run is
    exact only if the rebuilt layer draws the same seed (pass `seed=` for
    that). The draws are the same in eager and graph (`tf.function`)
    execution; XLA (`jit_compile=True`) implements Philox's float conversion
    differently, so a compiled step draws other (equally distributed) masks
    than an uncompiled one for the same key -- resume with the same setting.

    beta, sigma(beta) and the noise are computed in float32 under mixed precision.

    Args:
      schedule: the retention target c(t), a `RetentionTargetSchedule` (default
        `RetentionTargetSchedule()`: c0 = 10, c_inf = -2, K = 100000).
      alpha: alpha > 0, the weight of the regulariser of Eq. (5).
      gamma: gamma > 0, the L2 weight of the other parameters (Eq. 7).
      threshold: the pruning threshold on beta; None means the schedule's
        `final_target` (c_inf), as in the paper's evaluation.
      unit_axes: the input axes that index units (not the batch axis). With
        `(-2, -1)` on `[batch, time, heads, head_dim]` each head has its own vector.
      shared_axes: axes along which one mask sample is shared (like
        `noise_shape` of `keras.layers.Dropout`); disjoint from `unit_axes`.
      inference: "hard" or "expected".
      seed: optional integer seed of the noise (see "Noise and resumption").
      validate_args: also check the input values (NaN/Inf, empty batch) at
        every call, in training and at inference (`ValidateArgsMixin`); rank,
        unit-axis sizes and the dtype are always checked.

    Call arguments:
      inputs: a float tensor.
      training: Python bool; True samples masks and advances the step.

    Input shape:
      Any shape of rank >= 2 whose `unit_axes` dimensions are known.

    Output shape:
      Same as the input.
    """

    def __init__(self, schedule=None, alpha=1e-7, gamma=1e-5, threshold=None, unit_axes=(-1,),
                 shared_axes=(), inference="hard", seed=None,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.schedule = _resolve_schedule(schedule)
        self.alpha = check_float("alpha", alpha, low=0.0, low_inclusive=False)
        self.gamma = check_float("gamma", gamma, low=0.0, low_inclusive=False)
        self.threshold = check_float("threshold", threshold, allow_none=True)
        if self.threshold is None and not isinstance(
                getattr(self.schedule, "final_target", None), numbers.Real):
            raise invalid_argument("threshold", "a float when the schedule has no `final_target`",
                                   threshold)
        self.unit_axes = check_axes("unit_axes", unit_axes, allow_empty=False)
        self.shared_axes = check_axes("shared_axes", shared_axes)
        if set(self.unit_axes) & set(self.shared_axes):
            raise invalid_argument("shared_axes", "axes disjoint from unit_axes={}".format(
                self.unit_axes), shared_axes)
        self.inference = check_choice("inference", inference, _INFERENCE_MODES)
        self.seed = check_int("seed", seed, allow_none=True)
        # The seed of the stateless draws; not in the config when drawn here.
        self._noise_seed = (self.seed if self.seed is not None
                            else random.randrange(2 ** 31))
        self.supports_masking = True

    # ------------------------------------------------------------------ build

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        check_input_rank(self.name, shape, min_rank=2)
        rank = shape.rank
        unit = self._normalise(self.unit_axes, rank, "unit_axes", shape, allow_batch=False)
        shared = self._normalise(self.shared_axes, rank, "shared_axes", shape, allow_batch=True)
        if set(unit) & set(shared):
            raise ValueError("Layer `{}`: unit_axes {} and shared_axes {} name the same axis of an "
                             "input of rank {}. Received: input_shape={}".format(
                                 self.name, self.unit_axes, self.shared_axes, rank, shape))
        unknown = [a for a in unit if shape[a] is None]
        if unknown:
            raise ValueError("Layer `{}` needs known sizes on its unit axes {}. Received: "
                             "input_shape={}".format(self.name, self.unit_axes, shape))
        self._rank = rank
        self._unit = tuple(sorted(unit))
        self._shared = tuple(sorted(shared))
        self._units_shape = tuple(int(shape[a]) for a in self._unit)
        self._broadcast_shape = [1] * rank
        self._reduce_axes = [a for a in range(rank) if a not in self._unit]
        self._flat = not self._shared and self._unit == tuple(range(rank - len(unit), rank))
        for a in self._unit:
            self._broadcast_shape[a] = int(shape[a])
        self.retention_raw = self.add_weight(
            name="retention_raw", shape=self._units_shape, dtype=tf.float32,
            initializer="zeros", regularizer=keras.regularizers.L2(self.gamma), trainable=True,
            experimental_autocast=False)
        self.step_counter = self.add_weight(
            name="step", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, experimental_autocast=False)
        self.input_spec = keras.layers.InputSpec(
            ndim=rank, axes={a: int(shape[a]) for a in self._unit})
        super().build(input_shape)

    def _normalise(self, axes, rank, name, shape, allow_batch):
        out = []
        for a in axes:
            b = a + rank if a < 0 else a
            if not 0 <= b < rank or (b == 0 and not allow_batch):
                raise ValueError("Layer `{}`: `{}`={} is out of range for an input of rank {}{}. "
                                 "Received: input_shape={}".format(
                                     self.name, name, axes, rank,
                                     "" if allow_batch else " (the batch axis 0 cannot hold units)",
                                     shape))
            out.append(b)
        if len(set(out)) != len(out):
            raise ValueError("Layer `{}`: `{}`={} names the same axis twice for rank {}. "
                             "Received: input_shape={}".format(self.name, name, axes, rank, shape))
        return out

    # ------------------------------------------------------------------ views

    def _require_built(self):
        if not self.built:
            raise ValueError("Layer `{}` is not built yet: call it on an input first.".format(
                self.name))

    def _logits(self, step):
        scale = (self.gamma / self.alpha) ** 0.5
        return scale * self.retention_raw + self.schedule(step)

    @property
    def effective_threshold(self):
        """The threshold on beta used by hard inference and pruning."""
        if self.threshold is not None:
            return self.threshold
        return float(self.schedule.final_target)

    @property
    def step(self):
        """The current step t (int64 scalar tensor)."""
        self._require_built()
        return tf.identity(self.step_counter)

    @property
    def current_target(self):
        """c(t) at the current step (float32 scalar)."""
        return self.schedule(self.step)

    @property
    def retention_logits(self):
        """beta = sqrt(gamma / alpha) * beta' + c(t), shaped like the unit axes."""
        self._require_built()
        return self._logits(self.step_counter)

    @property
    def retention_probabilities(self):
        """sigma(beta), the training-time keep probability of every unit."""
        return tf.sigmoid(self.retention_logits)

    @property
    def keep_mask(self):
        """Boolean mask of the units that survive pruning: beta >= threshold."""
        return self.retention_logits >= self.effective_threshold

    @property
    def surviving_fraction(self):
        """Fraction of units with beta >= threshold (float32 scalar)."""
        return tf.reduce_mean(tf.cast(self.keep_mask, tf.float32))

    # ------------------------------------------------------------------ call

    def call(self, inputs, training=None):
        inputs = self._validate_values(tf.convert_to_tensor(inputs))
        if isinstance(training, tf.Tensor):
            return tf.cond(training, lambda: self._train(inputs), lambda: self._infer(inputs))
        if training:
            return self._train(inputs)
        return self._infer(inputs)

    def _train(self, inputs):
        t = self.step_counter.read_value()
        logits = self._logits(t)
        key = _noise_key(self._noise_seed, t, _replica_id())
        dynamic = tf.shape(inputs)
        if self._flat:
            # Trailing unit axes, no shared axes: one [positions, units] matrix, so the
            # backward kernel reduces a single major axis (faster than several).
            units = int(logits.shape.num_elements())
            flat = tf.reshape(inputs, [-1, units])
            uniform = tf.random.stateless_uniform(tf.shape(flat), key, dtype=tf.float32,
                                                  alg="philox")
            outputs = _adaptive_dropout(flat, tf.reshape(logits, [1, units]), uniform, [0])
            outputs = tf.reshape(outputs, dynamic)
        else:
            beta = tf.reshape(logits, self._broadcast_shape)
            noise_shape = [1 if a in self._shared else dynamic[a] for a in range(self._rank)]
            uniform = tf.random.stateless_uniform(tf.stack(noise_shape), key, dtype=tf.float32,
                                                  alg="philox")
            outputs = _adaptive_dropout(inputs, beta, uniform, self._reduce_axes)
        self.step_counter.assign_add(1)
        return outputs

    def _infer(self, inputs):
        beta = tf.reshape(self._logits(self.step_counter), self._broadcast_shape)
        if self.inference == "hard":
            mask = tf.cast(beta >= self.effective_threshold, tf.float32)
        else:
            mask = tf.sigmoid(beta)
        return inputs * tf.cast(mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "schedule": keras.utils.serialize_keras_object(self.schedule),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "threshold": self.threshold,
            "unit_axes": list(self.unit_axes),
            "shared_axes": list(self.shared_axes),
            "inference": self.inference,
            "seed": self.seed,
            **self._validate_args_config(),
        })
        return config
