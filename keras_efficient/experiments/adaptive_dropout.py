"""Adaptive-dropout pruning of a small Conformer CTC encoder (Kubo et al., Table 1 and Fig. 2).

A Conformer encoder with AdaptiveDropout at every site of Fig. 1 (FFN hidden
units, per-head queries and values, LConv GLU output) is trained with plain
`model.fit` and CTC loss on the built-in synthetic sequence task
(`keras_efficient.data.make_ctc_sequences`), the retention target following
Eq. (6) from c0 = 10 to c_inf = -2 over the first ~60% of the steps (gamma =
1e-5 as in the paper; alpha = 1e-9 instead of 1e-7 because the run is ~1000x
shorter, see the settings). It is then pruned
physically (`keras_efficient.pruning.prune`) and compared with the same encoder
trained without ADLs (dense baseline) and with hand-shrunk encoders of about the
pruned size: fewer blocks (Shallow), a narrower model (Narrow), narrower FFNs
(NarrowFFN). Error: token error rate (edit distance of greedy CTC decodes over
reference tokens) on a held-out set. Parameters: the pruned model's
`count_params()` (equal to the effective count of Table 1).
"""

import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.data import make_ctc_sequences
from keras_efficient.experiments.context import Option, integer, number, parser
from keras_efficient.layers import CTCBlankPadding
from keras_efficient.models import (
    ConformerEncoder,
    CTCLoss,
    conformer_parameters,
    size_conformer,
    token_error_rate,
)
from keras_efficient.pruning import count_parameters, prune, surviving_units
from keras_efficient.schedules import RetentionTargetSchedule

DESCRIPTION = ("Adaptive-dropout pruning of a Conformer CTC encoder: dense, ADL-pruned and "
               "hand-shrunk baselines (Table 1 and Fig. 2 analogs).")

_SITES = ("ffn1", "attention_query", "attention_value", "conv", "ffn2")


def _model_dim():
    one = integer(low=4)

    @parser("a multiple of 4, >= 4 (4 attention heads)")
    def parse(value):
        dim = one(value)
        if dim % 4:
            raise ValueError(value)
        return dim
    return parse


OPTIONS = {
    "train_size": Option(integer(low=1), default=4096, quick=1024,
                         help="training utterances of the synthetic CTC task"),
    "test_size": Option(integer(low=1), default=1024, quick=256, help="held-out utterances"),
    "epochs": Option(integer(low=1), default=40, quick=12, help="epochs of every model"),
    "num_blocks": Option(integer(low=1), default=4, quick=2, help="Conformer blocks"),
    "model_dim": Option(_model_dim(), default=144, quick=64, help="Conformer model dimension D"),
    "feature_dim": Option(integer(low=1), default=16,
                          help="features per frame of the synthetic sequences"),
    "learning_rate": Option(number(low=0.0, low_inclusive=False), default=2e-3,
                            help="Adam learning rate"),
    "alpha": Option(number(low=0.0, low_inclusive=False), default=1e-9,
                    help="ADL alpha (retention logit scale sqrt(gamma/alpha); the paper: 1e-7)"),
}


def _settings(ctx):
    return {
        "train_size": ctx.option("train_size"),
        "test_size": ctx.option("test_size"),
        "epochs": ctx.option("epochs"),
        "batch_size": 32,
        "feature_dim": ctx.option("feature_dim"),
        "num_frames": 64,
        "vocab_size": 10,
        "num_blocks": ctx.option("num_blocks"),
        "model_dim": ctx.option("model_dim"),
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
    }


def _data(s, seed):
    common = dict(vocab_size=s["vocab_size"], max_label_length=6, feature_dim=s["feature_dim"],
                  num_frames=s["num_frames"], noise=0.6)
    train = make_ctc_sequences(s["train_size"], seed=seed, **common)
    test = make_ctc_sequences(s["test_size"], seed=seed + 1, **common)
    return train, test


def _reference(s):
    """ConformerEncoder arguments of the dense baseline (the reference of the shrunk ones)."""
    return dict(input_shape=(s["num_frames"], s["feature_dim"]), vocab_size=s["vocab_size"],
                num_blocks=s["num_blocks"], model_dim=s["model_dim"], num_heads=s["num_heads"],
                ffn_dim=s["ffn_multiplier"] * s["model_dim"], kernel_size=s["kernel_size"],
                dropout_rate=s["dropout_rate"])


def _encoder(s, adaptive=False, schedule=None):
    return ConformerEncoder(adaptive=adaptive, schedule=schedule, alpha=s["alpha"],
                            gamma=s["gamma"], **_reference(s))


def _train(ctx, label, model, s, train, test):
    model.compile(keras.optimizers.Adam(s["learning_rate"]), CTCLoss())
    data = (tf.data.Dataset.from_tensor_slices((train["features"], train["labels"]))
            .shuffle(len(train["labels"]), seed=ctx.seed).batch(s["batch_size"]))
    start = time.time()
    model.fit(data, epochs=s["epochs"], verbose=0, callbacks=[ctx.progress(label)])
    elapsed = time.time() - start
    error = token_error_rate(test["labels"], model.predict(test["features"], verbose=0,
                                                           batch_size=128))
    ctx.log("{}: {} parameters, token error rate {:.4f}, {:.0f} s".format(
        label, model.count_params(), error, elapsed))
    return error, elapsed


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


def _figure(rows, num_blocks):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(_SITES)
    for j, site in enumerate(_SITES):
        values = [rows["conformer_block_{}/{}".format(b, site)]["fraction"]
                  for b in range(num_blocks)]
        ax.bar(np.arange(num_blocks) + (j - (len(_SITES) - 1) / 2) * width, values, width,
               label=site)
    ax.set_xticks(np.arange(num_blocks))
    ax.set_xticklabels(["block {}".format(b) for b in range(num_blocks)])
    ax.set_ylabel("surviving units")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, 1.18))
    return fig


def run(ctx):
    s = _settings(ctx)
    train, test = _data(s, ctx.seed)
    steps = s["epochs"] * int(np.ceil(s["train_size"] / s["batch_size"]))
    schedule = RetentionTargetSchedule(s["initial_target"], s["final_target"],
                                       max(1, int(0.6 * steps)))
    ctx.log("{} train / {} test utterances, {} steps, K = {}".format(
        s["train_size"], s["test_size"], steps, schedule.decay_steps))
    results = []

    ctx.seed_everything(1)
    dense = _encoder(s)
    if conformer_parameters(**_reference(s)) != dense.count_params():
        raise AssertionError("parameter formula {} != Keras count {}".format(
            conformer_parameters(**_reference(s)), dense.count_params()))
    dense_error, dense_time = _train(ctx, "dense", dense, s, train, test)
    results.append(["Dense baseline", dense.count_params(), dense_error, dense_time])

    ctx.seed_everything(2)
    adl = _encoder(s, adaptive=True, schedule=schedule)
    adl_error, adl_time = _train(ctx, "adaptive dropout", adl, s, train, test)
    counts = count_parameters(adl)
    pruned = prune(adl)
    reference = adl.predict(test["features"], verbose=0, batch_size=128)
    pruned_out = pruned.predict(test["features"], verbose=0, batch_size=128)
    max_diff = _max_relative_difference(reference, pruned_out, _real_frames(adl, test["features"]))
    pruned_error = token_error_rate(test["labels"], pruned_out)
    effective = pruned.count_params()
    ctx.log("pruned: {} -> {} parameters, token error rate {:.4f}, max relative output "
            "difference {:.2e}".format(counts["total"], effective, pruned_error, max_diff))
    results.append(["ADL (hard mask, before pruning)", counts["total"], adl_error, adl_time])
    results.append(["ADL pruned (proposed)", effective, pruned_error, 0.0])

    # Hand-shrunk baselines of about the pruned size; the closest size even when the
    # pruned count is outside a kind's range (e.g. below one block), so strict=False.
    for offset, (kind, label, key) in enumerate((("shallow", "Shallow (L={})", "num_blocks"),
                                                 ("narrow", "Narrow (D={})", "model_dim"),
                                                 ("narrow_ffn", "NarrowFFN (F={})", "ffn_dim"))):
        kwargs = size_conformer(effective, kind, strict=False, **_reference(s))
        label = label.format(kwargs[key])
        ctx.seed_everything(3 + offset)
        model = ConformerEncoder(alpha=s["alpha"], gamma=s["gamma"], **kwargs)
        error, elapsed = _train(ctx, label, model, s, train, test)
        results.append([label, model.count_params(), error, elapsed])

    survival = surviving_units(adl)
    rows = {r["site"]: r for r in survival}
    ctx.report.add_text(__doc__)
    ctx.report.add_table(
        "Table 1 analog: parameters and token error rate (test set)",
        ["model", "parameters", "token error rate", "train time (s)"], results)
    ctx.report.add_table(
        "Fig. 2 analog: surviving units per site",
        ["block"] + list(_SITES),
        [["block {}".format(b)] + ["{}/{} ({:.0%})".format(
            rows["conformer_block_{}/{}".format(b, site)]["surviving"],
            rows["conformer_block_{}/{}".format(b, site)]["total"],
            rows["conformer_block_{}/{}".format(b, site)]["fraction"]) for site in _SITES]
         for b in range(s["num_blocks"])])
    ctx.report.add_figure("surviving_units", _figure(rows, s["num_blocks"]),
                          "Fraction of surviving units per ADL site and block (Fig. 2 analog)")
    ctx.report.add_text(
        "Pruned model: {} of {} parameters ({:.1%}); its outputs differ from the unpruned "
        "model's hard-mask outputs by at most {:.1e} (relative to the largest logit; real frames "
        "only).".format(
            effective, counts["total"], effective / counts["total"], max_diff))
    ctx.report.add_metrics({
        "settings": s,
        "table1": [{"model": r[0], "parameters": int(r[1]), "token_error_rate": float(r[2]),
                    "train_time_s": float(r[3])} for r in results],
        "parameters": counts,
        "pruned_max_relative_output_difference": max_diff,
        "surviving_units": survival,
    })
