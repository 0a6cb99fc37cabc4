"""Conformer multi-head self-attention with per-head query and value ADLs (Eqs. 9-10)."""

import math

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.conformer_common import (
    ConformerModule,
    build_sublayer,
    check_sequence_input,
)
from keras_efficient.utils.validation import VALIDATE_ARGS_DEFAULT, check_int

__all__ = ["ConformerSelfAttention"]


def masked_softmax():
    """Keras's Softmax over the key axis, in float32: a mask (True = real key) adds
    -1e9 to padded keys' scores, so a row of padded keys gives a uniform softmax."""
    return keras.layers.Softmax(axis=-1, dtype="float32", name="softmax")


@register_serializable
class ConformerSelfAttention(ConformerModule):
    """Multi-head self-attention with ADL masks on the per-head queries and values.

        q_t^(h) = (b_Q^(h) + W_Q^(h) x_t) * m_Q^(h)
        s_{t,t'}^(h) = q_t^(h) . (b_K^(h) + W_K^(h) x_t') / sqrt(head_dim)       (Eq. 9)
        y_t = b_O + sum_h W_O^(h) sum_t' softmax_t'(s^(h))_{t,t'}
                                   (m_V^(h) * (b_V^(h) + W_V^(h) x_t'))           (Eq. 10)

    x is the LayerNorm of the input; the output passes an ordinary dropout; the
    residual is added by the block. The query and value masks are two separate
    AdaptiveDropout layers with `unit_axes=(-2, -1)` on `[batch, time, heads,
    head_dim]`, so every head has its own mask vector. The 1/sqrt(head_dim)
    scale uses the unpruned head_dim and is kept after pruning. Absolute
    (no relative) positions: the module has no positional encoding, the
    convolution module supplies the order information.

    Time mask (the paper's "optionally time-masked softmax"): with a Keras mask
    `[batch, time]` (True = a real frame), padded frames are removed from every
    softmax as keys, so the outputs at real frames do not depend on the padding;
    outputs at padded frames are computed but meaningless. A sequence with no
    real frame attends uniformly to all of them.

    Args:
      model_dim: input and output width D.
      num_heads: H; head_dim = model_dim // num_heads.
      dropout_rate: ordinary dropout rate on the module output.
      adaptive: insert the query and value AdaptiveDropout sites.
      schedule, alpha, gamma, threshold, inference, seed: `AdaptiveDropout` arguments.
      validate_args: also check the input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`); rank, model_dim and the dtype are always checked.

    Call arguments:
      inputs: [batch, time, model_dim].
      training: Python bool.
      mask: optional boolean [batch, time] time mask (passed by Keras masking).

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, num_heads, dropout_rate=0.1, adaptive=True, schedule=None,
                 alpha=1e-7, gamma=1e-5, threshold=None, inference="hard", seed=None,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(model_dim, dropout_rate, adaptive, schedule, alpha, gamma, threshold,
                         inference, seed, validate_args, **kwargs)
        self.num_heads = check_int("num_heads", num_heads, low=1)
        if self.model_dim % self.num_heads:
            raise ValueError("Invalid value received for argument `num_heads`. Expected a divisor "
                             "of model_dim={}. Received: num_heads={}".format(model_dim, num_heads))
        self.head_dim = self.model_dim // self.num_heads
        heads = (self.num_heads, self.head_dim)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.query = keras.layers.EinsumDense("btd,dhk->bthk", (None,) + heads, bias_axes="hk",
                                              name="query")
        self.key = keras.layers.EinsumDense("btd,dhk->bthk", (None,) + heads, bias_axes="hk",
                                            name="key")
        self.value = keras.layers.EinsumDense("btd,dhk->bthk", (None,) + heads, bias_axes="hk",
                                              name="value")
        self.output_dense = keras.layers.EinsumDense("bthk,hkd->btd", (None, self.model_dim),
                                                     bias_axes="d", name="output")
        self.query_dropout = self._settings.make("adl_query", unit_axes=(-2, -1), seed_offset=1)
        self.value_dropout = self._settings.make("adl_value", unit_axes=(-2, -1), seed_offset=2)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.softmax = masked_softmax()
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        build_sublayer(self.norm, input_shape)
        for dense in (self.query, self.key, self.value):
            build_sublayer(dense, input_shape)
        heads = input_shape[:-1].concatenate([self.num_heads, self.head_dim])
        for adl in (self.query_dropout, self.value_dropout):
            if adl is not None:
                build_sublayer(adl, heads)
        build_sublayer(self.output_dense, heads)
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        x = self.norm(self._validate_values(tf.convert_to_tensor(inputs)))
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.query_dropout is not None:
            q = self.query_dropout(q, training=training)
            v = self.value_dropout(v, training=training)
        scores = tf.einsum("bthk,bshk->bhts", q, k)
        scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(self.head_dim))
        key_mask = None if mask is None else mask[:, None, None, :]
        weights = tf.cast(self.softmax(scores, mask=key_mask), v.dtype)
        context = tf.einsum("bhts,bshk->bthk", weights, v)
        return self.dropout(self.output_dense(context), training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
