"""Which units survive, where their parameters are, and how many remain.

Internal to `keras_efficient.pruning`: `prune`, `surviving_units` and
`count_parameters` all read the model through these plans, so the parameter
count of the pruned model and the reported effective count come from one rule.
"""

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock
from keras_efficient.layers.padded_frames import SubsampledTimeMask
from keras_efficient.utils.graph import FunctionalGraph, is_functional

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


class SitePlan:
    """An AdaptiveDropout between two layers whose last axis holds its units:
    producer (Dense or Conv2D) -> [Dropout/Activation]* -> ADL -> [Dropout or a
    time mask]* -> [Reshape that flattens the last two axes] -> consumer (Dense or
    Conv2D).

    Attributes: `keep` (surviving unit indices); `rows` (the consumer's kept input
    rows: `keep`, or for a flattening Reshape the rows f·C + c of every kept c);
    `dead` (True when no unit survives but the site keeps one zero channel, see
    below); `flatten` (the Reshape or None).

    Between two Dense layers a site without survivors removes the producer and
    turns the consumer into a `ConstantOutput`. Where a Conv2D or a flattening
    Reshape is involved that has no exact constant form, so the site keeps its
    first unit and the consumer's weights for it are zero: the output is still
    exact, at the cost of one unit's parameters (counted in `count_parameters`).
    """

    def __init__(self, adl, producer, consumer, between, flatten=None):
        self.adl, self.producer, self.consumer = adl, producer, consumer
        self.between, self.flatten = between, flatten
        self.keep = np.flatnonzero(np.asarray(adl.keep_mask.numpy()))
        dense_pair = (isinstance(producer, keras.layers.Dense)
                      and isinstance(consumer, keras.layers.Dense) and flatten is None)
        self.dead = not len(self.keep) and not dense_pair
        if self.dead:
            self.keep = np.zeros((1,), np.int64)
        self.rows = self.keep
        if flatten is not None:
            channels = int(flatten.input_shape[-1])
            positions = int(flatten.input_shape[-2])
            self.rows = (np.arange(positions)[:, None] * channels + self.keep[None, :]).ravel()

    def flatten_shape(self):
        """The new Reshape target shape after pruning (flatten sites only)."""
        shape = list(self.flatten.target_shape)
        shape[-1] = int(self.flatten.input_shape[-2]) * len(self.keep)
        return tuple(shape)


def site_roles(sites):
    """{layer: (rows, cols, zero_rows)}: the kept input rows (None = all), the kept
    output units (None = all) and whether the kept rows must be zeroed (a dead
    site) of every Dense or Conv2D next to a pruned site. A layer can be the
    consumer of one site and the producer of the next."""
    roles = {}
    for plan in sites.values():
        rows, _, zero = roles.get(plan.producer, (None, None, False))
        roles[plan.producer] = (rows, plan.keep, zero)
        _, cols, _ = roles.get(plan.consumer, (None, None, False))
        roles[plan.consumer] = (plan.rows, cols, plan.dead)
    return roles


def pruned_parameters(layer, rows, cols):
    """Parameters of a Dense or Conv2D `layer` after keeping `rows` inputs and `cols`
    outputs (None = all).

    A Dense with no output column disappears (0); with no input row it becomes a
    constant holding its bias (`ConstantOutput`, zeros when it had no bias).
    """
    kernel_shape = [int(d) for d in layer.kernel.shape]
    n_out = kernel_shape[-1] if cols is None else len(cols)
    if n_out == 0:
        return 0
    n_in = kernel_shape[-2] if rows is None else len(rows)
    if n_in == 0:
        return n_out
    return int(np.prod(kernel_shape[:-2], dtype=np.int64)) * n_in * n_out + (
        n_out if layer.use_bias else 0)


def _single(items, what, layer):
    if len(items) != 1:
        raise ValueError("Cannot prune around layer `{}`: it has {} {} nodes; prune() needs a "
                         "layer used exactly once.".format(layer.name, len(items), what))
    return items[0]


def _inbound_layer(graph, layer):
    call = _single(graph.calls(layer), "inbound", layer)
    if len(call.refs) != 1:
        raise ValueError("Cannot prune around layer `{}`: it has several inputs.".format(
            layer.name))
    return graph.layer(call.refs[0].layer)


def _outbound_layer(graph, layer):
    return _single(graph.consumers(layer), "outbound", layer).layer


def _is_unit_layer(layer):
    """Dense, or a channels-last ungrouped Conv2D (not a transposed one)."""
    if isinstance(layer, keras.layers.Dense):
        return True
    return (isinstance(layer, keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.Conv2DTranspose)
            and layer.data_format == "channels_last" and layer.groups == 1)


def _is_flatten(layer):
    """A Reshape that merges the last two axes of its input into one."""
    if not isinstance(layer, keras.layers.Reshape):
        return False
    shape_in = tuple(layer.input_shape[1:])
    target = tuple(layer.target_shape)
    if len(shape_in) < 2 or None in shape_in[-2:] or target[:-1] != shape_in[:-2]:
        return False
    return target[-1] in (-1, shape_in[-2] * shape_in[-1])


def site_plan(adl, graph):
    """The producer -> ADL -> consumer chain around a top-level AdaptiveDropout of the
    model whose `FunctionalGraph` is `graph` (see `SitePlan`), or ValueError."""
    if adl._unit != (adl._rank - 1,):
        raise ValueError("prune() removes units of a top-level AdaptiveDropout only when its "
                         "unit axis is the last one; `{}` has unit_axes={}.".format(
                             adl.name, adl.unit_axes))
    between = []
    producer = _inbound_layer(graph, adl)
    while isinstance(producer, (keras.layers.Dropout, keras.layers.Activation)):
        _outbound_layer(graph, producer)
        between.append(producer)
        producer = _inbound_layer(graph, producer)
    consumer = _outbound_layer(graph, adl)
    while isinstance(consumer, (keras.layers.Dropout, SubsampledTimeMask)):
        between.append(consumer)
        consumer = _outbound_layer(graph, consumer)
    flatten = None
    if _is_flatten(consumer):
        flatten = consumer
        consumer = _outbound_layer(graph, consumer)
    if not _is_unit_layer(producer) or not _is_unit_layer(consumer):
        raise ValueError(
            "prune() needs AdaptiveDropout `{}` between two Dense or Conv2D layers (Dense/Conv2D "
            "-> [Dropout or Activation] -> AdaptiveDropout -> [Dropout] -> [Reshape flattening "
            "the last two axes] -> Dense/Conv2D); found {} -> ... -> {}.".format(
                adl.name, type(producer).__name__, type(consumer).__name__))
    _outbound_layer(graph, producer)  # the producer's output must feed only this chain
    _single(graph.calls(consumer), "inbound", consumer)
    units = int(producer.kernel.shape[-1])
    if units != adl._units_shape[0]:
        raise ValueError("AdaptiveDropout `{}` has {} units but `{}` has {}.".format(
            adl.name, adl._units_shape[0], producer.name, units))
    return SitePlan(adl, producer, consumer, between, flatten)


def model_plans(model):
    """({ConformerBlock: BlockPlan}, {AdaptiveDropout: SitePlan}, [nested model]) for a
    functional model. Nested functional (or Sequential) models that hold sites are listed
    in the third element and planned on their own, recursively. The graph is read from
    the model's public config (`keras_efficient.utils.graph`)."""
    graph = FunctionalGraph(model)
    blocks, sites, nested = {}, {}, []
    for layer in model.layers:
        if isinstance(layer, ConformerBlock) and layer.adaptive:
            blocks[layer] = BlockPlan(layer)
        elif isinstance(layer, AdaptiveDropout):
            sites[layer] = site_plan(layer, graph)
        elif isinstance(layer, keras.Model):
            inner = [sub for sub in layer.submodules if isinstance(sub, AdaptiveDropout)]
            if not inner:
                continue
            if not is_functional(layer):
                raise ValueError("prune() handles AdaptiveDropout layers in functional and "
                                 "Sequential models (also nested ones); `{}` is a subclassed "
                                 "model holding `{}`.".format(layer.name, inner[0].name))
            if graph.call_count(layer) != 1:
                raise ValueError("Cannot prune nested model `{}`: it is used {} times; prune() "
                                 "needs a model used exactly once.".format(
                                     layer.name, graph.call_count(layer)))
            nested.append(layer)
    return blocks, sites, nested


def adaptive_dropout_weights(model):
    """All AdaptiveDropout variables of the model (retention parameters and step counters)."""
    out = []
    for layer in model.submodules:
        if isinstance(layer, AdaptiveDropout):
            out.extend(layer.weights)
    return out
