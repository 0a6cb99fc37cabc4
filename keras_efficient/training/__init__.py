"""Energy-efficient training (E²-Train): predictive sign gradients, compute accounting, skip budget."""

from keras_efficient.training.energy import HOROWITZ_45NM_PJ, mac_energy_pj
from keras_efficient.training.flops import (
    encoder_flops,
    layer_macs,
    residual_block_flops,
    residual_block_macs,
)
from keras_efficient.training.gate_calibration import calibrate_gates
from keras_efficient.training.psg import (
    DEFAULT_PSG_CONFIG,
    fixed_point_quantize,
    psg_conv2d_weight_gradient,
    psg_sign_select,
    psg_weight_gradient,
    validate_psg_config,
)
from keras_efficient.training.psg_convert import PSGResidualBlock, convert_to_psg, psg_layers_of
from keras_efficient.training.psg_layers import PSGConv2D, PSGDense
from keras_efficient.training.skip_budget import SkipBudget, get_skip_budget, skip_budget

__all__ = [
    "DEFAULT_PSG_CONFIG",
    "HOROWITZ_45NM_PJ",
    "layer_macs",
    "mac_energy_pj",
    "residual_block_flops",
    "encoder_flops",
    "residual_block_macs",
    "PSGConv2D",
    "PSGDense",
    "PSGResidualBlock",
    "SkipBudget",
    "calibrate_gates",
    "convert_to_psg",
    "fixed_point_quantize",
    "get_skip_budget",
    "psg_conv2d_weight_gradient",
    "psg_layers_of",
    "psg_sign_select",
    "psg_weight_gradient",
    "skip_budget",
    "validate_psg_config",
]
