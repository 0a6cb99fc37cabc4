"""The functional graph of a model, from its public config.

`FunctionalGraph(model)` reads which layer call feeds which from
`model.get_config()` (the `inbound_nodes` of every layer, `input_layers`,
`output_layers`), the same description Keras saves and reloads a functional
model from, instead of the private engine attributes (a layer's lists of inbound
and outbound nodes, the `Node` objects) that Keras itself calls internal. It answers
who produces and who consumes each layer's outputs, and `replay` calls the
layers again (or replacements for them) on new tensors, as Keras does when it
rebuilds a model from its config. `keras_efficient.pruning.prune` and
`keras_efficient.models.split_functional_model` are built on it.

Vocabulary: a *call* is one application of a layer in the model (a Keras
"node"); a layer shared within the model has several. A `TensorRef` names one
output tensor of one call: (layer name, call index within the model, tensor
index). Calls of the layer outside this model (the layer used in another model
too) are not part of the graph.
"""

import collections

from keras_efficient.backend import keras, tf

__all__ = ["FunctionalGraph", "LayerCall", "TensorRef", "is_functional"]


class TensorRef(collections.namedtuple("TensorRef", ["layer", "call", "tensor"])):
    """Output `tensor` (index into the flattened outputs) of call number `call` of the
    layer named `layer`. An input of the model is `TensorRef(input_layer_name, 0, 0)`."""

    __slots__ = ()


class _Constant(collections.namedtuple("_Constant", ["value"])):
    """A constant (not a Keras tensor) in a call's first argument."""

    __slots__ = ()


class LayerCall:
    """One call of a layer in a functional model.

    Attributes:
      layer: the layer (the object held by the model).
      index: position among the layer's calls in this model (0 for the first).
      inputs: the first call argument, a nested structure of `TensorRef`s (and
        constants), as in the config.
      kwargs: the other call arguments by name, with `TensorRef`s for tensors.
      refs: every `TensorRef` the call reads, first argument first, in order and
        with repetitions.
    """

    def __init__(self, layer, index, inputs, kwargs):
        self.layer, self.index, self.inputs, self.kwargs = layer, index, inputs, kwargs
        self.refs = [leaf for leaf in _leaves(inputs, _is_ref) + _leaves(kwargs, _is_ref)
                     if isinstance(leaf, TensorRef)]

    def __repr__(self):
        return "LayerCall({!r}, {}, reads={})".format(self.layer.name, self.index,
                                                    [tuple(r) for r in self.refs])


def is_functional(model):
    """True for a functional `keras.Model` or a Sequential built on an input (what
    Keras calls a graph network); False for subclassed models and other objects."""
    return isinstance(model, keras.Model) and bool(getattr(model, "inputs", None))


class FunctionalGraph:
    """The layer calls of a functional (or built Sequential) model and how they connect.

    Read from the public config of a plain functional view of the model,
    `keras.Model(model.input, model.output)` (so Sequential models and functional
    subclasses with their own `get_config` are read the same way); the view shares
    the model's layers and tensors and adds no call to any layer. Every layer must
    therefore implement `get_config`, as needed to save the model.

    Args:
      model: a functional or built Sequential `keras.Model`.

    Raises:
      ValueError: `model` is not a functional model, or its config cannot be read.
    """

    def __init__(self, model):
        if not is_functional(model):
            raise ValueError("Expected a functional or Sequential keras.Model built on inputs. "
                             "Received: model={!r}".format(model))
        self.model = model
        view = keras.Model(model.input, model.output, name=model.name)
        try:
            config = view.get_config()
        except NotImplementedError as error:
            raise ValueError("Cannot read the graph of model `{}` from its config: one of its "
                             "layers does not implement `get_config` ({}).".format(
                                 model.name, error)) from error
        by_name = {layer.name: layer for layer in view.layers}
        self._layers = by_name
        raw = collections.OrderedDict()
        for entry in config["layers"]:
            raw[entry.get("name", entry["config"].get("name"))] = entry.get("inbound_nodes") or []
        # Keras numbers the calls of a functional model (or of a Sequential built on
        # an input) from 1 in a config: its node 0 is the one linking its own inputs
        # to its outputs, left out of the config. Keras decides this from private
        # attributes (`functional._should_skip_first_node`); `is_functional` is the
        # public equivalent, checked below against every reference.
        self._offsets = {name: int(is_functional(by_name[name])) for name in raw}
        self.input_refs = [self._leaf_to_ref(leaf) for leaf in _leaves(config["input_layers"])]
        self.output_refs = [self._leaf_to_ref(leaf) for leaf in _leaves(config["output_layers"])]
        self._calls = collections.OrderedDict()
        for name, nodes in raw.items():
            self._calls[name] = [LayerCall(by_name[name], index, *self._parse_node(node_data))
                                 for index, node_data in enumerate(nodes)]
        for call in self.calls():
            for ref in call.refs:
                self._check_ref(ref, "layer `{}`".format(call.layer.name))
        for ref in self.input_refs + self.output_refs:
            self._check_ref(ref, "the model")

    # ------------------------------------------------------------------ reading

    @property
    def layers(self):
        """Every layer of the model, input layers included, in config order."""
        return [self._layers[name] for name in self._calls]

    def layer(self, name):
        """The layer called `name`."""
        return self._layers[name]

    @property
    def input_layers(self):
        """The model's input layers, in `model.inputs` order."""
        return [self._layers[ref.layer] for ref in self.input_refs]

    def calls(self, layer=None):
        """The calls of `layer` (a layer or its name) in this model, or of every layer
        (in config order, each layer's calls in order) when `layer` is None. Input
        layers have none."""
        if layer is None:
            return [call for calls in self._calls.values() for call in calls]
        return list(self._calls[self._name(layer)])

    def call_count(self, layer):
        """How many times the model calls `layer`."""
        return len(self._calls[self._name(layer)])

    def producers(self, layer):
        """The layers whose outputs the calls of `layer` read, one entry per tensor
        read (repeated for a tensor read twice), in order."""
        return [self._layers[ref.layer] for call in self.calls(layer) for ref in call.refs]

    def consumers(self, layer):
        """The calls that read an output of `layer`, one entry per tensor read (a call
        reading two of its outputs, or one output twice, appears twice). Model
        outputs are not calls: see `is_output`."""
        name = self._name(layer)
        return [call for call in self.calls() for ref in call.refs if ref.layer == name]

    def is_output(self, layer):
        """True when an output of `layer` is an output of the model."""
        name = self._name(layer)
        return any(ref.layer == name for ref in self.output_refs)

    def downstream(self, refs):
        """The calls that read one of the tensors `refs`, directly or through other
        calls, in config order."""
        given, reached = set(refs), set()
        order = self.calls()
        changed = True
        while changed:
            changed = False
            for call in order:
                key = (call.layer.name, call.index)
                if key not in reached and any(
                        ref in given or (ref.layer, ref.call) in reached for ref in call.refs):
                    reached.add(key)
                    changed = True
        return [call for call in order if (call.layer.name, call.index) in reached]

    # ------------------------------------------------------------------ replay

    def replay(self, tensors, layer_fn=None):
        """Calls the layers again on new tensors, as Keras rebuilds a model from its config.

        Every call downstream of the given tensors is replayed, in dependency order,
        with the call arguments of the config (tensors replaced by their new
        counterparts). Calls that do not depend on the given tensors are skipped.

        Args:
          tensors: {TensorRef: tensor}, e.g. `dict(zip(graph.input_refs, new_inputs))`
            or the output of one layer.
          layer_fn: layer -> the layer to call in its place (called once per layer,
            so a shared layer stays shared), or None to pass the call's first argument
            through unchanged (the layer is removed). Default: the layer itself (the
            replayed calls share the model's layers and weights).

        Returns:
          {TensorRef: new tensor}: the given tensors and the outputs of every replayed
          call; `[result[r] for r in graph.output_refs]` are the new model outputs
          when they depend on the given tensors only.

        Raises:
          ValueError: a call downstream of the given tensors also reads a tensor that
            is neither given nor computed from them.
        """
        available = dict(tensors)
        replacement = {}
        pending = self.downstream(list(tensors))
        while pending:
            remaining = []
            for call in pending:
                if not all(ref in available for ref in call.refs):
                    remaining.append(call)
                    continue
                name = call.layer.name
                if name not in replacement:
                    replacement[name] = call.layer if layer_fn is None else layer_fn(call.layer)
                target = replacement[name]
                args = self._resolve(call.inputs, available)
                if not _preserves_input_structure(call.layer):
                    args = _unnest_if_single(args)
                if target is None:
                    outputs = args
                else:
                    outputs = target(args, **self._resolve(call.kwargs, available))
                for index, tensor in enumerate(tf.nest.flatten(outputs)):
                    available[TensorRef(name, call.index, index)] = tensor
            if len(remaining) == len(pending):
                call = remaining[0]
                missing = [tuple(ref) for ref in call.refs if ref not in available]
                raise ValueError("Cannot replay layer `{}`: it also reads {}, which is neither "
                                 "given nor computed from the given tensors.".format(
                                     call.layer.name, missing))
            pending = remaining
        return available

    # ------------------------------------------------------------------ helpers

    def _name(self, layer):
        name = layer if isinstance(layer, str) else layer.name
        if name not in self._calls or (not isinstance(layer, str)
                                       and self._layers[name] is not layer):
            raise ValueError("Layer `{}` is not part of model `{}`.".format(name, self.model.name))
        return name

    def _parse_node(self, node_data):
        kwargs = {}
        for leaf in _leaves(node_data):
            if len(leaf) == 4 and leaf[3]:
                kwargs = leaf[3]
                break
        inputs = _map_leaves(node_data, self._leaf_to_ref)
        # Keras writes a tensor passed as another argument as [layer_name, node_index,
        # tensor_index] (and reloads any such list as a tensor).
        kwargs = _map_leaves(kwargs, lambda leaf: self._leaf_to_ref(leaf) if (
            leaf[0] in self._offsets and len(leaf) == 3) else leaf)
        return inputs, kwargs

    def _leaf_to_ref(self, leaf):
        name, node_index, tensor_index = leaf[0], leaf[1], leaf[2]
        if name not in self._offsets:
            # Keras writes a constant in the first argument as
            # ["_CONSTANT_VALUE", -1, value(, kwargs)].
            return _Constant(tensor_index)
        return TensorRef(name, node_index - self._offsets[name], tensor_index)

    def _check_ref(self, ref, where):
        layer = self._layers[ref.layer]
        if isinstance(layer, keras.layers.InputLayer):
            valid = ref.call == 0
        else:
            valid = 0 <= ref.call < len(self._calls[ref.layer])
        if not valid:
            raise ValueError(
                "Cannot read the graph of model `{}`: {} reads call {} of `{}`, which the "
                "config does not list.".format(self.model.name, where, ref.call, ref.layer))

    def _resolve(self, structure, available):
        def one(leaf):
            if isinstance(leaf, TensorRef):
                return available[leaf]
            if isinstance(leaf, _Constant):
                return leaf.value
            return leaf
        return _map_leaves(structure, one, _is_ref)


def _is_leaf(data):
    """A config reference `[layer_name, node_index, tensor_index(, kwargs)]` (the test
    Keras applies, `tf_utils.convert_inner_node_data`)."""
    return isinstance(data, (list, tuple)) and len(data) in (3, 4) and isinstance(data[0], str)


def _is_ref(data):
    return isinstance(data, (TensorRef, _Constant))


def _leaves(data, is_leaf=_is_leaf):
    """The leaves of a nested list/tuple/dict, dict values in sorted key order."""
    if is_leaf(data):
        return [data]
    if isinstance(data, dict):
        return [leaf for key in sorted(data) for leaf in _leaves(data[key], is_leaf)]
    if isinstance(data, (list, tuple)):
        return [leaf for item in data for leaf in _leaves(item, is_leaf)]
    return []


def _map_leaves(data, fn, is_leaf=_is_leaf):
    """`data` with `fn` applied to every leaf; containers keep their type."""
    if is_leaf(data):
        return fn(data)
    if isinstance(data, dict):
        return {key: _map_leaves(value, fn, is_leaf) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_map_leaves(item, fn, is_leaf) for item in data)
    return data


def _unnest_if_single(args):
    """A first argument holding one tensor (not in a dict) is passed as that tensor:
    the config does not tell `layer(x)` from `layer([x])`, and Keras reloads both as
    `layer(x)` (`base_layer_utils.unnest_if_single_tensor`)."""
    flat = tf.nest.flatten(args)
    if not isinstance(args, dict) and len(flat) == 1:
        return flat[0]
    return args


def _preserves_input_structure(layer):
    # Keras's wrappers of TensorFlow ops in functional models (`TFOpLambda` and
    # friends) keep a one-element list as a list when reloaded; Keras reads this
    # private flag the same way (`getattr` with a False default) and there is no
    # public equivalent. Without it the call gets the single tensor, Keras's default.
    return bool(getattr(layer, "_preserve_input_structure_in_config", False))
