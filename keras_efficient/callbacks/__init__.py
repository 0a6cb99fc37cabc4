"""Callbacks: training-progress monitors, stochastic weight averaging, compute accounting."""

from keras_efficient.callbacks.swa import StochasticWeightAveraging, reestimate_batchnorm

__all__ = [
    "StochasticWeightAveraging",
    "reestimate_batchnorm",
]
