"""Keras layers from the four papers.

Each layer is registered for serialization under the `keras_efficient` package.
"""

from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_efficient.layers.bayesian import FlipoutConv2D, FlipoutDense
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.layers.residual_block import ResidualBlock
from keras_efficient.layers.random_projection import RandomProjection
from keras_efficient.layers.variational_head import BottleneckDecoder, VariationalHead

__all__ = [
    "VariationalHead",
    "BottleneckDecoder",
    "RandomProjection",
    "AdaptiveDropout",
    "GaussianMixtureClassifier",
    "FlipoutConv2D",
    "FlipoutDense",
    "MultivariateNormalHead",
    "ResidualBlock",
]
