"""Losses and regularisers from the papers (mimic, mixture KL, negative log-likelihood, ...)."""

from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood

__all__ = [
    "NegativeLogLikelihood",
]
