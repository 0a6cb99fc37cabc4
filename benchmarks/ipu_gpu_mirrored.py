"""MirroredStrategy on 2 logical CPU devices vs 1 device for the galaxy estimator.

The same global batch is split over two logical CPUs of one machine (both share
the physical cores, so this measures the overhead of replication more than a
speed-up). Deterministic and Bayesian estimators, 64x64x6 inputs, median seconds
per step after a warm-up epoch, with the ratio (2 devices / 1 device).

Run: python benchmarks/ipu_gpu_mirrored.py [--batch-size 16] [--out FILE]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_efficient.backend import keras  # noqa: E402
from keras_efficient.testing import configure_logical_cpus  # noqa: E402

configure_logical_cpus(2)

from keras_efficient.distribute import get_strategy, static_batches  # noqa: E402
from keras_efficient.losses import NegativeLogLikelihood  # noqa: E402
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator  # noqa: E402

from _timing import machine_info  # noqa: E402  (beside this script)


def _time(strategy, bayesian, ds, n, steps, rounds):
    with strategy.scope():
        model = galaxy_shape_estimator(bayesian=bayesian, num_train_examples=n)
        model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood())
    model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="ipu_gpu_mirrored.json")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    n = args.batch_size * args.steps
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 64, 64, 6)).astype(np.float32)
    y = (0.2 * rng.standard_normal((n, 2))).astype(np.float32)
    ds = static_batches(x, y, batch_size=args.batch_size)
    results = []
    for bayesian in (False, True):
        one = _time(get_strategy("cpu"), bayesian, ds, n, args.steps, args.rounds)
        two = _time(get_strategy("cpu", num_devices=2), bayesian, ds, n, args.steps, args.rounds)
        name = "bayesian" if bayesian else "deterministic"
        results.append({"model": name, "one_device_s_per_step": one,
                        "two_logical_cpus_s_per_step": two, "ratio": two / one})
        print("{:13s} batch {}: 1 device {:.4f} s/step, MirroredStrategy 2 logical CPUs "
              "{:.4f} s/step, ratio {:.2f}x".format(name, args.batch_size, one, two, two / one))
    out = {"benchmark": "mirrored_two_logical_cpus", "batch_size": args.batch_size,
           "results": results, "machine": machine_info()}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("written", args.out)


if __name__ == "__main__":
    main()
