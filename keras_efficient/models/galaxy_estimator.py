"""The galaxy shape estimator of the IPU/GPU cosmology paper, deterministic or Bayesian.

Architecture (Sec. 3.2 and the paper's public code): BatchNormalization, then for
each of four filter counts (32, 64, 128, 256) a 3x3 convolution (stride 1) and a
3x3 convolution (stride 2), each followed by a PReLU with one slope per element,
then Flatten and a Dense layer to the parameters of a full-covariance normal over
(e1, e2) (`MultivariateNormalHead`). On 64x64x6 inputs this has 1,500,829
parameters (the paper: 1.5 M). The Bayesian variant replaces every convolution
and the Dense layer by its Flipout (default, the estimator the issue names) or
reparameterization (the estimator of the paper: one weight sample per batch, half
Flipout's convolution work) counterpart (posterior mean and scale per kernel
weight, deterministic biases): 2,693,469 parameters either way (the paper: 2.7 M),
plus one non-trainable KL warm-up scalar per Bayesian layer. Its loss is Eq. 2:
the negative log-likelihood plus the layers' KL terms, which they add through
`add_loss` scaled by 1 / num_train_examples (required: the training set size).
It is a `VariationalModel`, which logs the two terms as `nll` and `kl`.
"""

import numpy as np

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.calibration import predictive as calibration_predictive
from keras_efficient.calibration import scores as calibration_scores
from keras_efficient.layers.bayesian import (
    FlipoutConv2D,
    FlipoutDense,
    ReparameterizationConv2D,
    ReparameterizationDense,
    bayesian_layers,
)
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.losses.negative_log_likelihood import _as_distribution
from keras_efficient.utils.validation import check_bool, check_choice, check_int, invalid_argument

__all__ = ["VariationalModel", "galaxy_shape_estimator", "predict_with_samples"]

ESTIMATORS = ("flipout", "reparameterization")

#: which layers of the Bayesian estimator are Bayesian: every convolution and the
#: head's Dense layer (the paper), or only the head's Dense layer.
BAYESIAN_SCOPES = ("all", "head")


def _bayesian_layer_classes(estimator):
    """(Conv2D class, Dense class) of a gradient estimator, looked up at call time."""
    if estimator == "flipout":
        return FlipoutConv2D, FlipoutDense
    return ReparameterizationConv2D, ReparameterizationDense


@register_serializable
class VariationalModel(keras.Model):
    """A functional model of Bayesian layers that logs the two terms of Eq. 2 separately.

    Built like any functional model, `VariationalModel(inputs, outputs)`. Training
    and evaluation log, besides `loss`,

    * `nll`: the data term, the mean of -log p(y | x) under the model's output
      distribution (the same forward pass as the loss);
    * `kl`: the KL term, sum over the Bayesian layers of
      kl_weight * KL(q || p) / num_train_examples (Eq. 2, without the warm-up
      weight: during `callbacks.KLWarmup` the loss holds w * kl).

    so `loss = nll + w * kl` (+ any other regularisation losses). Nothing else
    changes: the loss is the compiled loss plus `model.losses`, as for
    `keras.Model`. Both metrics are computed in `compute_loss`, i.e. on TF >= 2.9
    (Keras 2.6 on the IPU path has no `compute_loss`: there `fit` trains the same
    model without them).
    """

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        # Functional's own signature: Keras then serialises it as a functional model.
        super().__init__(inputs, outputs, name=name, trainable=trainable, **kwargs)
        # Kept out of Keras's attribute tracking, like compiled metrics: their totals
        # are not model weights (count_params, get_weights and checkpoints unchanged).
        object.__setattr__(self, "_elbo_metrics", (keras.metrics.Mean(name="nll"),
                                                   keras.metrics.Mean(name="kl")))

    @property
    def metrics(self):
        return super().metrics + list(self._elbo_metrics)

    def kl_divergence(self, warmup=False):
        """Sum of the Bayesian layers' KL terms (`warmup=True`: as in the loss)."""
        terms = [layer.kl_divergence(warmup=warmup) for layer in bayesian_layers(self)]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        loss = super().compute_loss(x, y, y_pred, sample_weight)
        nll_metric, kl_metric = self._elbo_metrics
        kl_metric.update_state(self.kl_divergence())
        if y is not None and y_pred is not None:
            dist = _as_distribution(y_pred)
            nll_metric.update_state(-dist.log_prob(tf.cast(y, dist.dtype)),
                                    sample_weight=sample_weight)
        return loss


def galaxy_shape_estimator(bayesian=False, input_shape=(64, 64, 6), filters=(32, 64, 128, 256),
                           kernel_size=3, event_size=2, num_train_examples=None, kl_weight=1.0,
                           prior_scale="he", posterior_scale_init=-5.0,
                           synchronized_batch_norm=False, estimator="flipout", bayesian_scope="all",
                           name=None):
    """Builds the deterministic (`bayesian=False`) or Bayesian galaxy shape estimator.

    Both variants share the layer names: `input_bn`, `conv{i}_a`, `prelu{i}_a`,
    `conv{i}_b`, `prelu{i}_b` (i = 1..len(filters)), `flatten`, `head`.

    Args:
      bayesian: use Bayesian layers with N(0, prior_scale^2) priors (Eq. 2).
      input_shape: (height, width, bands), fully defined (the PReLU slopes are per
        element, and IPUs need static shapes); height and width divisible by
        2 ** len(filters).
      filters: filters of each stage (two convolutions per stage).
      kernel_size: convolution kernel size.
      event_size: size of the predicted vector (2: e1, e2).
      num_train_examples: N, the size of the training set, by which the KL is
        divided (Eq. 2 per example). Required when `bayesian=True` (None raises
        ValueError: KL / 1 weighs the whole KL against one example's NLL);
        unused when `bayesian=False`.
      kl_weight: extra multiplier on the KL (see `FlipoutDense`).
      prior_scale: standard deviation of the N(0, s^2) weight prior: "he"
        (default: s = sqrt(2 / fan_in) per layer, the scale of the He-normal
        initialisation of the posterior means) or a float (the paper: 1).
      posterior_scale_init: mean of the initial untransformed posterior scales,
        sigma = softplus(.): -5 (default) gives sigma ~ 6.7e-3, 3% to 30% of the
        prior scales of this network; the paper's code used -9 (sigma ~ 1.2e-4).
        See docs/probabilistic_ipu_gpu.md, "Training a BNN".
      synchronized_batch_norm: compute the input BatchNorm statistics over all
        replicas (`BatchNormalization(synchronized=True)`, TF >= 2.12; not on the
        IPU path). Then training on n mirrored devices matches one device.
      estimator: gradient estimator of the Bayesian layers: "flipout"
        (`FlipoutConv2D` / `FlipoutDense`: per-example sign-flipped perturbations,
        two kernel applications per layer) or "reparameterization"
        (`ReparameterizationConv2D` / `ReparameterizationDense`: one weight sample
        per batch, one kernel application, as in the paper). Same parameters.
        Unused when `bayesian=False`.
      bayesian_scope: which layers are Bayesian when `bayesian=True`: "all"
        (default, the paper: every convolution and the head's Dense layer) or
        "head" (only the Dense layer to the distribution parameters, on a
        deterministic, point-estimated feature extractor: "last-layer" Bayesian
        inference, which fits as well as the deterministic network but whose
        epistemic spread only covers the head's weights).
      name: model name (default "galaxy_estimator", "galaxy_estimator_bnn" for
        Flipout, "galaxy_estimator_bnn_reparameterization").

    Returns:
      A functional `keras.Model` from images to a `tfd.MultivariateNormalTriL`
      (a `VariationalModel`, which also logs `nll` and `kl`, when `bayesian=True`).
      Compile it with `keras_efficient.losses.NegativeLogLikelihood()`.

    Raises:
      ValueError: `bayesian=True` without `num_train_examples`, or bad arguments.
    """
    check_bool("bayesian", bayesian)
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("bayesian_scope", bayesian_scope, BAYESIAN_SCOPES)
    if bayesian and num_train_examples is None:
        raise ValueError(
            "galaxy_shape_estimator(bayesian=True) needs `num_train_examples`, the number of "
            "training examples N: the layers add KL / N to the per-example loss (Eq. 2), and "
            "without N the KL of every weight would count against a single example. Pass "
            "num_train_examples=len(x_train). Received: num_train_examples=None")
    check_bool("synchronized_batch_norm", synchronized_batch_norm)
    conv_cls, dense_cls = _bayesian_layer_classes(estimator)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise invalid_argument("input_shape", "a tuple (height, width, bands)", input_shape,
                               TypeError) from None
    if len(input_shape) != 3:
        raise invalid_argument("input_shape", "a tuple (height, width, bands)", input_shape)
    for dim in input_shape:
        check_int("input_shape", dim, low=1)
    if isinstance(filters, (int, np.integer)) or not filters:
        raise invalid_argument("filters", "a non-empty sequence of positive ints", filters)
    filters = tuple(check_int("filters", f, low=1) for f in filters)
    factor = 2 ** len(filters)
    if input_shape[0] % factor or input_shape[1] % factor:
        raise invalid_argument(
            "input_shape", "height and width divisible by 2 ** len(filters) = {}".format(factor),
            input_shape)
    kernel_size = check_int("kernel_size", kernel_size, low=1)
    event_size = check_int("event_size", event_size, low=1)
    bayes = dict(num_train_examples=num_train_examples, kl_weight=kl_weight,
                 prior_scale=prior_scale, posterior_scale_init=posterior_scale_init)

    def conv(f, strides, layer_name):
        if bayesian and bayesian_scope == "all":
            # NaN/Inf are caught once, by the head (check_finite there), not per layer.
            return conv_cls(f, kernel_size, strides=strides, padding="same", name=layer_name,
                            validate_args=False, **bayes)
        return keras.layers.Conv2D(f, kernel_size, strides=strides, padding="same",
                                   name=layer_name)

    inputs = keras.Input(shape=input_shape, name="images")
    bn_kwargs = {"synchronized": True} if synchronized_batch_norm else {}
    h = keras.layers.BatchNormalization(name="input_bn", **bn_kwargs)(inputs)
    for i, f in enumerate(filters, start=1):
        h = conv(f, 1, "conv{}_a".format(i))(h)
        h = keras.layers.PReLU(name="prelu{}_a".format(i))(h)
        h = conv(f, 2, "conv{}_b".format(i))(h)
        h = keras.layers.PReLU(name="prelu{}_b".format(i))(h)
    h = keras.layers.Flatten(name="flatten")(h)
    params_layer = None
    if bayesian:
        params_layer = dense_cls(MultivariateNormalHead.params_size(event_size), name="params",
                                 **bayes)
    outputs = MultivariateNormalHead(event_size, params_layer=params_layer, name="head")(h)
    default_name = "galaxy_estimator"
    if bayesian:
        default_name += "_bnn" if estimator == "flipout" else "_bnn_reparameterization"
        if bayesian_scope == "head":
            default_name += "_head"
    model_cls = VariationalModel if bayesian else keras.Model
    return model_cls(inputs, outputs, name=name or default_name)


def predict_with_samples(model, x, num_samples=10, batch_size=32, y=None):
    """Predictive mean, covariance and spreads from `num_samples` forward passes.

    For a Bayesian model every pass draws new weights (Flipout: a perturbation per
    example; reparameterization: one weight sample per batch of `batch_size`,
    shared by its examples, so two inputs of one pass are correlated but each one's
    spread across passes is still a posterior-predictive spread). Pass s predicts
    N(mu_s, Sigma_s); the predictive distribution is their equal-weight mixture,
    whose covariance is, by the law of total covariance,

        covariance = mean_s Sigma_s  +  cov_s mu_s
                     (aleatoric)        (epistemic: zero for a deterministic model)

    (`keras_efficient.calibration.predictive_moments`; 1/S, the mixture's exact
    moments). Use `mean` / `covariance` for coverage ellipses and for
    `calibration.fit_covariance_scale`; score the predictive distribution with
    `mixture_nll` (it keeps the mixture's shape), not with the NLL of a single pass.

    Args:
      model: a model returning a distribution with `mean()` and `covariance()`
        (e.g. `galaxy_shape_estimator`).
      x: inputs, array [N, ...].
      num_samples: forward passes per input (>= 1).
      batch_size: inputs per pass.
      y: optional targets [N, d]; adds the per-example NLLs.

    Returns:
      dict with float32 arrays: `mean` [N, d] (mean over passes of the predicted
      means), `covariance` [N, d, d] (total predictive covariance),
      `aleatoric_covariance` [N, d, d] (mean of the predicted covariances),
      `epistemic_covariance` [N, d, d] (covariance across passes of the predicted
      means), `epistemic_std` [N, d] (their standard deviation across passes),
      `aleatoric_std` [N, d] (root of the mean predicted variance), `samples`
      [num_samples, N, d] (the predicted means of each pass) and
      `sample_covariances` [num_samples, N, d, d]. With `y`: `mixture_nll` [N]
      (-log of the mean over passes of N(y; mu_s, Sigma_s)) and `gaussian_nll` [N]
      (the NLL under N(mean, covariance)).
    """
    num_samples = check_int("num_samples", num_samples, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    x = np.asarray(x)
    if x.shape[0] == 0:
        raise ValueError("predict_with_samples received an empty batch. Received: x.shape={}".format(
            x.shape))

    # One trace per call: the batch dimension is left open, so a short last batch does
    # not retrace (and the repeated passes never add to TensorFlow's retracing count).
    @tf.function(input_signature=[tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype))])
    def moments(batch):
        dist = model(batch, training=False)
        return dist.mean(), dist.covariance()

    means, covariances = [], []
    for _ in range(num_samples):
        m, c = [], []
        for start in range(0, x.shape[0], batch_size):
            mean, cov = moments(tf.convert_to_tensor(x[start:start + batch_size]))
            m.append(mean.numpy())
            c.append(cov.numpy())
        means.append(np.concatenate(m))
        covariances.append(np.concatenate(c))
    samples = np.stack(means).astype(np.float32)
    sample_covariances = np.stack(covariances).astype(np.float32)
    predictive = calibration_predictive.predictive_moments(samples, sample_covariances)
    aleatoric_variance = np.diagonal(predictive["aleatoric_covariance"], axis1=-2, axis2=-1)
    out = {
        "mean": samples.mean(axis=0),
        "epistemic_std": samples.std(axis=0),
        "aleatoric_std": np.sqrt(aleatoric_variance).astype(np.float32),
        "samples": samples,
        "sample_covariances": sample_covariances,
        "covariance": predictive["covariance"].astype(np.float32),
        "aleatoric_covariance": predictive["aleatoric_covariance"].astype(np.float32),
        "epistemic_covariance": predictive["epistemic_covariance"].astype(np.float32),
    }
    if y is not None:
        y = np.asarray(y)
        if y.shape != samples.shape[1:]:
            raise ValueError("`y` must have shape [N, d] = {}. Received: y.shape={}".format(
                samples.shape[1:], y.shape))
        out["mixture_nll"] = calibration_predictive.mixture_nll(
            y, samples, sample_covariances).astype(np.float32)
        out["gaussian_nll"] = calibration_scores.gaussian_nll(
            y, predictive["mean"], predictive["covariance"]).astype(np.float32)
    return out
