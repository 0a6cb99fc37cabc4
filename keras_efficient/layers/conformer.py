"""The Conformer block with adaptive-dropout pruning sites (Kubo et al., Fig. 1)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.conformer_attention import ConformerSelfAttention
from keras_efficient.layers.conformer_common import (
    AdaptiveSettings,
    build_sublayer,
    check_sequence_input,
    check_time_mask,
)
from keras_efficient.layers.conformer_conv import ConformerConvolution
from keras_efficient.layers.conformer_ffn import ConformerFeedForward
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_float,
    check_int,
)

__all__ = ["ConformerBlock"]


@register_serializable
class ConformerBlock(ValidateArgsMixin, keras.layers.Layer):
    """A Conformer block whose hidden units can be learned away by adaptive dropout.

        x1 = x  + 1/2 FFN_1(x)               (macaron half-step FFN, Eq. 8 site)
        x2 = x1 + MHSA(x1)                   (query and value sites, Eqs. 9-10)
        x3 = x2 + LConv(x2)                  (GLU output site, Eq. 11)
        y  = LayerNorm(x3 + 1/2 FFN_2(x3))   (Eq. 8 site)

    With `adaptive=True` the block holds five AdaptiveDropout layers (two FFN
    hidden sites, the per-head query and value sites, the LConv GLU site), each
    adding its Eq. (5) loss. `keras_efficient.pruning.prune` removes the units
    whose retention logit falls below the threshold.

    Args:
      model_dim: width D of the block input and output.
      num_heads: attention heads (a divisor of model_dim).
      ffn_dim: hidden width of both FFNs.
      kernel_size: odd depthwise-convolution kernel length.
      dropout_rate: the ordinary dropout rate on every module output.
      adaptive: insert the AdaptiveDropout sites.
      schedule: retention target c(t) shared by all sites (default
        `RetentionTargetSchedule()`).
      alpha, gamma, threshold, inference, seed: `AdaptiveDropout` arguments.
      validate_args: also check the block input's values (NaN/Inf, empty batch)
        at every call (`ValidateArgsMixin`), once for the block (its modules
        do not check again); rank, model_dim and the dtype are always checked.

    Call arguments:
      inputs: [batch, time, model_dim] float tensor.
      training: Python bool.
      mask: optional boolean [batch, time] time mask (True = a real frame), as
        set by Keras masking (e.g. `keras.layers.Masking`) or passed directly.
        Padded frames are excluded from the attention softmax and the LConv
        BatchNorm statistics and enter the depthwise convolution as zeros, so
        the outputs at real frames equal those of the unpadded sequence
        (inference; in training up to the random masks). The mask is passed on
        to the next layer.

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, num_heads, ffn_dim, kernel_size, dropout_rate=0.1,
                 adaptive=True, schedule=None, alpha=1e-7, gamma=1e-5, threshold=None,
                 inference="hard", seed=None, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.model_dim = check_int("model_dim", model_dim, low=1)
        self.num_heads = check_int("num_heads", num_heads, low=1)
        self.ffn_dim = check_int("ffn_dim", ffn_dim, low=1)
        self.kernel_size = check_int("kernel_size", kernel_size, low=1)
        self.dropout_rate = check_float("dropout_rate", dropout_rate, low=0.0, high=1.0,
                                        high_inclusive=False)
        self._settings = AdaptiveSettings(adaptive, schedule, alpha, gamma, threshold, inference,
                                          seed)
        common = dict(adaptive=adaptive, schedule=self._settings.schedule, alpha=alpha,
                      gamma=gamma, threshold=threshold, inference=inference)

        def seed_at(offset):
            return None if seed is None else seed + 10 * offset

        self.ffn1 = ConformerFeedForward(model_dim, ffn_dim, dropout_rate, seed=seed_at(0),
                                         name="ffn1", **common)
        self.attention = ConformerSelfAttention(model_dim, num_heads, dropout_rate,
                                                seed=seed_at(1), name="attention", **common)
        self.conv = ConformerConvolution(model_dim, kernel_size, dropout_rate, seed=seed_at(2),
                                         name="conv", **common)
        self.ffn2 = ConformerFeedForward(model_dim, ffn_dim, dropout_rate, seed=seed_at(3),
                                         name="ffn2", **common)
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.supports_masking = True

    @property
    def adaptive(self):
        return self._settings.adaptive

    @property
    def adaptive_dropout_sites(self):
        """{site name: AdaptiveDropout} in block order (empty when not adaptive)."""
        if not self.adaptive:
            return {}
        return {
            "ffn1": self.ffn1.adaptive_dropout,
            "attention_query": self.attention.query_dropout,
            "attention_value": self.attention.value_dropout,
            "conv": self.conv.adaptive_dropout,
            "ffn2": self.ffn2.adaptive_dropout,
        }

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        for module in (self.ffn1, self.attention, self.conv, self.ffn2, self.final_norm):
            build_sublayer(module, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        x = self._validate_values(tf.convert_to_tensor(inputs))
        mask = check_time_mask(self.name, mask, x)
        x = x + 0.5 * self.ffn1(x, training=training)
        x = x + self.attention(x, training=training, mask=mask)
        x = x + self.conv(x, training=training, mask=mask)
        x = x + 0.5 * self.ffn2(x, training=training)
        return self.final_norm(x)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"model_dim": self.model_dim, "num_heads": self.num_heads,
                       "ffn_dim": self.ffn_dim, "kernel_size": self.kernel_size,
                       "dropout_rate": self.dropout_rate, **self._validate_args_config()})
        config.update(self._settings.config())
        return config
