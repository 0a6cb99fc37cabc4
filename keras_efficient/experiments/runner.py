"""Runs a registered experiment and writes its report."""

import os
import platform
import time

from keras_efficient.experiments.context import ExperimentContext, resolve_options
from keras_efficient.experiments.registry import experiment_options, load_experiment
from keras_efficient.version import __version__

__all__ = ["check_options", "run_experiment"]


def check_options(name, options=None, quick=False):
    """Validates `options` for experiment `name` without running it.

    Returns {key: typed value} for every declared option (defaults filled in).

    Raises:
      OptionError: an unknown key or an invalid value (the message lists the valid keys).
    """
    return resolve_options(experiment_options(name), options, quick, name)


def run_experiment(name, quick=False, seed=0, out_dir=None, options=None, stream=None):
    """Runs experiment `name` and writes report.md, metrics.json and PNG plots.

    `options` ({key: value}, strings or typed values) are checked against the
    experiment's `OPTIONS` before anything runs.

    Returns the `ExperimentContext`, whose `report.metrics` holds the results.

    Raises:
      OptionError: an unknown option or an invalid value.
    """
    module = load_experiment(name)
    ctx = ExperimentContext(name, quick=quick, seed=seed, out_dir=out_dir, options=options,
                            stream=stream, declared=getattr(module, "OPTIONS", {}))
    ctx.log("experiment {} (quick={}, seed={}) -> {}".format(name, quick, seed, ctx.out_dir))
    ctx.seed_everything()
    start = time.time()
    module.run(ctx)
    elapsed = time.time() - start
    import tensorflow as tf
    ctx.report.add_metrics({
        "experiment": name, "quick": quick, "seed": seed, "wall_time_s": elapsed,
        "keras_efficient": __version__, "tensorflow": tf.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
    }, key="run")
    ctx.report.add_text("---\nRun: seed {}, {:.1f} s wall time, keras_efficient {}, TensorFlow {}.".format(
        seed, elapsed, __version__, tf.__version__))
    ctx.report.write(ctx.out_dir)
    ctx.log("report written to {}".format(os.path.join(ctx.out_dir, "report.md")))
    return ctx
