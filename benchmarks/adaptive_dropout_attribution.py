"""Where the ConformerBlock train-step overhead of AdaptiveDropout goes.

Times one `fit` step of a `ConformerBlock` (the block of
`adaptive_dropout_train_step.py`) with keras Dropout at the five ADL sites against
AdaptiveDropout and against AdaptiveDropout variants that each remove one piece of
its training path, all interleaved in one process. The variants replace the
layers' training call (so their gradients are not the ADL gradients; they are
for timing only):

- `no_scalar_ops`: no step counter update, no schedule c(t), no regulariser;
- `no_unit_grad_tf`: custom gradient returning only the input gradient m * g
  (plain TensorFlow select), zero unit gradient;
- `no_unit_grad_xla`: the same input gradient computed by an XLA-compiled kernel;
- `no_custom_grad`: y = where(u > 1 - p, x, 0) with autodiff (no unit gradient);
- `kernel_3d`: the full ADL with the backward kernel reducing the unflattened
  input over its leading axes (the previous implementation).

Prints, per variant, the median wall time, the median process CPU time and the
minor page faults per step, each also as a ratio to keras Dropout.
Usage: python benchmarks/adaptive_dropout_attribution.py [--repeats N] [--out FILE]
"""

import argparse
import json
import resource
import time
import types

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import ConformerBlock
from keras_efficient.layers import adaptive_dropout as adl_module

from _timing import machine_info  # beside this script
from adaptive_dropout_train_step import _dropout_sites_block, _step_fn

_DIMS = dict(model_dim=144, num_heads=4, ffn_dim=576, kernel_size=15)

_GI_KERNEL = tf.function(lambda g, u, p: tf.where(u > 1.0 - p, g, tf.zeros_like(g)),
                         jit_compile=True, autograph=False)


def _variant_train(mode):
    """A replacement for `AdaptiveDropout._train` (timing only)."""

    def train(self, inputs):
        t = self.step_counter.read_value()
        logits = self.retention_raw if mode == "no_scalar_ops" else self._logits(t)
        if mode == "kernel_3d":
            x, beta, axes = inputs, tf.reshape(logits, self._broadcast_shape), self._reduce_axes
        else:  # the layer's own layout: [positions, units]
            units = int(np.prod(self._units_shape))
            x, beta, axes = tf.reshape(inputs, [-1, units]), tf.reshape(logits, [1, units]), [0]
        uniform = tf.random.uniform(tf.shape(x), dtype=tf.float32, seed=self.seed)
        if mode in ("no_scalar_ops", "kernel_3d"):
            outputs = adl_module._adaptive_dropout(x, beta, uniform, axes)
        elif mode == "no_custom_grad":
            p = tf.sigmoid(beta)
            outputs = tf.where(uniform > 1.0 - p, x, tf.zeros_like(x))
        else:
            @tf.custom_gradient
            def site(x, b):
                p = tf.sigmoid(b)
                y = tf.where(uniform > 1.0 - p, x, tf.zeros_like(x))

                def grad(upstream):
                    if mode == "no_unit_grad_xla":
                        return _GI_KERNEL(upstream, uniform, p), tf.zeros_like(b)
                    return (tf.where(uniform > 1.0 - p, upstream, tf.zeros_like(upstream)),
                            tf.zeros_like(b))
                return y, grad
            outputs = site(x, beta)
        if mode != "no_scalar_ops":
            self.step_counter.assign_add(1)
        return tf.reshape(outputs, tf.shape(inputs))
    return train


def _adl_model(mode=None):
    inp = keras.Input((64, 144))
    block = ConformerBlock(dropout_rate=0.1, seed=0, **_DIMS)
    block.build(inp.shape)
    if mode is not None:
        for site in block.adaptive_dropout_sites.values():
            site._train = types.MethodType(_variant_train(mode), site)
            if mode == "no_scalar_ops":
                site._callable_losses = []
    return keras.Model(inp, block(inp))


def _dropout_model():
    inp = keras.Input((64, 144))
    return keras.Model(inp, _dropout_sites_block(rate=0.1, **_DIMS)(inp))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", default="adaptive_dropout_attribution.json")
    args = parser.parse_args()
    xb = np.random.default_rng(0).standard_normal((16, 64, 144)).astype(np.float32)
    makers = {"keras_dropout": _dropout_model, "adaptive_dropout": _adl_model}
    for mode in ("kernel_3d", "no_scalar_ops", "no_unit_grad_tf", "no_unit_grad_xla",
                 "no_custom_grad"):
        makers[mode] = lambda mode=mode: _adl_model(mode)
    fns = {key: _step_fn(make(), xb, xb) for key, make in makers.items()}
    wall = {key: [] for key in fns}
    cpu = {key: [] for key in fns}
    faults = {key: 0 for key in fns}
    for _ in range(args.repeats):
        for key, fn in fns.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
            faults[key] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    results = machine_info()
    base_wall, base_cpu = np.median(wall["keras_dropout"]), np.median(cpu["keras_dropout"])
    for key in fns:
        w, c = float(np.median(wall[key])), float(np.median(cpu[key]))
        per_step = faults[key] / args.repeats
        results[key] = {"wall": w, "wall_ratio": w / base_wall, "cpu": c,
                        "cpu_ratio": c / base_cpu, "minor_faults_per_step": per_step}
        print("{:18s} wall {:6.2f} ms ({:.3f})  cpu {:6.2f} ms ({:.3f})  faults/step {:6.0f}"
              .format(key, 1e3 * w, w / base_wall, 1e3 * c, c / base_cpu, per_step))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("load average (1 min) after the run: {:.2f}; wrote {}".format(
        machine_info()["load_average_1min"], args.out))


if __name__ == "__main__":
    main()
