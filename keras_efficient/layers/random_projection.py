"""Achlioptas' sparse random projection as a fixed Keras layer (ReBEL, Sec. VI-A)."""

import numpy as np

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import VALIDATE_ARGS_DEFAULT, ValidateArgsMixin, check_int

__all__ = ["RandomProjection", "achlioptas_matrix"]


def achlioptas_matrix(input_dim, output_dim, seed):
    """The (input_dim, output_dim) kernel W = Rᵀ of Achlioptas' database-friendly projection.

    R_ij = sqrt(3 / output_dim) · s_ij with s_ij ∈ {+1, 0, −1} drawn with
    probabilities 1/6, 2/3, 1/6, so E[‖R x‖²] = ‖x‖². Drawn with NumPy's
    `default_rng(seed)`: the same (input_dim, output_dim, seed) always gives
    the same matrix.
    """
    input_dim = check_int("input_dim", input_dim, low=1)
    output_dim = check_int("output_dim", output_dim, low=1)
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([1.0, 0.0, -1.0]), size=(input_dim, output_dim),
                       p=[1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0])
    return (np.sqrt(3.0 / output_dim) * signs).astype(np.float32)


@register_serializable
class RandomProjection(ValidateArgsMixin, keras.layers.Layer):
    """Fixed sparse random projection y = R x (Achlioptas, 2001), saved with the model.

    R is (output_dim, d) with entries sqrt(3)·{+1, 0, −1} / sqrt(output_dim) with
    probabilities 1/6, 2/3, 1/6 (see `achlioptas_matrix`). ReBEL uses it to
    reduce the bottleneck from 867 to 434 dimensions before the Gaussian mixture
    classifier (Sec. VI-A, footnote 2). The matrix is a non-trainable weight
    `kernel` = Rᵀ, so it is stored in checkpoints and SavedModels; it is also
    reproducible from (d, output_dim, seed).

    Args:
      output_dim: k, the projected dimension.
      seed: non-negative integer seed of the matrix.
      validate_args: also check values (NaN/Inf, empty batch) at every call;
        rank and last dimension are always checked (`ValidateArgsMixin`).

    Call arguments:
      inputs: float tensor (..., d).

    Input shape:
      (..., d) with d known at build time.

    Output shape:
      (..., output_dim).
    """

    def __init__(self, output_dim, seed=0, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = check_int("output_dim", output_dim, low=1)
        self.seed = check_int("seed", seed, low=0)
        self._init_validate_args(validate_args)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is None or input_shape.rank < 2 or input_shape[-1] is None:
            raise ValueError("Input 0 of layer `{}` must have rank >= 2 and a known last "
                             "dimension. Received: input_shape={}".format(self.name, input_shape))
        d = int(input_shape[-1])
        value = achlioptas_matrix(d, self.output_dim, self.seed)
        self.kernel = self.add_weight(
            "kernel", shape=(d, self.output_dim), dtype=self.dtype, trainable=False,
            initializer=keras.initializers.Constant(value))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: d})
        super().build(input_shape)

    def matrix(self):
        """R, (output_dim, d), float32."""
        return tf.transpose(tf.cast(self.kernel, tf.float32))

    def call(self, inputs):
        x = self._validate_values(tf.convert_to_tensor(inputs))
        return tf.tensordot(x, tf.cast(self.kernel, x.dtype), axes=[[-1], [0]])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.output_dim])

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "seed": self.seed,
                       **self._validate_args_config()})
        return config
