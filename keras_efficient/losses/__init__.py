"""Losses and regularisers from the papers (mimic, mixture KL, negative log-likelihood, ...)."""

from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.losses.early_classification import EarlyClassificationLoss
from keras_efficient.losses.mimic import MimicLoss
from keras_efficient.losses.mixture_kl import (
    gaussian_mixture_kl,
    linear_softmax_prior,
    mixture_kl_divergence,
)

__all__ = [
    "mixture_kl_divergence",
    "gaussian_mixture_kl",
    "linear_softmax_prior",
    "MimicLoss",
    "EarlyClassificationLoss",
    "NegativeLogLikelihood",
]
