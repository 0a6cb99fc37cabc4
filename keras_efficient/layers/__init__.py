"""Keras layers from the four papers.

Each layer is registered for serialization under the `keras_efficient` package.
"""

from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock
from keras_efficient.layers.conformer_attention import ConformerSelfAttention
from keras_efficient.layers.conformer_conv import ConformerConvolution
from keras_efficient.layers.conformer_ffn import ConformerFeedForward
from keras_efficient.layers.gated_residual import GatedResidualBlock
from keras_efficient.layers.gdn import GDN
from keras_efficient.layers.recurrent_gate import RecurrentGate
from keras_efficient.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_efficient.layers.bayesian import FlipoutConv2D, FlipoutDense
from keras_efficient.layers.bayesian import ReparameterizationConv2D, ReparameterizationDense
from keras_efficient.layers.probabilistic_heads import MultivariateNormalHead
from keras_efficient.layers.pointwise_conv import StridedPointwiseConv2D
from keras_efficient.layers.residual_block import ResidualBlock
from keras_efficient.layers.stochastic_depth import StochasticDepth
from keras_efficient.layers.random_projection import RandomProjection
from keras_efficient.layers.padded_frames import CTCBlankPadding, SubsampledTimeMask
from keras_efficient.layers.variational_head import BottleneckDecoder, VariationalHead

__all__ = [
    "BottleneckDecoder",
    "VariationalHead",
    "RandomProjection",
    "CTCBlankPadding",
    "SubsampledTimeMask",
    "AdaptiveDropout",
    "ConformerBlock",
    "ConformerConvolution",
    "ConformerFeedForward",
    "ConformerSelfAttention",
    "GaussianMixtureClassifier",
    "GDN",
    "GatedResidualBlock",
    "RecurrentGate",
    "FlipoutConv2D",
    "FlipoutDense",
    "ReparameterizationConv2D",
    "ReparameterizationDense",
    "MultivariateNormalHead",
    "ResidualBlock",
    "StridedPointwiseConv2D",
    "StochasticDepth",
]
