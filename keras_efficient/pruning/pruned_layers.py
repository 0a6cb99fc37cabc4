"""Layers that hold a physically pruned model: a ragged-head self-attention, a
constant module, and the pruned Conformer block built from them."""

import math

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.conformer_attention import masked_softmax
from keras_efficient.layers.conformer_common import (
    build_sublayer,
    check_sequence_input,
    check_time_mask,
)
from keras_efficient.layers.conformer_conv import ConformerConvolution
from keras_efficient.layers.conformer_ffn import ConformerFeedForward
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["ConstantOutput", "PrunedSelfAttention", "PrunedConformerBlock"]


def _check_sizes(name, sizes, high):
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise invalid_argument(name, "a non-empty list of per-head sizes", sizes)
    return [check_int("{}[{}]".format(name, i), s, low=0, high=high) for i, s in enumerate(sizes)]


@register_serializable
class ConstantOutput(keras.layers.Layer):
    """The output of a fully pruned module: activation(bias), broadcast over the input's
    leading dimensions.

        y[..., :] = activation(b)

    Args:
      units: output width.
      activation: optional Keras activation applied to the bias.

    Call arguments:
      inputs: any tensor; only its leading (all but the last) dimensions are used.

    Input shape:
      `[..., any]`.

    Output shape:
      `[..., units]`.
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int("units", units, low=1)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        shape = tf.concat([tf.shape(inputs)[:-1], [self.units]], axis=0)
        return self.activation(tf.broadcast_to(tf.cast(self.bias, self.compute_dtype), shape))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units,
                       "activation": keras.activations.serialize(self.activation)})
        return config


@register_serializable
class PrunedSelfAttention(keras.layers.Layer):
    """Self-attention whose heads keep different numbers of query and value units.

    The exact representation of Eqs. (9)-(10) after pruning: head h keeps q_h
    query/key units and v_h value units (Q/K/V projections are stored
    concatenated over heads, [D, sum q_h] and [D, sum v_h], and W_O as
    [sum v_h, D]). Scores use the original 1/sqrt(head_dim) scale. A head with
    q_h = 0 has all-zero scores, i.e. uniform attention, so its context is the
    time average of its values (computed as such, no T x T matrix). Heads with
    v_h = 0 contribute nothing and must have q_h = 0. Cost: the heads' score and
    context products run as one small matmul per head (a static Python loop)
    instead of one batched einsum; parameters and FLOPs are exactly those of the
    surviving units. A time mask removes padded frames from the softmax (and from
    the time average of a head without query units), as in
    `ConformerSelfAttention`.

    Args:
      model_dim: D.
      head_dim: the unpruned per-head width (sets the score scale).
      query_units: list of q_h, one per original head.
      value_units: list of v_h, one per original head (at least one > 0).
      dropout_rate: dropout on the output.

    Call arguments:
      inputs: [batch, time, model_dim]; training: Python bool; mask: optional
        boolean [batch, time] time mask.

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, head_dim, query_units, value_units, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = check_int("model_dim", model_dim, low=1)
        self.head_dim = check_int("head_dim", head_dim, low=1)
        self.query_units = _check_sizes("query_units", query_units, self.head_dim)
        self.value_units = _check_sizes("value_units", value_units, self.head_dim)
        if len(self.query_units) != len(self.value_units):
            raise invalid_argument("value_units", "one entry per head ({})".format(
                len(self.query_units)), value_units)
        if not any(self.value_units):
            raise invalid_argument("value_units", "at least one surviving value unit", value_units)
        if any(q and not v for q, v in zip(self.query_units, self.value_units)):
            raise invalid_argument("query_units", "0 for heads without value units", query_units)
        self.dropout_rate = check_float("dropout_rate", dropout_rate, low=0.0, high=1.0,
                                        high_inclusive=False)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.softmax = masked_softmax()
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        build_sublayer(self.norm, input_shape)
        d, nq, nv = self.model_dim, sum(self.query_units), sum(self.value_units)
        if nq:
            self.query_kernel = self.add_weight(name="query_kernel", shape=(d, nq))
            self.query_bias = self.add_weight(name="query_bias", shape=(nq,), initializer="zeros")
            self.key_kernel = self.add_weight(name="key_kernel", shape=(d, nq))
            self.key_bias = self.add_weight(name="key_bias", shape=(nq,), initializer="zeros")
        self.value_kernel = self.add_weight(name="value_kernel", shape=(d, nv))
        self.value_bias = self.add_weight(name="value_bias", shape=(nv,), initializer="zeros")
        self.output_kernel = self.add_weight(name="output_kernel", shape=(nv, d))
        self.output_bias = self.add_weight(name="output_bias", shape=(d,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        x = self.norm(inputs)
        key_mask = None if mask is None else mask[:, None, :]
        v = tf.matmul(x, self.value_kernel) + self.value_bias
        values = tf.split(v, self.value_units, axis=-1)
        if sum(self.query_units):
            q = tf.matmul(x, self.query_kernel) + self.query_bias
            k = tf.matmul(x, self.key_kernel) + self.key_bias
            queries = tf.split(q, self.query_units, axis=-1)
            keys = tf.split(k, self.query_units, axis=-1)
        scale = 1.0 / math.sqrt(self.head_dim)
        contexts = []
        for h, (nq, nv) in enumerate(zip(self.query_units, self.value_units)):
            if not nv:
                continue
            if nq:
                scores = tf.cast(tf.matmul(queries[h], keys[h], transpose_b=True), tf.float32)
                weights = tf.cast(self.softmax(scores * scale, mask=key_mask), values[h].dtype)
                contexts.append(tf.matmul(weights, values[h]))
            else:
                if key_mask is None:
                    mean = tf.reduce_mean(values[h], axis=1, keepdims=True)
                else:  # the softmax of all-equal scores over the real frames
                    zeros = tf.zeros(tf.shape(key_mask))
                    weights = tf.cast(self.softmax(zeros, mask=key_mask), values[h].dtype)
                    mean = tf.matmul(weights, values[h])
                contexts.append(tf.broadcast_to(mean, tf.shape(values[h])))
        context = contexts[0] if len(contexts) == 1 else tf.concat(contexts, axis=-1)
        out = tf.matmul(context, self.output_kernel) + self.output_bias
        return self.dropout(out, training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"model_dim": self.model_dim, "head_dim": self.head_dim,
                       "query_units": list(self.query_units),
                       "value_units": list(self.value_units),
                       "dropout_rate": self.dropout_rate})
        return config


@register_serializable
class PrunedConformerBlock(keras.layers.Layer):
    """A `ConformerBlock` after physical pruning: no ADLs, smaller modules.

    Same computation as the inference of the ConformerBlock with hard masks:
    FFNs with `ffn1_units` / `ffn2_units` hidden units, `PrunedSelfAttention`
    with per-head sizes, an LConv with `conv_units` channels. A module with no
    surviving unit becomes a `ConstantOutput` holding its output bias (the
    LConv's with the folded BatchNorm constants).

    Args:
      model_dim, num_heads, head_dim, kernel_size, dropout_rate: as the original block.
      ffn1_units, ffn2_units, conv_units: surviving units (0 = module removed).
      query_units, value_units: per-head surviving units.

    Call arguments:
      inputs: [batch, time, model_dim]; training: Python bool; mask: optional
        boolean [batch, time] time mask (see `ConformerBlock`).

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, num_heads, head_dim, ffn1_units, ffn2_units, query_units,
                 value_units, conv_units, kernel_size, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = check_int("model_dim", model_dim, low=1)
        self.num_heads = check_int("num_heads", num_heads, low=1)
        self.head_dim = check_int("head_dim", head_dim, low=1)
        self.ffn1_units = check_int("ffn1_units", ffn1_units, low=0)
        self.ffn2_units = check_int("ffn2_units", ffn2_units, low=0)
        self.query_units = _check_sizes("query_units", query_units, self.head_dim)
        self.value_units = _check_sizes("value_units", value_units, self.head_dim)
        if len(self.query_units) != self.num_heads or len(self.value_units) != self.num_heads:
            raise invalid_argument("query_units", "num_heads={} entries".format(num_heads),
                                   query_units)
        self.conv_units = check_int("conv_units", conv_units, low=0)
        self.kernel_size = check_int("kernel_size", kernel_size, low=1)
        self.dropout_rate = check_float("dropout_rate", dropout_rate, low=0.0, high=1.0,
                                        high_inclusive=False)
        d, rate = self.model_dim, self.dropout_rate
        self.ffn1 = (ConformerFeedForward(d, self.ffn1_units, rate, adaptive=False, name="ffn1")
                     if self.ffn1_units else ConstantOutput(d, name="ffn1"))
        self.attention = (PrunedSelfAttention(d, self.head_dim, self.query_units, self.value_units,
                                              rate, name="attention")
                          if any(self.value_units) else ConstantOutput(d, name="attention"))
        self.conv = (ConformerConvolution(d, self.kernel_size, rate, conv_dim=self.conv_units,
                                          adaptive=False, name="conv")
                     if self.conv_units else ConstantOutput(d, name="conv"))
        self.ffn2 = (ConformerFeedForward(d, self.ffn2_units, rate, adaptive=False, name="ffn2")
                     if self.ffn2_units else ConstantOutput(d, name="ffn2"))
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        for module in (self.ffn1, self.attention, self.conv, self.ffn2, self.final_norm):
            build_sublayer(module, input_shape)
        super().build(input_shape)

    def _module(self, module, x, training, mask=None):
        if isinstance(module, ConstantOutput):
            return module(x)
        if mask is None:
            return module(x, training=training)
        return module(x, training=training, mask=mask)

    def call(self, inputs, training=None, mask=None):
        x = tf.debugging.assert_all_finite(
            inputs, "`{}` received non-finite values (NaN or Inf).".format(self.name))
        mask = check_time_mask(self.name, mask, x)
        x = x + 0.5 * self._module(self.ffn1, x, training)
        x = x + self._module(self.attention, x, training, mask)
        x = x + self._module(self.conv, x, training, mask)
        x = x + 0.5 * self._module(self.ffn2, x, training)
        return self.final_norm(x)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "model_dim": self.model_dim, "num_heads": self.num_heads, "head_dim": self.head_dim,
            "ffn1_units": self.ffn1_units, "ffn2_units": self.ffn2_units,
            "query_units": list(self.query_units), "value_units": list(self.value_units),
            "conv_units": self.conv_units, "kernel_size": self.kernel_size,
            "dropout_rate": self.dropout_rate,
        })
        return config
