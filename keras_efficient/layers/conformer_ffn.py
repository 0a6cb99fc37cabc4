"""The Conformer feed-forward module with an adaptive-dropout site (Eq. 8)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.conformer_common import (
    ConformerModule,
    build_sublayer,
    check_sequence_input,
)
from keras_efficient.utils.validation import VALIDATE_ARGS_DEFAULT, check_int

__all__ = ["ConformerFeedForward"]


@register_serializable
class ConformerFeedForward(ConformerModule):
    """Conformer FFN module with an ADL after the hidden activation.

        y = Dropout(b2 + W2 (m * swish(b1 + W1 LayerNorm(x))))        (Eq. 8)

    The residual connection (with its 1/2 weight) is applied by the block.
    When m_d is always 0, column d of W1, entry d of b1 and row d of W2 can be
    removed (`keras_efficient.pruning.prune`).

    Args:
      model_dim: input and output width D.
      ffn_dim: hidden width.
      dropout_rate: rate of the ordinary dropout on the module output.
      adaptive: insert the AdaptiveDropout site m (unit axis: the hidden units).
      schedule, alpha, gamma, threshold, inference, seed: `AdaptiveDropout` arguments.
      validate_args: also check the input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`); rank, model_dim and the dtype are always checked.

    Call arguments:
      inputs: [batch, time, model_dim].
      training: Python bool.

    Input shape:
      `[batch, time, model_dim]`.

    Output shape:
      `[batch, time, model_dim]`.
    """

    def __init__(self, model_dim, ffn_dim, dropout_rate=0.1, adaptive=True, schedule=None,
                 alpha=1e-7, gamma=1e-5, threshold=None, inference="hard", seed=None,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(model_dim, dropout_rate, adaptive, schedule, alpha, gamma, threshold,
                         inference, seed, validate_args, **kwargs)
        self.ffn_dim = check_int("ffn_dim", ffn_dim, low=1)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
        self.dense1 = keras.layers.Dense(self.ffn_dim, activation="swish", name="dense1")
        self.adaptive_dropout = self._settings.make("adl_hidden")
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.dense2 = keras.layers.Dense(self.model_dim, name="dense2")
        self.supports_masking = True  # position-wise: a time mask passes through

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_sequence_input(self.name, input_shape, self.model_dim)
        build_sublayer(self.norm, input_shape)
        build_sublayer(self.dense1, input_shape)
        hidden = input_shape[:-1].concatenate([self.ffn_dim])
        if self.adaptive_dropout is not None:
            build_sublayer(self.adaptive_dropout, hidden)
        build_sublayer(self.dense2, hidden)
        super().build(input_shape)

    def call(self, inputs, training=None):
        h = self.dense1(self.norm(self._validate_values(tf.convert_to_tensor(inputs))))
        if self.adaptive_dropout is not None:
            h = self.adaptive_dropout(h, training=training)
        return self.dropout(self.dense2(h), training=training)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"ffn_dim": self.ffn_dim})
        return config
