"""`keras-efficient reproduce bnn-calibration`: are the galaxy estimators' uncertainties right?

The deterministic galaxy shape estimator and its two Bayesian variants (Flipout and
reparameterization) are trained with the same budget (epochs, batch size, Adam
learning rate) on GalSim-rendered galaxies (train / validation / test split; the
images divided by the per-band noise that `data.estimate_noise` measures on the
training stamps' borders). On the test split, for each model: RMSE of the
predictive mean, test NLL (the mixture NLL of `predict_with_samples` and the NLL
of its moment-matched Gaussian), and the fractions of targets inside the 68.3% and
95% ellipses, before and after recalibration with `calibration.fit_covariance_scale`
fitted on the validation split; one reliability figure with every model, before
and after. The BNNs use `callbacks.KLWarmup` over the first epochs.

Options (`--option key=value`): `keras-efficient reproduce bnn-calibration --help`.
"""

import os

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.calibration import (
    coverage,
    fit_covariance_scale,
    gaussian_nll,
    plot_reliability,
)
from keras_efficient.callbacks.kl_warmup import KLWarmup
from keras_efficient.data.galaxies import make_galaxies
from keras_efficient.data.noise import estimate_noise
from keras_efficient.experiments.context import Option, integer, integers, number, subset, text
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator, predict_with_samples

__all__ = ["DESCRIPTION", "LEVELS", "MODELS", "OPTIONS", "evaluate", "run", "split_indices"]

DESCRIPTION = ("Calibration of the deterministic, Flipout and reparameterization galaxy "
               "estimators: RMSE, NLL and 68.3% / 95% coverage before and after recalibration.")

#: the models compared, in report order.
MODELS = ("deterministic", "flipout", "reparameterization")

#: the coverage levels of the ellipses reported.
LEVELS = (0.683, 0.95)

OPTIONS = {
    "num_galaxies": Option(integer(low=6), default=4000, quick=2000,
                           help="galaxies rendered with GalSim (cached in cache_dir)"),
    "image_size": Option(integer(low=8), default=64, quick=32,
                         help="stamp size in pixels; divisible by 2 ** len(filters)"),
    "filters": Option(integers(low=1), default=(32, 64, 128, 256), quick=(8, 16, 32, 32),
                      help="filters per stage of the estimator (the paper: 32,64,128,256)"),
    "validation_fraction": Option(number(low=0.0, high=0.5, low_inclusive=False), default=0.2,
                                  help="share of the galaxies in the validation split"),
    "test_fraction": Option(number(low=0.0, high=0.5, low_inclusive=False), default=0.2,
                            help="share of the galaxies in the test split"),
    "epochs": Option(integer(low=1), default=60, quick=40, help="training epochs, every model"),
    "batch_size": Option(integer(low=1), default=32, help="batch size, every model"),
    "learning_rate": Option(number(low=0.0, low_inclusive=False), default=1e-3,
                            help="Adam learning rate, every model"),
    "kl_warmup_epochs": Option(integer(low=0), default=10, quick=8,
                               help="epochs of linear KL warm-up of the BNNs (0: none)"),
    "num_samples": Option(integer(low=1), default=50, quick=20,
                          help="forward passes per input for a BNN's predictive distribution"),
    "models": Option(subset(*MODELS), default=MODELS, help="models to train and compare"),
    "cache_dir": Option(text(), default=None,
                        help="where rendered galaxies are cached (unset: <out>/galaxy_cache)"),
}


def split_indices(n, validation_fraction, test_fraction, seed=0):
    """Disjoint (train, validation, test) index arrays of a random split of `n` items.

    Each split holds at least one item; `ValueError` when `n` is too small for that.
    """
    n_val = max(1, int(round(n * validation_fraction)))
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_val - n_test < 1:
        raise ValueError("{} galaxies leave no training split (validation {}, test {}); "
                         "render more with --option num_galaxies=...".format(n, n_val, n_test))
    order = np.random.default_rng(seed).permutation(n)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def _load_data(ctx, s):
    ctx.log("rendering / loading {} galaxies ({}x{}x6)".format(
        s["num_galaxies"], s["image_size"], s["image_size"]))
    data = make_galaxies(s["num_galaxies"], seed=ctx.seed, image_size=s["image_size"],
                         cache_dir=s["cache_dir"], progress=True)
    train, val, test = split_indices(len(data["targets"]), s["validation_fraction"],
                                     s["test_fraction"], seed=ctx.seed)
    images, targets = data["images"], data["targets"]
    border = max(1, min(4, (s["image_size"] - 1) // 4))
    noise = estimate_noise(images[train], border=border).astype(np.float32)
    ctx.log("split train / validation / test = {} / {} / {}; noise per band {}".format(
        len(train), len(val), len(test), np.round(noise, 1).tolist()))
    return {name: (images[idx] / noise, targets[idx])
            for name, idx in (("train", train), ("validation", val), ("test", test))}, noise


def _build(kind, s, num_train):
    bayesian = kind != "deterministic"
    kwargs = dict(num_train_examples=num_train, estimator=kind) if bayesian else {}
    model = galaxy_shape_estimator(bayesian=bayesian, filters=s["filters"],
                                   input_shape=(s["image_size"], s["image_size"], 6), **kwargs)
    model.compile(keras.optimizers.Adam(s["learning_rate"]), loss=NegativeLogLikelihood())
    return model


def evaluate(y, pred, calibrated_cov):
    """Metrics of one model's test predictions, before and after recalibration.

    Args:
      y: test targets [N, d].
      pred: the dict of `predict_with_samples(..., y=y)`.
      calibrated_cov: the recalibrated predictive covariances [N, d, d].

    Returns:
      dict: `rmse`, `nll` (mixture NLL), `gaussian_nll` and `gaussian_nll_recalibrated`
      (means over the test split), `coverage` and `coverage_recalibrated`
      ({level: fraction inside the joint ellipse}).
    """
    mean, cov = pred["mean"], pred["covariance"]
    return {
        "rmse": float(np.sqrt(np.mean((mean - y) ** 2))),
        "nll": float(np.mean(pred["mixture_nll"])),
        "gaussian_nll": float(np.mean(gaussian_nll(y, mean, cov))),
        "gaussian_nll_recalibrated": float(np.mean(gaussian_nll(y, mean, calibrated_cov))),
        "coverage": {str(l): float(coverage(y, mean, cov, l)) for l in LEVELS},
        "coverage_recalibrated": {str(l): float(coverage(y, mean, calibrated_cov, l))
                                  for l in LEVELS},
    }


def _train_and_evaluate(ctx, kind, splits, s):
    x_train, y_train = splits["train"]
    ctx.seed_everything(0)
    model = _build(kind, s, len(x_train))
    callbacks = [ctx.progress(kind)]
    if kind != "deterministic" and s["kl_warmup_epochs"]:
        callbacks.append(KLWarmup(s["kl_warmup_epochs"]))
    hist = model.fit(x_train, y_train, batch_size=s["batch_size"], epochs=s["epochs"],
                     shuffle=True, verbose=0, callbacks=callbacks)
    samples = 1 if kind == "deterministic" else s["num_samples"]
    preds = {}
    for name in ("validation", "test"):
        x, y = splits[name]
        preds[name] = predict_with_samples(model, x, num_samples=samples,
                                           batch_size=s["batch_size"], y=y)
    # Sigma -> s^2 Sigma, s fitted on the validation split's predictive moments.
    layer = fit_covariance_scale(preds["validation"], splits["validation"][1])
    test = preds["test"]
    calibrated_cov = layer((test["mean"], test["covariance"])).covariance().numpy()
    result = evaluate(splits["test"][1], test, calibrated_cov)
    result.update(scale=float(layer.initial_scale), num_samples=samples,
                  parameters=int(model.count_params()),
                  final_loss=float(hist.history["loss"][-1]))
    ctx.log("{}: rmse {:.4f}, nll {:.3f}, coverage 68.3% {:.3f} -> {:.3f}, 95% {:.3f} -> {:.3f} "
            "(s = {:.3f})".format(kind, result["rmse"], result["nll"],
                                  result["coverage"]["0.683"],
                                  result["coverage_recalibrated"]["0.683"],
                                  result["coverage"]["0.95"],
                                  result["coverage_recalibrated"]["0.95"], result["scale"]))
    return result, (test["mean"], test["covariance"], calibrated_cov)


def _reliability_figure(ctx, y, curves):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, title, which in zip(axes, ("before recalibration", "after recalibration"), (1, 2)):
        for kind, arrays in curves.items():
            plot_reliability(y, arrays[0], arrays[which], ax=ax, label=kind)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # the diagonal is drawn once per model
        ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize="small")
        ax.set_title("{} ({} test galaxies)".format(title, len(y)))
    ctx.report.add_figure("reliability", fig, "Reliability of the joint (e1, e2) ellipses on the "
                          "test split, before and after recalibration")


def _targets(results):
    """Which of the stated targets were met ({name: bool})."""
    met = {}
    if "deterministic" in results:
        for kind in results:
            if kind != "deterministic":
                met["{} rmse <= 1.1 x deterministic".format(kind)] = bool(
                    results[kind]["rmse"] <= 1.1 * results["deterministic"]["rmse"])
    for kind, r in results.items():
        for key, suffix in (("coverage_recalibrated", "after"), ("coverage", "before")):
            met["{} 68.3% in 68 +- 5% ({})".format(kind, suffix)] = bool(
                abs(r[key]["0.683"] - 0.68) <= 0.05)
            met["{} 95% in 95 +- 3% ({})".format(kind, suffix)] = bool(
                abs(r[key]["0.95"] - 0.95) <= 0.03)
    return met


def run(ctx):
    s = {key: ctx.option(key) for key in OPTIONS}
    s["cache_dir"] = s["cache_dir"] or os.path.join(ctx.out_dir, "galaxy_cache")
    factor = 2 ** len(s["filters"])
    if s["image_size"] % factor:
        raise ValueError("image_size={} must be divisible by 2 ** len(filters) = {}".format(
            s["image_size"], factor))
    splits, noise = _load_data(ctx, s)
    results, curves = {}, {}
    for kind in s["models"]:
        results[kind], curves[kind] = _train_and_evaluate(ctx, kind, splits, s)

    ctx.report.add_text(
        "{} GalSim galaxies ({}x{}x6, images divided by the per-band border noise of the "
        "training stamps), split train / validation / test = {} / {} / {}. Every model: {} "
        "epochs, batch {}, Adam lr {:g}; the BNNs with {} epoch(s) of KL warm-up and {} forward "
        "passes per input. Coverage: fraction of test targets inside the joint (e1, e2) ellipse "
        "of the predictive Gaussian (mean, total covariance); recalibrated: Sigma -> s^2 Sigma "
        "with s fitted on the validation split (`calibration.fit_covariance_scale`). NLL: the "
        "mixture NLL of the S passes (S = 1 for the deterministic model); Gaussian NLL: of the "
        "moment-matched Gaussian, before -> after recalibration.".format(
            s["num_galaxies"], s["image_size"], s["image_size"], len(splits["train"][1]),
            len(splits["validation"][1]), len(splits["test"][1]), s["epochs"], s["batch_size"],
            s["learning_rate"], s["kl_warmup_epochs"], s["num_samples"]))
    rows = [[kind, r["rmse"], r["nll"], "{:.3f} -> {:.3f}".format(
                r["gaussian_nll"], r["gaussian_nll_recalibrated"]),
             "{:.3f}".format(r["coverage"]["0.683"]), "{:.3f}".format(r["coverage"]["0.95"]),
             r["scale"], "{:.3f}".format(r["coverage_recalibrated"]["0.683"]),
             "{:.3f}".format(r["coverage_recalibrated"]["0.95"])]
            for kind, r in results.items()]
    ctx.report.add_table("Test metrics", ["model", "RMSE", "NLL", "Gaussian NLL", "cov 68.3%",
                                          "cov 95%", "scale s", "cov 68.3% recal.",
                                          "cov 95% recal."], rows)
    met = _targets(results)
    ctx.report.add_text(
        "Targets: BNN RMSE <= 1.1 x deterministic; coverage at 68.3% within 68 +- 5% and at 95% "
        "within 95 +- 3% after recalibration (every model) and, if possible, before (BNNs).\n\n"
        + "\n".join("* {}: {}".format(k, "met" if v else "NOT met") for k, v in met.items()))
    _reliability_figure(ctx, splits["test"][1], curves)
    ctx.report.add_metrics({"settings": {k: v for k, v in s.items() if k != "cache_dir"},
                            "noise": noise, "split_sizes": {k: len(v[1])
                                                            for k, v in splits.items()},
                            "models": results, "targets_met": met})
