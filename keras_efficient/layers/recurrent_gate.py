"""SkipNet's recurrent gate, shared by all gated blocks of a network (E²-Train Sec. 3.2)."""

import threading

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import check_float, check_int

__all__ = ["RecurrentGate", "gate_context"]

_CONTEXT = threading.local()


def gate_context():
    """The per-thread forward-pass context `(gate, state)` (None before the first gate)."""
    return getattr(_CONTEXT, "value", None)


def _set_context(gate, state):
    _CONTEXT.value = (gate, state)


@register_serializable
class RecurrentGate(keras.layers.Layer):
    """The shared part of SkipNet's recurrent gate: an LSTM cell, a dense layer, a sigmoid.

    For block k with projected pooled features z_k (see `GatedResidualBlock`):

        (h_k, c_k) = LSTM(z_k, (h_{k-1}, c_{k-1})),   g_k = sigmoid(w·h_k + b)

    with (h_0, c_0) = 0 at the first block. One `RecurrentGate` object is owned
    by the first gated block of a network; the recurrent state and the gate are
    handed from block to block through a per-thread forward-pass context (the
    blocks of a model run in order within one forward pass; each replica of a
    `tf.distribute` strategy runs in its own thread). All math is float32.

    Args:
      hidden_units: LSTM state size (SkipNet: 10).
      bias_initializer_value: initial bias b of the output unit; 2.0 starts the
        gates open (sigmoid(2) ≈ 0.88), as training a ResNet from scratch with
        most blocks closed is unstable.

    Call arguments:
      inputs: `[batch, projection_dim]` projected features of the current block.
      states: `[h, c]`, each `[batch, hidden_units]`.

    Input shape: `[batch, projection_dim]`.
    Output shape: `([batch], [h, c])`: the gate probabilities and the new state.
    """

    def __init__(self, hidden_units=10, bias_initializer_value=2.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.hidden_units = check_int("hidden_units", hidden_units, low=1)
        self.bias_initializer_value = check_float("bias_initializer_value",
                                                  bias_initializer_value)
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
        zeros = tf.zeros(tf.stack([batch_size, self.hidden_units]), tf.float32)
        return [zeros, zeros]

    def call(self, inputs, states=None):
        inputs = tf.cast(inputs, tf.float32)
        if states is None:
            states = self.zero_state(tf.shape(inputs)[0])
        h, new_states = self.cell(inputs, states)
        prob = tf.sigmoid(self.head(h))[:, 0]
        return prob, list(new_states)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_units": self.hidden_units,
                       "bias_initializer_value": self.bias_initializer_value})
        return config
