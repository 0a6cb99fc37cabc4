"""Train-step time of the Bayesian (Flipout) galaxy estimator vs the deterministic one.

Both are `galaxy_shape_estimator` on 64x64x6 inputs (1.5 M / 2.7 M parameters),
compiled with Adam and the negative log-likelihood, trained with plain
`model.fit`. Steps are timed after a warm-up epoch, alternating the two models
over several rounds; the median seconds per step are reported with the ratio
(target: Bayesian <= 2x deterministic).

Run: python benchmarks/ipu_gpu_flipout_train_step.py [--batch-sizes 4,8,14] [--out FILE]
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402
from keras_efficient.losses import NegativeLogLikelihood  # noqa: E402
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator  # noqa: E402


def _model(bayesian, n):
    model = galaxy_shape_estimator(bayesian=bayesian, num_train_examples=n)
    model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood())
    return model


def _seconds_per_step(model, x, y, batch_size, epochs):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return (time.perf_counter() - start) / (epochs * (len(x) // batch_size))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="4,8,14")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="ipu_gpu_flipout_train_step.json")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        n = bs * args.steps
        rng = np.random.default_rng(bs)
        x = rng.standard_normal((n, 64, 64, 6)).astype(np.float32)
        y = (0.2 * rng.standard_normal((n, 2))).astype(np.float32)
        models = {"deterministic": _model(False, n), "bayesian": _model(True, n)}
        for model in models.values():
            _seconds_per_step(model, x, y, bs, 1)  # warm-up: tracing
        times = {k: [] for k in models}
        for _ in range(args.rounds):
            for key, model in models.items():
                times[key].append(_seconds_per_step(model, x, y, bs, 1))
        det, bnn = np.median(times["deterministic"]), np.median(times["bayesian"])
        row = {"batch_size": bs, "deterministic_s_per_step": float(det),
               "bayesian_s_per_step": float(bnn), "ratio": float(bnn / det),
               "parameters": {k: int(m.count_params()) for k, m in models.items()}}
        results.append(row)
        print("batch {:3d}: deterministic {:.4f} s/step, Bayesian (Flipout) {:.4f} s/step, "
              "ratio {:.2f}x".format(bs, det, bnn, bnn / det))
    out = {"benchmark": "flipout_train_step", "results": results,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "tensorflow": tf.__version__}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("written", args.out)


if __name__ == "__main__":
    main()
