"""E²-Train on the built-in digits: SMB vs SMD vs SD vs SLU vs SLU+SMD vs SMD+SLU+PSG.

Analogs of the paper's Tables 3-4 and Fig. 5 on `load_digits32` (1437 / 360
32×32 images; option `dataset` = "cifar10" | "cifar100" uses `load_images`, which
downloads them) with a small CIFAR ResNet:

* SMB: standard mini-batch training (the reference; computational and energy
  savings are measured against it, stepping on every batch in float32);
* SMD: stochastic mini-batch dropping (rate 0.5) for 4/3 as many epochs, the
  paper's energy ratio 0.67;
* SD: stochastic depth (linear decay to p_L = 0.5), the random baseline of SLU;
* SLU: selective layer update, SkipNet gates in "gather" mode with the FLOPs
  regulariser of Eq. (1);
* SLU+SMD, and E²-Train = SMD + SLU + PSG (8/16-bit training, 4/10-bit predictors,
  β = 0.05, sign gradients; the stem and the classifier stay float32) with SWA
  over the last quarter of the epochs.

Computational saving = 1 − executed MACs / the SMB run's MACs (`ComputeMeter`,
forward + backward, counted from the layer shapes). Energy figures are ESTIMATES
from the Horowitz (ISSCC 2014, 45 nm) per-operation table, not measurements;
wall time is measured on this machine's CPU, where int8 arithmetic is emulated in
float32, so PSG costs time here. All runs use the same epoch-wise cosine learning
rate (a function of the nominal epoch, so SMD keeps the protocol).

Options: `keras-efficient reproduce e2-train --help`.
"""

import math
import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import ComputeMeter, StochasticWeightAveraging
from keras_efficient.data import (
    DATASETS,
    DropCounter,
    drop_minibatches,
    load_images,
    smd_steps_per_epoch,
)
from keras_efficient.experiments.context import (
    Option,
    choice,
    integer,
    number,
    resnet_depth,
    subset,
)
from keras_efficient.models import cifar_resnet, gated_resnet, stochastic_depth_resnet
from keras_efficient.training import convert_to_psg

DESCRIPTION = ("E2-Train on the built-in digits: SMB, SMD, SD, SLU, SLU+SMD and SMD+SLU+PSG "
               "(accuracy, compute saving, energy estimate, wall time).")

VARIANTS = ("SMB", "SMD", "SD", "SLU", "SLU+SMD", "E2-Train")

OPTIONS = {
    "dataset": Option(choice(*DATASETS), default="digits",
                      help="image data set; cifar10/cifar100 are downloaded on first use"),
    "variants": Option(subset(*VARIANTS), default=VARIANTS,
                       help="variants to run; SMB, the reference, is always added"),
    "depth": Option(resnet_depth(), default=20, quick=14, help="depth of the CIFAR ResNets"),
    "base_filters": Option(integer(low=1), default=16, quick=8,
                           help="filters of the first stage (doubled at each later stage)"),
    "epochs": Option(integer(low=1), default=30, quick=6,
                     help="epochs of the SMB run (the SMD variants run 4/3 as many)"),
    "batch_size": Option(integer(low=1), default=64, help="training batch size"),
    "lr": Option(number(low=0.0, low_inclusive=False), default=0.05,
                 help="peak learning rate (cosine decay over the epochs)"),
    "psg_lr": Option(number(low=0.0, low_inclusive=False), default=0.003,
                     help="peak learning rate of the E2-Train (PSG) variant"),
    "drop_rate": Option(number(low=0.0, high=1.0, high_inclusive=False), default=0.5,
                        help="SMD: share of the mini-batches dropped"),
    "flops_weight": Option(number(low=0.0), default=0.4,
                           help="SLU: weight of the FLOPs regulariser (alpha of Eq. 1)"),
    "final_survival": Option(number(low=0.0, high=1.0, low_inclusive=False), default=0.5,
                             help="SD: survival probability of the last block (p_L)"),
    "beta": Option(number(low=0.0, high=1.0), default=0.05,
                   help="PSG: threshold of the predicted gradient (beta)"),
    "train_size": Option(integer(low=1), default=None,
                         help="train on the first N training images only (unset: all)"),
    "test_size": Option(integer(low=1), default=None,
                        help="evaluate on the first N test images only (unset: all)"),
}

_SETTINGS = ("depth", "base_filters", "epochs", "batch_size", "lr", "psg_lr", "drop_rate",
             "flops_weight", "final_survival", "beta", "dataset", "train_size", "test_size")


def _variants(ctx):
    names = list(ctx.option("variants"))
    if "SMB" not in names:
        names.insert(0, "SMB")
    return tuple(names)


def _settings(ctx):
    settings = {key: ctx.option(key) for key in _SETTINGS}
    settings["num_classes"] = 10
    return settings


def _cosine(base, epochs):
    return lambda epoch, lr: base * 0.5 * (1.0 + math.cos(math.pi * epoch / float(epochs)))


def _build(variant, s):
    common = dict(depth=s["depth"], num_classes=s.get("num_classes", 10), input_shape=(32, 32, 3),
                  base_filters=s["base_filters"])
    if variant in ("SMB", "SMD"):
        return cifar_resnet(weight_decay=1e-4, **common)
    if variant == "SD":
        return stochastic_depth_resnet(final_survival=s["final_survival"], weight_decay=1e-4,
                                       **common)
    model = gated_resnet(mode="gather", flops_weight=s["flops_weight"], weight_decay=1e-4,
                         **common)
    if variant == "E2-Train":
        model = convert_to_psg(model, beta=s["beta"],
                               include=lambda layer: layer.name not in ("stem_conv", "logits"))
    return model


def run_variant(variant, data, s, seed, progress=None):
    """Trains one variant; returns its metrics (accuracy, compute, energy, time, curves)."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    smd = variant in ("SMD", "SLU+SMD", "E2-Train")
    psg = variant == "E2-Train"
    epochs = int(round(s["epochs"] * 4.0 / 3.0)) if smd else s["epochs"]
    model = _build(variant, s)
    lr = s["psg_lr"] if psg else s["lr"]
    model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
             .batch(s["batch_size"]))
    counter = None
    steps_per_epoch = None
    if smd:
        counter = DropCounter()
        # Keras fixes every epoch's length to the first one's on inputs of unknown
        # cardinality: repeat the dropped stream and give the expected steps.
        train = drop_minibatches(train, s["drop_rate"], seed=seed, counter=counter).repeat()
        steps_per_epoch = smd_steps_per_epoch(int(math.ceil(len(x_train) / s["batch_size"])),
                                              s["drop_rate"])
    meter = ComputeMeter(s["batch_size"], drop_counter=counter)
    callbacks = [keras.callbacks.LearningRateScheduler(_cosine(lr, epochs)), meter]
    if psg:
        bn_data = tf.data.Dataset.from_tensor_slices(x_train).batch(s["batch_size"])
        callbacks.append(StochasticWeightAveraging(start_epoch=int(0.75 * epochs), data=bn_data))
    if progress is not None:
        callbacks.append(progress)
    start = time.time()
    history = model.fit(train.prefetch(2), epochs=epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=(x_test, y_test), verbose=0, callbacks=callbacks)
    wall = time.time() - start
    accuracy = model.evaluate(x_test, y_test, verbose=0, batch_size=256,
                              return_dict=True)["accuracy"]
    res = meter.result()
    return {
        "variant": variant, "epochs": epochs, "test_accuracy": float(accuracy),
        "wall_time_s": wall, "steps": res["steps"], "nominal_steps": res["nominal_steps"],
        "executed_macs": res["executed_macs"], "skip_ratio": res["skip_ratio"],
        "energy_j": res["energy_pj"] * 1e-12, "macs_by_precision": res["macs_by_precision"],
        "curve_macs": [h["executed_macs"] for h in meter.history],
        "curve_energy_j": [h["energy_pj"] * 1e-12 for h in meter.history],
        "curve_accuracy": [float(a) for a in history.history["val_accuracy"]],
    }


def run(ctx):
    s = _settings(ctx)
    (x_train, y_train), (x_test, y_test) = load_images(s["dataset"])
    s["num_classes"] = int(max(y_train.max(), y_test.max())) + 1
    train_size, test_size = s["train_size"], s["test_size"]
    data = ((x_train[:train_size], y_train[:train_size]), (x_test[:test_size], y_test[:test_size]))
    ctx.log("settings {}".format(s))
    results = {}
    variants = _variants(ctx)
    for i, variant in enumerate(variants):
        results[variant] = run_variant(variant, data, s, ctx.seed + i,
                                       progress=ctx.progress(variant))
        r = results[variant]
        ctx.log("{}: accuracy {:.4f}, {:.3g} MACs, {:.1f}s".format(
            variant, r["test_accuracy"], r["executed_macs"], r["wall_time_s"]))
    ref = results["SMB"]
    rows = []
    for variant in variants:
        r = results[variant]
        r["compute_saving"] = 1.0 - r["executed_macs"] / ref["executed_macs"]
        r["energy_saving_estimate"] = 1.0 - r["energy_j"] / ref["energy_j"]
        rows.append([variant, r["epochs"], "{}/{}".format(r["steps"], r["nominal_steps"]),
                     r["test_accuracy"], r["compute_saving"], r["skip_ratio"],
                     r["energy_j"], r["energy_saving_estimate"], r["wall_time_s"]])
    ctx.report.add_text(__doc__)
    ctx.report.add_text("Settings: {}".format(
        ", ".join("{}={}".format(k, v) for k, v in s.items())))
    ctx.report.add_table(
        "Accuracy and savings against SMB (energy: estimate, Horowitz 45 nm)",
        ["variant", "epochs", "steps run/nominal", "test accuracy", "computational saving",
         "gated-block skip ratio", "energy estimate (J)", "energy saving (estimate)",
         "wall time (s)"], rows)
    ctx.report.add_metrics({"settings": s, "results": results})

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for variant in variants:
        r = results[variant]
        ax1.plot(np.asarray(r["curve_macs"]) / ref["executed_macs"], r["curve_accuracy"],
                 marker="o", markersize=3, label=variant)
        ax2.plot(np.asarray(r["curve_energy_j"]) / ref["energy_j"], r["curve_accuracy"],
                 marker="o", markersize=3, label=variant)
    ax1.set_xlabel("cumulative training MACs (fraction of the SMB run)")
    ax2.set_xlabel("cumulative training energy, estimate (fraction of the SMB run)")
    ax1.set_ylabel("test accuracy")
    ax1.legend()
    fig.suptitle("Accuracy vs cumulative compute and estimated energy (Fig. 5 analog)")
    ctx.report.add_figure("accuracy_vs_compute", fig,
                          "Test accuracy vs cumulative compute and estimated energy")
