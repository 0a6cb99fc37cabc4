"""Bayesian Dense / Conv2D layers: TFP's Flipout and reparameterization layers with a config.

A Bayesian network learns a mean-field normal posterior q(w) = N(mu, sigma^2) per
weight instead of a point value. Training minimises (Eq. 2 of the IPU/GPU
cosmology paper)

    L = -log p(x) + sum_i KL(q(w_i) || p(w_i)),   p(w_i) = N(0, s^2) (s = 1 by default),

where the data term is averaged over a batch, so the KL sum is scaled by
1 / num_train_examples (the usual minibatch ELBO; the paper's code divides by the
training set size as well). Each layer adds
`w * kl_weight * KL(q || p) / num_train_examples` through `add_loss` (as a callable
loss, like a kernel regularizer, registered when the layer is built), so Keras
adds it to the compiled loss on every step. w is the KL warm-up weight, a
non-trainable scalar weight `kl_warmup` of each layer (1 unless
`keras_efficient.callbacks.KLWarmup` anneals it from 0; checkpoints restore it).

Two gradient estimators of the data term, each TFP's layer subclassed:

* Flipout (`FlipoutDense`, `FlipoutConv2D`; Wen et al., 2018): pseudo-independent
  weight perturbations per example by random sign flips of one shared draw. Lower
  gradient variance, but every call runs the kernel twice (posterior mean, and the
  sign-flipped perturbation), so a convolution costs two convolutions forward and
  two backward.
* Reparameterization (`ReparameterizationDense`, `ReparameterizationConv2D`; the
  trick the paper used, Kingma & Welling 2014 / Blundell et al. 2015): one weight
  sample W = mu + sigma * eps per call, shared by every example of the batch, and
  one kernel application. Half Flipout's convolution work, but the examples of a
  batch see the same weights, so their gradients are correlated and the estimate's
  variance does not fall with the batch size as it does for independent samples
  (Kingma, Salimans & Welling, 2015).

Both replace TFP's function-valued constructor arguments (which TFP serialises as
Python bytecode) by plain numbers, so the layers have a JSON config and are
registered for serialization.

Choices where the paper is vague (following the paper's public code): posterior
means initialised with He-normal, untransformed posterior scales with
N(posterior_scale_init, 0.1) (sigma = softplus(.) + eps, about 1e-4 for the
layers' default -9, the paper's code), deterministic biases (point estimates, no
KL term), and the KL in closed form (Normal-Normal). `prior_scale="he"` uses
s = sqrt(2 / fan_in) per layer (the He-normal scale of the posterior means)
instead of one number. The layers keep the paper's recipe (N(0, 1) prior, -9) as
their defaults; `models.galaxy_shape_estimator` defaults to "he" and -5, with
which the posterior starts where it can move (docs/probabilistic_ipu_gpu.md,
"Training a BNN").

Cost: the per-step work that does not depend on the batch size is drawing one
N(0, 1) number per kernel weight and the KL over all kernel weights. Both are
written as a few vectorised elementwise ops (`_standard_normal_box_muller`,
`_normal_kl_to_centered_normal`) instead of TFP's generic `Normal.sample` and
`kl_divergence` graphs; the estimators and the math are TFP's.
"""

import functools

import numpy as np
import tensorflow_probability as tfp
from tensorflow_probability.python.util.seed_stream import SeedStream

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.bayesian_priors import (
    _bias_posterior_fn,
    _check_prior_scale,
    _normal_kl_to_centered_normal,
    _normal_prior_fn,
    _posterior_fn,
    _prior_stddev,
    _replica_seed,
    _sample_normal,
)
from keras_efficient.utils.validation import (
    ValidateArgsMixin,
    check_bool,
    check_float,
    check_input_rank,
    check_int,
    check_last_dim_defined,
    invalid_argument,
    validate_args_or_alias,
)

__all__ = ["FlipoutDense", "FlipoutConv2D", "ReparameterizationDense", "ReparameterizationConv2D",
           "bayesian_layers"]

tfd = tfp.distributions
class _BayesianMixin(ValidateArgsMixin):
    """KL through add_loss, a posterior-mean path, argument checks and the config.

    Subclasses set `_tfp_takes_seed`: True when the TFP base class takes `seed`
    (Flipout: it seeds the sign flips; the kernel noise stays unseeded), False when
    it does not (reparameterization: `seed` seeds the kernel noise instead).
    """

    _tfp_takes_seed = True

    def _init_bayesian(self, num_train_examples, kl_weight, prior_scale, posterior_scale_init,
                       kernel_loc_initializer, validate_args, use_bias, seed, kwargs):
        """Validates the shared arguments; returns the TFP keyword arguments (with `seed`)
        and sets `kwargs["dtype"]` to float32 unless given."""
        self.num_train_examples = check_int("num_train_examples", num_train_examples, low=1)
        self.kl_weight = check_float("kl_weight", kl_weight, low=0.0)
        self.prior_scale = _check_prior_scale(prior_scale)
        self.posterior_scale_init = check_float("posterior_scale_init", posterior_scale_init)
        self.kernel_loc_initializer = keras.initializers.get(kernel_loc_initializer)
        self._init_validate_args(validate_args_or_alias(
            type(self).__name__, validate_args, "check_finite", kwargs.pop("check_finite", None)))
        use_bias = check_bool("use_bias", use_bias)
        seed = check_int("seed", seed, allow_none=True)
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"  # Also under mixed_float16: the posterior stays float32.
        fns = dict(
            kernel_posterior_fn=_posterior_fn(self, self.kernel_loc_initializer,
                                              self.posterior_scale_init),
            kernel_prior_fn=_normal_prior_fn(self.prior_scale),
            kernel_posterior_tensor_fn=_sample_normal,
            kernel_divergence_fn=None,  # A callable loss instead (see `_add_kl_loss`).
            bias_posterior_fn=_bias_posterior_fn(self) if use_bias else None,
            bias_prior_fn=None,
            bias_divergence_fn=None,
        )
        if self._tfp_takes_seed:
            fns["seed"] = seed
        else:
            fns["kernel_posterior_tensor_fn"] = functools.partial(_sample_normal, seed=seed)
            self.seed = seed
        return fns

    def _add_kl_warmup_weight(self):
        # Training-progress state in a non-trainable weight (restored by checkpoints);
        # `keras_efficient.callbacks.KLWarmup` moves it from 0 to 1. Created with the
        # layer, before `build`, so a callback can set it before the first step.
        self.kl_warmup = self.add_weight(
            name="kl_warmup", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Ones())

    def kl_divergence(self, warmup=True):
        """[w *] kl_weight * KL(q(kernel) || N(0, prior_scale^2)) / num_train_examples (Eq. 2).

        Args:
          warmup: multiply by the KL warm-up weight w (the non-trainable weight
            `kl_warmup`, 1 unless `callbacks.KLWarmup` lowers it): the term that
            `add_loss` adds to the training loss. False: the full Eq. 2 term.
        """
        posterior = self.kernel_posterior.distribution
        kl = _normal_kl_to_centered_normal(posterior.loc, posterior.scale, self.prior_stddev)
        kl = kl * (self.kl_weight / float(self.num_train_examples))
        if warmup:
            kl = kl * self.kl_warmup
        return kl

    @property
    def prior_stddev(self):
        """The prior's standard deviation s (float; for "he", sqrt(2 / fan_in) of the kernel)."""
        return _prior_stddev(self.prior_scale, self.kernel_posterior.distribution.loc.shape)

    def posterior_stddev(self):
        """The kernel posterior's standard deviations sigma (same shape as the kernel)."""
        return self.kernel_posterior.distribution.stddev()

    def call(self, inputs, use_mean=False):
        inputs = tf.cast(self._validate_values(tf.convert_to_tensor(inputs)), self.dtype)
        if use_mean:
            outputs = self._apply_kernel(inputs, self.kernel_posterior.distribution.loc)
            if self.bias_posterior is not None:
                outputs = tf.nn.bias_add(outputs, self.bias_posterior.distribution.loc)
        else:
            outputs = self._apply_variational_kernel(inputs)
            outputs = self._apply_variational_bias(outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _add_kl_loss(self):
        # A callable loss (like a kernel regularizer): evaluated wherever `losses` is read
        # (in the train step, eagerly, after loading), so it never refers to a stale graph.
        self.add_loss(self.kl_divergence)

    def _bayesian_config(self):
        return {
            "activation": keras.activations.serialize(self.activation) if self.activation else None,
            "use_bias": self.use_bias,
            "num_train_examples": self.num_train_examples,
            "kl_weight": self.kl_weight,
            "prior_scale": self.prior_scale,
            "posterior_scale_init": self.posterior_scale_init,
            "kernel_loc_initializer": keras.initializers.serialize(self.kernel_loc_initializer),
            **self._validate_args_config(),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["kernel_loc_initializer"] = keras.initializers.deserialize(
            config["kernel_loc_initializer"])
        if config.get("activation") is not None:
            config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)


class _FlipoutSigns:
    """Flipout's random sign flips, independent per replica (before TFP's Flipout class).

    TFP draws the two Rademacher sign tensors with seeds from
    `SeedStream(seed, salt)`; an integer seed becomes one stateful op with that
    op seed, copied into every replica's graph, so every replica would flip the
    same signs. Here each seed of the stream passes through `_replica_seed`
    (unchanged with one replica), so the replicas of a multi-replica strategy
    flip independent signs, the same ones for the same seed. The layer's
    output is TFP's (Wen et al., 2018, Eq. 4):
        y = x mu + ((x * s_in) dW) * s_out,   dW ~ N(0, sigma^2).
    """

    _flipout_salt = None  # TFP's salt: "DenseFlipout" / "ConvFlipout"

    def flipout_signs(self, lead_shape, in_channels, out_channels, dtype):
        """(s_in, s_out): Rademacher (+-1) tensors of shapes `lead_shape + [in_channels]`
        and `lead_shape + [out_channels]` (`lead_shape`: an int32 vector)."""
        stream = SeedStream(self.seed, salt=self._flipout_salt)
        lead = lead_shape
        sign_input = tfp.random.rademacher(
            tf.concat([lead, [in_channels]], 0), dtype=dtype,
            seed=_replica_seed(stream()))
        sign_output = tfp.random.rademacher(
            tf.concat([lead, [out_channels]], 0), dtype=dtype,
            seed=_replica_seed(stream()))
        return sign_input, sign_output

    def _kernel_perturbation(self):
        posterior = self.kernel_posterior
        if not (isinstance(posterior, tfd.Independent)
                and isinstance(posterior.distribution, tfd.Normal)):
            raise TypeError("`{}` needs an Independent(Normal) kernel posterior. Received: "
                            "{}".format(type(self).__name__, posterior))
        self.kernel_posterior_affine = tfd.Normal(
            loc=tf.zeros_like(posterior.distribution.loc), scale=posterior.distribution.scale)
        self.kernel_posterior_affine_tensor = self.kernel_posterior_tensor_fn(
            self.kernel_posterior_affine)
        self.kernel_posterior_tensor = None
        return posterior.distribution.loc, self.kernel_posterior_affine_tensor


class _DenseBase(_BayesianMixin):
    """Constructor, build and config of the Bayesian Dense layers."""

    def __init__(self, units, activation=None, use_bias=True, num_train_examples=1, kl_weight=1.0,
                 prior_scale=1.0, posterior_scale_init=-9.0, kernel_loc_initializer="he_normal",
                 validate_args=None, seed=None, **kwargs):
        units = check_int("units", units, low=1)
        fns = self._init_bayesian(num_train_examples, kl_weight, prior_scale, posterior_scale_init,
                                  kernel_loc_initializer, validate_args, use_bias, seed, kwargs)
        super().__init__(units, activation=keras.activations.get(activation), **fns, **kwargs)
        self.use_bias = use_bias
        self._add_kl_warmup_weight()

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_input_rank(self.name, input_shape, min_rank=2)
        check_last_dim_defined(self.name, input_shape)
        super().build(input_shape)
        self._add_kl_loss()

    def _apply_kernel(self, inputs, kernel):
        return tf.matmul(inputs, kernel) if inputs.shape.rank == 2 else tf.tensordot(
            inputs, kernel, [[inputs.shape.rank - 1], [0]])

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
        config["units"] = self.units
        config.update(self._bayesian_config())
        return config


class _Conv2DBase(_BayesianMixin):
    """Constructor, build and config of the Bayesian 2-D convolutions."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, use_bias=True, num_train_examples=1, kl_weight=1.0,
                 prior_scale=1.0, posterior_scale_init=-9.0, kernel_loc_initializer="he_normal",
                 validate_args=None, seed=None, **kwargs):
        filters = check_int("filters", filters, low=1)
        kernel_size = _pair("kernel_size", kernel_size)
        strides = _pair("strides", strides)
        dilation_rate = _pair("dilation_rate", dilation_rate)
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise invalid_argument("padding", "one of 'valid', 'same'", padding)
        fns = self._init_bayesian(num_train_examples, kl_weight, prior_scale, posterior_scale_init,
                                  kernel_loc_initializer, validate_args, use_bias, seed, kwargs)
        super().__init__(filters, kernel_size, strides=strides, padding=padding.lower(),
                         dilation_rate=dilation_rate, activation=keras.activations.get(activation),
                         **fns, **kwargs)
        if self.data_format != "channels_last":
            raise invalid_argument("data_format", "'channels_last'", self.data_format)
        self.use_bias = use_bias
        self._add_kl_warmup_weight()

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        check_input_rank(self.name, input_shape, rank=4)
        check_last_dim_defined(self.name, input_shape, "channel dimension")
        super().build(input_shape)
        self._add_kl_loss()

    def _apply_kernel(self, inputs, kernel):
        return self._convolution_op(inputs, kernel)

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
        config.update({
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
        })
        config.update(self._bayesian_config())
        return config


@register_serializable
class FlipoutDense(_FlipoutSigns, _DenseBase, tfp.layers.DenseFlipout):
    """Bayesian Dense layer (Flipout) with N(0, prior_scale^2) priors and the KL of Eq. 2.

    y = x W + b with W ~ q(W) = N(mu, sigma^2) (mean field), sampled with Flipout
    on every call (per-example sign flips of one shared perturbation: two matmuls);
    b is a point estimate. The layer adds
    `kl_weight * KL(q(W) || N(0, prior_scale^2)) / num_train_examples` via `add_loss`.

    Args:
      units: output features.
      activation: Keras activation identifier or None.
      use_bias: add a (deterministic) bias.
      num_train_examples: N, the size of the training set; the KL is divided by it.
      kl_weight: extra multiplier on the KL (1 = Eq. 2; 0 disables the KL term).
      prior_scale: standard deviation s of the N(0, s^2) prior: a positive float
        (Eq. 2 uses 1) or "he" for s = sqrt(2 / fan_in) of this layer's kernel.
      posterior_scale_init: mean of the initial untransformed scale (sigma = softplus).
      kernel_loc_initializer: initializer of the posterior means.
      validate_args: also check the inputs' values (NaN/Inf -> InvalidArgumentError,
        empty batch) at every call (`ValidateArgsMixin`); rank, the last
        dimension and the dtype are always checked. None means
        `VALIDATE_ARGS_DEFAULT` (False). The older spelling `check_finite` is
        accepted as a deprecated alias (configs saved with it load with that
        value); `get_config` writes `validate_args`.
      seed: seed for the Flipout sign flips (None: global seed). Under a
        `tf.distribute` strategy with several replicas each replica folds its
        id into the sign-flip seeds (`_replica_seed`): the replicas flip
        independent signs, reproducibly for a seed. The kernel perturbation
        itself is drawn unseeded.

    Call arguments:
      inputs: float tensor [batch, ..., in_features].
      use_mean: use the posterior means instead of a sample (deterministic output).

    Input shape:
      `(batch, ..., in_features)`, rank >= 2.

    Output shape:
      `(batch, ..., units)`, float32.
    """

    _flipout_salt = "DenseFlipout"

    def _apply_variational_kernel(self, inputs):
        loc, perturbation = self._kernel_perturbation()
        shape = tf.shape(inputs)
        sign_input, sign_output = self.flipout_signs(shape[:-1], shape[-1], self.units,
                                                     inputs.dtype)
        perturbed = self._apply_kernel(inputs * sign_input, perturbation) * sign_output
        return self._apply_kernel(inputs, loc) + perturbed


@register_serializable
class ReparameterizationDense(_DenseBase, tfp.layers.DenseReparameterization):
    """Bayesian Dense layer (reparameterization trick) with N(0, prior_scale^2) priors.

    y = x W + b with W = mu + sigma * eps, eps ~ N(0, I) drawn once per call and
    shared by every example of the batch (Kingma & Welling, 2014; Blundell et al.,
    2015: the estimator of the paper); one matmul. Prior, posterior, KL term of
    Eq. 2 and arguments as for `FlipoutDense`, except `seed`, which seeds the
    weight noise: the same draws for the same seed, and under a `tf.distribute`
    strategy with several replicas each replica folds its id into the seed, so
    the replicas draw independent weights (`_replica_seed`).

    Call arguments:
      inputs: float tensor [batch, ..., in_features].
      use_mean: use the posterior means instead of a sample (deterministic output).

    Input shape:
      `(batch, ..., in_features)`, rank >= 2.

    Output shape:
      `(batch, ..., units)`, float32.
    """

    _tfp_takes_seed = False


@register_serializable
class FlipoutConv2D(_FlipoutSigns, _Conv2DBase, tfp.layers.Convolution2DFlipout):
    """Bayesian 2-D convolution (Flipout) with N(0, prior_scale^2) priors and the KL of Eq. 2.

    Same posterior, prior and KL as `FlipoutDense`, for a convolution kernel of
    shape (kh, kw, in_channels, filters). Channels-last only. Each call runs two
    convolutions (posterior mean, sign-flipped perturbation).

    Args:
      filters: output channels.
      kernel_size: int or pair of ints.
      strides: int or pair of ints.
      padding: "valid" or "same".
      dilation_rate: int or pair of ints.
      activation, use_bias, num_train_examples, kl_weight, prior_scale,
      posterior_scale_init, kernel_loc_initializer, validate_args, seed: as for
        `FlipoutDense`.

    Call arguments:
      inputs: float tensor [batch, height, width, channels].
      use_mean: use the posterior means instead of a sample (deterministic output).

    Input shape:
      `(batch, height, width, channels)` with defined channels.

    Output shape:
      `(batch, new_height, new_width, filters)`, float32.
    """

    _flipout_salt = "ConvFlipout"

    def _apply_variational_kernel(self, inputs):
        loc, perturbation = self._kernel_perturbation()
        outputs = self._convolution_op(inputs, loc)
        # One sign per example and channel, broadcast over height and width.
        shape = tf.shape(inputs)
        sign_input, sign_output = self.flipout_signs(shape[:1], shape[-1], self.filters,
                                                     inputs.dtype)
        sign_input = sign_input[:, None, None, :]
        sign_output = sign_output[:, None, None, :]
        perturbed = self._convolution_op(inputs * sign_input, perturbation) * sign_output
        return outputs + perturbed


@register_serializable
class ReparameterizationConv2D(_Conv2DBase, tfp.layers.Convolution2DReparameterization):
    """Bayesian 2-D convolution (reparameterization trick) with N(0, prior_scale^2) priors.

    One kernel sample W = mu + sigma * eps per call, shared by the whole batch, and
    one convolution (the paper's estimator). Arguments as for `FlipoutConv2D`;
    `seed` seeds the kernel noise.

    Call arguments:
      inputs: float tensor [batch, height, width, channels].
      use_mean: use the posterior means instead of a sample (deterministic output).

    Input shape:
      `(batch, height, width, channels)` with defined channels.

    Output shape:
      `(batch, new_height, new_width, filters)`, float32.
    """

    _tfp_takes_seed = False


def bayesian_layers(model):
    """The Bayesian layers of this module inside `model` (nested ones included).

    `model` may be a model, a layer holding such layers (e.g. a
    `MultivariateNormalHead` with a Bayesian `params_layer`) or one Bayesian layer.
    """
    modules = [model] + list(getattr(model, "submodules", ()))
    found, seen = [], set()
    for module in modules:
        if isinstance(module, _BayesianMixin) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def _pair(name, value):
    if isinstance(value, bool):
        raise invalid_argument(name, "a positive int or a pair of positive ints", value, TypeError)
    if isinstance(value, int):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:
        raise invalid_argument(name, "a positive int or a pair of positive ints", value,
                               TypeError) from None
    if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                              for v in value):
        raise invalid_argument(name, "a positive int or a pair of positive ints", value)
    return tuple(int(v) for v in value)
