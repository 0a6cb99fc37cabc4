"""A parameter budget: adaptive-dropout training that ends at the size a user asks for.

`parameter_budget(model, target_fraction)` attaches a `ParameterBudget` to a built
model with AdaptiveDropout sites. After a plain `compile` + `fit` that runs past
the budget's settle step, `count_parameters(model)["ratio"]` is the target
(to within about half a unit's share of the parameters).
"""

import numpy as np

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.pruning.expected import ExpectedSize, keep_probabilities
from keras_efficient.utils.attachment import attach_to_model
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["BudgetValue", "ParameterBudget", "get_parameter_budget", "parameter_budget"]

_ATTRIBUTE = "_keras_efficient_parameter_budget"


@register_serializable
class BudgetValue(keras.metrics.Metric):
    """A metric that reports the last value it was given (not an average).

    The budget's fractions are states of the model, not per-batch quantities, so
    `fit`'s logs show the value at the last step of the epoch.
    """

    def __init__(self, name, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.value = self.add_weight(name="value", shape=(), initializer="zeros",
                                     aggregation=tf.VariableAggregation.MEAN)

    def update_state(self, value, sample_weight=None):
        del sample_weight
        return self.value.assign(tf.cast(value, self.dtype))

    def result(self):
        return tf.identity(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def _unit_values(adls, tensors):
    return tf.concat([tf.reshape(tensors[id(adl)], [-1]) for adl in adls], axis=0)


@register_serializable
class ParameterBudget(keras.layers.Layer):
    """Drives adaptive-dropout training to a parameter budget (see `parameter_budget`).

    The paper's mechanism is unchanged: beta = sqrt(gamma / alpha) * beta' + c(t)
    (Eq. 7), the L2 pull of beta to c(t) (Eq. 5), the c(t) schedule (Eq. 6), the
    Gumbel-sigmoid masks (Eqs. 1-4) and the pruning threshold. The budget adds one
    loss term on the retention logits, in two phases of the step t (the step of
    the AdaptiveDropout layers, the t of c(t)):

    1. t < settle_step, a Lagrangian (CoFi style): with f the effective fraction
       of the *end-of-schedule* logits beta_end = sqrt(gamma / alpha) * beta' + c_end
       (c_end = c_inf, the value c(t) ends at), and rho the target,

           L = lambda1 * (f - rho) + lambda2 * (f - rho)^2.

       f is straight-through: its value is the hard fraction (1[beta_end >= theta]
       per unit, the ratio `count_parameters` will report once c(t) = c_inf), its
       gradient that of the soft expectation E[size] / total of
       `expected_parameters` (P(kept) = sigma((beta_end - theta) / tau)), as the
       masks themselves are exact forward and sigmoid backward (Eqs. 3-4).
       beta_end does not move with c(t), so the constraint is a fixed target while
       c(t) still keeps every unit alive early in training (the paper's warm-up).
       The multipliers do dual ascent, lambda1 += eta * (f - rho) and
       lambda2 += eta * (f - rho)^2 once per training step, inside the loss.

    2. t >= settle_step, the settle: the units are ranked by beta_end (ties broken
       by a fixed jitter of 1e-4), a common shift of all logits is chosen by
       bisection so that the hard count of the shifted logits is the reachable
       count nearest to the budget, and a hinge pushes every unit to its side of
       the threshold by `margin`: relu(theta + margin - beta_end) for units in the
       budget, relu(beta_end - theta + margin) for the others. This is the
       "rank the units by beta and set the threshold so that the hard count hits
       the budget" step, done by moving beta (the threshold itself is the layers').
       Once every unit is on its side the hinge is zero; a unit drifting back (the
       L2 pull to c_inf, the task) is pushed out again, so the hard count stays at
       the budget for as long as training goes on.

    Why not the Lagrangian alone: it hovers around the target but does not stop
    on it, because near the threshold several units cross together. Measured with
    the settle switched off (settle_step beyond the run, the test setups of
    tests/pruning/test_budget.py): the MLP ended 0.000-0.046 off the target, 7 of
    15 runs outside +-0.02; the small encoder 0.009-0.042 off, 2 of 3 outside.
    With the settle every run ended at the reachable count nearest to the budget
    (MLP 15 of 15 within 0.005, encoder 6 of 6 within 0.003). The settle makes the
    end point deterministic; the training before it is the paper's plus the
    Lagrangian.

    Why the multipliers are not trained by the optimizer with a sign-flipped
    gradient: then they would be model weights, and `count_parameters(model)`
    would count them (`prune(model).count_params()` would no longer equal the
    effective count); a dual step of our own is also independent of the user's
    optimizer (Adam normalises, SGD does not, weight decay and gradient clipping
    would act on the multipliers). The updates are variable assignments inside the
    loss, so `fit` is not overridden (IPUs refuse an overridden `train_step`).

    State (saved in checkpoints): `lambda1`, `lambda2` (float32) and `last_step`
    (int64, the AdaptiveDropout step at the last update, so the multipliers move
    only when that step has advanced: once per training step, never in
    `evaluate`, also with `steps_per_execution > 1`). All three have aggregation
    `ONLY_FIRST_REPLICA` (the constraint does not depend on the data, so every
    replica computes the same update).

    Metrics (in `fit`'s logs): `budget_expected_fraction` (E[size] / total of the
    end-of-schedule logits), `budget_final_fraction` (their hard fraction),
    `budget_hard_fraction` (`count_parameters(model)["ratio"]` now),
    `budget_lambda` (lambda1).

    Args:
      target_fraction: rho in (0, 1], the effective / total ratio to reach.
      temperature: tau > 0 of the soft relaxation.
      multiplier_rate: eta > 0, the dual step size.
      settle_step: the step from which the settle replaces the Lagrangian.
      margin: > 0, how far (in logits) the settle pushes units past the threshold;
        keep it above one optimizer step of beta (Adam: about
        learning_rate * sqrt(gamma / alpha)).

    Call arguments:
      inputs: any tensor; returned unchanged (the budget is not a layer of the
        model's graph, it acts through `budget_loss`).

    Input shape:
      Any.

    Output shape:
      Same as the input.
    """

    def __init__(self, target_fraction, temperature=1.0, multiplier_rate=0.1, settle_step=0,
                 margin=0.5, **kwargs):
        super().__init__(**kwargs)
        self.target_fraction = check_float("target_fraction", target_fraction, low=0.0, high=1.0,
                                           low_inclusive=False)
        self.temperature = check_float("temperature", temperature, low=0.0, low_inclusive=False)
        self.multiplier_rate = check_float("multiplier_rate", multiplier_rate, low=0.0,
                                           low_inclusive=False)
        self.settle_step = check_int("settle_step", settle_step, low=0)
        self.margin = check_float("margin", margin, low=0.0, low_inclusive=False)
        self._binding = None

    def build(self, input_shape=None):
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.lambda1 = self.add_weight(name="lambda1", shape=(), dtype=tf.float32,
                                       initializer="zeros", trainable=False, aggregation=first,
                                       experimental_autocast=False)
        self.lambda2 = self.add_weight(name="lambda2", shape=(), dtype=tf.float32,
                                       initializer="zeros", trainable=False, aggregation=first,
                                       experimental_autocast=False)
        self.last_step = self.add_weight(name="last_step", shape=(), dtype=tf.int64,
                                         initializer="zeros", trainable=False, aggregation=first,
                                         experimental_autocast=False)
        self.budget_metrics = [BudgetValue(name, dtype=tf.float32) for name in (
            "budget_expected_fraction", "budget_final_fraction", "budget_hard_fraction",
            "budget_lambda")]
        super().build(input_shape)

    # ------------------------------------------------------------------ binding

    def bind(self, structure):
        """Reads the model: `structure` is the model's `expected.ExpectedSize`."""
        self._binding = _Binding(structure, self.settle_step)
        self.minimum_fraction = self._binding.minimum / float(structure.total)

    def _require_bound(self):
        if getattr(self, "_binding", None) is None:
            raise ValueError("ParameterBudget `{}` is not attached to a model: create it with "
                             "keras_efficient.pruning.parameter_budget(model, ...).".format(
                                 self.name))
        return self._binding

    def end_logits(self, adl):
        """beta_end = sqrt(gamma / alpha) * beta' + c_end of one site."""
        scale = (adl.gamma / adl.alpha) ** 0.5
        return scale * adl.retention_raw + self._require_bound().end_target[id(adl)]

    # ------------------------------------------------------------------ loss

    def _fraction(self, probabilities):
        size = self._binding.size
        return size(probabilities) / float(size.total)

    def _settle_shift(self, ranked):
        """The common shift of the ranked logits whose hard size is nearest to the budget.

        Shifting every logit by shifts[k] keeps exactly the k + 1 top-ranked units
        (the jitter makes the ranks distinct); the size is nondecreasing in k, so
        bisection finds the largest k whose size fits, and the nearer of k and k + 1
        wins. No gradient flows through the ranking.
        """
        bound = self._binding
        budget = self.target_fraction * float(bound.size.total)
        thresholds = {id(adl): tf.fill(tf.shape(ranked[id(adl)]), adl.effective_threshold)
                      for adl in bound.adls}
        shifts = tf.sort(_unit_values(bound.adls, thresholds) - _unit_values(bound.adls, ranked))
        n = int(shifts.shape[0])

        def size_at(k):
            shift = shifts[tf.clip_by_value(k, 0, n - 1)]
            return tf.where(k < 0, bound.minimum, bound.size(
                lambda adl: keep_probabilities(adl, hard=True, logits=ranked[id(adl)] + shift)))

        def bisect(lo, hi):  # invariant: size_at(lo) <= budget < size_at(hi)
            mid = (lo + hi) // 2
            fits = size_at(mid) <= budget
            return tf.where(fits, mid, lo), tf.where(fits, hi, mid)

        lo, hi = tf.while_loop(lambda lo, hi: hi - lo > 1, bisect,
                               (tf.constant(-1), tf.constant(n)), maximum_iterations=64)
        nearer_hi = (hi < n) & (size_at(hi) - budget < budget - size_at(lo))
        k = tf.where(nearer_hi, hi, lo)
        return tf.where(k < 0, shifts[0] - 1.0, shifts[tf.maximum(k, 0)])

    def _settle_hinge(self, logits, ranked, shift):
        terms = []
        for adl in self._binding.adls:
            theta = adl.effective_threshold
            beta = logits[id(adl)]
            keep = ranked[id(adl)] + shift >= theta
            terms.append(tf.reduce_sum(tf.where(keep, tf.nn.relu(theta + self.margin - beta),
                                                tf.nn.relu(beta - theta + self.margin))))
        return tf.add_n(terms)

    def budget_loss(self):
        """The loss term of the current step; updates the multipliers and metrics.

        Called by Keras (through `model.add_loss`) once per train and test step.
        """
        bound = self._require_bound()
        step = bound.adls[0].step_counter.read_value()
        logits = {id(adl): self.end_logits(adl) for adl in bound.adls}
        soft = self._fraction(lambda adl: keep_probabilities(adl, self.temperature,
                                                             logits=logits[id(adl)]))
        final = self._fraction(lambda adl: keep_probabilities(adl, hard=True,
                                                              logits=logits[id(adl)]))
        hard = self._fraction(lambda adl: keep_probabilities(adl, hard=True))
        violation = final - self.target_fraction
        relaxed = violation + soft - tf.stop_gradient(soft)
        lambda1, lambda2 = tf.identity(self.lambda1), tf.identity(self.lambda2)
        lagrangian = lambda1 * relaxed + lambda2 * tf.square(relaxed)
        settling = step >= self.settle_step
        ranked = {key: tf.stop_gradient(value) + bound.jitter[key]
                  for key, value in logits.items()}
        shift = tf.cond(settling, lambda: self._settle_shift(ranked), lambda: tf.constant(0.0))
        loss = tf.where(settling, self._settle_hinge(logits, ranked, shift), lagrangian)
        with tf.control_dependencies([loss]):
            training = step > self.last_step
            rate = tf.where(training & tf.logical_not(settling), self.multiplier_rate, 0.0)
            updates = [
                self.lambda1.assign_add(rate * violation),
                self.lambda2.assign_add(rate * tf.square(violation)),
                self.last_step.assign(tf.maximum(step, self.last_step)),
            ]
            for metric, value in zip(self.budget_metrics, (soft, final, hard, lambda1)):
                updates.append(metric.update_state(value))
        with tf.control_dependencies(updates):
            return tf.identity(loss)

    def call(self, inputs):
        """Identity: the budget acts through its loss, not on a tensor."""
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "target_fraction": self.target_fraction,
            "temperature": self.temperature,
            "multiplier_rate": self.multiplier_rate,
            "settle_step": self.settle_step,
            "margin": self.margin,
        })
        return config


class _Binding:
    """What a budget reads from its model (a plain object: Keras does not track it)."""

    def __init__(self, size, settle_step):
        self.size = size
        self.adls = size.adaptive_dropout_layers
        rng = np.random.default_rng(0)
        self.jitter = {id(adl): tf.constant(1e-4 * rng.uniform(size=adl.retention_raw.shape),
                                            tf.float32) for adl in self.adls}
        self.end_target = {id(adl): _end_target(adl, settle_step) for adl in self.adls}
        self.minimum = float(size(_all_pruned))


def _all_pruned(adl):
    zeros = tf.zeros(adl.retention_raw.shape, tf.float32)
    return zeros, 1.0 - zeros


def _end_target(adl, settle_step):
    """c_end: the schedule's `final_target`, else c(settle_step)."""
    final = getattr(adl.schedule, "final_target", None)
    if final is not None:
        return float(final)
    return float(adl.schedule(settle_step))


def _default_settle_step(adls):
    steps = [getattr(adl.schedule, "decay_steps", None) for adl in adls]
    if any(s is None for s in steps):
        raise ValueError("Cannot choose `settle_step`: the schedule of an AdaptiveDropout site has "
                         "no `decay_steps`. Pass settle_step= to parameter_budget.")
    return int(max(steps))


def parameter_budget(model, target_fraction, temperature=1.0, multiplier_rate=0.1,
                     settle_step=None, margin=0.5, name="parameter_budget"):
    """Attaches a parameter budget to a built model with AdaptiveDropout sites.

    After this call, a plain `model.compile(...)` + `model.fit(...)` trains with the
    paper's adaptive dropout plus the budget's loss (see `ParameterBudget`): a
    Lagrangian on the expected effective fraction until `settle_step`, then a
    settle that ranks the units by their retention logit and moves them to their
    side of the threshold so that the hard count is the one nearest to the
    budget. Train for some steps past `settle_step` (each unit that must cross
    moves by about one optimizer step of beta per step; 100-200 steps were enough
    in the tests): `count_parameters(model)["ratio"]` then equals the
    target to within about half of one unit's share of the parameters.

    The budget is not a layer of the model (`model.layers`, `model.weights`,
    `count_parameters` and `prune` do not see it). It is a checkpoint dependency
    of the model named `parameter_budget`, so `save_weights`/`load_weights` and
    `tf.train.Checkpoint` save and restore its state; attach a budget to the
    model you restore into before loading. Its loss is added with
    `model.add_loss`. Call this before the first `fit` (a model already trained
    gets a new train function). Under a `tf.distribute` strategy the state is
    created in the model's strategy scope.

    Args:
      model: a built functional or Sequential `keras.Model` that
        `count_parameters` accepts, with at least one AdaptiveDropout site.
      target_fraction: rho in (0, 1], the ratio effective / total of
        `count_parameters` to end at.
      temperature: tau of the soft relaxation (`expected_parameters`).
      multiplier_rate: dual step size of the multipliers.
      settle_step: step t (of the AdaptiveDropout layers) at which the settle
        starts; default the largest `decay_steps` K of the sites' schedules, when
        c(t) has reached c_inf.
      margin: logits by which the settle pushes units past the threshold.
      name: name of the `ParameterBudget`.

    Returns:
      The attached `ParameterBudget`.

    Raises:
      ValueError: target_fraction outside (0, 1] or below the smallest reachable
        fraction (every unit pruned: what no unit removal touches, plus the one
        zero unit a dead Conv2D site keeps); a model without AdaptiveDropout
        sites, or one `count_parameters` does not accept; a model that already
        has a budget.
    """
    target_fraction = check_float("target_fraction", target_fraction, low=0.0, high=1.0,
                                  low_inclusive=False)
    if settle_step is not None:
        settle_step = check_int("settle_step", settle_step, low=0)
    if getattr(model, _ATTRIBUTE, None) is not None:
        raise ValueError("Model `{}` already has a parameter budget ({}).".format(
            model.name, getattr(model, _ATTRIBUTE).name))
    structure = ExpectedSize(model)
    adls = structure.adaptive_dropout_layers
    if not adls:
        raise ValueError("parameter_budget() needs a model with AdaptiveDropout sites (top-level "
                         "ones or inside adaptive ConformerBlocks); model `{}` has none.".format(
                             model.name))
    if settle_step is None:
        settle_step = _default_settle_step(adls)
    with model.distribute_strategy.scope():
        budget = ParameterBudget(target_fraction, temperature=temperature,
                                 multiplier_rate=multiplier_rate, settle_step=settle_step,
                                 margin=margin, name=name)
        budget.build(None)
    budget.bind(structure)
    if target_fraction < budget.minimum_fraction:
        raise invalid_argument(
            "target_fraction", "a fraction the model can reach: at least {:.6f}, the fraction "
            "left with every unit of model `{}` pruned".format(budget.minimum_fraction, model.name),
            target_fraction)
    attach_to_model(model, budget, "parameter_budget", _ATTRIBUTE)
    return budget


def get_parameter_budget(model):
    """The `ParameterBudget` attached to `model`, or None."""
    return getattr(model, _ATTRIBUTE, None)
