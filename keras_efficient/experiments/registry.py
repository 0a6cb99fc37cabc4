"""The registry of reproducible experiments behind `keras-efficient reproduce`.

Each experiment is a module with a `DESCRIPTION` string, an `OPTIONS` table
({key: `Option`}, the only keys `--option KEY=VALUE` accepts for it) and a
`run(ctx)` function taking an `ExperimentContext`. Modules are imported only
when run or asked for their options.
"""

import importlib

__all__ = ["EXPERIMENTS", "available_experiments", "experiment_options", "load_experiment"]

#: name -> module path. Each module defines DESCRIPTION, OPTIONS and run(ctx).
EXPERIMENTS = {
    "resnet-digits": "keras_efficient.experiments.resnet_digits",
    "adaptive-dropout": "keras_efficient.experiments.adaptive_dropout",
    "e2-train": "keras_efficient.experiments.e2_train",
    "ipu-gpu": "keras_efficient.experiments.ipu_gpu",
    "rebel": "keras_efficient.experiments.rebel",
    "bnn-calibration": "keras_efficient.experiments.bnn_calibration",
}


def available_experiments():
    """Returns {name: one-line description} for the experiments that can be run."""
    out = {}
    for name, module_path in EXPERIMENTS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            if err.name == module_path:
                continue
            raise
        out[name] = module.DESCRIPTION.strip().splitlines()[0]
    return out


def load_experiment(name):
    """Imports and returns the experiment module registered under `name`."""
    if name not in EXPERIMENTS:
        raise ValueError("Unknown experiment {!r}. Available: {}".format(
            name, ", ".join(sorted(available_experiments()))))
    return importlib.import_module(EXPERIMENTS[name])


def experiment_options(name):
    """The `OPTIONS` table ({key: Option}) of experiment `name` ({} if it declares none)."""
    return dict(getattr(load_experiment(name), "OPTIONS", {}))
