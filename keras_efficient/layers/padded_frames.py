"""Variable-length sequences in a fixed-shape CTC encoder: a time mask from zero
padding, and padded output frames turned into certain blanks."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_float,
    check_input_rank,
    check_int,
)

__all__ = ["SubsampledTimeMask", "CTCBlankPadding"]


def frame_lengths(features):
    """Real frames per example: 1 + the index of the last frame with a non-zero
    feature (0 for an all-zero example). features: [batch, time, features]."""
    nonzero = tf.reduce_any(tf.not_equal(features, 0), axis=-1)  # [batch, time]
    steps = tf.range(1, tf.shape(features)[1] + 1)
    return tf.reduce_max(tf.where(nonzero, steps[None, :], 0), axis=-1)


@register_serializable
class SubsampledTimeMask(ValidateArgsMixin, keras.layers.Layer):
    """Zeroes the padded frames of a subsampled tensor and attaches their time mask.

    Call on `[x, features]`: returns `x * mask` (frames past the subsampled
    length set to 0, so the next strided convolution sees the zeros an unpadded
    sequence would get from its "same" padding), with the Keras mask

        L  = 1 + last t with features[t] != 0       (trailing all-zero frames are padding)
        L' = ceil(L / stride) applied once per stride in `strides`
        mask[t'] = t' < L'

    which is what `"same"`-padded strided convolutions make of a length-L
    sequence (each stride-s layer keeps frames 0, s, 2s, ...). Zero frames
    *inside* an utterance stay real frames.

    Args:
      strides: time strides of the subsampling layers between `features` and `x`
        (e.g. (2, 2) for two stride-2 convolutions).
      validate_args: also check the values of x and features (NaN/Inf, empty
        batch) at every call (`ValidateArgsMixin`); the number of inputs, the
        rank of features and the dtypes are always checked.

    Call arguments:
      inputs: `[x, features]`, x `[batch, time', ...]` (any rank >= 2),
        features `[batch, time, channels]`.

    Input shape:
      `[x_shape, features_shape]`.

    Output shape:
      x's shape; the mask is `[batch, time']` boolean.
    """

    def __init__(self, strides=(2, 2), validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        if not isinstance(strides, (list, tuple)):
            raise TypeError("Invalid type for argument `strides`. Expected a list or tuple of "
                            "ints. Received: strides={!r}".format(strides))
        self.strides = tuple(check_int("strides[{}]".format(i), s, low=1)
                             for i, s in enumerate(strides))
        self.supports_masking = True
        # As keras.layers.Masking: `call` attaches the mask it computed, so Keras
        # does not compute it a second time through `compute_mask`.
        self._compute_output_and_mask_jointly = True

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError("Layer `{}` expects two inputs [x, features]. Received: "
                             "input_shape={}".format(self.name, input_shape))
        check_input_rank(self.name, tf.TensorShape(input_shape[1]), rank=3)
        super().build(input_shape)

    def _mask(self, x, features):
        lengths = frame_lengths(features)
        for stride in self.strides:
            lengths = (lengths + stride - 1) // stride
        return tf.sequence_mask(lengths, tf.shape(x)[1])

    def call(self, inputs):
        x, features = inputs
        x = self._validate_values(tf.convert_to_tensor(x))
        features = self._validate_values(tf.convert_to_tensor(features))
        mask = self._mask(x, features)
        keep = tf.cast(mask, x.dtype)
        keep = tf.reshape(keep, tf.concat([tf.shape(keep), tf.ones([x.shape.rank - 2], tf.int32)],
                                          axis=0))
        outputs = x * keep
        outputs._keras_mask = mask
        return outputs

    def compute_mask(self, inputs, mask=None):
        return self._mask(*inputs)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"strides": list(self.strides), **self._validate_args_config()})
        return config


@register_serializable
class CTCBlankPadding(ValidateArgsMixin, keras.layers.Layer):
    """Makes every padded frame a certain CTC blank, so a full-length CTC loss is exact.

        y[t] = logits[t]                                 where mask[t]
        y[t] = (0, -padding_logit, ..., -padding_logit)  elsewhere (blank = index 0)

    With -padding_logit = -1e4, log p(blank) is exactly 0 in float32 at padded
    frames and every other token has probability 0, so a path through the
    padded frames must emit blanks there and contributes the probability of its
    real-frame prefix: the CTC loss over all frames equals the CTC loss over the
    real frames, and greedy decoding drops the padded frames. The mask is
    consumed (the output has none), so Keras does not turn it into per-frame
    sample weights of a per-example loss.

    Args:
      padding_logit: magnitude of the non-blank logits at padded frames (> 0).
      validate_args: also check the logits' values (NaN/Inf, empty batch) at
        every call (`ValidateArgsMixin`); rank and dtype are always checked.

    Call arguments:
      inputs: logits `[batch, time, vocab + 1]`.
      mask: boolean `[batch, time]`, True at real frames (from Keras masking).

    Input shape:
      `[batch, time, vocab + 1]`.

    Output shape:
      Same as the input.
    """

    def __init__(self, padding_logit=1e4, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.padding_logit = check_float("padding_logit", padding_logit, low=0.0,
                                         low_inclusive=False)
        self.supports_masking = True

    def build(self, input_shape):
        check_input_rank(self.name, tf.TensorShape(input_shape), rank=3)
        super().build(input_shape)

    def call(self, inputs, mask=None):
        inputs = self._validate_values(tf.convert_to_tensor(inputs))
        if mask is None:
            return inputs
        classes = tf.shape(inputs)[-1]
        blank = tf.one_hot(0, classes, on_value=0.0, off_value=-self.padding_logit,
                           dtype=inputs.dtype)
        return tf.where(tf.cast(mask, tf.bool)[..., None], inputs, blank)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"padding_logit": self.padding_logit, **self._validate_args_config()})
        return config
