"""Interleaved timing and machine description shared by the benchmarks.

Variants are measured alternately (A, B, C, A, B, C, ...) so that load from other
processes hits all of them alike; the median of each is reported.
"""

import os
import platform
import time

import numpy as np

__all__ = ["interleaved_medians", "machine_info"]


def machine_info():
    """What the numbers were measured on: CPU, core count, TensorFlow, 1-min load average."""
    import tensorflow as tf

    return {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "load_average_1min": os.getloadavg()[0]}


def interleaved_medians(fns, repeats, warmup=0):
    """Median wall time in seconds of each zero-argument callable in the dict `fns`.

    Each callable runs `warmup` untimed times first, then `repeats` timed times,
    alternating between the callables.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: float(np.median(v)) for key, v in times.items()}
