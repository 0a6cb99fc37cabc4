"""ReBEL on built-in images: regularised bottleneck, Gaussian mixture early classifier, early exit.

A CIFAR-style ResNet teacher is trained, split after `stage2_block0` into head H
and tail T, and a variational bottleneck (Head₁ → z → Head₂) is injected and
trained with L = α·L_M + β·L_R + γ·L_C (Eq. 5; tail frozen; L_M per element of the
teacher tensor, `ReBEL(mimic_reduction="mean")`). Early classifiers on
z: the Gaussian mixture classifier (full and diagonal covariance) and a jointly
trained linear softmax, with and without the KL term of Eq. (3), and kNN /
k-means fitted on the embeddings of a bottleneck trained with the mimic loss
only (head network distillation). Reported: local accuracy vs coverage
(Fig. 7a), local / remote / overall accuracy (Fig. 7b), Dirichlet-unbalanced
clients (Fig. 8), FLOPs / parameters / memory per component (Table I), on-device
FLOPs vs queries served locally against Kumar et al.'s k-means on the teacher's
intermediate outputs (Table II), remote accuracy with z sent as float32 / float16 /
uint8, and the transmission arithmetic (Sec. VI-D).

The default data set is Shapes32 (`keras_efficient.data.make_shapes32`, 40,000 /
10,000 rendered images of ten shape kinds in clutter); `--quick` uses its first
4,000 training and 1,000 test images, 20 teacher epochs (a ResNet stays near chance
for its first 400-600 steps on this task) and 16-filter heads. On the digits every early classifier is
exact up to 50 % coverage, so Fig. 7a cannot separate them there.

Options (`keras-efficient reproduce rebel --help`): `dataset`, `depth`,
`teacher_epochs`, `epochs`, `tail_epochs`, `projection_dim`, `latent_channels`,
`filters`, `train_size`, `test_size`; `z_dtype` (wire format of z in the delay and
load tables, default uint8) and `z_tail` (share of z values clipped by the
calibrated uint8 range, default 0.001).
"""

import time

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.data import DATASETS, load_images
from keras_efficient.experiments.context import Option, choice, integer, number, resnet_depth
from keras_efficient.experiments.inference import predict
from keras_efficient.experiments.rebel_costs import (
    report_table1,
    report_table2,
    report_transmission,
)
from keras_efficient.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_efficient.losses.early_classification import EarlyClassificationLoss
from keras_efficient.models import cifar_resnet
from keras_efficient.models.rebel import ReBEL, split_functional_model
from keras_efficient.split import (
    BottleneckCodec,
    KMeansEarlyClassifier,
    KNNEarlyClassifier,
    accuracy_vs_coverage,
    coverage_curve,
    dequantize_uint8,
    dirichlet_partition,
    exit_score,
    gini_index,
    quantize_uint8,
    threshold_for_coverage,
)

DESCRIPTION = ("ReBEL split computing: variational bottleneck, Gaussian mixture early "
               "classifier vs linear/kNN/k-means, coverage, unbalanced clients, FLOPs.")

COVERAGES = np.round(np.arange(0.05, 1.0001, 0.05), 2)

OPTIONS = {
    "dataset": Option(choice(*DATASETS), default="shapes",
                      help="image data set (shapes: the built-in Shapes32 task; cifar10/cifar100 "
                           "are downloaded on first use)"),
    "depth": Option(resnet_depth(), default=20, quick=8, help="depth of the teacher ResNet"),
    "teacher_epochs": Option(integer(low=1), default=30, quick=20,
                             help="teacher training epochs"),
    "epochs": Option(integer(low=1), default=40, quick=8,
                     help="epochs of each jointly trained bottleneck (stage 1)"),
    "tail_epochs": Option(integer(low=0), default=10, quick=2,
                          help="epochs of tail fine-tuning (stage 2; 0: none)"),
    "projection_dim": Option(integer(low=1), default=128, quick=64,
                             help="dimension d of the projected embedding the classifiers see"),
    "latent_channels": Option(integer(low=1), default=3, help="channels of the bottleneck z"),
    "filters": Option(integer(low=1), default=64, quick=16,
                      help="filters of the Head1 / Head2 convolutions"),
    "z_dtype": Option(choice("float32", "float16", "uint8"), default="uint8",
                      help="wire format of z in the delay and network-load tables"),
    "z_tail": Option(number(low=0.0, high=0.5), default=1e-3,
                     help="share of z values clipped by the calibrated uint8 range"),
    "train_size": Option(integer(low=80), default=None, quick=4000,
                         help="train on the first N training images only (unset: all); k-means "
                              "fits 8 clusters per class, so N >= 8 x classes"),
    "test_size": Option(integer(low=1), default=None, quick=1000,
                        help="evaluate on the first N test images only (unset: all)"),
}


def _variants(quick):
    """(name, ReBEL kwargs) of the jointly trained bottlenecks.

    `--quick` drops the full-covariance GMC without KL and the mimic-only
    bottleneck; kNN and k-means then use the embeddings of "GMC diag" (also
    trained without the KL term, as in the paper).
    """
    out = [
        ("GMC full + KL", {"classifier": "gmc", "covariance": "full", "beta": 0.001}),
        ("GMC full", {"classifier": "gmc", "covariance": "full", "beta": 0.0}),
        ("GMC diag + KL", {"classifier": "gmc", "covariance": "diag", "beta": 0.001}),
        ("GMC diag", {"classifier": "gmc", "covariance": "diag", "beta": 0.0}),
        ("Linear", {"classifier": "linear", "beta": 0.0}),
        ("Linear + KL", {"classifier": "linear", "beta": 0.001}),
        ("HND (mimic only)", {"classifier": "linear", "beta": 0.0, "gamma": 0.0}),
    ]
    if quick:
        out = [v for v in out if v[0] not in ("GMC full", "HND (mimic only)")]
    return out


def _train_teacher(ctx, x_train, y_train, x_test, y_test, num_classes, depth, epochs):
    ctx.seed_everything(1)
    teacher = cifar_resnet(depth, num_classes=num_classes, input_shape=x_train.shape[1:],
                           weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_train) / 64))
    teacher.compile(keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, steps),
                                         momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    teacher.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0,
                callbacks=[ctx.progress("teacher resnet{}".format(depth))])
    return teacher, teacher.evaluate(x_test, y_test, verbose=0)[1]


def _evaluate(model, x, y):
    out = predict(model, x, batch_size=256)
    log_probs = out["log_probs"]
    return {"confidence": np.exp(log_probs.max(-1)), "score": exit_score(log_probs),
            "local": log_probs.argmax(-1), "remote": out["logits"].argmax(-1), "labels": y}


def _local_curve(ev):
    """Calibrated on the unsaturated exit score (a monotone transform of the confidence)."""
    return accuracy_vs_coverage(ev["score"], ev["local"], ev["remote"], ev["labels"], COVERAGES)


def _fit_local_gmc(z_train, y_train, num_classes, covariance, epochs, seed):
    """A GMC trained on fixed embeddings with the NLL of Eq. (4) (client-specific classifier)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((z_train.shape[1],))
    gmc = GaussianMixtureClassifier(num_classes, 4, covariance=covariance)
    model = keras.Model(inputs, gmc(inputs))
    mean, std = z_train.mean(0), z_train.std(0) + 1e-6
    model.compile(keras.optimizers.Adam(2e-2), EarlyClassificationLoss())
    model.fit((z_train - mean) / std, y_train, batch_size=64, epochs=epochs, verbose=0)
    return lambda z: predict(model, (z - mean) / std, batch_size=256)


def _client_subsets(y_train, y_test, alpha, seed, test_size):
    """Train indices of the largest Dirichlet client and a test sample with its class mix."""
    parts = dirichlet_partition(y_train, alpha, num_clients=5, seed=seed)
    train_idx = max(parts, key=len)
    num_classes = int(y_train.max()) + 1
    share = np.bincount(y_train[train_idx], minlength=num_classes) / len(train_idx)
    weights = share[y_test] / np.bincount(y_test, minlength=num_classes)[y_test]
    rng = np.random.default_rng(seed)
    test_idx = rng.choice(len(y_test), size=test_size, replace=True, p=weights / weights.sum())
    return train_idx, test_idx


def _wire_accuracy(model, x_train, x_test, y_test, tail):
    """Remote accuracy when the server receives z as float32, float16 or uint8 (fixed range)."""
    device, server = model.device_model(), model.server_model()
    codec = BottleneckCodec.calibrated(predict(device, x_train, batch_size=256)["z"],
                                       tail=tail)
    z = predict(device, x_test, batch_size=256)["z"]
    received = {"float32": z, "float16": z.astype(np.float16).astype(np.float32),
                "uint8": dequantize_uint8(quantize_uint8(z, *codec.range), *codec.range)}
    remote = {k: predict(server, v, batch_size=256)["logits"].argmax(-1)
              for k, v in received.items()}
    return {k: float(np.mean(v == y_test)) for k, v in remote.items()}, remote, codec.range


def _load_data(ctx):
    """Training and test images, cut to `train_size` / `test_size`, as a dict."""
    dataset = ctx.option("dataset")
    train_size, test_size = ctx.option("train_size"), ctx.option("test_size")
    (x_train, y_train), (x_test, y_test) = load_images(dataset, train_size, test_size)
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    data = {"name": dataset, "num_classes": num_classes, "x_train": x_train, "y_train": y_train,
            "x_test": x_test, "y_test": y_test}
    ctx.log("data {}: {} train / {} test, {} classes".format(
        dataset, len(data["x_train"]), len(data["x_test"]), num_classes))
    return data


def _train_bottlenecks(ctx, head, tail, data):
    """Trains every variant (stage 1, then the tail); returns (evaluations, models)."""
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    epochs, tail_epochs = ctx.option("epochs"), ctx.option("tail_epochs")
    filters = ctx.option("filters")
    results, models = {}, {}
    steps = int(np.ceil(len(x_train) / 64))
    for i, (name, kwargs) in enumerate(_variants(ctx.quick)):
        ctx.seed_everything(10 + i)
        model = ReBEL(head, tail, data["num_classes"], head_filters=(filters,) * 3,
                      latent_channels=ctx.option("latent_channels"),
                      decoder_filters=(filters,) * 2, components_per_class=4,
                      projection_dim=ctx.option("projection_dim"), **kwargs)
        model.compile(keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(5e-3, epochs * steps)))
        start = time.time()
        model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0,
                  callbacks=[ctx.progress(name)])
        before_tail = float(np.mean(_evaluate(model, x_test, y_test)["remote"] == y_test))
        if tail_epochs:
            # Second stage (Sec. IV-D): fine-tune the tail on Head₂'s output, heads frozen.
            model.set_stage("tail")
            model.compile(keras.optimizers.Adam(1e-3))
            model.fit(x_train, y_train, batch_size=64, epochs=tail_epochs, verbose=0,
                      callbacks=[ctx.progress(name + " / tail")])
            model.set_stage("bottleneck")
        ev = _evaluate(model, x_test, y_test)
        ev["train_time_s"] = time.time() - start
        ev["remote_accuracy_before_tail_tuning"] = before_tail
        ev["remote_accuracy"] = float(np.mean(ev["remote"] == y_test))
        ev["wire_accuracy"], ev["wire_remote"], ev["z_range"] = _wire_accuracy(
            model, x_train, x_test, y_test, ctx.option("z_tail"))
        results[name] = ev
        models[name] = model
        ctx.log("{}: local acc {:.3f}, remote acc {:.3f}".format(
            name, np.mean(ev["local"] == y_test), ev["remote_accuracy"]))
    return results, models


def _fit_baselines(ctx, results, models, data):
    """kNN and k-means on the embeddings of the mimic-only (HND) bottleneck.

    Adds their evaluations to `results` (and drops the HND bottleneck's own, whose
    classifier was not trained); returns (name of that bottleneck, fitted baselines).
    """
    quick, num_classes, y_test = ctx.quick, data["num_classes"], data["y_test"]
    plain = "GMC diag" if quick else "HND (mimic only)"
    hnd = models[plain]
    z_train = hnd.embed(data["x_train"]).numpy()
    z_test = hnd.embed(data["x_test"]).numpy()
    hnd_eval = results.pop(plain) if plain.startswith("HND") else results[plain]
    baselines = {
        "kNN (k={})".format(25 if quick else 100): KNNEarlyClassifier(k=25 if quick else 100),
        "k-means ({} clusters)".format(8 * num_classes): KMeansEarlyClassifier(8 * num_classes,
                                                                              seed=ctx.seed),
    }
    for name, clf in baselines.items():
        clf.fit(z_train, data["y_train"])
        local, conf = clf.predict(z_test)
        results[name] = {"confidence": conf, "score": conf, "local": local,
                         "remote": hnd_eval["remote"],
                         "labels": y_test, "remote_accuracy": hnd_eval["remote_accuracy"]}
    return plain, baselines


def _accuracy_table(ctx, results, curves, teacher_acc, plain, y_test):
    rows = []
    for name, ev in results.items():
        at = {round(r["target_coverage"], 2): r for r in curves[name]}
        rows.append([name, float(np.mean(ev["local"] == y_test)), at[0.2]["local_accuracy"],
                     at[0.5]["local_accuracy"],
                     ev.get("remote_accuracy_before_tail_tuning", float("nan")),
                     ev["remote_accuracy"],
                     at[0.2]["overall_accuracy"], at[0.5]["overall_accuracy"]])
    ctx.report.add_table(
        "Early classifiers on the bottleneck (test set; teacher accuracy {:.3f}; kNN and "
        "k-means on the embeddings of \"{}\"; coverage calibrated on the exit score)".format(
            teacher_acc, plain),
        ["classifier", "local acc (all)", "local acc @20%", "local acc @50%",
         "remote acc (stage 1)", "remote acc (after tail tuning)",
         "overall @20%", "overall @50%"], rows)
    ctx.report.add_metrics({"teacher_accuracy": teacher_acc,
                            "plain_bottleneck": plain,
                            "remote_accuracy_before_tail_tuning": {
                                k: v.get("remote_accuracy_before_tail_tuning")
                                for k, v in results.items()},
                            "curves": curves}, key="accuracy")


def _coverage_figures(ctx, plt, results, curves):
    """Fig. 7a (local accuracy vs coverage), Fig. 6 (threshold sweeps), Fig. 7b."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {}   # one colour per classifier, dashed with the KL term
    for name, curve in curves.items():
        color = colors.setdefault(name.replace(" + KL", ""), "C{}".format(len(colors)))
        ax.plot([r["coverage"] for r in curve], [r["local_accuracy"] for r in curve],
                "--" if "KL" in name else "-", color=color, label=name)
    ax.set_xlabel("fraction of queries answered locally (coverage)")
    ax.set_ylabel("local accuracy")
    ax.legend(fontsize=8)
    ctx.report.add_figure("fig7a_local_accuracy_vs_coverage", fig,
                          "Local accuracy vs coverage (Fig. 7a analog; dashed: with KL, Eq. 3)")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, ev in results.items():
        cc = coverage_curve(ev["confidence"], ev["local"] == ev["labels"])
        ax1.plot(cc["threshold"], cc["local_accuracy"], label=name)
        ax2.plot(cc["threshold"], cc["coverage"], label=name)
    ax1.set_xlabel("confidence threshold"), ax1.set_ylabel("local accuracy")
    ax2.set_xlabel("confidence threshold"), ax2.set_ylabel("coverage")
    ax2.legend(fontsize=7)
    ctx.report.add_figure("fig6_threshold", fig, "Threshold vs local accuracy and coverage (Fig. 6)")

    best = "GMC full + KL"
    curve = curves[best]
    fig, ax = plt.subplots(figsize=(6, 4))
    cov = [r["coverage"] for r in curve]
    for key in ("local_accuracy", "remote_accuracy", "overall_accuracy"):
        ax.plot(cov, [r[key] for r in curve], label=key.replace("_", " "))
    ax.axhline(results[best]["remote_accuracy"], color="gray", ls=":", label="remote only")
    ax.set_xlabel("coverage"), ax.set_ylabel("accuracy"), ax.legend()
    ctx.report.add_figure("fig7b_local_remote_overall", fig,
                          "Local / remote / overall accuracy, {} (Fig. 7b analog)".format(best))


def _unbalanced_clients(ctx, plt, results, models, data):
    """Fig. 8 analog: Dirichlet-unbalanced clients, client-specific GMC on the frozen z."""
    x_train, y_train = data["x_train"], data["y_train"]
    y_test, num_classes = data["y_test"], data["num_classes"]
    fig8_model = models["GMC diag + KL"]
    z_tr = fig8_model.embed(x_train).numpy()
    z_te = fig8_model.embed(data["x_test"]).numpy()
    remote_all = results["GMC diag + KL"]["remote"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    fig8 = {}
    for alpha in (0.05, 0.5, 100.0):
        tr, te = _client_subsets(y_train, y_test, alpha, ctx.seed, 400)
        gini = gini_index(y_train[tr], num_classes)
        client_predict = _fit_local_gmc(z_tr[tr], y_train[tr], num_classes, "diag",
                                        10 if ctx.quick else 40, ctx.seed)
        log_probs = client_predict(z_te[te])
        rows8 = accuracy_vs_coverage(exit_score(log_probs), log_probs.argmax(-1),
                                     remote_all[te], y_test[te], COVERAGES)
        fig8[str(alpha)] = {"gini": gini, "train_size": int(len(tr)), "curve": rows8}
        label = "alpha={} (Gini {:.2f})".format(alpha, gini)
        ax1.plot([r["coverage"] for r in rows8], [r["local_accuracy"] for r in rows8], label=label)
        ax2.plot([r["coverage"] for r in rows8], [r["overall_accuracy"] for r in rows8],
                 label=label)
    ax1.set_xlabel("coverage"), ax1.set_ylabel("local accuracy (client GMC diag)")
    ax2.set_xlabel("coverage"), ax2.set_ylabel("overall accuracy"), ax2.legend(fontsize=8)
    ctx.report.add_figure("fig8_unbalanced_clients", fig,
                          "Dirichlet-unbalanced clients (Fig. 8 analog)")
    ctx.report.add_metrics(fig8, key="unbalanced_clients")


def _wire_table(ctx, results, y_test):
    """Remote accuracy with z sent as float32 / float16 / uint8."""
    wire_rows = []
    for name, ev in ((k, v) for k, v in results.items() if "wire_accuracy" in v):
        exited = ev["score"] >= threshold_for_coverage(ev["score"], 0.5)
        wire_rows.append([name] + [ev["wire_accuracy"][k] for k in ("float32", "float16", "uint8")]
                         + [float(np.mean(np.where(exited, ev["local"], ev["wire_remote"][k])
                                          == y_test)) for k in ("float32", "uint8")])
    ctx.report.add_table(
        "Remote accuracy with z sent as float32 / float16 / uint8 (uint8 range calibrated on "
        "the training embeddings, {:.2g} of the values clipped) and overall accuracy at 50 % "
        "coverage".format(ctx.option("z_tail")),
        ["model", "remote float32", "remote float16", "remote uint8", "overall @50% float32",
         "overall @50% uint8"], wire_rows)
    ctx.report.add_metrics({"rows": wire_rows, "z_range": {
        k: v["z_range"] for k, v in results.items() if "z_range" in v}}, key="wire_format")


def run(ctx):
    data = _load_data(ctx)
    ctx.report.add_text(__doc__)
    depth = ctx.option("depth")
    teacher, teacher_acc = _train_teacher(ctx, data["x_train"], data["y_train"],
                                          data["x_test"], data["y_test"], data["num_classes"],
                                          depth, ctx.option("teacher_epochs"))
    ctx.log("teacher test accuracy {:.4f}".format(teacher_acc))
    head, tail = split_functional_model(teacher, "stage2_block0")

    results, models = _train_bottlenecks(ctx, head, tail, data)
    plain, baselines = _fit_baselines(ctx, results, models, data)
    curves = {name: _local_curve(ev) for name, ev in results.items()}
    _accuracy_table(ctx, results, curves, teacher_acc, plain, data["y_test"])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _coverage_figures(ctx, plt, results, curves)
    _unbalanced_clients(ctx, plt, results, models, data)
    table = report_table1(ctx, teacher, depth, models, baselines, data["x_train"].shape[1:],
                          ctx.option("projection_dim"))
    report_table2(ctx, plt, teacher, teacher_acc, results, models, data, table[1][1])
    _wire_table(ctx, results, data["y_test"])
    report_transmission(ctx, teacher, models["GMC full + KL"], curves["GMC diag + KL"],
                        data["x_test"], ctx.option("z_dtype"))
