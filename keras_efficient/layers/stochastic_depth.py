"""Stochastic depth (Huang et al., 2016): the random baseline SD of E²-Train's SLU."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_float,
    check_input_rank,
    check_int,
    invalid_argument,
)

__all__ = ["StochasticDepth"]


@register_serializable
class StochasticDepth(ValidateArgsMixin, keras.layers.Layer):
    """Skips an identity-shaped residual block for a whole mini-batch with probability 1 − p.

    Training: b ~ Bernoulli(p) once per mini-batch; y = F(x) if b = 1 (the block
    runs, forward and backward), y = x otherwise (the block is not computed:
    `tf.cond`). Inference: y = x + p·(F(x) − x), the expectation. Our blocks end
    with the post-addition ReLU, so F(x) − x stands for the residual branch; this
    is exact for the pre-activation form and the usual choice otherwise.

    Args:
      block: an identity-shaped residual layer, or its config.
      survival_probability: p in (0, 1].
      seed: optional integer seed; the draw of step t uses the stateless seed
        (seed, t) with t counted by the non-trainable weight `step`.
      validate_args: also check input values (NaN/Inf, empty batch) at every
        call (`ValidateArgsMixin`; off by default, as in TensorFlow Probability).

    Call arguments:
      inputs: `[batch, ...]`; training: draw (True) or take the expectation.

    Input shape: any, as accepted by `block`. Output shape: same as input.
    """

    def __init__(self, block, survival_probability=0.5, seed=None,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        if isinstance(block, dict):
            block = keras.layers.deserialize(block)
        if not isinstance(block, keras.layers.Layer):
            raise invalid_argument("block", "a Keras layer", block, TypeError)
        self.block = block
        self.survival_probability = check_float("survival_probability", survival_probability,
                                                low=0.0, high=1.0, low_inclusive=False)
        self.seed = check_int("seed", seed, low=0, allow_none=True)

    def build(self, input_shape):
        check_input_rank(self.name, input_shape, min_rank=2)
        input_shape = tf.TensorShape(input_shape)
        if not self.block.built:
            self.block.build(input_shape)
        out = tf.TensorShape(self.block.compute_output_shape(input_shape))
        if out[1:].as_list() != input_shape[1:].as_list():
            raise ValueError(
                "StochasticDepth `{}` needs a block whose output shape equals its input shape; "
                "block `{}` maps {} to {}.".format(self.name, self.block.name, input_shape, out))
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros",
                                    trainable=False)
        self.ran = self.add_weight(
            name="ran", shape=(), dtype="float32", initializer="ones", trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN)
        super().build(input_shape)

    def call(self, inputs, training=None):
        inputs = self._validate_values(tf.convert_to_tensor(inputs))
        p = self.survival_probability
        if not training:
            return inputs + tf.cast(p, inputs.dtype) * (self.block(inputs, training=False) - inputs)
        if self.seed is None:
            u = tf.random.uniform([])
        else:
            u = tf.random.stateless_uniform([], seed=tf.stack(
                [tf.constant(self.seed, tf.int64), self.step.assign_add(1)]))
        keep = u < p
        update = self.ran.assign(tf.cast(keep, tf.float32))
        with tf.control_dependencies([update]):
            return tf.cond(keep, lambda: self.block(inputs, training=True),
                           lambda: tf.identity(inputs))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"block": keras.layers.serialize(self.block),
                       "survival_probability": self.survival_probability, "seed": self.seed,
                       **self._validate_args_config()})
        return config
