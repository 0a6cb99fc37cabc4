"""keras_efficient: four papers on efficient deep learning as Keras layers, losses,
callbacks and training steps.

Subpackages:
  layers, losses, callbacks, schedules  -- building blocks for `model.fit`
  training                              -- gradient mechanisms (predictive sign gradients)
  pruning                               -- physical removal of pruned units
  split                                 -- split computing and early exit
  distribute                            -- CPU / GPU / IPU / multi-worker strategies
  models, data                          -- reference models and built-in data sets
  saving                                -- `.keras` files of the TF 2.14 line; portable export
  tuning                                -- keras-tuner search spaces
  testing                               -- the layer contract harness
  experiments, cli                      -- `keras-efficient reproduce <experiment>`

Subpackages are imported on first use, so `import keras_efficient` stays cheap.
"""

import importlib

from keras_efficient.version import __version__

_SUBPACKAGES = (
    "backend", "calibration", "callbacks", "cli", "data", "distribute", "experiments", "layers",
    "losses", "models", "pruning", "saving", "schedules", "split", "testing", "training", "tuning",
    "utils",
)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module("keras_efficient." + name)
    raise AttributeError("module 'keras_efficient' has no attribute {!r}".format(name))


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))


__all__ = ["__version__"] + list(_SUBPACKAGES)
