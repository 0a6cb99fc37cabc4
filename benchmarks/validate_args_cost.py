"""Cost of `validate_args=True` (finiteness and non-empty-batch checks) per layer call.

For each layer and input size, the compiled (`tf.function`) forward call is timed
with `validate_args=False` and `True`, interleaved (A, B, A, B, ...), and the
ratio True / False of the medians is printed side by side. Shape and rank checks
run at build time and cost nothing per call; the value checks are one reduction
over the input (`tf.debugging.assert_all_finite`) plus a shape read.

    python benchmarks/validate_args_cost.py [--repeats 200]
"""

import argparse
import json

from _timing import interleaved_medians, machine_info  # beside this script

from keras_efficient.backend import keras, tf
from keras_efficient.layers import RandomProjection, ResidualBlock, StochasticDepth


def _cases():
    yield "RandomProjection(64) on (256, 512)", \
        lambda v: RandomProjection(64, seed=0, validate_args=v), (256, 512)
    yield "RandomProjection(64) on (32, 64)", \
        lambda v: RandomProjection(64, seed=0, validate_args=v), (32, 64)
    yield "StochasticDepth(ResidualBlock(16)) on (32, 16, 16, 16), inference", \
        lambda v: StochasticDepth(ResidualBlock(16), 0.8, seed=0, validate_args=v), \
        (32, 16, 16, 16)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for name, make, shape in _cases():
        x = tf.random.normal(shape)
        fns = {}
        for validate in (False, True):
            keras.utils.set_random_seed(0)
            layer = make(validate)
            layer(x)
            call = tf.function(lambda t, layer=layer: layer(t, training=False))
            call(x)
            fns[validate] = lambda call=call: call(x).numpy()
        medians = interleaved_medians(fns, args.repeats, warmup=5)
        rows.append({"case": name, "off_ms": 1e3 * medians[False], "on_ms": 1e3 * medians[True],
                     "ratio": medians[True] / medians[False]})
    print("{:<66} {:>9} {:>9} {:>7}".format("layer call", "off ms", "on ms", "on/off"))
    for r in rows:
        print("{case:<66} {off_ms:9.3f} {on_ms:9.3f} {ratio:7.2f}".format(**r))
    print(json.dumps({"machine": machine_info(), "rows": rows}))


if __name__ == "__main__":
    main()
