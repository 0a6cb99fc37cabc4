"""Gaussian Mixture Classifier (GMC) of ReBEL (Castellano et al., 2022, Sec. V, Fig. 5)."""

import math

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.utils.validation import (
    ValidateArgsMixin,
    check_choice,
    check_int,
    invalid_argument,
    validate_args_or_alias,
)

__all__ = ["GaussianMixtureClassifier", "gaussian_mixture_params_size"]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_mixture_params_size(num_classes, components_per_class, dim, covariance="full"):
    """Number of trainable parameters of a `GaussianMixtureClassifier`.

    C·K mixture logits, C·K·d means and C·K·d(d+1)/2 ("full") or C·K·d ("diag")
    covariance factor entries.
    """
    num_classes = check_int("num_classes", num_classes, low=1)
    components_per_class = check_int("components_per_class", components_per_class, low=1)
    dim = check_int("dim", dim, low=1)
    covariance = check_choice("covariance", covariance, ("full", "diag"))
    per_component = 1 + dim + (dim * (dim + 1) // 2 if covariance == "full" else dim)
    return num_classes * components_per_class * per_component


def _fill_lower_triangular(entries, dim):
    """Maps [..., d(d+1)/2] free entries to lower-triangular [..., d, d] matrices.

    Row-major order over the lower triangle: entry m = i(i+1)/2 + j holds L[i, j]
    (j <= i). Implemented with a constant gather so it runs under XLA and TFLite.
    """
    index = []
    for i in range(dim):
        for j in range(dim):
            index.append(i * (i + 1) // 2 + j if j <= i else dim * (dim + 1) // 2)
    padded = tf.concat([entries, tf.zeros_like(entries[..., :1])], axis=-1)
    flat = tf.gather(padded, tf.constant(index, dtype=tf.int32), axis=-1)
    return tf.reshape(flat, tf.concat([tf.shape(entries)[:-1], [dim, dim]], axis=0))


@register_serializable
class GaussianMixtureClassifier(ValidateArgsMixin, keras.layers.Layer):
    """Classifies embeddings with a mixture of K Gaussians per class (ReBEL, Eq. 6).

    Each component (c, k) has a weight π_ck, a mean μ_ck and a covariance Σ_ck,
    derived from unconstrained trainable parameters (Sec. V):

        π_ck = exp(π⁽ᵖ⁾_ck) / Σ_{c',k'} exp(π⁽ᵖ⁾_{c'k'})      (softmax over all C·K)
        Σ_ck = L⁽ᵖ⁾_ckᵀ L⁽ᵖ⁾_ck + I                           (symmetric positive definite)
        μ_ck = μ⁽ᵖ⁾_ck

    With `covariance="full"`, L⁽ᵖ⁾_ck is lower triangular with d(d+1)/2 free
    entries; with `covariance="diag"` it is diagonal (d entries), so
    Σ_ck = diag(l_ck²) + I. The layer returns the normalised class
    log-probabilities of Eq. (6), in the log domain:

        y_ck   = log π_ck + log N(z; μ_ck, Σ_ck)
        log γ_c(z) = logsumexp_k y_ck − logsumexp_{c',k'} y_{c'k'}

    where log N is evaluated through the Cholesky factor R of Σ_ck = R Rᵀ:
    log N = −½ (d log 2π + 2 Σ_i log R_ii + ‖R⁻¹(z − μ)‖²), with R⁻¹ applied as a
    matrix product (see `inference_factors`). All of this runs in
    float32 even under a mixed precision policy, and the output stays float32
    (log-probabilities below −65504 do not exist in float16, and confidence
    thresholds near 1 need the resolution). The layer's dtype policy defaults to
    "float32" for that reason; float16 inputs are cast up on entry.

    Args:
      num_classes: C, the number of labels.
      components_per_class: K, Gaussians per label (the paper uses 8).
      covariance: "full" (lower-triangular L⁽ᵖ⁾) or "diag".
      mean_initializer: initializer of μ⁽ᵖ⁾ (C, K, d).
      scale_initializer: initializer of the free entries of L⁽ᵖ⁾. Must not be all
        zeros: Σ is quadratic in L⁽ᵖ⁾, so L⁽ᵖ⁾ = 0 is a stationary point.
      mixture_initializer: initializer of π⁽ᵖ⁾ (C, K).
      validate_args: also check the embeddings' values (NaN/Inf, empty batch) at
        every call (`ValidateArgsMixin`); rank, d and the dtype are always
        checked. None means `VALIDATE_ARGS_DEFAULT` (False). The older spelling
        `validate_inputs` is accepted as a deprecated alias (configs saved with
        it load with that value); `get_config` writes `validate_args`.

    Call arguments:
      inputs: embeddings z, float tensor (batch, d).

    Input shape:
      (batch, d). d is fixed at build time.

    Output shape:
      (batch, num_classes): log γ_c(z), float32; `exp` sums to 1 over classes.
    """

    def __init__(self, num_classes, components_per_class=8, covariance="full",
                 mean_initializer="random_normal", scale_initializer=None,
                 mixture_initializer="zeros", validate_args=None, **kwargs):
        validate_args = validate_args_or_alias(type(self).__name__, validate_args,
                                                "validate_inputs",
                                                kwargs.pop("validate_inputs", None))
        # Always float32 (like a final softmax under mixed precision): the inputs are
        # cast up, the Cholesky solve and log-sum-exps run and return in float32.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.components_per_class = check_int("components_per_class", components_per_class, low=1)
        self.covariance = check_choice("covariance", covariance, ("full", "diag"))
        self.mean_initializer = keras.initializers.get(mean_initializer)
        if scale_initializer is None:
            scale_initializer = keras.initializers.RandomNormal(stddev=0.1)
        self.scale_initializer = keras.initializers.get(scale_initializer)
        if isinstance(self.scale_initializer, keras.initializers.Zeros):
            raise invalid_argument("scale_initializer", "a non-zero initializer (L = 0 is a "
                                   "stationary point of Σ = LᵀL + I)", scale_initializer)
        self.mixture_initializer = keras.initializers.get(mixture_initializer)
        self._init_validate_args(validate_args)
        self.dim = None

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError("Input 0 of layer `{}` must have shape (batch, d) with a known d. "
                             "Received: input_shape={}".format(self.name, input_shape))
        d = int(input_shape[-1])
        self.dim = d
        shape = (self.num_classes, self.components_per_class)
        self.mixture_logits = self.add_weight(
            "mixture_logits", shape=shape, initializer=self.mixture_initializer, dtype="float32")
        self.means = self.add_weight(
            "means", shape=shape + (d,), initializer=self.mean_initializer, dtype="float32")
        entries = d * (d + 1) // 2 if self.covariance == "full" else d
        self.scale_entries = self.add_weight(
            "scale_entries", shape=shape + (entries,), initializer=self.scale_initializer,
            dtype="float32")
        self.input_spec = keras.layers.InputSpec(ndim=2, axes={-1: d})
        super().build(input_shape)

    # -- the constrained parameters (Sec. V, items 1-3) ------------------------------------

    def scale_factor(self):
        """L⁽ᵖ⁾: lower-triangular (C, K, d, d) for "full", its diagonal (C, K, d) for "diag"."""
        if self.covariance == "diag":
            return tf.convert_to_tensor(self.scale_entries)
        return _fill_lower_triangular(tf.convert_to_tensor(self.scale_entries), self.dim)

    def log_weights(self):
        """log π, (C, K): log-softmax over all C·K components."""
        flat = tf.reshape(self.mixture_logits, [-1])
        return tf.reshape(tf.nn.log_softmax(flat), tf.shape(self.mixture_logits))

    def covariances(self):
        """Σ = L⁽ᵖ⁾ᵀ L⁽ᵖ⁾ + I: (C, K, d, d) for "full", the diagonal (C, K, d) for "diag"."""
        factor = self.scale_factor()
        if self.covariance == "diag":
            return tf.square(factor) + 1.0
        return tf.matmul(factor, factor, transpose_a=True) + tf.eye(self.dim, dtype=tf.float32)

    def covariance_cholesky(self):
        """R with Σ = R Rᵀ (lower triangular) for "full"; sqrt(diag Σ) for "diag"."""
        if self.covariance == "diag":
            return tf.sqrt(self.covariances())
        return tf.linalg.cholesky(self.covariances())

    def mixture_parameters(self):
        """Returns (weights (C, K), means (C, K, d), covariances (C, K, d, d) or diagonals (C, K, d))."""
        self._require_built("mixture_parameters")
        return tf.exp(self.log_weights()), tf.convert_to_tensor(self.means), self.covariances()

    def _require_built(self, what):
        if not self.built:
            raise ValueError("Layer `{}` must be built (called on embeddings) before `{}()`.".format(
                self.name, what))

    # -- inference --------------------------------------------------------------------------

    def inference_factors(self):
        """Parameter-only quantities of log N(z; μ_ck, Σ_ck), computed once per call (or cached).

        With R the Cholesky factor of Σ (Σ = R Rᵀ) and W = R⁻¹:

            log π_ck + log N = b_ck − ½ ‖W z − W μ‖²,   b_ck = log π_ck − ½ (d log 2π + log|Σ|)

        "diag": W = diag(1/s), so ‖W(z − μ)‖² = Σ z²/s² − 2 Σ z μ/s² + Σ μ²/s², two
        matrix products (Σ ⪰ I keeps 1/s² <= 1, so the expansion does not lose
        float32 precision for embeddings of moderate norm). Returns a dict of float32
        tensors: "diag": `precision` (C, K, d), `scaled_means` μ/s² (C, K, d), `bias`
        (C, K) including −½ Σ μ²/s²; "full": `whitening` W (C, K, d, d),
        `white_means` W μ (C, K, d), `bias` (C, K).
        """
        self._require_built("inference_factors")
        log_pi = self.log_weights()
        const = self.dim * _LOG_2PI
        means = tf.convert_to_tensor(self.means)
        if self.covariance == "diag":
            variance = self.covariances()
            precision = 1.0 / variance
            scaled = means * precision
            log_det = tf.reduce_sum(tf.math.log(variance), axis=-1)
            bias = log_pi - 0.5 * (const + log_det + tf.reduce_sum(means * scaled, axis=-1))
            return {"precision": precision, "scaled_means": scaled, "bias": bias}
        chol = self.covariance_cholesky()
        eye = tf.eye(self.dim, batch_shape=tf.shape(chol)[:2], dtype=tf.float32)
        whitening = tf.linalg.triangular_solve(chol, eye, lower=True)
        log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)
        return {"whitening": whitening,
                "white_means": tf.einsum("ckij,ckj->cki", whitening, means),
                "bias": log_pi - 0.5 * (const + log_det)}

    def component_log_prob(self, z, factors=None):
        """y_ck = log π_ck + log N(z; μ_ck, Σ_ck), shape (batch, C, K), float32.

        `factors` from `inference_factors()` may be passed to skip the per-call
        factorisation (inference with frozen parameters).
        """
        z = tf.cast(z, tf.float32)
        factors = factors if factors is not None else self.inference_factors()
        c, k, d = self.num_classes, self.components_per_class, self.dim
        bias = factors["bias"][None]
        if self.covariance == "diag":
            # Two (B, d) x (d, C·K) products; transpose_b avoids copying the factors.
            quad = tf.matmul(tf.square(z), tf.reshape(factors["precision"], [c * k, d]),
                             transpose_b=True)
            cross = tf.matmul(z, tf.reshape(factors["scaled_means"], [c * k, d]),
                              transpose_b=True)
            return bias - 0.5 * tf.reshape(quad - 2.0 * cross, [-1, c, k])
        white = tf.matmul(z, tf.reshape(factors["whitening"], [c * k * d, d]), transpose_b=True)
        white = tf.reshape(white, [-1, c, k, d]) - factors["white_means"][None]
        return bias - 0.5 * tf.reduce_sum(tf.square(white), axis=-1)

    def log_class_probs(self, z, factors=None):
        """log γ_c(z) of Eq. (6), (batch, C), from embeddings (no input validation)."""
        y = self.component_log_prob(z, factors)
        class_log = tf.reduce_logsumexp(y, axis=-1)  # (B, C)
        return class_log - tf.reduce_logsumexp(class_log, axis=-1, keepdims=True)

    def call(self, inputs):
        z = self._validate_values(tf.convert_to_tensor(inputs))
        return self.log_class_probs(z)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.num_classes])

    def compute_output_signature(self, input_signature):
        return tf.TensorSpec(self.compute_output_shape(input_signature.shape), tf.float32)

    def count_flops(self):
        """FLOPs per query of the inference path with cached `inference_factors()` (Table I).

        A multiply-add counts 2. diag: z² (d, shared) and two length-d dot products
        per component (4d) plus the bias; full: W z (2d² per component, W lower
        triangular but applied densely) and ‖W z − W μ‖² (3d). The two
        log-sum-exps add about 3 per component.
        """
        self._require_built("count_flops")
        d = self.dim
        per = 4 * d + 2 if self.covariance == "diag" else 2 * d * d + 3 * d + 1
        ck = self.num_classes * self.components_per_class
        shared = d if self.covariance == "diag" else 0
        return shared + ck * per + 3 * ck

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "components_per_class": self.components_per_class,
            "covariance": self.covariance,
            "mean_initializer": keras.initializers.serialize(self.mean_initializer),
            "scale_initializer": keras.initializers.serialize(self.scale_initializer),
            "mixture_initializer": keras.initializers.serialize(self.mixture_initializer),
            **self._validate_args_config(),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("mean_initializer", "scale_initializer", "mixture_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        return cls(**config)
