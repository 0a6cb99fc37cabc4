"""keras-tuner search spaces for the library's hyperparameters."""

from keras_efficient.tuning.compat import import_keras_tuner, keras_tuner_uses_library_keras
from keras_efficient.tuning.adaptive_dropout import adaptive_dropout_hyperparameters
from keras_efficient.tuning.e2_train import E2TrainHyperModel, e2_train_hyperparameters
from keras_efficient.tuning.bnn import bnn_hypermodel, bnn_hyperparameters
from keras_efficient.tuning.rebel import ReBELHyperModel

__all__ = [
    "import_keras_tuner",
    "keras_tuner_uses_library_keras",
    "ReBELHyperModel",
    "E2TrainHyperModel",
    "e2_train_hyperparameters",
    "adaptive_dropout_hyperparameters",
    "bnn_hypermodel",
    "bnn_hyperparameters",
]
