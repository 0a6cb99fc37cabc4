"""ReBEL's regularisation loss: KL from the Gaussian posterior to the class mixture (Eq. 3)."""

from keras_efficient.backend import keras, tf
from keras_efficient.utils.validation import assert_finite, check_choice, invalid_argument

__all__ = ["gaussian_mixture_kl", "mixture_kl_divergence", "linear_softmax_prior",
           "check_labels"]


def check_labels(labels, num_classes, name="labels"):
    """Returns int32 labels of shape (batch,), asserting 0 <= label < num_classes at run time."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if labels.shape.rank is not None and labels.shape.rank != 1:
        raise ValueError("`{}` must have shape (batch,) or (batch, 1). Received: shape={}".format(
            name, labels.shape))
    if labels.dtype.is_floating:
        labels = tf.cast(tf.round(labels), tf.int32)
    labels = tf.cast(labels, tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            labels, 0, message="`{}` must be in [0, {}).".format(name, num_classes)),
        tf.debugging.assert_less(
            labels, num_classes, message="`{}` must be in [0, {}).".format(name, num_classes)),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def _check_posterior_shapes(mean, variance, d, projection):
    """Static checks: size-1 axes would otherwise broadcast into a silently wrong KL."""
    if mean.shape.rank != 2 or variance.shape.rank != 2:
        raise ValueError("`mean` and `variance` must have shape (batch, d_in). Received: "
                         "mean.shape={}, variance.shape={}".format(mean.shape, variance.shape))
    if not mean.shape.is_compatible_with(variance.shape):
        raise ValueError("`mean` and `variance` must have the same shape. Received: "
                         "mean.shape={}, variance.shape={}".format(mean.shape, variance.shape))
    d_in = tf.compat.dimension_value(mean.shape[-1])
    if d_in is None:
        d_in = tf.compat.dimension_value(variance.shape[-1])
    expected = d if projection is None else tf.compat.dimension_value(projection.shape[-1])
    if d_in is not None and expected is not None and d_in != expected:
        if projection is None:
            raise ValueError("The posterior has {} dimensions but the mixture components have "
                             "{} (pass the projection the classifier works after). Received: "
                             "mean.shape={}".format(d_in, d, mean.shape))
        raise ValueError("`projection` must have shape ({}, {}) to match the posterior. "
                         "Received: shape={}".format(d, d_in, projection.shape))


def gaussian_mixture_kl(mean, variance, labels, component_means, covariances,
                        covariance_type="full", projection=None):
    """Per-sample min over k of KL(N(μ(x), diag σ(x)) ‖ N(μ_{l(x),k}, Σ_{l(x),k})), Eq. (3).

        KL = ½ [ log(|Σ| / |S|) − d + (m − μ_k)ᵀ Σ⁻¹ (m − μ_k) + tr(Σ⁻¹ S) ]

    Without projection m = μ(x), S = diag σ(x). With a projection matrix R
    (k × d_in; ReBEL's footnote 2) the posterior is projected exactly: m = R μ(x),
    S = R diag σ(x) Rᵀ, and the KL is evaluated in the k-dimensional space
    (k <= d_in, so S is non-singular for a full-rank R).

    Σ⁻¹ enters through the inverse Cholesky factor W = chol(Σ)⁻¹ (Σ⁻¹ = WᵀW):
    tr(Σ⁻¹ R diag σ Rᵀ) = Σ_j σ_j ‖(W R)_{:, j}‖² and the Mahalanobis term is
    ‖W m − W μ_k‖². The whitening W m is computed for every component
    (cost B·C·K·d², the same as the classifier's forward pass) and the label's
    components are then gathered, so memory stays O(B·C·K·d).

    Args:
      mean: μ(x), (batch, d_in).
      variance: σ(x) > 0, the diagonal of the posterior covariance, (batch, d_in).
      labels: integer labels l(x) in [0, C), (batch,) or (batch, 1).
      component_means: μ_ck, (C, K, d).
      covariances: Σ_ck, (C, K, d, d) for "full" or their diagonals (C, K, d) for "diag".
      covariance_type: "full" or "diag".
      projection: optional R, (d, d_in).

    Returns:
      float32 (batch,) KL divergences (the bracket above, times ½, minimised over k).
    """
    check_choice("covariance_type", covariance_type, ("full", "diag"))
    mean = tf.cast(mean, tf.float32)
    variance = tf.cast(variance, tf.float32)
    component_means = tf.cast(component_means, tf.float32)
    covariances = tf.cast(covariances, tf.float32)
    num_classes = tf.compat.dimension_value(component_means.shape[0])
    labels = check_labels(labels, num_classes)
    d = tf.compat.dimension_value(component_means.shape[-1])
    cov_rank = 4 if covariance_type == "full" else 3
    if component_means.shape.rank != 3 or covariances.shape.rank != cov_rank:
        raise ValueError("`component_means` must have shape (C, K, d) and `covariances` shape {} "
                         "for covariance_type={!r}. Received: component_means.shape={}, "
                         "covariances.shape={}".format(
                             "(C, K, d, d)" if cov_rank == 4 else "(C, K, d)", covariance_type,
                             component_means.shape, covariances.shape))
    if projection is not None:
        projection = tf.cast(projection, tf.float32)
        if projection.shape.rank != 2 or (projection.shape[0] is not None
                                          and projection.shape[0] != d):
            raise ValueError("`projection` must have shape ({}, d_in) to match the components. "
                             "Received: shape={}".format(d, projection.shape))
    _check_posterior_shapes(mean, variance, d, projection)
    with tf.control_dependencies([assert_finite(mean, "mean"), assert_finite(variance, "variance"),
                                  tf.debugging.assert_positive(
                                      variance, message="`variance` must be positive.")]):
        mean = tf.identity(mean)

    if projection is not None:
        proj = projection
        m = tf.matmul(mean, proj, transpose_b=True)  # (B, d)
        s = tf.matmul(proj * variance[:, None, :], proj, transpose_b=True)  # (B, d, d)
        log_det_s = 2.0 * tf.reduce_sum(
            tf.math.log(tf.linalg.diag_part(tf.linalg.cholesky(s))), axis=-1)
    else:
        proj = None
        m = mean
        log_det_s = tf.reduce_sum(tf.math.log(variance), axis=-1)

    if covariance_type == "diag":
        inv_std = tf.math.rsqrt(covariances)  # (C, K, d)
        log_det_sigma = tf.reduce_sum(tf.math.log(covariances), axis=-1)
        white_m = m[:, None, None, :] * inv_std[None]  # (B, C, K, d)
        white_mu = component_means * inv_std
        if proj is None:
            col_sq = tf.square(inv_std)  # diag(Σ⁻¹): (C, K, d_in)
        else:
            col_sq = tf.einsum("cki,ij->ckj", 1.0 / covariances, tf.square(proj))
    else:
        chol = tf.linalg.cholesky(covariances)
        log_det_sigma = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)
        eye = tf.eye(d, batch_shape=tf.shape(chol)[:2], dtype=tf.float32)
        inv_chol = tf.linalg.triangular_solve(chol, eye, lower=True)  # W, (C, K, d, d)
        white_m = tf.einsum("ckij,bj->bcki", inv_chol, m)
        white_mu = tf.einsum("ckij,ckj->cki", inv_chol, component_means)
        wr = inv_chol if proj is None else tf.einsum("ckij,jl->ckil", inv_chol, proj)
        col_sq = tf.reduce_sum(tf.square(wr), axis=-2)  # (C, K, d_in)

    white_m = tf.gather(white_m, labels, axis=1, batch_dims=1)  # (B, K, d)
    maha = tf.reduce_sum(tf.square(white_m - tf.gather(white_mu, labels)), axis=-1)
    trace = tf.reduce_sum(tf.gather(col_sq, labels) * variance[:, None, :], axis=-1)
    kl = 0.5 * (tf.gather(log_det_sigma, labels) - log_det_s[:, None] - float(d) + maha + trace)
    return tf.reduce_min(kl, axis=-1)


def linear_softmax_prior(classifier):
    """The Gaussian mixture equivalent to a linear softmax classifier (ReBEL Sec. VI-A, [42]).

    A softmax over logits wᵀ_c z + b_c is the class posterior of a unimodal
    Gaussian mixture whose classes share one covariance (Hayashi et al., 2019,
    Appendix A): with Σ shared,

        log π_c N(z; μ_c, Σ) = (Σ⁻¹μ_c)ᵀ z − ½ μ_cᵀ Σ⁻¹ μ_c + log π_c + (terms free of c),

    so w_c = Σ⁻¹μ_c and b_c = log π_c − ½ μ_cᵀ Σ⁻¹ μ_c (+ a constant shared by all
    classes). The inverse is not unique (softmax is unchanged by a common shift of
    the w_c and by any Σ with matching w_c); we choose Σ = I and no shift:

        μ_c = w_c,   Σ_c = I,   π_c = softmax_c(b_c + ½ ‖w_c‖²),

    which reproduces the classifier's posterior exactly (γ_c of Eq. 6 with K = 1
    equals softmax(Wᵀz + b)_c). The KL of Eq. (3) against this prior is then

        KL(N(m, S) ‖ N(w_c, I)) = ½ [ −log|S| − d + ‖m − w_c‖² + tr S ],

    i.e. it pulls the posterior mean of a sample towards the weight vector of its
    label (and the weight vector towards the posterior means); the bias enters
    only π, which Eq. (3) does not use.

    Args:
      classifier: a built `keras.layers.Dense` with no activation (its outputs are
        the logits that a softmax turns into γ), kernel (d, C).

    Returns:
      (weights (C, 1), means (C, 1, d), covariance diagonals (C, 1, d)), float32,
      in the layout of `GaussianMixtureClassifier.mixture_parameters()` for
      covariance="diag".
    """
    if not isinstance(classifier, keras.layers.Dense):
        raise invalid_argument("classifier", "a keras.layers.Dense", classifier, TypeError)
    if not classifier.built:
        raise ValueError("`classifier` must be a built Dense layer (call it on embeddings "
                         "first). Received: {!r}".format(classifier))
    if classifier.activation not in (None, keras.activations.linear):
        raise invalid_argument("classifier", "a Dense layer without activation (its outputs "
                               "must be the softmax logits)", classifier.activation)
    means = tf.transpose(tf.cast(classifier.kernel, tf.float32))  # (C, d)
    logits = 0.5 * tf.reduce_sum(tf.square(means), axis=-1)
    if classifier.use_bias:
        logits = logits + tf.cast(classifier.bias, tf.float32)
    return (tf.nn.softmax(logits)[:, None], means[:, None, :],
            tf.ones_like(means)[:, None, :])


def mixture_kl_divergence(mean, variance, labels, classifier, projection=None):
    """Eq. (3) with the current parameters of a built early classifier.

    For a `GaussianMixtureClassifier` the prior is its mixture; for a linear
    softmax classifier (`keras.layers.Dense` without activation) it is the
    equivalent shared-covariance mixture of `linear_softmax_prior`
    (μ_c = w_c, Σ = I, one component per class).

    Args:
      mean, variance: the posterior N(μ(x), diag σ(x)) from the variational head,
        (batch, d_in) each (flatten spatial bottlenecks first).
      labels: integer labels, (batch,) or (batch, 1).
      classifier: a built `GaussianMixtureClassifier` or `keras.layers.Dense`
        whose inputs live in the d-dimensional space.
      projection: None, a built `RandomProjection` layer, or a (d, d_in) matrix R,
        when the classifier works on R z (the posterior is projected exactly:
        mean Rμ, covariance R·diag(σ)·Rᵀ).

    Returns:
      (batch,) float32 per-sample KL (min over the label's K components).
    """
    if projection is not None and hasattr(projection, "matrix"):
        projection = projection.matrix()
    if isinstance(classifier, keras.layers.Dense):
        _, means, covariances = linear_softmax_prior(classifier)
        return gaussian_mixture_kl(mean, variance, labels, means, covariances,
                                   covariance_type="diag", projection=projection)
    if not getattr(classifier, "built", False):
        raise ValueError("`classifier` must be a built GaussianMixtureClassifier (call it on "
                         "embeddings first). Received: {!r}".format(classifier))
    return gaussian_mixture_kl(mean, variance, labels, classifier.means, classifier.covariances(),
                               covariance_type=classifier.covariance, projection=projection)
