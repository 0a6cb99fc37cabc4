"""PSG training-step time vs plain SGD, beside the energy ESTIMATE of the same steps.

A CIFAR ResNet-14 (16 base filters, 32×32×3, batch 64): the float32 model with
SGD, and the same model converted with `convert_to_psg` (8-bit activations and
weights, 16-bit gradients, 4/10-bit predictors, β = 0.05; stem and classifier
float32). Step times are measured alternately after warm-up. In software on a
CPU the quantisers and the second (predictor) weight gradient cost time: PSG is
slower here. Its saving is in arithmetic precision, shown by the `ComputeMeter`
energy estimate (Horowitz 45 nm table) for one step of each. Writes a JSON.

Usage: python benchmarks/e2_train_psg.py [--out FILE] [--repeats N]
"""

import argparse
import json

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import ComputeMeter
from keras_efficient.models import cifar_resnet
from keras_efficient.training import convert_to_psg

from _timing import interleaved_medians, machine_info  # beside this script

BATCH = 64


def _compile(model):
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_function = model.make_train_function()
    return model


def _energy_of_one_step(model, x, y):
    meter = ComputeMeter(batch_size=BATCH)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[meter])
    return meter.result()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="e2_train_psg.json")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(BATCH, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=BATCH)
    base = cifar_resnet(depth=14, base_filters=16)
    models = {
        "sgd_float32": _compile(base),
        "psg": _compile(convert_to_psg(base, include=lambda l: l.name not in ("stem_conv",
                                                                               "logits"))),
    }
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    iterators = {k: iter(data) for k in models}
    median = interleaved_medians(
        {k: (lambda m=m, it=iterators[k]: m.train_function(it)) for k, m in models.items()},
        args.repeats, warmup=3)
    energy = {k: _energy_of_one_step(m, x, y) for k, m in models.items()}
    results = {
        "machine": machine_info(), "batch": BATCH,
        "median_step_s": median, "time_ratio_psg_over_sgd": median["psg"] / median["sgd_float32"],
        "energy_estimate_pj_per_step": {k: e["energy_pj"] for k, e in energy.items()},
        "energy_saving_estimate":
            1.0 - energy["psg"]["energy_pj"] / energy["sgd_float32"]["energy_pj"],
        "macs_by_precision_psg": energy["psg"]["macs_by_precision"],
    }
    print("step time: SGD float32 {:.1f} ms, PSG {:.1f} ms ({:.2f}x slower in software)".format(
        1e3 * median["sgd_float32"], 1e3 * median["psg"], results["time_ratio_psg_over_sgd"]))
    print("energy estimate per step (Horowitz 45 nm): SGD {:.3g} uJ, PSG {:.3g} uJ "
          "({:.0%} saving, an estimate)".format(
              energy["sgd_float32"]["energy_pj"] * 1e-6, energy["psg"]["energy_pj"] * 1e-6,
              results["energy_saving_estimate"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
