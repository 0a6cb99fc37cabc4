"""SkipNet's recurrent gate, shared by all gated blocks of a network (E²-Train Sec. 3.2)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_float,
    check_int,
)

__all__ = ["RecurrentGate"]

# Helpers of `GatedResidualBlock` for passing the gate and its state between blocks.


def _current_graph():
    """The graph being built (None when executing eagerly)."""
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def _replica_id():
    context = tf.distribute.get_replica_context()
    if context is None:
        return 0
    value = tf.get_static_value(context.replica_id_in_sync_group)
    return 0 if value is None else int(value)


class _LegacyState:
    """The last state a block left for a block of the legacy implicit form (see `GatedResidualBlock`).

    A plain object (not tracked or saved): one `(graph, [h, c])` per replica, so
    that a reader can tell a state of its own graph and replica from one left
    elsewhere, and raise instead of using it.
    """

    def __init__(self):
        self.entries = {}

    def put(self, state):
        self.entries[_replica_id()] = (_current_graph(), list(state))

    def get(self):
        entry = self.entries.get(_replica_id())
        if entry is None or entry[0] is not _current_graph():
            return None
        state = entry[1]
        if _current_graph() is None and any(tf.is_symbolic_tensor(t) for t in state):
            return None
        return state


class _GateSlot:
    """Holds the `RecurrentGate` a block shares with its owner, and for the legacy form the
    block it reads the state from (plain object: Keras neither tracks nor saves them, so the
    gate's weights are saved once, with the owner)."""

    def __init__(self, gate=None):
        self.gate = gate
        self.source = None


def _is_keras_tensor(x):
    try:
        return bool(keras.backend.is_keras_tensor(x))
    except ValueError:  # not a tensor at all (e.g. a NumPy array)
        return False


def _producer(tensor):
    """The layer that produced a Keras tensor of a functional graph (None otherwise)."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.layer


def _upstream_gated_block(tensor, limit=10000):
    """The nearest gated block (a layer with a `recurrent_gate`) upstream of a Keras tensor,
    following first inputs."""
    layer = _producer(tensor)
    while layer is not None and limit > 0:
        if hasattr(layer, "recurrent_gate"):
            return layer if layer.recurrent_gate is not None else None
        history = tensor._keras_history
        node = layer._inbound_nodes[history.node_index]
        inputs = tf.nest.flatten(node.call_args[:1]) if node.call_args else []
        tensor = inputs[0] if inputs else None
        layer = _producer(tensor) if tensor is not None else None
        limit -= 1
    return None


@register_serializable
class RecurrentGate(ValidateArgsMixin, keras.layers.Layer):
    """The shared part of SkipNet's recurrent gate: an LSTM cell, a dense layer, a sigmoid.

    For block k with projected pooled features z_k (see `GatedResidualBlock`):

        (h_k, c_k) = LSTM(z_k, (h_{k-1}, c_{k-1})),   g_k = sigmoid(w·h_k + b)

    with (h_0, c_0) = 0 at the first block. The state is an explicit input and
    output: `call(z, states=[h, c])` returns the probabilities and the new
    `[h, c]`; the gated blocks pass it from one to the next as tensors of the
    model's graph (`GatedResidualBlock(..., return_state=True)` and
    `block(x, state=[h, c])`). One `RecurrentGate` object serves every block of a
    network: the first block constructed with it owns it (its weights are saved
    once, with that block). All math is float32.

    Args:
      hidden_units: LSTM state size (SkipNet: 10).
      bias_initializer_value: initial bias b of the output unit; 2.0 starts the
        gates open (sigmoid(2) ≈ 0.88), as training a ResNet from scratch with
        most blocks closed is unstable.
      validate_args: also check the values of the features and of the state
        (NaN/Inf, empty batch) at every call (`ValidateArgsMixin`; off by default).
        Ranks and sizes of the state are always checked.

    Call arguments:
      inputs: `[batch, projection_dim]` projected features of the current block.
      states: `[h, c]`, each `[batch, hidden_units]`; None: the zero state (h_0, c_0).

    Input shape: `[batch, projection_dim]`.
    Output shape: `([batch], [h, c])`: the gate probabilities and the new state.
    """

    def __init__(self, hidden_units=10, bias_initializer_value=2.0,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.hidden_units = check_int("hidden_units", hidden_units, low=1)
        self.bias_initializer_value = check_float("bias_initializer_value",
                                                  bias_initializer_value)
        self._init_validate_args(validate_args)
        self.cell = keras.layers.LSTMCell(self.hidden_units, dtype="float32", name="lstm")
        self.head = keras.layers.Dense(
            1, dtype="float32", name="head",
            bias_initializer=keras.initializers.Constant(self.bias_initializer_value))

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError("Input 0 of layer `{}` must have rank 2 with a known last dimension. "
                             "Received: input_shape={}".format(self.name, input_shape))
        self.cell.build(input_shape)
        self.head.build((input_shape[0], self.hidden_units))
        super().build(input_shape)

    def zero_state(self, batch_size):
        """The initial state (h_0, c_0) = 0 as a list `[h, c]` of `[batch_size, hidden_units]`."""
        zeros = tf.zeros(tf.stack([batch_size, self.hidden_units]), tf.float32)
        return [zeros, zeros]

    def _check_states(self, states):
        if not isinstance(states, (list, tuple)) or len(states) != 2:
            raise ValueError("Layer `{}` expects `states=[h, c]` (two tensors of shape "
                             "[batch, {}]). Received: states={!r}".format(
                                 self.name, self.hidden_units, states))
        out = []
        for name, s in zip("hc", states):
            s = tf.convert_to_tensor(s)
            if s.shape.rank != 2 or s.shape[-1] not in (None, self.hidden_units):
                raise ValueError("The state `{}` of layer `{}` must have shape [batch, {}]. "
                                 "Received: shape={}".format(name, self.name, self.hidden_units,
                                                             s.shape))
            out.append(self._validate_values(tf.cast(s, tf.float32), self.name + "/" + name))
        return out

    def call(self, inputs, states=None):
        inputs = self._validate_values(tf.cast(inputs, tf.float32))
        if states is None:
            states = self.zero_state(tf.shape(inputs)[0])
        else:
            states = self._check_states(states)
        h, new_states = self.cell(inputs, states)
        prob = tf.sigmoid(self.head(h))[:, 0]
        return prob, list(new_states)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_units": self.hidden_units,
                       "bias_initializer_value": self.bias_initializer_value,
                       **self._validate_args_config()})
        return config
