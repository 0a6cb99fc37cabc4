"""Callbacks: training-progress monitors, stochastic weight averaging, compute accounting,
KL warm-up."""

from keras_efficient.callbacks.adaptive_dropout_monitor import AdaptiveDropoutMonitor
from keras_efficient.callbacks.compute_meter import ComputeMeter, model_mac_entries
from keras_efficient.callbacks.gate_calibration import GateCalibration
from keras_efficient.callbacks.kl_warmup import KLWarmup
from keras_efficient.callbacks.swa import StochasticWeightAveraging, reestimate_batchnorm

__all__ = [
    "AdaptiveDropoutMonitor",
    "ComputeMeter",
    "GateCalibration",
    "KLWarmup",
    "model_mac_entries",
    "StochasticWeightAveraging",
    "reestimate_batchnorm",
]
