"""Reference models built from the library's layers."""

from keras_efficient.models.resnet import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model

__all__ = [
    "split_functional_model",
    "ReBEL",
    "cifar_resnet",
]
