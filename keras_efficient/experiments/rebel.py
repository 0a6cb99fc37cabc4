"""ReBEL on built-in images: regularised bottleneck, Gaussian mixture early classifier, early exit.

A CIFAR-style ResNet teacher is trained, split after `stage2_block0` into head H
and tail T, and a variational bottleneck (Head₁ → z → Head₂) is injected and
trained with L = α·L_M + β·L_R + γ·L_C (Eq. 5; tail frozen). Early classifiers on
z: the Gaussian mixture classifier (full and diagonal covariance) and a jointly
trained linear softmax, with and without the KL term of Eq. (3), and kNN /
k-means fitted on the embeddings of a bottleneck trained with the mimic loss
only (head network distillation). Reported: local accuracy vs coverage
(Fig. 7a), local / remote / overall accuracy (Fig. 7b), Dirichlet-unbalanced
clients (Fig. 8), FLOPs / parameters / memory per component (Table I), on-device
FLOPs vs queries served locally against Kumar et al.'s k-means on the teacher's
intermediate outputs (Table II), remote accuracy with z sent as float32 / float16 /
uint8, and the transmission arithmetic (Sec. VI-D).

Options (`keras-efficient reproduce rebel --help`): `dataset`, `depth`,
`teacher_epochs`, `epochs`, `tail_epochs`, `projection_dim`, `latent_channels`,
`filters`, `train_size`, `test_size`; `z_dtype` (wire format of z in the delay and
load tables, default uint8) and `z_tail` (share of z values clipped by the
calibrated uint8 range, default 0.001).
"""

import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.data import DATASETS, load_images
from keras_efficient.experiments.context import Option, choice, integer, number, resnet_depth
from keras_efficient.experiments.inference import predict
from keras_efficient.experiments.rebel_costs import (
    TABLE2_TARGETS,
    graph_flops,
    kumar_baseline,
    table2,
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
    bytes_per_sample,
    coverage_curve,
    dequantize_uint8,
    dirichlet_partition,
    end_to_end_delay,
    exit_score,
    gini_index,
    network_load_bps,
    quantize_uint8,
    threshold_for_coverage,
)

DESCRIPTION = ("ReBEL split computing: variational bottleneck, Gaussian mixture early "
               "classifier vs linear/kNN/k-means, coverage, unbalanced clients, FLOPs.")

COVERAGES = np.round(np.arange(0.05, 1.0001, 0.05), 2)

OPTIONS = {
    "dataset": Option(choice(*DATASETS), default="digits",
                      help="image data set; cifar10/cifar100 are downloaded on first use"),
    "depth": Option(resnet_depth(), default=20, quick=8, help="depth of the teacher ResNet"),
    "teacher_epochs": Option(integer(low=1), default=30, quick=8, help="teacher training epochs"),
    "epochs": Option(integer(low=1), default=40, quick=8,
                     help="epochs of each jointly trained bottleneck (stage 1)"),
    "tail_epochs": Option(integer(low=0), default=10, quick=2,
                          help="epochs of tail fine-tuning (stage 2; 0: none)"),
    "projection_dim": Option(integer(low=1), default=128, quick=64,
                             help="dimension d of the projected embedding the classifiers see"),
    "latent_channels": Option(integer(low=1), default=3, help="channels of the bottleneck z"),
    "filters": Option(integer(low=1), default=64, quick=32,
                      help="filters of the Head1 / Head2 convolutions"),
    "z_dtype": Option(choice("float32", "float16", "uint8"), default="uint8",
                      help="wire format of z in the delay and network-load tables"),
    "z_tail": Option(number(low=0.0, high=0.5), default=1e-3,
                     help="share of z values clipped by the calibrated uint8 range"),
    "train_size": Option(integer(low=80), default=None,
                         help="train on the first N training images only (unset: all); k-means "
                              "fits 8 clusters per class, so N >= 8 x classes"),
    "test_size": Option(integer(low=1), default=None,
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


def _time_call(fn, x, repeats=5):
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats


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


def run(ctx):
    quick = ctx.quick
    dataset = ctx.option("dataset")
    depth = ctx.option("depth")
    teacher_epochs = ctx.option("teacher_epochs")
    epochs = ctx.option("epochs")
    tail_epochs = ctx.option("tail_epochs")
    projection_dim = ctx.option("projection_dim")
    latent_channels = ctx.option("latent_channels")
    filters = ctx.option("filters")
    wire = ctx.option("z_dtype")
    z_tail = ctx.option("z_tail")
    (x_train, y_train), (x_test, y_test) = load_images(dataset)
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    x_train, y_train = x_train[:ctx.option("train_size")], y_train[:ctx.option("train_size")]
    x_test, y_test = x_test[:ctx.option("test_size")], y_test[:ctx.option("test_size")]
    ctx.log("data {}: {} train / {} test, {} classes".format(dataset, len(x_train), len(x_test),
                                                             num_classes))
    ctx.report.add_text(__doc__)

    teacher, teacher_acc = _train_teacher(ctx, x_train, y_train, x_test, y_test, num_classes,
                                          depth, teacher_epochs)
    ctx.log("teacher test accuracy {:.4f}".format(teacher_acc))
    head, tail = split_functional_model(teacher, "stage2_block0")

    results, models = {}, {}
    steps = int(np.ceil(len(x_train) / 64))
    for i, (name, kwargs) in enumerate(_variants(quick)):
        ctx.seed_everything(10 + i)
        model = ReBEL(head, tail, num_classes, head_filters=(filters,) * 3,
                      latent_channels=latent_channels, decoder_filters=(filters,) * 2,
                      components_per_class=4, projection_dim=projection_dim, **kwargs)
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
            model, x_train, x_test, y_test, z_tail)
        results[name] = ev
        models[name] = model
        ctx.log("{}: local acc {:.3f}, remote acc {:.3f}".format(
            name, np.mean(ev["local"] == y_test), ev["remote_accuracy"]))

    # kNN and k-means on the embeddings of the mimic-only (HND) bottleneck.
    plain = "GMC diag" if quick else "HND (mimic only)"
    hnd = models[plain]
    z_train = hnd.embed(x_train).numpy()
    z_test = hnd.embed(x_test).numpy()
    hnd_eval = results.pop(plain) if plain.startswith("HND") else results[plain]
    baselines = {
        "kNN (k={})".format(25 if quick else 100): KNNEarlyClassifier(k=25 if quick else 100),
        "k-means ({} clusters)".format(8 * num_classes): KMeansEarlyClassifier(8 * num_classes,
                                                                              seed=ctx.seed),
    }
    baseline_models = {}
    for name, clf in baselines.items():
        clf.fit(z_train, y_train)
        local, conf = clf.predict(z_test)
        results[name] = {"confidence": conf, "score": conf, "local": local,
                         "remote": hnd_eval["remote"],
                         "labels": y_test, "remote_accuracy": hnd_eval["remote_accuracy"]}
        baseline_models[name] = clf

    curves = {name: _local_curve(ev) for name, ev in results.items()}
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

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Fig. 7a analog.
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

    # Fig. 6 analog: threshold -> accuracy / coverage.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, ev in results.items():
        cc = coverage_curve(ev["confidence"], ev["local"] == ev["labels"])
        ax1.plot(cc["threshold"], cc["local_accuracy"], label=name)
        ax2.plot(cc["threshold"], cc["coverage"], label=name)
    ax1.set_xlabel("confidence threshold"), ax1.set_ylabel("local accuracy")
    ax2.set_xlabel("confidence threshold"), ax2.set_ylabel("coverage")
    ax2.legend(fontsize=7)
    ctx.report.add_figure("fig6_threshold", fig, "Threshold vs local accuracy and coverage (Fig. 6)")

    # Fig. 7b analog.
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

    # Fig. 8 analog: Dirichlet-unbalanced clients, client-specific GMC on the frozen bottleneck.
    fig8_model = models["GMC diag + KL"]
    z_tr = fig8_model.embed(x_train).numpy()
    z_te = fig8_model.embed(x_test).numpy()
    remote_all = results["GMC diag + KL"]["remote"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    fig8 = {}
    for alpha in (0.05, 0.5, 100.0):
        tr, te = _client_subsets(y_train, y_test, alpha, ctx.seed, 400)
        gini = gini_index(y_train[tr], num_classes)
        client_predict = _fit_local_gmc(z_tr[tr], y_train[tr], num_classes, "diag",
                                        10 if quick else 40, ctx.seed)
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

    # Table I analog.
    gmc_model = models["GMC full + KL"]
    input_shape = x_train.shape[1:]
    device = gmc_model.device_model()
    server = gmc_model.server_model()
    z_shape = device.output_shape["z"][1:]
    d = projection_dim

    def gmc_stats(cov):
        layer = models["GMC {} + KL".format(cov)].classifier
        return layer.count_flops(), layer.count_params(), 4 * layer.count_params()

    head1_params = gmc_model.head1.count_params() + gmc_model.projection.count_params()
    table = [
        ["Teacher ResNet-{}".format(depth), graph_flops(teacher, input_shape),
         teacher.count_params(), 4 * teacher.count_params()],
        ["Head1 (+ projection)", graph_flops(keras.Model(device.input, device.output["z"]),
                                             input_shape) + 2 * int(np.prod(z_shape)) * d,
         head1_params, 4 * head1_params],
        ["Head2 + Tail", graph_flops(server, z_shape), server.count_params(),
         4 * server.count_params()],
    ]
    for name, clf in baseline_models.items():
        table.append([name + " on z", clf.flops_per_query(), 0, clf.memory_bytes()])
    lin = models["Linear"].classifier
    table.append(["Linear (joint)", 2 * lin.count_params(), lin.count_params(),
                  4 * lin.count_params()])
    for cov in ("full", "diag"):
        flops, params, mem = gmc_stats(cov)
        table.append(["GMC ({}), d={}, K=4".format(cov, d), flops, params, mem])
    ctx.report.add_table("Cost per query (Table I analog; FLOPs counted by the TF profiler for "
                         "the networks, analytically for the classifiers)",
                         ["component", "FLOPs", "parameters", "memory (bytes)"], table)
    ctx.report.add_metrics({row[0]: {"flops": row[1], "params": row[2], "memory_bytes": row[3]}
                            for row in table}, key="table1")

    # Table II analog: on-device FLOPs vs queries served locally at >= 88.86 % of remote.
    kumar = kumar_baseline(teacher, x_train, y_train, x_test, num_classes, ctx.seed)
    teacher_pred = predict(teacher, x_test, batch_size=256).argmax(-1)
    rows2, ratios = table2(kumar, teacher_pred, teacher_acc, results, models, table[1][1],
                            y_test)
    ctx.report.add_table(
        "On-device FLOPs vs fraction of queries served locally while the overall accuracy "
        "stays >= the given share of the remote accuracy (Table II analog; Kumar et al.: "
        "teacher prefix + 4x4 average pooling + k-means with {} clusters, remote = teacher; "
        "ReBEL: Head1 + projection + classifier, remote = its server model)".format(
            8 * num_classes),
        ["method", "on-device FLOPs"] + ["local @ {:.2f}%".format(100 * t)
                                         for t in TABLE2_TARGETS]
        + ["overall acc @ {:.2f}%".format(100 * TABLE2_TARGETS[0]), "remote acc"], rows2)
    ctx.report.add_table(
        "FLOPs of the cheapest Kumar et al. cut serving at least as many queries locally, "
        "divided by ReBEL's (None: no cut does)", ["method"] + [
            "@ {:.2f}%".format(100 * t) for t in TABLE2_TARGETS],
        [[k] + v for k, v in ratios.items()], floatfmt="{:.2f}")
    ctx.report.add_metrics({"targets": list(TABLE2_TARGETS), "rows": rows2,
                            "kumar_feature_dims": {k: v["dim"] for k, v in kumar.items()},
                            "flops_ratio_kumar_over_rebel": ratios}, key="table2")
    fig, ax = plt.subplots(figsize=(6, 4))
    krows = [r for r in rows2 if r[0].startswith("Kumar")]
    for j, (target, style) in enumerate(zip(TABLE2_TARGETS, ("-", "--", ":"))):
        ax.plot([r[1] for r in krows], [r[2 + j] for r in krows], style + "o", ms=4,
                color="C{}".format(j), label="Kumar et al. @ {:.2f}%".format(100 * target))
        for r in (r for r in rows2 if r[0].startswith("ReBEL")):
            ax.plot(r[1], r[2 + j], "s" if "diag" in r[0] else "^", color="C{}".format(j),
                    label=r[0] if j == 0 else None, mfc="none" if "KL" not in r[0] else None)
    ax.set(xscale="log", xlabel="on-device FLOPs per query", ylabel="fraction served locally")
    ax.legend(fontsize=7)
    ctx.report.add_figure("table2_flops_vs_local", fig,
                          "On-device FLOPs vs queries served locally (Table II analog; "
                          "markers: ReBEL GMC, squares diag, triangles full, hollow without KL; "
                          "colours: accuracy targets)")

    # Remote accuracy with z sent as float32 / float16 / uint8.
    wire_rows = []
    for name, ev in ((k, v) for k, v in results.items() if "wire_accuracy" in v):
        exited = ev["score"] >= threshold_for_coverage(ev["score"], 0.5)
        wire_rows.append([name] + [ev["wire_accuracy"][k] for k in ("float32", "float16", "uint8")]
                         + [float(np.mean(np.where(exited, ev["local"], ev["wire_remote"][k])
                                          == y_test)) for k in ("float32", "uint8")])
    ctx.report.add_table(
        "Remote accuracy with z sent as float32 / float16 / uint8 (uint8 range calibrated on "
        "the training embeddings, {:.2g} of the values clipped) and overall accuracy at 50 % "
        "coverage".format(z_tail),
        ["model", "remote float32", "remote float16", "remote uint8", "overall @50% float32",
         "overall @50% uint8"], wire_rows)
    ctx.report.add_metrics({"rows": wire_rows, "z_range": {
        k: v["z_range"] for k, v in results.items() if "z_range" in v}}, key="wire_format")

    # Transmission (Sec. VI-D / Fig. 10).
    raw_bytes = bytes_per_sample(input_shape, "uint8")
    z_bytes = {dt: bytes_per_sample(z_shape, dt) for dt in ("float32", "float16", "uint8")}
    batch = 64
    xb = x_test[:batch]
    # One traced graph per network, timed once (not a fresh tf.function per bandwidth).
    device_fn = tf.function(lambda x: device(x, training=False))
    server_fn = tf.function(lambda z: server(z, training=False))
    teacher_fn = tf.function(lambda x: teacher(x, training=False))
    z_b = device_fn(xb)["z"]
    device_s = _time_call(device_fn, xb)
    server_s = _time_call(server_fn, z_b)
    teacher_s = _time_call(teacher_fn, xb)
    diag_curve = curves["GMC diag + KL"]
    trans_rows = []
    for bw in (1e6, 2e6, 5e6, 10e6):
        remote_only = end_to_end_delay(batch, raw_bytes, bw, 0.01, 0.0, 0.0,
                                       teacher_s)
        hnd_delay = end_to_end_delay(batch, z_bytes[wire], bw, 0.01, 0.0, device_s, server_s)
        row = [bw / 1e6, remote_only["total_s"], hnd_delay["total_s"]]
        for cov_target in (0.25, 0.5):
            r = min(diag_curve, key=lambda r: abs(r["target_coverage"] - cov_target))
            row.append(end_to_end_delay(batch, z_bytes[wire], bw, 0.01, r["coverage"],
                                        device_s, server_s)["total_s"])
        trans_rows.append(row)
    ctx.report.add_table(
        "End-to-end delay of a batch of 64 (s), RTT 10 ms; device/server times measured on "
        "this CPU ({:.4f} s / {:.4f} s); z sent as uint8 ({} B vs {} B raw image)".format(
            device_s, server_s, z_bytes[wire], raw_bytes),
        ["bandwidth (Mbit/s)", "remote only (raw image)", "HND bottleneck", "ReBEL coverage 0.25",
         "ReBEL coverage 0.5"], trans_rows)
    loads = [["raw images", network_load_bps(100, 25, raw_bytes) / 1e6],
             ["bottleneck ({})".format(wire), network_load_bps(100, 25, z_bytes[wire]) / 1e6]]
    for target in (0.25, 0.5):
        r = min(diag_curve, key=lambda r: abs(r["target_coverage"] - target))
        loads.append(["ReBEL, coverage {:.2f}".format(r["coverage"]),
                      network_load_bps(100, 25, z_bytes[wire], r["coverage"]) / 1e6])
    ctx.report.add_table("Network load, 100 devices × 25 fps (Mbit/s)", ["scheme", "Mbit/s"],
                         loads)
    ctx.report.add_metrics({"bytes": {"raw_uint8": raw_bytes, **{"z_" + k: v
                                                                 for k, v in z_bytes.items()}},
                            "device_time_s": device_s, "server_time_s": server_s,
                            "delay": trans_rows, "load_mbps": loads}, key="transmission")
