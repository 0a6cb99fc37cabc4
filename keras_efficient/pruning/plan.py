"""Which units survive, where their parameters are, and how many remain.

Internal to `keras_efficient.pruning`: `prune`, `surviving_units` and
`count_parameters` all read the model through these plans, so the parameter
count of the pruned model and the reported effective count come from one rule.
"""

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock

__all__ = []


class BlockPlan:
    """Surviving units of one adaptive ConformerBlock.

    Attributes: ffn1, ffn2, conv (index arrays), query, value (lists of per-head
    index arrays; a head without value units keeps no query units, since its
    scores no longer reach the output).
    """

    def __init__(self, block):
        sites = block.adaptive_dropout_sites
        keep = {name: np.asarray(adl.keep_mask.numpy()) for name, adl in sites.items()}
        self.block = block
        self.ffn1 = np.flatnonzero(keep["ffn1"])
        self.ffn2 = np.flatnonzero(keep["ffn2"])
        self.conv = np.flatnonzero(keep["conv"])
        self.value = [np.flatnonzero(row) for row in keep["attention_value"]]
        self.query = [np.flatnonzero(row) if len(v) else np.zeros((0,), np.int64)
                      for row, v in zip(keep["attention_query"], self.value)]

    def pruned_parameters(self):
        """Parameter count of the pruned block (see `PrunedConformerBlock`)."""
        b = self.block
        d, k = b.model_dim, b.kernel_size

        def ffn(n):
            return 2 * d + 2 * n * d + n + d if n else d

        def conv(n):
            return 2 * d + 2 * n * (d + 1) + k * n + 4 * n + n * d + d if n else d

        nq = sum(len(q) for q in self.query)
        nv = sum(len(v) for v in self.value)
        attention = 2 * d + nq * 2 * (d + 1) + nv * (2 * d + 1) + d if nv else d
        return ffn(len(self.ffn1)) + ffn(len(self.ffn2)) + attention + conv(len(self.conv)) + 2 * d


class DenseSitePlan:
    """An AdaptiveDropout between two Dense layers: Dense -> [Dropout/Activation]* -> ADL ->
    [Dropout]* -> Dense."""

    def __init__(self, adl, dense_in, dense_out, between):
        self.adl, self.dense_in, self.dense_out, self.between = adl, dense_in, dense_out, between
        self.keep = np.flatnonzero(np.asarray(adl.keep_mask.numpy()))



def dense_roles(sites):
    """{Dense layer: (rows, cols)}: the kept input rows (None = all) and output columns
    (None = all) of every Dense next to a pruned site. A Dense can be the output of
    one site and the input of the next."""
    roles = {}
    for plan in sites.values():
        rows, _ = roles.get(plan.dense_in, (None, None))
        roles[plan.dense_in] = (rows, plan.keep)
        _, cols = roles.get(plan.dense_out, (None, None))
        roles[plan.dense_out] = (plan.keep, cols)
    return roles


def dense_pruned_parameters(layer, rows, cols):
    """Parameters of `layer` after keeping `rows` inputs and `cols` outputs (None = all).

    No output column: the layer disappears (0). No input row: it becomes a
    constant holding its bias (`ConstantOutput`, zeros when it had no bias).
    """
    n_out = layer.units if cols is None else len(cols)
    if n_out == 0:
        return 0
    n_in = int(layer.kernel.shape[0]) if rows is None else len(rows)
    if n_in == 0:
        return n_out
    return n_in * n_out + (n_out if layer.use_bias else 0)


def _single(nodes, what, layer):
    if len(nodes) != 1:
        raise ValueError("Cannot prune around layer `{}`: it has {} {} nodes; prune() needs a "
                         "layer used exactly once.".format(layer.name, len(nodes), what))
    return nodes[0]


def _inbound_layer(layer):
    node = _single(layer._inbound_nodes, "inbound", layer)
    inbound = node.inbound_layers
    if isinstance(inbound, (list, tuple)):
        raise ValueError("Cannot prune around layer `{}`: it has several inputs.".format(
            layer.name))
    return inbound


def _outbound_layer(layer):
    return _single(layer._outbound_nodes, "outbound", layer).outbound_layer


def dense_site_plan(adl):
    """The Dense -> ADL -> Dense chain around a top-level AdaptiveDropout, or ValueError."""
    if adl._unit != (adl._rank - 1,):
        raise ValueError("prune() removes units of a top-level AdaptiveDropout only when its "
                         "unit axis is the last one; `{}` has unit_axes={}.".format(
                             adl.name, adl.unit_axes))
    between = []
    producer = _inbound_layer(adl)
    while isinstance(producer, (keras.layers.Dropout, keras.layers.Activation)):
        _outbound_layer(producer)
        between.append(producer)
        producer = _inbound_layer(producer)
    consumer = _outbound_layer(adl)
    while isinstance(consumer, keras.layers.Dropout):
        between.append(consumer)
        consumer = _outbound_layer(consumer)
    if not isinstance(producer, keras.layers.Dense) or not isinstance(consumer, keras.layers.Dense):
        raise ValueError(
            "prune() needs AdaptiveDropout `{}` between two Dense layers (Dense -> [Dropout or "
            "Activation] -> AdaptiveDropout -> [Dropout] -> Dense); found {} -> ... -> {}.".format(
                adl.name, type(producer).__name__, type(consumer).__name__))
    _outbound_layer(producer)  # the producer's output must feed only this chain
    _single(consumer._inbound_nodes, "inbound", consumer)
    if producer.units != adl._units_shape[0]:
        raise ValueError("AdaptiveDropout `{}` has {} units but Dense `{}` has {}.".format(
            adl.name, adl._units_shape[0], producer.name, producer.units))
    return DenseSitePlan(adl, producer, consumer, between)


def model_plans(model):
    """({ConformerBlock: BlockPlan}, {AdaptiveDropout: DenseSitePlan}, [nested model]) for a
    functional model. Nested functional (or Sequential) models that hold sites are listed
    in the third element and planned on their own, recursively."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError("Expected a functional or Sequential keras.Model built on inputs. "
                         "Received: model={!r}".format(model))
    blocks, sites, nested = {}, {}, []
    for layer in model.layers:
        if isinstance(layer, ConformerBlock) and layer.adaptive:
            blocks[layer] = BlockPlan(layer)
        elif isinstance(layer, AdaptiveDropout):
            sites[layer] = dense_site_plan(layer)
        elif isinstance(layer, keras.Model):
            inner = [sub for sub in layer._flatten_layers(include_self=False)
                     if isinstance(sub, AdaptiveDropout)]
            if not inner:
                continue
            if not getattr(layer, "_is_graph_network", False):
                raise ValueError("prune() handles AdaptiveDropout layers in functional and "
                                 "Sequential models (also nested ones); `{}` is a subclassed "
                                 "model holding `{}`.".format(layer.name, inner[0].name))
            if len(layer._inbound_nodes) != 1:
                raise ValueError("Cannot prune nested model `{}`: it is used {} times; prune() "
                                 "needs a model used exactly once.".format(
                                     layer.name, len(layer._inbound_nodes)))
            nested.append(layer)
    return blocks, sites, nested


def adaptive_dropout_weights(model):
    """All AdaptiveDropout variables of the model (retention parameters and step counters)."""
    out = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, AdaptiveDropout):
            out.extend(layer.weights)
    return out
