"""ReBEL's variational head: Head₁ (image → Gaussian posterior) and Head₂ (z → teacher tensor)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.gdn import GDN
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_bool,
    check_float,
    check_int,
    invalid_argument,
    validate_args_or_alias,
)

__all__ = ["VariationalHead", "BottleneckDecoder"]




class _GDN(GDN):
    """The heads' GDN, under the class name their `.keras` files were saved with.

    The `.keras` format stores a nested layer's variables under its class's
    snake-case name. Heads saved before the library owned GDN used a subclass of
    tensorflow-compression's GDN called `_GDN`; keeping the name (and the
    (β, γ) variable order) lets those files load with identical outputs.
    """

def _int_tuple(name, value, low=1):
    if isinstance(value, bool) or isinstance(value, (int, float, str)) or value is None:
        raise invalid_argument(name, "a non-empty list of positive integers", value, TypeError)
    try:
        items = tuple(value)
    except TypeError:
        raise invalid_argument(name, "a non-empty list of positive integers", value,
                               TypeError) from None
    if not items:
        raise invalid_argument(name, "a non-empty list of positive integers", value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < low:
            raise invalid_argument(name, "a non-empty list of positive integers", value)
    return items


@register_serializable
class VariationalHead(ValidateArgsMixin, keras.layers.Layer):
    """Head₁ of ReBEL (Fig. 3): convolutions with GDN emitting a diagonal Gaussian posterior.

    len(filters) convolutions, each followed by `keras_efficient.layers.GDN`, then
    one linear convolution with 2·latent_channels outputs split into the mean
    μ(x) and the log-variance s(x). The posterior of Sec. III-A is
    N(μ(x), diag σ(x)) with

        σ(x) = exp(clip(s(x), log_variance_min, log_variance_max))

    (the log-variance parameterisation keeps σ > 0 without a constraint; the clip,
    whose gradient is zero outside the range, keeps exp finite in float16). The
    embedding is the reparameterised sample z = μ + sqrt(σ)·ε, ε ~ N(0, I), in
    training; at inference z = μ unless `sample_at_inference`. μ, σ and z keep
    their spatial layout (the paper's 867-dim bottleneck is 17×17×3); flatten
    them for a classifier. The paper's Head₁ has 4 convolutions: filters of
    length 3 plus the output convolution.

    Args:
      filters: channels of the hidden convolutions (each followed by GDN).
      latent_channels: channels of μ, σ and z.
      kernel_size: odd kernel size of every convolution ("same" padding).
      strides: stride of each hidden convolution (same length as `filters`).
      sample_at_inference: draw z ~ N(μ, σ) also when training=False.
      log_variance_min, log_variance_max: clip range of s(x).
      validate_args: also check the images' values (NaN/Inf, empty batch) at
        every call (`ValidateArgsMixin`); rank, channels and the dtype are
        always checked.

    Call arguments:
      inputs: images (batch, H, W, channels).
      training: sample z (True) or return μ (False, unless sample_at_inference).

    Input shape:
      (batch, H, W, channels).

    Output shape:
      A tuple (z, mean, variance), each (batch, H', W', latent_channels) with
      H' = H / prod(strides) (rounded up).
    """

    def __init__(self, filters=(64, 64, 64), latent_channels=3, kernel_size=3, strides=(2, 1, 1),
                 sample_at_inference=False, log_variance_min=-8.0, log_variance_max=8.0,
                 validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.filters = _int_tuple("filters", filters)
        self.latent_channels = check_int("latent_channels", latent_channels, low=1)
        self.kernel_size = check_int("kernel_size", kernel_size, low=1)
        if self.kernel_size % 2 == 0:
            raise invalid_argument("kernel_size", "an odd integer", kernel_size)
        self.strides = _int_tuple("strides", strides)
        if len(self.strides) != len(self.filters):
            raise invalid_argument("strides", "one stride per entry of `filters` ({})".format(
                len(self.filters)), strides)
        self.sample_at_inference = check_bool("sample_at_inference", sample_at_inference)
        self.log_variance_min = check_float("log_variance_min", log_variance_min)
        self.log_variance_max = check_float("log_variance_max", log_variance_max)
        if self.log_variance_max <= self.log_variance_min:
            raise invalid_argument("log_variance_max", "a float > log_variance_min ({})".format(
                self.log_variance_min), log_variance_max)
        self.convs, self.gdns = [], []
        for i, (f, s) in enumerate(zip(self.filters, self.strides)):
            self.convs.append(keras.layers.Conv2D(f, self.kernel_size, strides=s, padding="same",
                                                  name="conv{}".format(i)))
            self.gdns.append(_GDN(name="gdn{}".format(i)))
        self.output_conv = keras.layers.Conv2D(2 * self.latent_channels, self.kernel_size,
                                               padding="same", name="posterior")

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError("Input 0 of layer `{}` must be images (batch, H, W, channels) with "
                             "known channels. Received: input_shape={}".format(self.name,
                                                                               input_shape))
        shape = input_shape
        for conv, gdn in zip(self.convs, self.gdns):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            gdn.build(shape)
        self.output_conv.build(shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: int(input_shape[-1])})
        super().build(input_shape)

    def posterior(self, inputs):
        """(mean, log_variance) before clipping, in the compute dtype."""
        x = inputs
        for conv, gdn in zip(self.convs, self.gdns):
            x = gdn(conv(x))
        out = self.output_conv(x)
        return out[..., :self.latent_channels], out[..., self.latent_channels:]

    def call(self, inputs, training=None):
        mean, log_var = self.posterior(self._validate_values(tf.convert_to_tensor(inputs)))
        log_var = tf.clip_by_value(log_var, self.log_variance_min, self.log_variance_max)
        variance = tf.exp(log_var)
        if training is None or isinstance(training, bool):
            sample = bool(training) or self.sample_at_inference
            z = self._sample(mean, log_var) if sample else mean
        else:
            z = tf.cond(tf.cast(training, tf.bool),
                        lambda: self._sample(mean, log_var), lambda: self._infer(mean, log_var))
        return z, mean, variance

    def _infer(self, mean, log_var):
        return self._sample(mean, log_var) if self.sample_at_inference else tf.identity(mean)

    @staticmethod
    def _sample(mean, log_var):
        eps = tf.random.normal(tf.shape(mean), dtype=mean.dtype)
        return mean + tf.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        shape = shape[:-1].concatenate([self.latent_channels])
        return (shape, shape, shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "latent_channels": self.latent_channels,
            "kernel_size": self.kernel_size,
            "strides": list(self.strides),
            "sample_at_inference": self.sample_at_inference,
            "log_variance_min": self.log_variance_min,
            "log_variance_max": self.log_variance_max,
            **self._validate_args_config(),
        })
        return config


@register_serializable
class BottleneckDecoder(ValidateArgsMixin, keras.layers.Layer):
    """Head₂ of ReBEL (Fig. 3): convolutions with GDN mapping z to the teacher's tensor v'.

    No deconvolutions (Sec. III-A): if z is spatially larger than the target by an
    integer factor s, the first convolution has stride s; if smaller by an integer
    factor, z is first upsampled (nearest neighbour). Then len(filters)
    convolutions, each followed by GDN, and a linear convolution to the target
    channels. Trained by the mimic loss (Eq. 1) against the teacher head H(x).

    Args:
      target_shape: (H, W, C) of the teacher's intermediate tensor v = H(x).
      filters: channels of the hidden convolutions (each followed by GDN).
      kernel_size: odd kernel size ("same" padding).
      validate_args: also check z's values (NaN/Inf, empty batch) at every call
        (`ValidateArgsMixin`), e.g. on the server side of a split deployment,
        which receives z over a network; rank, spatial size, channels and the
        dtype are always checked. None means `VALIDATE_ARGS_DEFAULT` (False).
        The older spelling `validate_inputs` is accepted as a deprecated alias
        (configs saved with it load with that value); `get_config` writes
        `validate_args`.

    Call arguments:
      inputs: z, (batch, h, w, latent_channels).

    Input shape:
      (batch, h, w, c) with h, w integer multiples or divisors of H, W.

    Output shape:
      (batch, H, W, C).
    """

    def __init__(self, target_shape, filters=(64, 64, 64), kernel_size=3, validate_args=None,
                 **kwargs):
        validate_args = validate_args_or_alias(type(self).__name__, validate_args,
                                                "validate_inputs",
                                                kwargs.pop("validate_inputs", None))
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.target_shape = _int_tuple("target_shape", target_shape)
        if len(self.target_shape) != 3:
            raise invalid_argument("target_shape", "(H, W, C)", target_shape)
        self.filters = _int_tuple("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size, low=1)
        if self.kernel_size % 2 == 0:
            raise invalid_argument("kernel_size", "an odd integer", kernel_size)
        self.upsample = None
        self.convs, self.gdns = [], []
        self.output_conv = keras.layers.Conv2D(self.target_shape[-1], self.kernel_size,
                                               padding="same", name="to_target")

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or None in input_shape[1:]:
            raise ValueError("Input 0 of layer `{}` must be (batch, h, w, c) with known h, w, c. "
                             "Received: input_shape={}".format(self.name, input_shape))
        h, w = int(input_shape[1]), int(input_shape[2])
        th, tw = self.target_shape[:2]
        if h % th == 0 and w % tw == 0 and h // th == w // tw:
            stride, up = h // th, 1
        elif th % h == 0 and tw % w == 0 and th // h == tw // w:
            stride, up = 1, th // h
        else:
            raise ValueError("Layer `{}` cannot map a {}×{} input to the {}×{} target with "
                             "integer strides. Received: input_shape={}".format(
                                 self.name, h, w, th, tw, input_shape))
        if up > 1:
            self.upsample = keras.layers.UpSampling2D(up, name="upsample")
        self.convs, self.gdns = [], []
        shape = tf.TensorShape([input_shape[0], h * up, w * up, input_shape[-1]])
        for i, f in enumerate(self.filters):
            conv = keras.layers.Conv2D(f, self.kernel_size, strides=stride if i == 0 else 1,
                                       padding="same", name="conv{}".format(i))
            gdn = _GDN(name="gdn{}".format(i))
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            gdn.build(shape)
            self.convs.append(conv)
            self.gdns.append(gdn)
        self.output_conv.build(shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={1: h, 2: w, 3: int(input_shape[-1])})
        super().build(input_shape)

    def call(self, inputs):
        x = self._validate_values(tf.convert_to_tensor(inputs))
        if self.upsample is not None:
            x = self.upsample(x)
        for conv, gdn in zip(self.convs, self.gdns):
            x = gdn(conv(x))
        return self.output_conv(x)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0]] + list(self.target_shape))

    def get_config(self):
        config = super().get_config()
        config.update({
            "target_shape": list(self.target_shape),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            **self._validate_args_config(),
        })
        return config

    @classmethod
    def from_config(cls, config):
        # Not Keras's default, which re-raises every error as TypeError: a config with
        # both spellings of `validate_args` that disagree stays a ValueError.
        return cls(**config)
