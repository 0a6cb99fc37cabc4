"""Adaptive-dropout pruning of a Conformer CTC encoder to asked-for sizes (Kubo et al.,
Table 1 and Fig. 2 analogs).

Task: `keras_efficient.data.make_speech_sequences`, a synthetic speech-like CTC
task (24 tokens in confusable groups of three, 3-8 tokens per utterance,
speaking-rate variation, co-articulation smoothing, additive noise, variable
length; every encoder is built with `variable_length=True`). Models, each trained
with plain `model.fit` and CTC loss for the same epochs, for every seed:

* the dense encoder;
* for every budget rho (default 0.5 and 0.3): the same encoder with AdaptiveDropout
  at every site of Fig. 1 (FFN hidden units, per-head queries and values, LConv
  GLU output), the retention target following Eq. (6) from c0 = 10 to c_inf = -2
  over the first 60% of the steps, with `keras_efficient.pruning.parameter_budget(
  model, rho)` attached (it settles the effective count on rho times the total from
  the schedule's K on), then pruned physically with `keras_efficient.pruning.prune`;
* hand-shrunk dense encoders built to rho times the dense count with
  `keras_efficient.models.size_conformer`: fewer blocks (Shallow), a narrower model
  (Narrow), narrower FFNs (NarrowFFN).

Error: token error rate (edit distance of greedy CTC decodes over reference
tokens) on a held-out set, mean ± std over seeds (sample std, ddof = 1).
Parameters: `count_params()` of the pruned / built model. FLOPs: forward FLOPs
per utterance of the full frame count (`keras_efficient.training.flops.encoder_flops`).
"""

import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.data import make_speech_sequences
from keras_efficient.experiments.context import Option, integer, multiple_of, number, parser
from keras_efficient.layers import CTCBlankPadding
from keras_efficient.models import (
    ConformerEncoder,
    CTCLoss,
    conformer_parameters,
    size_conformer,
    token_error_rate,
)
from keras_efficient.pruning import count_parameters, parameter_budget, prune, surviving_units
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.training.flops import encoder_flops

DESCRIPTION = ("Adaptive-dropout pruning of a Conformer CTC encoder to parameter budgets: dense, "
               "ADL-pruned and hand-shrunk baselines over seeds (Table 1 and Fig. 2 analogs).")

_SITES = ("ffn1", "attention_query", "attention_value", "conv", "ffn2")
_BASELINES = (("shallow", "Shallow (L={})", "num_blocks"),
              ("narrow", "Narrow (D={})", "model_dim"),
              ("narrow_ffn", "NarrowFFN (F={})", "ffn_dim"))


def _budgets():
    one = number(low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)

    @parser("comma-separated parameter fractions in (0, 1)")
    def parse(value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)) or not value or any(v == "" for v in value):
            raise ValueError(value)
        return tuple(one(v) for v in value)
    return parse


def _baseline_kinds():
    kinds = tuple(kind for kind, _, _ in _BASELINES)

    @parser("comma-separated names out of " + ", ".join(kinds) + ", or none")
    def parse(value):
        if value == "none" or (isinstance(value, (list, tuple)) and not value):
            return ()
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or any(v not in kinds for v in items):
            raise ValueError(value)
        return tuple(items)
    return parse


OPTIONS = {
    "train_size": Option(integer(low=1), default=2048, quick=768,
                         help="training utterances of the synthetic speech-like CTC task"),
    "test_size": Option(integer(low=1), default=1024, quick=256, help="held-out utterances"),
    "epochs": Option(integer(low=1), default=15, quick=8, help="epochs of every model"),
    "seeds": Option(integer(low=1), default=3, quick=1,
                    help="training seeds per model (data fixed); mean ± std over them"),
    "budgets": Option(_budgets(), default=(0.5, 0.3), quick=(0.5,),
                      help="parameter budgets rho: ADL target fractions and baseline sizes"),
    "num_blocks": Option(integer(low=1), default=2, help="Conformer blocks"),
    "model_dim": Option(multiple_of(4, 4, "4 attention heads"), default=64, quick=32, help="Conformer model dimension D"),
    "subsampling_filters": Option(integer(low=1), default=32, quick=16,
                                  help="channels of the two subsampling convolutions"),
    "feature_dim": Option(integer(low=1), default=16,
                          help="features per frame of the synthetic sequences"),
    "learning_rate": Option(number(low=0.0, low_inclusive=False), default=2e-3,
                            help="Adam learning rate"),
    "alpha": Option(number(low=0.0, low_inclusive=False), default=1e-9,
                    help="ADL alpha (retention logit scale sqrt(gamma/alpha); the paper: 1e-7)"),
    "baselines": Option(_baseline_kinds(),
                        default=("shallow", "narrow", "narrow_ffn"),
                        help="hand-shrunk baselines to train (none: only dense and ADL)"),
}


def _settings(ctx):
    return {
        "train_size": ctx.option("train_size"),
        "test_size": ctx.option("test_size"),
        "epochs": ctx.option("epochs"),
        "seeds": ctx.option("seeds"),
        "budgets": list(ctx.option("budgets")),
        "batch_size": 32,
        "feature_dim": ctx.option("feature_dim"),
        "num_frames": 96,
        "vocab_size": 24,
        "num_blocks": ctx.option("num_blocks"),
        "model_dim": ctx.option("model_dim"),
        "subsampling_filters": ctx.option("subsampling_filters"),
        "num_heads": 4,
        "ffn_multiplier": 4,
        "kernel_size": 7,
        "dropout_rate": 0.1,
        "learning_rate": ctx.option("learning_rate"),
        "initial_target": 10.0,
        "final_target": -2.0,
        # The paper's alpha = 1e-7 (sqrt(gamma/alpha) = 10) is tuned for a 100k-step
        # schedule; with a few hundred steps beta must move ~10x faster per step
        # to separate kept and pruned units, hence sqrt(gamma/alpha) = 100.
        "alpha": ctx.option("alpha"),
        "gamma": 1e-5,
        "baselines": list(ctx.option("baselines")),
        # make_speech_sequences knobs (its defaults but the two that set the difficulty).
        "spread": 0.3,
        "noise": 1.0,
    }


def _data(s, seed):
    common = dict(vocab_size=s["vocab_size"], feature_dim=s["feature_dim"],
                  num_frames=s["num_frames"], spread=s["spread"], noise=s["noise"])
    train = make_speech_sequences(s["train_size"], seed=seed, **common)
    test = make_speech_sequences(s["test_size"], seed=seed + 1, **common)
    return train, test


def _reference(s):
    """ConformerEncoder arguments of the dense baseline (the reference of the shrunk ones)."""
    return dict(input_shape=(s["num_frames"], s["feature_dim"]), vocab_size=s["vocab_size"],
                num_blocks=s["num_blocks"], model_dim=s["model_dim"], num_heads=s["num_heads"],
                ffn_dim=s["ffn_multiplier"] * s["model_dim"], kernel_size=s["kernel_size"],
                dropout_rate=s["dropout_rate"], subsampling_filters=s["subsampling_filters"],
                variable_length=True)


def _encoder(s, adaptive=False, schedule=None):
    return ConformerEncoder(adaptive=adaptive, schedule=schedule, alpha=s["alpha"],
                            gamma=s["gamma"], **_reference(s))


def _train(ctx, label, model, s, train, test, seed):
    model.compile(keras.optimizers.Adam(s["learning_rate"]), CTCLoss())
    data = (tf.data.Dataset.from_tensor_slices((train["features"], train["labels"]))
            .shuffle(len(train["labels"]), seed=seed).batch(s["batch_size"]))
    start = time.time()
    model.fit(data, epochs=s["epochs"], verbose=0, callbacks=[ctx.progress(label)])
    elapsed = time.time() - start
    error = _error(model, test)
    ctx.log("{}: {} parameters, token error rate {:.4f}, {:.0f} s".format(
        label, model.count_params(), error, elapsed))
    return error, elapsed


def _error(model, test):
    return token_error_rate(test["labels"], model.predict(test["features"], verbose=0,
                                                          batch_size=128))


def _real_frames(model, features):
    """Boolean [batch, output frames]: True at the frames that come from real input.

    All frames for a fixed-length encoder; for a `variable_length` one (with a
    `CTCBlankPadding` layer) the first ceil(ceil(L / 2) / 2) frames, L = 1 + the
    last frame with a non-zero feature, as `SubsampledTimeMask` computes it.
    """
    frames = model.output_shape[1]
    if not any(isinstance(layer, CTCBlankPadding) for layer in model.layers):
        return np.ones((len(features), frames), bool)
    nonzero = np.any(np.asarray(features) != 0, axis=-1)
    lengths = np.where(nonzero.any(axis=-1),
                       nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=-1), 0)
    for _ in range(2):
        lengths = -(-lengths // 2)
    return np.arange(frames)[None, :] < lengths[:, None]


def _max_relative_difference(reference, outputs, real):
    """max |outputs - reference| / max |reference|, both over the real frames only.

    Padded frames of a `variable_length` encoder hold the -1e4 logits of
    `CTCBlankPadding`; including them would divide every difference by 1e4.
    """
    reference, outputs = np.asarray(reference)[real], np.asarray(outputs)[real]
    if reference.size == 0:
        return 0.0
    return float(np.max(np.abs(outputs - reference)) / max(np.max(np.abs(reference)), 1e-12))


def _floor_fraction(model):
    """count_parameters(model)["ratio"] with every ADL unit pruned (the smallest budget)."""
    adls = [layer for layer in model._flatten_layers(include_self=False)
            if hasattr(layer, "retention_raw")]
    saved = [adl.retention_raw.numpy() for adl in adls]
    for adl in adls:
        adl.retention_raw.assign(np.full(adl.retention_raw.shape, -1e6, np.float32))
    try:
        return count_parameters(model)["ratio"]
    finally:
        for adl, value in zip(adls, saved):
            adl.retention_raw.assign(value)


def _mean_std(values):
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _survival_figure(survival, budgets, num_blocks):
    """Fig. 2 analog: mean surviving fraction per site and block, one panel per budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.2), squeeze=False)
    width = 0.8 / len(_SITES)
    for ax, budget in zip(axes[0], budgets):
        for j, site in enumerate(_SITES):
            values = [survival[budget]["conformer_block_{}/{}".format(b, site)]
                      for b in range(num_blocks)]
            ax.bar(np.arange(num_blocks) + (j - (len(_SITES) - 1) / 2) * width,
                   [np.mean(v) for v in values], width, label=site)
        ax.set_xticks(np.arange(num_blocks))
        ax.set_xticklabels(["block {}".format(b) for b in range(num_blocks)])
        ax.set_title("budget {:g}".format(budget))
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("surviving units")
    axes[0][0].legend(fontsize=7, ncol=1, loc="upper left")
    fig.tight_layout()
    return fig


def _error_figure(rows):
    """Token error rate (mean ± std over seeds) against parameters, every model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = {"dense": "*", "adl": "o", "shallow": "s", "narrow": "^", "narrow_ffn": "v"}
    for row in rows:
        ax.errorbar(row["parameters"], row["error_mean"], yerr=row["error_std"],
                    marker=markers[row["kind"]], linestyle="none", capsize=3,
                    label="{} ({} params)".format(row["model"], row["parameters"]))
    ax.set_xlabel("parameters")
    ax.set_ylabel("token error rate (test)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _train_adl(ctx, s, budget, steps, train, test, seed):
    """One ADL encoder trained to `budget` and pruned: (row dict, survival rows)."""
    schedule = RetentionTargetSchedule(s["initial_target"], s["final_target"],
                                       max(1, int(0.6 * steps)))
    ctx.seed_everything(seed)
    adl = _encoder(s, adaptive=True, schedule=schedule)
    floor = _floor_fraction(adl)
    target = budget
    if budget < floor + 0.01:
        target = min(1.0, floor + 0.01)
        ctx.log("budget {:g} is below the smallest reachable fraction {:.3f} of this "
                "configuration: using {:.3f}".format(budget, floor, target))
    parameter_budget(adl, target)
    label = "ADL rho={:g}".format(budget)
    hard_error, elapsed = _train(ctx, label, adl, s, train, test, seed)
    counts = count_parameters(adl)
    pruned = prune(adl)
    reference = adl.predict(test["features"], verbose=0, batch_size=128)
    outputs = pruned.predict(test["features"], verbose=0, batch_size=128)
    max_diff = _max_relative_difference(reference, outputs, _real_frames(adl, test["features"]))
    error = token_error_rate(test["labels"], outputs)
    ctx.log("{} pruned: {} -> {} parameters ({:.3f}), token error rate {:.4f}, max relative "
            "output difference {:.2e}".format(label, counts["total"], counts["effective"],
                                              counts["ratio"], error, max_diff))
    return ({"parameters": pruned.count_params(), "error": error, "hard_error": hard_error,
             "time": elapsed, "ratio": counts["ratio"], "target": target, "floor": floor,
             "total": counts["total"], "max_diff": max_diff,
             "flops": encoder_flops(pruned)["flops"]},
            surviving_units(adl))


def run(ctx):
    s = _settings(ctx)
    train, test = _data(s, ctx.seed)
    steps = s["epochs"] * int(np.ceil(s["train_size"] / s["batch_size"]))
    ctx.log("{} train / {} test utterances, {} steps per model, {} seed(s), budgets {}".format(
        s["train_size"], s["test_size"], steps, s["seeds"], s["budgets"]))
    dense_count = conformer_parameters(**_reference(s))
    baseline_kwargs = {}
    for budget in s["budgets"]:
        for kind, label, key in _BASELINES:
            if kind not in s["baselines"]:
                continue
            # The nearest size of the kind (strict=False: e.g. one block may be above rho);
            # a model already trained for another budget is not trained again.
            kwargs = size_conformer(int(round(budget * dense_count)), kind, strict=False,
                                    **_reference(s))
            if any(kind == k and kwargs == kw for (_, k), (_, kw) in baseline_kwargs.items()):
                ctx.log("{} at rho={:g}: the nearest size is the encoder of another budget "
                        "({:.3f} of the dense count); not trained twice".format(
                            label.format(kwargs[key]), budget,
                            conformer_parameters(**kwargs) / dense_count))
                continue
            baseline_kwargs[budget, kind] = (label.format(kwargs[key]), kwargs)

    runs = {}            # (kind, budget) -> list of per-seed dicts
    survival = {b: {} for b in s["budgets"]}
    for index in range(s["seeds"]):
        base = 1000 * index

        def add(key, label, model, seed):
            error, elapsed = _train(ctx, label, model, s, train, test, seed)
            runs.setdefault(key, []).append({"parameters": model.count_params(), "error": error,
                                             "time": elapsed,
                                             "flops": encoder_flops(model)["flops"]})

        ctx.seed_everything(base + 1)
        dense = _encoder(s)
        if dense.count_params() != dense_count:
            raise AssertionError("parameter formula {} != Keras count {}".format(
                dense_count, dense.count_params()))
        add(("dense", None), "dense (seed {})".format(index), dense, base + 1)
        for j, budget in enumerate(s["budgets"]):
            row, units = _train_adl(ctx, s, budget, steps, train, test, base + 10 + j)
            runs.setdefault(("adl", budget), []).append(row)
            for unit in units:
                survival[budget].setdefault(unit["site"], []).append(unit["fraction"])
            for k, (kind, _, _) in enumerate(_BASELINES):
                if (budget, kind) not in baseline_kwargs:
                    continue
                label, kwargs = baseline_kwargs[budget, kind]
                ctx.seed_everything(base + 100 + 10 * j + k)
                model = ConformerEncoder(alpha=s["alpha"], gamma=s["gamma"], **kwargs)
                add((kind, budget), label, model, base + 100 + 10 * j + k)

    rows = []
    for (kind, budget), items in runs.items():
        if kind == "dense":
            name = "Dense baseline"
        elif kind == "adl":
            name = "ADL pruned, rho={:g} (proposed)".format(budget)
        else:
            name = "{}, rho={:g}".format(baseline_kwargs[budget, kind][0], budget)
        mean, std = _mean_std([r["error"] for r in items])
        rows.append({"model": name, "kind": kind, "budget": budget,
                     "parameters": int(round(np.mean([r["parameters"] for r in items]))),
                     "parameter_ratio": float(np.mean([r["parameters"] for r in items])
                                              / dense_count),
                     "flops": int(round(np.mean([r["flops"] for r in items]))),
                     "error_mean": mean, "error_std": std,
                     "errors": [float(r["error"]) for r in items],
                     "train_time_s": float(np.mean([r["time"] for r in items]))})
    order = {"dense": 0, "adl": 1, "shallow": 2, "narrow": 3, "narrow_ffn": 4}
    rows.sort(key=lambda r: (-(r["budget"] or 1.0), order[r["kind"]]))

    ctx.report.add_text(__doc__)
    ctx.report.add_table(
        "Table 1 analog: parameters, FLOPs and token error rate (test set; mean ± std over {} "
        "seed(s))".format(s["seeds"]),
        ["model", "parameters", "ratio", "MFLOPs / utt.", "token error rate",
         "per seed", "train time (s)"],
        [[r["model"], r["parameters"], "{:.3f}".format(r["parameter_ratio"]),
          "{:.2f}".format(r["flops"] / 1e6),
          "{:.4f} ± {:.4f}".format(r["error_mean"], r["error_std"]),
          " ".join("{:.4f}".format(e) for e in r["errors"]), "{:.0f}".format(r["train_time_s"])]
         for r in rows])
    for budget in s["budgets"]:
        adl_runs = runs[("adl", budget)]
        ctx.report.add_table(
            "Fig. 2 analog, budget {:g}: surviving units per site (mean fraction over seeds; "
            "reached ratio {})".format(budget, ", ".join(
                "{:.4f}".format(r["ratio"]) for r in adl_runs)),
            ["block"] + list(_SITES),
            [["block {}".format(b)] + ["{:.0%}".format(np.mean(
                survival[budget]["conformer_block_{}/{}".format(b, site)])) for site in _SITES]
             for b in range(s["num_blocks"])])
    ctx.report.add_figure("surviving_units", _survival_figure(survival, s["budgets"],
                                                              s["num_blocks"]),
                          "Mean fraction of surviving units per ADL site and block, one panel "
                          "per budget (Fig. 2 analog)")
    ctx.report.add_figure("error_vs_parameters", _error_figure(rows),
                          "Token error rate (mean ± std over seeds) against parameters")
    max_diff = max(r["max_diff"] for b in s["budgets"] for r in runs[("adl", b)])
    ctx.report.add_text(
        "Pruned models' outputs differ from the unpruned models' hard-mask outputs by at most "
        "{:.1e} (relative to the largest logit; real frames only).".format(max_diff))
    ctx.report.add_metrics({
        "settings": s,
        "dense_parameters": dense_count,
        "table1": rows,
        "adl_runs": {"{:g}".format(b): runs[("adl", b)] for b in s["budgets"]},
        "pruned_max_relative_output_difference": max_diff,
        "surviving_units": {"{:g}".format(b): {site: [float(v) for v in values]
                                               for site, values in survival[b].items()}
                            for b in s["budgets"]},
    })
