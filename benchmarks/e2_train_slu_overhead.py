"""Where the fixed cost of SLU "gather" goes: the gate and the row routing, without the block.

Part 1 times one training step (forward and backward) of a chain of 34 cheap blocks
(y = relu(w·x)) in the stage sizes of the CIFAR ResNet-74 at batch 128 (12 blocks at
32×32×16, 11 at 16×16×32, 11 at 8×8×64), plain and wrapped in `GatedResidualBlock`
with every gate open. The difference is the gate's and
the routing's fixed cost per step, which ResNet-74's real blocks pay too.

Part 2 times, at each stage size, the full-size memory passes that "gather" adds per
block (sub-batch of 80% of the rows, as at 20% skip):

  forward:  spatial mean for the gate; row gather of the open samples; row scatter of
            the block's output into x (`tf.tensor_scatter_nd_update`);
  backward: row gather of the output gradient; the gate's task-loss gradient
            ⟨∂L/∂y, F(x) − x⟩ per open sample; row scatter of the block's input
            gradient; the broadcasting add of the pooled gradient.

Their sum over the 34 blocks is reported next to Part 1's measured fixed cost. Median
of interleaved repeats; nothing is asserted.

Usage: python benchmarks/e2_train_slu_overhead.py [--repeats N] [--out FILE]
"""

import argparse
import json
import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate

from _timing import interleaved_medians, machine_info  # beside this script

BATCH = 128
STAGES = ((32, 16, 12), (16, 32, 11), (8, 64, 11))  # (height = width, channels, gated blocks)


class _Cheap(keras.layers.Layer):
    """A block that costs one elementwise pass: y = relu(w·x)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(), initializer="ones")

    def call(self, x, training=None):
        return tf.nn.relu(x * self.w)


def _chain_step(gated):
    blocks, gate = [], RecurrentGate()
    for _, _, n in STAGES:
        stage = []
        for _ in range(n):
            block = _Cheap()
            if gated:
                block = GatedResidualBlock(block, gate=gate, block_flops=1, return_state=True)
            stage.append(block)
        blocks.append(stage)
    inputs = [tf.Variable(tf.random.normal([BATCH, hw, hw, c])) for hw, c, _ in STAGES]
    decisions = tf.ones([BATCH])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = 0.0
            state = None
            for x, stage in zip(inputs, blocks):
                h = tf.identity(x)
                for block in stage:
                    if gated:
                        h, *state = block(h, training=True, decisions=decisions, state=state)
                    else:
                        h = block(h, training=True)
                loss += tf.reduce_sum(h)
        grads = tape.gradient(loss, tape.watched_variables())
        return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

    step()
    return lambda: step().numpy()


def _pass_fns(hw, c):
    rng = np.random.default_rng(0)
    x = tf.random.normal([BATCH, hw, hw, c])
    g = tf.random.normal([BATCH, hw, hw, c])
    n_open = int(round(0.8 * BATCH))
    idx = tf.constant(np.sort(rng.choice(BATCH, n_open, replace=False)), tf.int64)
    x_open, y_open, g_open = tf.gather(x, idx), tf.gather(g, idx) * 0.5, tf.gather(g, idx)
    pooled_grad = tf.random.normal([BATCH, c])

    # Each function returns one element so that the timed work is the pass itself.
    fns = {
        "mean (gate input)": tf.function(lambda: tf.reduce_mean(x, axis=[1, 2])[0, 0]),
        "gather open rows": tf.function(lambda: tf.gather(x, idx)[0, 0, 0, 0]),
        "scatter block output": tf.function(
            lambda: tf.tensor_scatter_nd_update(x, idx[:, None], y_open)[0, 0, 0, 0]),
        "gather output gradient": tf.function(lambda: tf.gather(g, idx)[0, 0, 0, 0]),
        "gate gradient <g, F(x) - x>": tf.function(
            lambda: tf.reduce_sum(g_open * (y_open - x_open), axis=[1, 2, 3])[0]),
        "scatter input gradient": tf.function(
            lambda: tf.tensor_scatter_nd_update(g, idx[:, None], x_open)[0, 0, 0, 0]),
        "pooled-gradient add": tf.function(
            lambda: (g + pooled_grad[:, None, None, :])[0, 0, 0, 0]),
    }
    return {key: (lambda f=f: f().numpy()) for key, f in fns.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="e2_train_slu_overhead.json")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    result = {"machine": machine_info(), "batch": BATCH, "stages": STAGES}

    chains = {"plain": _chain_step(False), "gather": _chain_step(True)}
    median = interleaved_medians(chains, args.repeats, warmup=3)
    result["chain_step_s"] = median
    print("34 cheap blocks, one training step, all gates open (median of {}):".format(args.repeats))
    for key, value in median.items():
        print("  {:28s} {:7.1f} ms   fixed cost {:+6.1f} ms".format(
            key, 1e3 * value, 1e3 * (value - median["plain"])))

    totals, per_stage = {}, {}
    for hw, c, n in STAGES:
        passes = interleaved_medians(_pass_fns(hw, c), args.repeats * 3, warmup=3)
        per_stage["{}x{}x{}".format(hw, hw, c)] = passes
        for key, value in passes.items():
            totals[key] = totals.get(key, 0.0) + n * value
    result["pass_s"] = per_stage
    result["pass_total_s"] = totals
    print("Memory passes per block (ms at 32x32x16 / 16x16x32 / 8x8x64), and x blocks per step:")
    for key in totals:
        cells = " / ".join("{:.2f}".format(1e3 * per_stage[s][key]) for s in per_stage)
        print("  {:30s} {:24s} {:6.1f} ms".format(key, cells, 1e3 * totals[key]))
    print("  {:30s} {:24s} {:6.1f} ms".format("sum", "", 1e3 * sum(totals.values())))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print("took {:.0f} s".format(time.perf_counter() - start))
