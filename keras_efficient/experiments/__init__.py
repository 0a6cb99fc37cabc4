"""Reproducible experiments, run with `keras-efficient reproduce <name>`."""

from keras_efficient.experiments.context import ExperimentContext, Report
from keras_efficient.experiments.registry import (
    EXPERIMENTS,
    available_experiments,
    load_experiment,
)
from keras_efficient.experiments.runner import run_experiment

__all__ = [
    "EXPERIMENTS",
    "ExperimentContext",
    "Report",
    "available_experiments",
    "load_experiment",
    "run_experiment",
]
