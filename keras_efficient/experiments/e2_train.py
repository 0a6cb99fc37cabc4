"""E²-Train: SMB vs SMD vs SD vs SLU vs SLU+SMD vs SMD+SLU+PSG, over several seeds.

Analogs of the paper's Tables 3-4 and Fig. 5 with a small CIFAR ResNet on a built-in
32×32 image set: Shapes32 (first 20,000 / 2,000 images) in the full run, the digits
under `--quick` (option `dataset`; "cifar10" / "cifar100" are downloaded on first use):

* SMB: standard mini-batch training (the reference; computational and energy
  savings are measured against the SMB run of the same seed, stepping on every
  batch in float32);
* SMD: stochastic mini-batch dropping (rate 0.5) for 4/3 as many epochs, the
  paper's energy ratio 0.67;
* SD: stochastic depth (linear decay); by default p_L is chosen so that the
  expected skipped share of the gateable blocks equals SLU's `target_skip`, as the
  paper matches SD's dropping ratio to SLU's;
* SLU: SkipNet gates in "gather" mode (a skipped block is not computed, forward
  or backward) with the FLOPs regulariser of Eq. (1), the gates held open for
  the first `open_epochs` (SkipNet's recipe) and a skip budget that steers the
  skipped share of the gated blocks' FLOPs towards `target_skip`;
* SLU+SMD, and E²-Train = SMD + SLU (budget `e2_target_skip`) + PSG (8/16-bit
  training, 4/10-bit predictors, β = 0.05, sign gradients; the stem and the
  classifier stay float32) with SWA over the last quarter of the epochs.

Every variant runs for `seeds` seeds; tables give mean ± sample std over seeds.
Computational saving = 1 − counted MACs (`ComputeMeter`, forward + backward; PSG's
predictor and full gradients count too) / the same seed's SMB MACs. Energy: an
ESTIMATE (Horowitz, ISSCC 2014, 45 nm table). Training time: measured on this CPU
(training phase of each epoch), where PSG's int8 arithmetic is emulated in float32.
The cosine learning rate is a function of the nominal epoch (SMD keeps the protocol).

Options: `keras-efficient reproduce e2-train --help`.
"""

import json
import math
import os
import resource
import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import ComputeMeter, GateCalibration, StochasticWeightAveraging
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
from keras_efficient.layers import GatedResidualBlock
from keras_efficient.models import cifar_resnet, gated_resnet, stochastic_depth_resnet
from keras_efficient.training import convert_to_psg, skip_budget

DESCRIPTION = ("E2-Train: SMB, SMD, SD, SLU, SLU+SMD and SMD+SLU+PSG over 3 seeds (accuracy, "
               "counted compute saving, energy estimate, measured training time, gate rates).")

VARIANTS = ("SMB", "SMD", "SD", "SLU", "SLU+SMD", "E2-Train")
SMD_VARIANTS = ("SMD", "SLU+SMD", "E2-Train")
GATED_VARIANTS = ("SLU", "SLU+SMD", "E2-Train")

OPTIONS = {
    "dataset": Option(choice(*DATASETS), default="shapes", quick="digits",
                      help="image data set (shapes, digits: built in; cifar10/cifar100 are "
                           "downloaded on first use); --quick uses the digits, as ResNets "
                           "stay near chance on shapes for their first ~500 steps"),
    "variants": Option(subset(*VARIANTS), default=VARIANTS,
                       help="variants to run; SMB, the reference, is always added"),
    "seeds": Option(integer(low=1), default=3,
                    help="number of seeds (seed, seed+1, ...); tables show mean ± std"),
    "depth": Option(resnet_depth(), default=20, quick=14, help="depth of the CIFAR ResNets"),
    "base_filters": Option(integer(low=1), default=8,
                           help="filters of the first stage (doubled at each later stage)"),
    "epochs": Option(integer(low=1), default=7, quick=5,
                     help="epochs of the SMB run (the SMD variants run 4/3 as many)"),
    "batch_size": Option(integer(low=1), default=64, help="training batch size"),
    "lr": Option(number(low=0.0, low_inclusive=False), default=0.1, quick=0.05,
                 help="peak learning rate (cosine decay over the epochs)"),
    "psg_lr": Option(number(low=0.0, low_inclusive=False), default=0.003,
                     help="peak learning rate of the E2-Train (PSG) variant"),
    "drop_rate": Option(number(low=0.0, high=1.0, high_inclusive=False), default=0.5,
                        help="SMD: share of the mini-batches dropped"),
    "flops_weight": Option(number(low=0.0), default=0.4,
                           help="SLU: weight of the FLOPs regulariser (alpha of Eq. 1)"),
    "target_skip": Option(number(low=0.0, high=1.0, high_inclusive=False), default=0.5,
                          quick=0.45,
                          help="SLU, SLU+SMD: skipped share of the gated blocks' FLOPs aimed "
                               "at by the skip budget after the open epochs (0: no budget)"),
    "e2_target_skip": Option(number(low=0.0, high=1.0, high_inclusive=False), default=0.7,
                             quick=0.65,
                             help="E2-Train: target skipped share of the gated blocks' FLOPs"),
    "open_epochs": Option(integer(low=0), default=1,
                          help="gated variants: epochs with every gate held open (SkipNet)"),
    "decision": Option(choice("threshold", "rank"), default="threshold",
                       help="gated variants: gate decisions in training, 'threshold' (the "
                            "skip budget's common threshold) or 'rank' (per-sample routing at "
                            "the budget's per-block capacities, thresholds calibrated for "
                            "inference by GateCalibration)"),
    "budget_rate": Option(number(low=0.0, low_inclusive=False), default=0.02,
                          help="dual step size of the skip budget's multiplier (E2-Train: "
                               "times lr/psg_lr, as its gates learn at psg_lr)"),
    "final_survival": Option(number(low=0.0, high=1.0, low_inclusive=False), default=None,
                             help="SD: survival probability of the last block p_L (unset: "
                                  "matched to target_skip)"),
    "beta": Option(number(low=0.0, high=1.0), default=0.05,
                   help="PSG: threshold of the predicted gradient (beta)"),
    "train_size": Option(integer(low=1), default=20000, quick=None,
                         help="train on the first N training images only (unset: all)"),
    "test_size": Option(integer(low=1), default=2000, quick=None,
                        help="evaluate on the first N test images only (unset: all)"),
}

_SETTINGS = tuple(key for key in OPTIONS if key != "variants")

#: Targets: (variant, key, condition, threshold). Savings must reach the threshold; the
#: accuracy of the variant must stay within `threshold` (a fraction) of SMB's.
TARGETS = (
    ("SLU", "skip_ratio", "block-FLOP saving >= 40%", 0.40),
    ("SLU", "accuracy_gap", "accuracy within 1 pt of SMB", 0.01),
    ("E2-Train", "compute_saving", "computational saving >= 60%", 0.60),
    ("E2-Train", "energy_saving_estimate", "energy saving (estimate) >= 80%", 0.80),
    ("E2-Train", "accuracy_gap", "accuracy within 2 pts of SMB", 0.02),
)

#: Metrics averaged over seeds (per-seed savings are against the same seed's SMB run).
METRICS = ("test_accuracy", "compute_saving", "energy_saving_estimate", "skip_ratio",
           "train_time_s", "time_saving", "steady_time_saving", "wall_time_s", "cpu_time_s")


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


def matched_final_survival(depth, target_skip):
    """p_L of the linear decay rule whose expected skip over the gateable blocks is `target_skip`.

    Block l of L (1-based, every block) survives with p_l = 1 − (l/L)(1 − p_L); the
    shape-changing first blocks of stages 2 and 3 always run. All blocks of a CIFAR
    ResNet have about the same MACs, so the skipped share of the gateable blocks'
    MACs is (1 − p_L)·mean(l/L) over those blocks. Clipped to [0.01, 1].
    """
    per_stage = (depth - 2) // 6
    total = 3 * per_stage
    ranks = [l for l in range(1, total + 1) if l - 1 not in (per_stage, 2 * per_stage)]
    mean_rank = sum(ranks) / float(len(ranks) * total)
    return float(min(1.0, max(0.01, 1.0 - target_skip / mean_rank)))


def _skip_target(variant, s):
    if variant not in GATED_VARIANTS:
        return 0.0
    return s["e2_target_skip"] if variant == "E2-Train" else s["target_skip"]


def build_model(variant, s, open_steps=0):
    """The model of `variant` under settings `s` (gated ones: gates open for `open_steps`)."""
    common = dict(depth=s["depth"], num_classes=s.get("num_classes", 10), input_shape=(32, 32, 3),
                  base_filters=s["base_filters"], weight_decay=1e-4)
    if variant in ("SMB", "SMD"):
        return cifar_resnet(**common)
    if variant == "SD":
        survival = s.get("final_survival")
        if survival is None:
            survival = matched_final_survival(s["depth"], s["target_skip"])
        return stochastic_depth_resnet(final_survival=survival, **common)
    model = gated_resnet(mode="gather", flops_weight=s["flops_weight"], open_steps=open_steps,
                         decision=s.get("decision", "threshold"), **common)
    if variant == "E2-Train":
        model = convert_to_psg(model, beta=s["beta"],
                               include=lambda layer: layer.name not in ("stem_conv", "logits"))
    return model


def _attach_skip_budget(model, variant, s):
    """Attaches a `skip_budget` steering the gated blocks' skipped FLOPs share to the target.

    E2-Train's gates learn at `psg_lr`; its dual step is scaled by lr / psg_lr so
    that the multiplier moves its gates about as fast as in SLU. Returns the
    budget, or None (no gated blocks, or a target of 0: α alone).
    """
    target = _skip_target(variant, s)
    if target <= 0.0:
        return None
    rate = s.get("budget_rate", 0.02)
    if variant == "E2-Train":
        rate *= s["lr"] / s["psg_lr"]
    return skip_budget(model, target, multiplier_rate=rate)


class _TrainTimer(keras.callbacks.Callback):
    """Wall time of each epoch's training phase (epoch begin to validation begin)."""

    def __init__(self):
        super().__init__()
        self.epoch_times, self._start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self, *args, **kwargs):
        if self._start is not None:
            self.epoch_times.append(time.perf_counter() - self._start)
            self._start = None

    on_test_begin = on_epoch_end = _stop  # validation begins, or an epoch without it ends


def _cpu_time():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _gate_rates(model, history):
    """{block: (mean open rate over the epochs, last epoch's)} from the `_gate_rate` logs."""
    rates = {}
    for layer in model.layers:
        if isinstance(layer, GatedResidualBlock):
            values = history.get(layer.name + "_gate_rate")
            if values:
                rates[layer.name] = (float(np.mean(values)), float(values[-1]))
    return rates


def run_variant(variant, data, s, seed, progress=None):
    """Trains one variant with one seed; returns its metrics (accuracy, compute, energy, time)."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    smd = variant in SMD_VARIANTS
    psg = variant == "E2-Train"
    epochs = int(round(s["epochs"] * 4.0 / 3.0)) if smd else s["epochs"]
    batches = int(math.ceil(len(x_train) / s["batch_size"]))
    steps_per_epoch = smd_steps_per_epoch(batches, s["drop_rate"]) if smd else None
    open_steps = s.get("open_epochs", 0) * (steps_per_epoch or batches)
    model = build_model(variant, s, open_steps=open_steps if variant in GATED_VARIANTS else 0)
    budget = _attach_skip_budget(model, variant, s)
    lr = s["psg_lr"] if psg else s["lr"]
    model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
             .batch(s["batch_size"]))
    counter = None
    if smd:
        counter = DropCounter()
        # Keras fixes every epoch's length to the first one's on inputs of unknown
        # cardinality: repeat the dropped stream and give the expected steps.
        train = drop_minibatches(train, s["drop_rate"], seed=seed, counter=counter).repeat()
    meter = ComputeMeter(s["batch_size"], drop_counter=counter)
    timer = _TrainTimer()
    callbacks = [keras.callbacks.LearningRateScheduler(_cosine(lr, epochs)), meter, timer]
    if psg:
        bn_data = tf.data.Dataset.from_tensor_slices(x_train).batch(s["batch_size"])
        callbacks.append(StochasticWeightAveraging(start_epoch=int(0.75 * epochs), data=bn_data))
    if budget is not None and s.get("decision") == "rank":
        # After SWA (its BatchNormalization re-estimate changes the gates' inputs).
        calibration = tf.data.Dataset.from_tensor_slices(x_train[:1024]).batch(s["batch_size"])
        callbacks.append(GateCalibration(calibration))
    if progress is not None:
        callbacks.append(progress)
    start, cpu = time.time(), _cpu_time()
    history = model.fit(train.prefetch(2), epochs=epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=(x_test, y_test), verbose=0, callbacks=callbacks)
    wall, cpu = time.time() - start, _cpu_time() - cpu
    accuracy = model.evaluate(x_test, y_test, verbose=0, batch_size=256,
                              return_dict=True)["accuracy"]
    res = meter.result()
    return {
        "variant": variant, "seed": int(seed), "epochs": epochs,
        "test_accuracy": float(accuracy), "wall_time_s": wall, "cpu_time_s": cpu,
        "train_time_s": float(sum(timer.epoch_times)),
        "epoch_train_times_s": [float(t) for t in timer.epoch_times],
        "steps": res["steps"], "nominal_steps": res["nominal_steps"],
        "executed_macs": res["executed_macs"], "skip_ratio": res["skip_ratio"],
        "energy_j": res["energy_pj"] * 1e-12, "macs_by_precision": res["macs_by_precision"],
        "gate_rates": _gate_rates(model, history.history),
        "curve_macs": [h["executed_macs"] for h in meter.history],
        "curve_energy_j": [h["energy_pj"] * 1e-12 for h in meter.history],
        "curve_accuracy": [float(a) for a in history.history["val_accuracy"]],
    }


def add_savings(results):
    """Adds savings against `results["SMB"]` (one seed's {variant: result}) to every result.

    compute / energy: 1 − MACs (energy) / SMB's; time_saving: 1 − training time / SMB's;
    steady_time_saving: the same without each run's first epoch (graph tracing).
    """
    ref = results["SMB"]
    ref_steady = sum(ref["epoch_train_times_s"][1:])
    for r in results.values():
        r["compute_saving"] = 1.0 - r["executed_macs"] / ref["executed_macs"]
        r["energy_saving_estimate"] = 1.0 - r["energy_j"] / ref["energy_j"]
        r["time_saving"] = 1.0 - r["train_time_s"] / ref["train_time_s"]
        steady = sum(r["epoch_train_times_s"][1:])
        r["steady_time_saving"] = 1.0 - steady / ref_steady if ref_steady > 0 else float("nan")
    return results


def mean_std(values):
    """(mean, sample standard deviation with ddof=1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


def aggregate(runs):
    """Mean and std over seeds. `runs`: one {variant: result} per seed (with savings added).

    Returns {variant: {metric: {"mean", "std", "values"}, "gate_rates": {block: {...}},
    "epochs": int}}; gate rates average each block's mean open rate over training.
    """
    summary = {}
    for variant in runs[0]:
        seeds = [run[variant] for run in runs if variant in run]
        entry = {"epochs": seeds[0]["epochs"], "seeds": [r["seed"] for r in seeds]}
        for key in METRICS:
            values = [r[key] for r in seeds]
            mean, std = mean_std(values)
            entry[key] = {"mean": mean, "std": std, "values": values}
        blocks = {}
        for block in seeds[0]["gate_rates"]:
            overall = [r["gate_rates"][block][0] for r in seeds]
            last = [r["gate_rates"][block][1] for r in seeds]
            blocks[block] = {"mean": mean_std(overall), "last_epoch": mean_std(last)}
        entry["gate_rates"] = blocks
        summary[variant] = entry
    return summary


def check_targets(summary):
    """Rows (variant, condition, measured, met) for the `TARGETS` whose variants ran.

    Savings compare the mean over seeds with the threshold; accuracy gaps compare
    mean(SMB accuracy) − mean(variant accuracy) with the allowed drop.
    """
    rows = []
    ref = summary["SMB"]["test_accuracy"]["mean"]
    for variant, key, condition, threshold in TARGETS:
        if variant not in summary:
            continue
        if key == "accuracy_gap":
            gap = ref - summary[variant]["test_accuracy"]["mean"]
            measured = "{:+.2f} pt vs SMB".format(-100.0 * gap)
            met = gap <= threshold + 1e-12
        else:
            value = summary[variant][key]
            measured = _pct(value)
            met = value["mean"] >= threshold
        rows.append((variant, condition, measured, met))
    return rows


def _pct(entry, digits=1):
    return "{0:.{2}f}% ± {1:.{2}f}".format(100.0 * entry["mean"], 100.0 * entry["std"], digits)


def _secs(entry):
    return "{:.1f} ± {:.1f}".format(entry["mean"], entry["std"])


def _tables(report, summary, targets, n_seeds):
    order = list(summary)
    report.add_table(
        "Mean ± std over {} seed(s); savings against the same seed's SMB run".format(n_seeds),
        ["variant", "epochs", "test accuracy", "computational saving (counted)",
         "gated-block skip ratio", "energy saving (estimate)", "training time (s)",
         "measured time saving"],
        [[v, summary[v]["epochs"], _pct(summary[v]["test_accuracy"], 2),
          _pct(summary[v]["compute_saving"]), _pct(summary[v]["skip_ratio"]),
          _pct(summary[v]["energy_saving_estimate"]), _secs(summary[v]["train_time_s"]),
          _pct(summary[v]["time_saving"])] for v in order])
    report.add_table(
        "Counted compute saving vs measured training-time saving (gather mode really skips)",
        ["variant", "computational saving (counted)", "measured time saving",
         "measured, after the first epoch", "CPU time of the run (s)"],
        [[v, _pct(summary[v]["compute_saving"]), _pct(summary[v]["time_saving"]),
          _pct(summary[v]["steady_time_saving"]), _secs(summary[v]["cpu_time_s"])]
         for v in order])
    report.add_table("Targets (means over seeds)", ["variant", "target", "measured", "met"],
                     [[v, c, m, "met" if ok else "not met"] for v, c, m, ok in targets])
    rows = []
    for v in order:
        for block, rates in summary[v]["gate_rates"].items():
            rows.append([v, block, "{:.3f} ± {:.3f}".format(*rates["mean"]),
                         "{:.3f} ± {:.3f}".format(*rates["last_epoch"])])
    if rows:
        report.add_table("Per-block gate open rates (training; mean ± std over seeds)",
                         ["variant", "block", "open rate, mean over training",
                          "open rate, last epoch"], rows)


def _per_seed_table(report, runs):
    rows = []
    for run in runs:
        for v, r in run.items():
            rows.append([v, r["seed"], r["test_accuracy"], r["compute_saving"], r["skip_ratio"],
                         r["energy_saving_estimate"], r["train_time_s"], r["wall_time_s"]])
    report.add_table("Every run", ["variant", "seed", "test accuracy", "computational saving",
                                   "skip ratio", "energy saving (estimate)", "training time (s)",
                                   "fit wall time incl. validation (s)"], rows)


def _figures(report, runs, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_macs = np.mean([run["SMB"]["executed_macs"] for run in runs])
    ref_energy = np.mean([run["SMB"]["energy_j"] for run in runs])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for variant in summary:
        seeds = [run[variant] for run in runs if variant in run]
        acc = np.mean([r["curve_accuracy"] for r in seeds], axis=0)
        macs = np.mean([r["curve_macs"] for r in seeds], axis=0) / ref_macs
        energy = np.mean([r["curve_energy_j"] for r in seeds], axis=0) / ref_energy
        ax1.plot(macs, acc, marker="o", markersize=3, label=variant)
        ax2.plot(energy, acc, marker="o", markersize=3, label=variant)
    ax1.set_xlabel("cumulative training MACs (fraction of the SMB run)")
    ax2.set_xlabel("cumulative training energy, estimate (fraction of the SMB run)")
    ax1.set_ylabel("test accuracy (mean over seeds)")
    ax1.legend()
    fig.suptitle("Accuracy vs cumulative compute and estimated energy (Fig. 5 analog)")
    report.add_figure("accuracy_vs_compute", fig,
                      "Test accuracy vs cumulative compute and estimated energy")

    gated = [v for v in summary if summary[v]["gate_rates"]]
    if gated:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        width = 0.8 / len(gated)
        for i, variant in enumerate(gated):
            rates = summary[variant]["gate_rates"]
            pos = np.arange(len(rates)) + i * width
            ax.bar(pos, [r["mean"][0] for r in rates.values()], width,
                   yerr=[r["mean"][1] for r in rates.values()], label=variant)
            ax.set_xticks(np.arange(len(rates)) + 0.4 - width / 2)
            ax.set_xticklabels([b.replace("gated_", "") for b in rates], rotation=30)
        ax.set_ylabel("open rate (mean over training)")
        ax.set_ylim(0, 1.05)
        ax.legend()
        report.add_figure("gate_rates", fig, "Per-block gate open rates of the gated variants")


def _save_run(out_dir, result):
    """Appends one finished run to runs.jsonl, so an interrupted run keeps its rows."""
    os.makedirs(out_dir, exist_ok=True)
    keep = {k: v for k, v in result.items() if not k.startswith("curve_")}
    with open(os.path.join(out_dir, "runs.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(keep, sort_keys=True) + "\n")


def run_seeds(ctx, variants, data, s):
    """Every variant for seeds ctx.seed, ctx.seed + 1, ...; one {variant: result} per seed."""
    runs = []
    for k in range(s["seeds"]):
        seed = ctx.seed + k
        results = {}
        for variant in variants:
            label = "{} seed {} ({}/{})".format(variant, seed, k + 1, s["seeds"])
            r = results[variant] = run_variant(variant, data, s, seed,
                                               progress=ctx.progress(label))
            _save_run(ctx.out_dir, r)
            ctx.log("{}: accuracy {:.4f}, skip {:.3f}, {:.3g} MACs, train {:.1f}s, cpu {:.1f}s"
                    .format(label, r["test_accuracy"], r["skip_ratio"], r["executed_macs"],
                            r["train_time_s"], r["cpu_time_s"]))
        runs.append(add_savings(results))
    return runs


def run(ctx):
    s = _settings(ctx)
    data = load_images(s["dataset"], s["train_size"], s["test_size"])
    (_, y_train), (_, y_test) = data
    s["num_classes"] = int(max(y_train.max(), y_test.max())) + 1
    if s["final_survival"] is None:
        s["final_survival"] = matched_final_survival(s["depth"], s["target_skip"])
    ctx.log("settings {}".format(s))
    runs = run_seeds(ctx, _variants(ctx), data, s)
    summary = aggregate(runs)
    targets = check_targets(summary)
    report = ctx.report
    report.add_text(__doc__)
    report.add_text("Settings: {}. Data: {} training / {} test images.".format(
        ", ".join("{}={}".format(k, v) for k, v in s.items()), len(data[0][0]), len(data[1][0])))
    _tables(report, summary, targets, s["seeds"])
    _per_seed_table(report, runs)
    cpu = sum(r["cpu_time_s"] for run in runs for r in run.values())
    report.add_text("Training times are wall-clock times of this process; other load on the "
                    "machine inflates them. CPU time of all runs: {:.0f} s (the whole process: "
                    "{:.0f} s).".format(cpu, _cpu_time()))
    report.add_metrics({"settings": s, "summary": summary,
                        "targets": [{"variant": v, "target": c, "measured": m, "met": ok}
                                    for v, c, m, ok in targets],
                        "runs": runs})
    _figures(report, runs, summary)
