"""`keras-efficient reproduce bnn-calibration`: are the galaxy estimators' uncertainties right?

The deterministic galaxy shape estimator and its two Bayesian variants (Flipout and
reparameterization) are trained with the same budget (epochs, batch size, Adam
learning rate) on GalSim-rendered galaxies (train / validation / test split; the
images divided by the per-band noise that `data.estimate_noise` measures on the
training stamps' borders). On the test split, for each model: RMSE of the
predictive mean, test NLL (the mixture NLL of `predict_with_samples` and the NLL
of its moment-matched Gaussian), and the fractions of targets inside the 68.3% and
95% ellipses, before and after recalibration with `calibration.fit_covariance_scale`
fitted on the validation split, in both families: the Gaussian (one covariance
scale) and the Student-t (scale and degrees of freedom, for residuals with heavier
tails than the predicted Gaussian); one reliability figure with every model,
before and after. The BNNs use `callbacks.KLWarmup` over the first epochs.

Which weights are Bayesian (`bayesian_scope`): "head" (default) makes only the
Dense layer to the distribution parameters Bayesian, on the same deterministic
(point-estimated) feature extractor as the deterministic model ("last-layer"
variational inference); "all" makes every convolution Bayesian as well (the
paper). With 10^3 training galaxies the mean-field posterior of every weight is
dominated by its KL term (KL / N per example is 10 to 10^3 times the data term),
which pulls the posterior means towards the prior and the full-network BNN
underfits (measured: 1.25x / 1.8x the deterministic RMSE, docs/probabilistic_ipu_gpu.md);
the head's posterior is small enough for the data to determine it, so its mean
fits like the deterministic model while its weights still carry an epistemic
spread.

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
    student_t_nll,
)
from keras_efficient.callbacks.kl_warmup import KLWarmup
from keras_efficient.data.galaxies import make_galaxies
from keras_efficient.data.noise import estimate_noise
from keras_efficient.experiments.context import (
    Option,
    choice,
    integer,
    integers,
    number,
    subset,
    text,
)
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator, predict_with_samples

__all__ = ["DESCRIPTION", "FAMILIES", "LEVELS", "MODELS", "OPTIONS", "evaluate", "run",
           "split_indices"]

DESCRIPTION = ("Calibration of the deterministic, Flipout and reparameterization galaxy "
               "estimators: RMSE, NLL and 68.3% / 95% coverage before and after recalibration.")

#: the models compared, in report order.
MODELS = ("deterministic", "flipout", "reparameterization")

#: the coverage levels of the ellipses reported.
LEVELS = (0.683, 0.95)

#: the recalibration families compared (`fit_covariance_scale(..., family=...)`).
FAMILIES = ("gaussian", "student_t")

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
    "bayesian_scope": Option(choice("head", "all"), default="head",
                             help="Bayesian layers of the BNNs: the head's Dense layer on a "
                                  "deterministic feature extractor, or every layer (the paper)"),
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


def evaluate(y, pred, calibrated):
    """Metrics of one model's test predictions, before and after recalibration.

    Args:
      y: test targets [N, d].
      pred: the dict of `predict_with_samples(..., y=y)`.
      calibrated: {family: (covariance [N, d, d], df or None)}: the recalibrated
        predictive covariances of each family ("gaussian": df None).

    Returns:
      dict: `rmse`, `nll` (mixture NLL) and `gaussian_nll` (means over the test
      split), `coverage` ({level: fraction inside the joint ellipse}); per family
      f, `nll_f` (NLL of the recalibrated distribution) and `coverage_f`.
    """
    mean, cov = pred["mean"], pred["covariance"]
    out = {
        "rmse": float(np.sqrt(np.mean((mean - y) ** 2))),
        "nll": float(np.mean(pred["mixture_nll"])),
        "gaussian_nll": float(np.mean(gaussian_nll(y, mean, cov))),
        "coverage": {str(l): float(coverage(y, mean, cov, l)) for l in LEVELS},
    }
    for family, (c, df) in calibrated.items():
        nll = gaussian_nll(y, mean, c) if df is None else student_t_nll(y, mean, c, df)
        out["nll_" + family] = float(np.mean(nll))
        out["coverage_" + family] = {str(l): float(coverage(y, mean, c, l, df=df))
                                     for l in LEVELS}
    return out


def _build(kind, s, num_train):
    bayesian = kind != "deterministic"
    kwargs = dict(num_train_examples=num_train, estimator=kind,
                  bayesian_scope=s["bayesian_scope"]) if bayesian else {}
    model = galaxy_shape_estimator(bayesian=bayesian, filters=s["filters"],
                                   input_shape=(s["image_size"], s["image_size"], 6), **kwargs)
    model.compile(keras.optimizers.Adam(s["learning_rate"]), loss=NegativeLogLikelihood())
    return model


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
    # Fitted on the validation split's predictive moments: Sigma -> s^2 Sigma (Gaussian),
    # or a Student-t with covariance s^2 Sigma and nu degrees of freedom.
    val, test = preds["validation"], preds["test"]
    calibrated, fitted = {}, {}
    for family in FAMILIES:
        layer = fit_covariance_scale(val, splits["validation"][1], family=family)
        calibrated[family] = (layer.initial_scale ** 2 * test["covariance"].astype(np.float64),
                              layer.initial_df)
        fitted[family] = {"scale": float(layer.initial_scale), "df": layer.initial_df}
    result = evaluate(splits["test"][1], test, calibrated)
    result.update(recalibration=fitted, num_samples=samples,
                  parameters=int(model.count_params()),
                  final_loss=float(hist.history["loss"][-1]))
    ctx.log("{}: rmse {:.4f}, nll {:.3f}, coverage 68.3% {:.3f} -> {:.3f} (gaussian) / {:.3f} "
            "(student-t), 95% {:.3f} -> {:.3f} / {:.3f} (s = {:.3f}; t: s = {:.3f}, nu = {:.1f})"
            .format(kind, result["rmse"], result["nll"], result["coverage"]["0.683"],
                    result["coverage_gaussian"]["0.683"], result["coverage_student_t"]["0.683"],
                    result["coverage"]["0.95"], result["coverage_gaussian"]["0.95"],
                    result["coverage_student_t"]["0.95"], fitted["gaussian"]["scale"],
                    fitted["student_t"]["scale"], fitted["student_t"]["df"]))
    return result, (test["mean"], test["covariance"], calibrated)


def _reliability_figure(ctx, y, curves):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("before recalibration", None)] + [
        ("recalibrated, {}".format(f.replace("_", "-")), f) for f in FAMILIES]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    for ax, (title, family) in zip(axes, panels):
        for kind, (mean, cov, calibrated) in curves.items():
            c, df = (cov, None) if family is None else calibrated[family]
            plot_reliability(y, mean, c, ax=ax, label=kind, df=df)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # the diagonal is drawn once per model
        ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize="small")
        ax.set_title("{} ({} test)".format(title, len(y)))
    ctx.report.add_figure("reliability", fig, "Reliability of the joint (e1, e2) ellipses on the "
                          "test split, before and after recalibration (Gaussian and Student-t)")


def _targets(results):
    """Which of the stated targets were met ({name: bool})."""
    met = {}
    if "deterministic" in results:
        for kind in results:
            if kind != "deterministic":
                met["{} rmse <= 1.1 x deterministic".format(kind)] = bool(
                    results[kind]["rmse"] <= 1.1 * results["deterministic"]["rmse"])
    for kind, r in results.items():
        for key, suffix in [("coverage_" + f, "after, " + f.replace("_", "-")) for f in FAMILIES
                            ] + [("coverage", "before")]:
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
        "epochs, batch {}, Adam lr {:g}; the BNNs ({} Bayesian) with {} epoch(s) of KL warm-up "
        "and {} forward passes per input. Coverage: fraction of test targets inside the joint "
        "(e1, e2) ellipse of the predictive distribution (mean, total covariance); recalibrated "
        "on the validation split with `calibration.fit_covariance_scale`: Gaussian, "
        "Sigma -> s^2 Sigma; Student-t, covariance s^2 Sigma and nu degrees of freedom (F "
        "regions). NLL: the mixture NLL of the S passes (S = 1 for the deterministic model); "
        "Gaussian NLL: of the moment-matched Gaussian; recalibrated NLL: of the recalibrated "
        "Gaussian / Student-t.".format(
            s["num_galaxies"], s["image_size"], s["image_size"], len(splits["train"][1]),
            len(splits["validation"][1]), len(splits["test"][1]), s["epochs"], s["batch_size"],
            s["learning_rate"], "head only" if s["bayesian_scope"] == "head" else "every layer",
            s["kl_warmup_epochs"], s["num_samples"]))

    def cov(r, key):
        return "{:.3f} / {:.3f}".format(r[key]["0.683"], r[key]["0.95"])

    rows = [[kind, r["rmse"], r["nll"], r["gaussian_nll"], cov(r, "coverage"),
             r["recalibration"]["gaussian"]["scale"], r["nll_gaussian"],
             cov(r, "coverage_gaussian"), r["recalibration"]["student_t"]["scale"],
             r["recalibration"]["student_t"]["df"], r["nll_student_t"],
             cov(r, "coverage_student_t")]
            for kind, r in results.items()]
    ctx.report.add_table("Test metrics (coverage: 68.3% / 95% ellipses)", [
        "model", "RMSE", "NLL (mixture)", "NLL (Gaussian)", "coverage before",
        "s (Gaussian)", "NLL after (Gaussian)", "coverage after (Gaussian)", "s (Student-t)",
        "nu", "NLL after (Student-t)", "coverage after (Student-t)"], rows)
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
