"""Test helpers: the layer contract harness and logical devices for strategies."""

from keras_efficient.testing.devices import (
    configure_logical_cpus,
    logical_cpu_names,
    mirrored_cpu_strategy,
)
from keras_efficient.testing.layer_test import run_layer_test

__all__ = [
    "configure_logical_cpus",
    "logical_cpu_names",
    "mirrored_cpu_strategy",
    "run_layer_test",
]
