"""Reference models built from the library's layers."""

from keras_efficient.models.resnet import cifar_resnet

__all__ = [
    "cifar_resnet",
]
