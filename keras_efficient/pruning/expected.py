"""The expected effective parameter count: a differentiable `count_parameters`.

    E[size] = fixed + sum_units cost(unit) * P(kept)        (+ shared terms, below)

Every parameter that `count_parameters` would remove with a unit is charged to
that unit; parameters shared by several units are charged to the event "at least
one of them survives", whose probability is 1 - prod(1 - P) over those units
(sites are independent, and units within a site are treated as independent).
With P(kept) = 1[beta >= threshold] the expectation is `count_parameters(model)
["effective"]` exactly; with the soft P below it is differentiable in beta.
"""

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.pruning.plan import adaptive_dropout_weights, model_plans
from keras_efficient.utils.validation import check_float, invalid_argument

__all__ = ["expected_parameters", "keep_probabilities"]


def keep_probabilities(adaptive_dropout, temperature=1.0, hard=False, logits=None,
                       dtype=tf.float32):
    """P(kept) and P(pruned) of every unit of one AdaptiveDropout site.

    Soft (the default), with theta the site's pruning threshold:

        P(kept) = sigma((beta - theta) / tau),   P(pruned) = sigma((theta - beta) / tau).

    At tau = 1 this is P(beta + eps >= theta) for eps ~ Logistic(0, 1), the noise
    of the Gumbel-sigmoid mask (Eq. 3): the probability that the unit's noisy
    retention logit clears the threshold. tau -> 0 gives the hard decision.
    Both probabilities are computed from their own sigmoid, so 1 - P never
    rounds to 0 for a unit that is merely likely to be kept.

    Hard: P(kept) = 1[beta >= theta], the `keep_mask` of the layer (no gradient).

    Args:
      adaptive_dropout: a built `AdaptiveDropout`.
      temperature: tau > 0.
      hard: use the hard decision.
      logits: optional beta to use instead of the layer's current
        `retention_logits` (same shape).
      dtype: the float dtype of the result (beta is cast to it first).

    Returns:
      (keep, drop): tensors of `dtype` shaped like the layer's units.
    """
    beta = adaptive_dropout.retention_logits if logits is None else logits
    threshold = adaptive_dropout.effective_threshold
    if hard:  # compared like `keep_mask`, in beta's own dtype
        keep = tf.cast(beta >= threshold, dtype)
        return keep, 1.0 - keep
    x = (tf.cast(beta, dtype) - threshold) / temperature
    return tf.sigmoid(x), tf.sigmoid(-x)


class _Site:
    """Expected statistics of one site's surviving-unit count n, from (keep, drop)."""

    def __init__(self, keep, drop, dtype):
        self.keep = tf.cast(keep, dtype)
        self.drop = tf.cast(drop, dtype)

    def count(self):
        """E[n]."""
        return tf.reduce_sum(self.keep)

    def none(self, axis=None):
        """P(n = 0) = prod(1 - P) (per row along `axis` when given)."""
        return tf.reduce_prod(self.drop, axis=axis)


def _conformer_block(block, site, dtype):
    """E[parameters of the pruned block]; the counts of `plan.BlockPlan.pruned_parameters`.

    A module with n surviving units costs d + 1[n > 0] * 2d (its LayerNorm goes
    with its last unit, its output bias stays) + n * (per-unit cost); a query unit
    costs its W_Q/b_Q and W_K/b_K rows only while its head has a value unit.
    """
    d, k = block.model_dim, block.kernel_size
    sites = {name: site(adl) for name, adl in block.adaptive_dropout_sites.items()}

    def module(s, per_unit):
        return d + 2 * d * (1.0 - s.none()) + per_unit * s.count()

    ffn = module(sites["ffn1"], 2 * d + 1) + module(sites["ffn2"], 2 * d + 1)
    conv = module(sites["conv"], 2 * (d + 1) + k + 4 + d)
    query, value = sites["attention_query"], sites["attention_value"]
    head_alive = 1.0 - value.none(axis=-1)                        # [heads]
    queries = tf.reduce_sum(head_alive * tf.reduce_sum(query.keep, axis=-1))
    attention = module(value, 2 * d + 1) + 2 * (d + 1) * queries
    return ffn + attention + conv + 2 * d


def _unit_layer(layer, rows, cols, dtype):
    """E[parameters of a Dense/Conv2D] after `plan.pruned_parameters`.

    rows, cols: None (all kept) or (E[n], P(n = 0)) of the kept input rows and
    output units. pruned = K * n_in * n_out + n_out * (1 if bias else 1[n_in = 0]),
    which is 0 when n_out = 0; n_in and n_out come from different sites
    (independent), so E[n_in * n_out] = E[n_in] * E[n_out].
    """
    shape = [int(v) for v in layer.kernel.shape]
    spatial = int(np.prod(shape[:-2], dtype=np.int64))
    n_in, in_none = (tf.constant(shape[-2], dtype), tf.constant(0.0, dtype)) if rows is None \
        else rows
    n_out = tf.constant(shape[-1], dtype) if cols is None else cols[0]
    bias = 1.0 if layer.use_bias else in_none
    return spatial * n_in * n_out + n_out * bias


def _top_level_sites(sites, site, dtype):
    """{layer: E[parameters]} of every Dense/Conv2D next to a top-level site."""
    roles = {}
    for adl, plan in sites.items():
        s = site(adl)
        dense_pair = (isinstance(plan.producer, keras.layers.Dense)
                      and isinstance(plan.consumer, keras.layers.Dense) and plan.flatten is None)
        if dense_pair:
            n, none = s.count(), s.none()
        else:  # a site with no survivor keeps one zero-weight unit (`plan.SitePlan`)
            n, none = s.count() + s.none(), tf.constant(0.0, dtype)
        positions = int(plan.flatten.input_shape[-2]) if plan.flatten is not None else 1
        roles.setdefault(plan.consumer, [None, None])[0] = (positions * n, none)
        roles.setdefault(plan.producer, [None, None])[1] = (n, none)
    return {layer: _unit_layer(layer, rows, cols, dtype) for layer, (rows, cols) in roles.items()}


class ExpectedSize:
    """The structure of a model's effective parameter count, read once from its plans.

    Reading the plans needs eager execution (`plan.model_plans` evaluates the keep
    masks); evaluating the expectation does not, so a budget reads the structure
    when it is attached and evaluates `__call__` inside the compiled train step.

    Args:
      model: a functional or Sequential model (see `count_parameters`).
    """

    def __init__(self, model):
        blocks, sites, nested = model_plans(model)
        adl_ids = {id(w) for w in adaptive_dropout_weights(model)}

        def size(weights):
            return int(sum(np.prod(w.shape) for w in weights if id(w) not in adl_ids))

        self.model = model
        self.total = size(model.weights)
        self.blocks = list(blocks)
        self.sites = sites
        self.nested = [ExpectedSize(inner) for inner in nested]
        layers = set()
        for plan in sites.values():
            layers.update((plan.producer, plan.consumer))
        variable = sum(size(b.weights) for b in self.blocks) + sum(
            layer.count_params() for layer in layers) + sum(n.total for n in self.nested)
        self.fixed = self.total - variable

    @property
    def adaptive_dropout_layers(self):
        """Every AdaptiveDropout whose units enter the count."""
        out = []
        for block in self.blocks:
            out.extend(block.adaptive_dropout_sites.values())
        out.extend(self.sites)
        for inner in self.nested:
            out.extend(inner.adaptive_dropout_layers)
        return out

    def __call__(self, probabilities, dtype=tf.float32):
        """E[effective parameters] given `probabilities(adl) -> (keep, drop)`."""
        cache = {}

        def site(adl):
            if id(adl) not in cache:
                cache[id(adl)] = _Site(*probabilities(adl), dtype=dtype)
            return cache[id(adl)]

        terms = [tf.constant(float(self.fixed), dtype)]
        terms += [_conformer_block(block, site, dtype) for block in self.blocks]
        terms += list(_top_level_sites(self.sites, site, dtype).values())
        terms += [inner(probabilities, dtype) for inner in self.nested]
        return tf.add_n(terms)


def expected_parameters(model, temperature=1.0, hard=False, dtype="float32"):
    """The expected effective parameter count of a model with AdaptiveDropout sites.

        E[effective] = sum_units cost(unit) * P(kept) + shared terms + fixed part

    Per-unit costs are those of `count_parameters` (read from the same pruning
    plans): an FFN unit its W1 column, b1 entry and W2 row (2D + 1); a query unit
    its W_Q/b_Q and W_K/b_K rows (2(D + 1)); a value unit its W_V/b_V row and
    W_O column (2D + 1); an LConv unit its W_I/W_G rows and biases, depthwise
    kernel, BatchNorm parameters and W_O column (2(D + 1) + K + 4 + D); at a
    top-level site the producer's column (filter) and bias and the consumer's
    rows. Parameters shared by several units are charged to the probability that
    at least one of them survives, 1 - prod(1 - P): a module's LayerNorm (removed
    when no unit of the module survives), a head's query units (kept only while
    a value unit of the head survives: P(query kept) * (1 - prod over the head's
    value units of (1 - P))), a Dense whose inputs all went (it becomes a
    constant holding its bias) and the one zero-weight unit a dead Conv2D site
    keeps. A Dense between two sites costs K * E[n_in] * E[n_out] (+ bias), the
    two sites being independent. Units are treated as independent Bernoulli
    variables, so every term is the exact expectation under that model.

    The relaxation differentiated through (see `keep_probabilities`):
    P(kept) = sigma((beta - theta) / tau), theta the site's threshold; at tau = 1
    it is the probability that beta + eps clears theta for the logistic noise eps
    of Eq. (3). With `hard=True`, P(kept) = 1[beta >= theta] and the result equals
    `count_parameters(model)["effective"]` (no gradient).

    Args:
      model: a functional or Sequential `keras.Model` that `count_parameters`
        accepts.
      temperature: tau > 0 of the soft relaxation.
      hard: the hard 0/1 decision instead of the soft probability.
      dtype: "float32" (default; what an IPU runs) or "float64". float32 holds
        integers exactly up to 2**24, so on larger models hard counts agree with
        `count_parameters` to float32 rounding.

    Returns:
      A scalar tensor of `dtype`, differentiable with respect to the
      `retention_raw` variables (soft mode). Must be called eagerly (or inside a
      `tf.GradientTape`), not inside a `tf.function`: reading the plans evaluates
      the keep masks. `parameter_budget` reads them once and evaluates the
      expectation inside the train step.
    """
    temperature = check_float("temperature", temperature, low=0.0, low_inclusive=False)
    if not isinstance(hard, bool):
        raise invalid_argument("hard", "a bool", hard, TypeError)
    if dtype not in ("float32", "float64", tf.float32, tf.float64):
        raise invalid_argument("dtype", "'float32' or 'float64'", dtype)
    dtype = tf.as_dtype(dtype)
    structure = ExpectedSize(model)
    return structure(lambda adl: keep_probabilities(adl, temperature, hard, dtype=dtype),
                     dtype=dtype)

