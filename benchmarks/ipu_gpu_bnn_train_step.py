"""Train step of the deterministic galaxy estimator vs its Flipout and reparameterization BNNs.

All are `galaxy_shape_estimator` on 64x64x6 inputs (1.5 M parameters
deterministic, 2.7 M Bayesian with either estimator), compiled with Adam and the
negative log-likelihood. One Keras `train_step` (forward, loss with the KL
terms, gradients, Adam update; wrapped in `tf.function` as `fit` does) is timed
per call, the models alternating step by step (`_timing.interleaved_medians`)
so that load from other processes hits all alike; the median seconds per step
are reported with the ratios to the deterministic step (target: Bayesian <= 2x
deterministic). "flipout" runs two convolutions per layer (mean and sign-flipped
perturbation), "reparameterization" one (one weight sample per batch).

`--tfp-reference` adds the Flipout estimator with TFP's generic kernel sampling
(`Normal.sample`, i.e. `tf.random.normal`) and `tfd.kl_divergence` graph
instead of the library's vectorised Box-Muller draw and fused closed-form KL
(the math is the same), to measure what those save.

Run: python benchmarks/ipu_gpu_bnn_train_step.py [--batch-sizes 2,4,8,14]
     [--repeats 40] [--variants deterministic,flipout,reparameterization]
     [--tfp-reference] [--out FILE]
"""

import argparse
import json
import os
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402
from keras_efficient.layers.bayesian import FlipoutConv2D, FlipoutDense  # noqa: E402
from keras_efficient.losses import NegativeLogLikelihood  # noqa: E402
from keras_efficient.models import galaxy_estimator  # noqa: E402

from _timing import interleaved_medians, machine_info  # noqa: E402  (beside this script)


class _TFPReference:
    """TFP's generic kernel sample and KL graph (the layers' path before the fused ops)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_posterior_tensor_fn = lambda d: d.sample()

    def kl_divergence(self):
        kl = tfp.distributions.kl_divergence(self.kernel_posterior, self.kernel_prior)
        return kl * (self.kl_weight / float(self.num_train_examples))


class _TFPReferenceConv2D(_TFPReference, FlipoutConv2D):
    pass


class _TFPReferenceDense(_TFPReference, FlipoutDense):
    pass


VARIANTS = ("deterministic", "flipout", "reparameterization", "flipout_tfp_reference")


def _model(variant, n):
    if variant == "flipout_tfp_reference":
        with mock.patch.object(galaxy_estimator, "FlipoutConv2D", _TFPReferenceConv2D), \
                mock.patch.object(galaxy_estimator, "FlipoutDense", _TFPReferenceDense):
            model = galaxy_estimator.galaxy_shape_estimator(bayesian=True, num_train_examples=n)
    elif variant == "deterministic":
        model = galaxy_estimator.galaxy_shape_estimator(bayesian=False)
    else:
        model = galaxy_estimator.galaxy_shape_estimator(bayesian=True, estimator=variant,
                                                        num_train_examples=n)
    model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood())
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="2,4,8,14")
    parser.add_argument("--repeats", type=int, default=40, help="timed steps per model")
    parser.add_argument("--variants", default="deterministic,flipout,reparameterization",
                        help="comma-separated subset of " + ", ".join(VARIANTS)
                        + " (deterministic is always included: the ratios refer to it)")
    parser.add_argument("--tfp-reference", action="store_true",
                        help="also time Flipout with TFP's generic sample/KL graphs")
    parser.add_argument("--out", default="ipu_gpu_bnn_train_step.json")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    variants = ["deterministic"]
    for v in args.variants.split(","):
        if v not in VARIANTS:
            parser.error("unknown variant {!r}; expected some of {}".format(v, ", ".join(VARIANTS)))
        if v not in variants:
            variants.append(v)
    if args.tfp_reference and "flipout_tfp_reference" not in variants:
        variants.append("flipout_tfp_reference")
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        n = bs * 8  # num_train_examples: only scales the KL
        rng = np.random.default_rng(bs)
        x = tf.constant(rng.standard_normal((bs, 64, 64, 6)).astype(np.float32))
        y = tf.constant((0.2 * rng.standard_normal((bs, 2))).astype(np.float32))
        models = {v: _model(v, n) for v in variants}

        def step(model):
            train_step = tf.function(model.train_step)
            return lambda: float(train_step((x, y))["loss"])

        load_before = os.getloadavg()[0]
        per_step = interleaved_medians({k: step(m) for k, m in models.items()},
                                       repeats=args.repeats, warmup=3)
        det = per_step["deterministic"]
        row = {"batch_size": bs, "s_per_step": per_step,
               "ratio_to_deterministic": {k: v / det for k, v in per_step.items()},
               "load_average_1min": [load_before, os.getloadavg()[0]],
               "parameters": {k: int(m.count_params()) for k, m in models.items()}}
        results.append(row)
        print("batch {:3d}: ".format(bs) + ", ".join(
            "{} {:.4f} s/step ({:.2f}x)".format(k, v, v / det) for k, v in per_step.items())
            + "  [load {:.1f}-{:.1f}]".format(*row["load_average_1min"]), flush=True)
        keras.backend.clear_session()
    out = {"benchmark": "bnn_train_step", "repeats": args.repeats, "results": results,
           "machine": machine_info()}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("written", args.out)


if __name__ == "__main__":
    main()
