"""keras-tuner search spaces for the library's hyperparameters."""

__all__ = []
