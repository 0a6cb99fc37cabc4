"""The predictive distribution of a Bayesian network from S sampled forward passes.

Each pass s (new weights drawn from the posterior) predicts a Gaussian
N(mu_s, Sigma_s). The predictive distribution is their equal-weight mixture,
p(y | x) ~= (1/S) sum_s N(y; mu_s, Sigma_s). Its first two moments follow from
the law of total covariance:

    mean       = (1/S) sum_s mu_s
    covariance = (1/S) sum_s Sigma_s                     (aleatoric: the data noise)
               + (1/S) sum_s (mu_s - mean)(mu_s - mean)^T  (epistemic: the weights)

(the 1/S, not 1/(S-1), makes these the exact moments of the S-component
mixture). The moment-matched Gaussian N(mean, covariance) is what coverage
ellipses and `calibration.fit_covariance_scale` use; the mixture itself is
scored by its negative log-likelihood

    mixture NLL = -log (1/S) sum_s N(y; mu_s, Sigma_s),

computed with log-sum-exp. The mixture NLL is the right score of the BNN's
predictive distribution (it may be non-Gaussian, e.g. skewed); the
moment-matched Gaussian is its best single-Gaussian summary.
"""

import numpy as np

from keras_efficient.calibration import _math

__all__ = ["predictive_moments", "mixture_nll"]


def _sample_arrays(sample_means, sample_covariances):
    mu = np.asarray(sample_means, dtype=np.float64)
    cov = np.asarray(sample_covariances, dtype=np.float64)
    if mu.ndim < 2:
        raise ValueError("`sample_means` must have shape [num_samples, ..., d]. Received: "
                         "sample_means.shape={}".format(mu.shape))
    if cov.shape != mu.shape + mu.shape[-1:]:
        raise ValueError("`sample_covariances` must have shape sample_means.shape + (d,) = {}. "
                         "Received: sample_covariances.shape={}".format(
                             mu.shape + mu.shape[-1:], cov.shape))
    if mu.shape[0] == 0:
        raise ValueError("At least one sample is needed. Received: sample_means.shape={}"
                         .format(mu.shape))
    return mu, cov


def predictive_moments(sample_means, sample_covariances):
    """Mean and covariance (total, aleatoric, epistemic) of the S-sample mixture.

    Args:
      sample_means: mu_s, array [S, ..., d] (one predicted mean per pass).
      sample_covariances: Sigma_s, array [S, ..., d, d].

    Returns:
      dict of float64 arrays: `mean` [..., d], `covariance` [..., d, d] (aleatoric +
      epistemic), `aleatoric_covariance` (mean of Sigma_s) and
      `epistemic_covariance` (covariance of mu_s over the samples, 1/S).
    """
    mu, cov = _sample_arrays(sample_means, sample_covariances)
    mean = mu.mean(axis=0)
    dev = mu - mean
    epistemic = np.einsum("s...i,s...j->...ij", dev, dev) / mu.shape[0]
    aleatoric = cov.mean(axis=0)
    return {"mean": mean, "covariance": aleatoric + epistemic,
            "aleatoric_covariance": aleatoric, "epistemic_covariance": epistemic}


def mixture_nll(y_true, sample_means, sample_covariances):
    """-log (1/S) sum_s N(y; mu_s, Sigma_s) per example (log-sum-exp, float64).

    Args:
      y_true: targets, array [..., d].
      sample_means: array [S, ..., d].
      sample_covariances: array [S, ..., d, d].

    Returns:
      float64 array [...]: nats per example.
    """
    mu, cov = _sample_arrays(sample_means, sample_covariances)
    y = np.asarray(y_true, dtype=np.float64)
    if y.shape != mu.shape[1:]:
        raise ValueError("`y_true` must have shape sample_means.shape[1:] = {}. Received: "
                         "y_true.shape={}".format(mu.shape[1:], y.shape))
    y, _, _ = _math.gaussian_arrays(np.broadcast_to(y, mu.shape), mu, cov)
    log_p = _math.gaussian_log_density(y, mu, cov)  # [S, ...]
    top = log_p.max(axis=0)
    return -(top + np.log(np.mean(np.exp(log_p - top), axis=0)))
