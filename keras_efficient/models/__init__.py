"""Reference models built from the library's layers."""

from keras_efficient.models.conformer_encoder import (
    ConformerEncoder,
    CTCLoss,
    conformer_parameters,
    ctc_greedy_decode,
    ctc_labels_from_zero_based,
    size_conformer,
    token_error_rate,
)
from keras_efficient.models.flow_vae import FlowVAE
from keras_efficient.models.galaxy_estimator import (
    VariationalModel,
    galaxy_shape_estimator,
    predict_with_samples,
)
from keras_efficient.models.resnet import cifar_resnet
from keras_efficient.models.gated_resnet import (
    expected_sd_survival,
    gated_blocks_of,
    gated_resnet,
    set_gate_flops_fractions,
    stochastic_depth_resnet,
)
from keras_efficient.models.rebel import ReBEL, split_functional_model

__all__ = [
    "VariationalModel",
    "CTCLoss",
    "ConformerEncoder",
    "conformer_parameters",
    "ctc_greedy_decode",
    "ctc_labels_from_zero_based",
    "size_conformer",
    "token_error_rate",
    "ReBEL",
    "split_functional_model",
    "cifar_resnet",
    "FlowVAE",
    "galaxy_shape_estimator",
    "predict_with_samples",
    "expected_sd_survival",
    "gated_blocks_of",
    "gated_resnet",
    "set_gate_flops_fractions",
    "stochastic_depth_resnet",
]
