"""Training-step time of SLU gated blocks: "gather" vs "mask" vs ungated, at skip ratios 20/40/60%.

A stack of identity ResidualBlocks (16 channels, 32×32) trained with SGD; the gated
variants wrap every block in a `GatedResidualBlock` whose decisions are drawn at
random per sample with the given skip ratio (the `decisions` call argument; the
gate itself still runs). Train-step times are measured alternately over the
variants (so that load from other processes affects all alike) after warm-up.
Reports time(variant) / time(ungated) and, for "gather", the saved fraction of
the blocks' time against the target 0.8 × skip ratio. Writes a JSON.

Usage: python benchmarks/e2_train_slu.py [--out FILE] [--repeats N] [--warmup N]
"""

import argparse
import json
import platform

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock

from _timing import interleaved_medians  # beside this script

BLOCKS = 6
CHANNELS = 16
BATCH = 64


class _Net(keras.Model):
    def __init__(self, mode, skip):
        super().__init__()
        self.mode, self.skip = mode, skip
        self.stem = keras.layers.Conv2D(CHANNELS, 3, padding="same")
        blocks = [ResidualBlock(CHANNELS) for _ in range(BLOCKS)]
        if mode != "ungated":
            blocks = [GatedResidualBlock(b, gate=RecurrentGate() if i == 0 else None, mode=mode)
                      for i, b in enumerate(blocks)]
        self.blocks = blocks
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(10)

    def call(self, x, training=None):
        x = self.stem(x)
        for block in self.blocks:
            if self.mode == "ungated":
                x = block(x, training=training)
            else:
                open_ = tf.cast(tf.random.uniform([tf.shape(x)[0]]) >= self.skip, tf.float32)
                x = block(x, training=training, decisions=open_)
        return self.head(self.pool(x))


def _step_fn(model):
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_function = model.make_train_function()
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="e2_train_slu.json")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=20,
                        help="steps before timing; gather mode meets a new batch size on most "
                             "early steps, and oneDNN builds its kernels per shape once")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(BATCH, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=BATCH)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    results = {"machine": platform.processor() or platform.machine(), "blocks": BLOCKS,
               "channels": CHANNELS, "batch": BATCH, "skip": {}}
    for skip in (0.2, 0.4, 0.6):
        models = {mode: _step_fn(_Net(mode, skip)) for mode in ("ungated", "gather", "mask")}
        iterators = {mode: iter(data) for mode in models}
        median = interleaved_medians(
            {mode: (lambda m=m, it=iterators[mode]: m.train_function(it))
             for mode, m in models.items()},
            args.repeats, warmup=args.warmup)
        row = {"median_step_s": median,
               "ratio_gather": median["gather"] / median["ungated"],
               "ratio_mask": median["mask"] / median["ungated"],
               "saved_gather": 1.0 - median["gather"] / median["ungated"],
               "target_saved": 0.8 * skip}
        results["skip"][str(skip)] = row
        print("skip {:.0%}: ungated {:.1f} ms, gather {:.1f} ms ({:.2f}x), mask {:.1f} ms "
              "({:.2f}x); gather saves {:.0%} (target >= {:.0%})".format(
                  skip, 1e3 * median["ungated"], 1e3 * median["gather"], row["ratio_gather"],
                  1e3 * median["mask"], row["ratio_mask"], row["saved_gather"],
                  row["target_saved"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
