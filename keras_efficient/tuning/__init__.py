"""keras-tuner search spaces for the library's hyperparameters."""

from keras_efficient.tuning.adaptive_dropout import adaptive_dropout_hyperparameters

__all__ = [
    "adaptive_dropout_hyperparameters",
]
