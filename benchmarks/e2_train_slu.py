"""Training-step time of SLU gated blocks: "gather" vs "mask" vs ungated, at skip ratios 20/40/60%.

A stack of identity ResidualBlocks (16 channels, 32×32) trained with SGD; the gated
variants wrap every block in a `GatedResidualBlock` whose decisions are drawn at
random per sample with the given skip ratio (the `decisions` call argument; the
gate itself still runs). All variants of one batch size are timed alternately
(so that load from other processes affects all alike) after warm-up:

  ungated          the plain stack
  identity         the same network with the blocks replaced by the identity
                   (stem, pooling, classifier, loss and optimizer only)
  gather_open      "gather" with every gate open (the gate's fixed cost, nothing skipped)
  gather_<s>       "gather" at skip ratio s
  mask_<s>         "mask" at skip ratio s

Reported, for each batch size and skip ratio s:
  (a) step ratio  t(gather_s) / t(ungated)  (and the same for mask);
  (b) saving of the gated blocks' time: (t(ungated) − t(gather_s)) / T_blocks with
      T_blocks = t(ungated) − t(identity), against the target 0.8·s;
  (c) skip saving: (t(gather_open) − t(gather_s)) / T_blocks, the time saved by
      skipping alone, without the gate's fixed cost (gate_cost =
      (t(gather_open) − t(ungated)) / T_blocks), against the same target.
Writes a JSON with the medians, the ratios and the load average before and after.

Usage: python benchmarks/e2_train_slu.py [--batches 64,128] [--out FILE] [--repeats N]
                                          [--warmup N]
"""

import argparse
import json
import os

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GatedResidualBlock, RecurrentGate, ResidualBlock

from _timing import interleaved_medians, machine_info  # beside this script

BLOCKS = 6
CHANNELS = 16
SKIPS = (0.2, 0.4, 0.6)


class _Net(keras.Model):
    """`network="stack"`: BLOCKS identity blocks of CHANNELS channels at 32×32.
    `network="resnet"`: the CIFAR ResNet-(6n+2) of the paper (stages of 16, 32 and 64
    channels at 32×32, 16×16 and 8×8); the first block of stages 2 and 3 changes shape
    and always runs (as in `models.gated_resnet`); every other block is gated."""

    def __init__(self, mode, skip=0.0, network="stack", depth=20):
        super().__init__()
        self.mode, self.skip = mode, skip
        if network == "stack":
            self.stem = keras.layers.Conv2D(CHANNELS, 3, padding="same")
            layout = [(CHANNELS, 1)] * BLOCKS
        else:
            self.stem = keras.layers.Conv2D(16, 3, padding="same")
            n = (depth - 2) // 6
            layout = [(16 * 2 ** s, 2 if s and not i else 1) for s in range(3) for i in range(n)]
        self.blocks = []
        previous = layout[0][0]
        gate = RecurrentGate()  # one gate shared by every gated block; the state is explicit
        for filters, strides in layout:
            block = ResidualBlock(filters, strides=strides)
            fixed, previous = strides != 1 or filters != previous, filters
            if fixed or mode == "ungated":
                self.blocks.append((block, False))
            elif mode in ("gather", "mask"):
                self.blocks.append((GatedResidualBlock(block, gate=gate, mode=mode,
                                                       return_state=True), True))
            # mode == "identity": a gateable block is left out.
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(10)

    def call(self, x, training=None):
        x = self.stem(x)
        state = None
        for block, gated in self.blocks:
            if not gated:
                x = block(x, training=training)
            else:
                # uniform in [0, 1) >= 0 is always true: skip 0 keeps every gate open.
                open_ = tf.cast(tf.random.uniform([tf.shape(x)[0]]) >= self.skip, tf.float32)
                x, *state = block(x, training=training, decisions=open_, state=state)
        return self.head(self.pool(x))


def _step_fn(model):
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_function = model.make_train_function()
    return model


def _onednn_enabled():
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def _variants():
    variants = {"ungated": ("ungated", 0.0), "identity": ("identity", 0.0),
                "gather_open": ("gather", 0.0)}
    for skip in SKIPS:
        variants["gather_{}".format(skip)] = ("gather", skip)
        variants["mask_{}".format(skip)] = ("mask", skip)
    return variants


def measure(batch, repeats, warmup, network="stack", depth=20):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    models = {key: _step_fn(_Net(*spec, network=network, depth=depth))
              for key, spec in _variants().items()}
    iterators = {key: iter(data) for key in models}
    load_before = os.getloadavg()
    median = interleaved_medians(
        {key: (lambda m=m, it=iterators[key]: m.train_function(it)) for key, m in models.items()},
        repeats, warmup=warmup)
    load_after = os.getloadavg()
    blocks = median["ungated"] - median["identity"]
    result = {"median_step_s": median, "blocks_time_s": blocks,
              "gate_cost": (median["gather_open"] - median["ungated"]) / blocks,
              "load_average_before": load_before, "load_average_after": load_after, "skip": {}}
    print("batch {}: ungated {:.1f} ms, identity {:.1f} ms, gated blocks' time {:.1f} ms; "
          "gather with all gates open {:.1f} ms (gate cost {:+.0%} of the blocks' time); "
          "load average {:.1f} -> {:.1f}".format(
              batch, 1e3 * median["ungated"], 1e3 * median["identity"], 1e3 * blocks,
              1e3 * median["gather_open"], result["gate_cost"], load_before[0], load_after[0]))
    for skip in SKIPS:
        gather, mask = median["gather_{}".format(skip)], median["mask_{}".format(skip)]
        row = {"ratio_gather": gather / median["ungated"],
               "ratio_mask": mask / median["ungated"],
               "saved_step": 1.0 - gather / median["ungated"],
               "saved_blocks": (median["ungated"] - gather) / blocks,
               "saved_vs_open": (median["gather_open"] - gather) / blocks,
               "target_saved": 0.8 * skip}
        result["skip"][str(skip)] = row
        print("  skip {:.0%}: gather {:.1f} ms ({:.2f}x ungated), mask {:.1f} ms ({:.2f}x); "
              "blocks' time saved {:.0%}, vs gates open {:.0%} (target >= {:.0%})".format(
                  skip, 1e3 * gather, row["ratio_gather"], 1e3 * mask, row["ratio_mask"],
                  row["saved_blocks"], row["saved_vs_open"], row["target_saved"]))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="64,128",
                        help="comma-separated batch sizes (the paper trains with 128)")
    parser.add_argument("--out", default="e2_train_slu.json")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--network", choices=("stack", "resnet"), default="stack",
                        help="stack: six 16-channel blocks at 32x32 (the gate's worst case); "
                             "resnet: the full CIFAR ResNet-(6n+2)")
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (--network resnet)")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    results = {"machine": machine_info(), "onednn": _onednn_enabled(), "network": args.network,
               "depth": args.depth if args.network == "resnet" else None,
               "blocks": BLOCKS, "channels": CHANNELS,
               "repeats": args.repeats, "warmup": args.warmup, "batch": {}}
    for batch in (int(b) for b in args.batches.split(",")):
        results["batch"][str(batch)] = measure(batch, args.repeats, args.warmup,
                                                 args.network, args.depth)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
