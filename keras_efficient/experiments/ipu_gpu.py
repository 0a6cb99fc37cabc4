"""`keras-efficient reproduce ipu-gpu`: the hardware benchmark of the IPU/GPU cosmology paper.

Figs. 2-3 analogs: training time of the deterministic (1.5 M parameters) and
Bayesian (2.7 M) galaxy shape estimators for a fixed number of epochs after a
warm-up, as a function of the batch size, on every device kind found (CPU
always; GPU and IPU when present), and the speed ratio between two device kinds
when there are two. Fig. 4 analog: FlowVAE image generation time vs the number
of images. The data are GalSim-rendered LSST-like galaxies (64x64x6), cached in
`<out>/galaxy_cache` (option `cache_dir`).

Options (`--option key=value`): `keras-efficient reproduce ipu-gpu --help`.
"""

import os
import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.data.galaxies import BANDS, make_galaxies, sky_per_pixel
from keras_efficient.distribute import describe_devices, get_strategy, static_batches
from keras_efficient.experiments.context import (
    Option,
    integer,
    integers,
    multiple_of,
    subset,
    text,
)
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.flow_vae import FlowVAE
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator

DESCRIPTION = ("Training time vs batch size of the deterministic and Bayesian galaxy shape "
               "estimators on every device found, speed ratios, and FlowVAE generation time "
               "(Figs. 2-4 analogs).")


OPTIONS = {
    "num_galaxies": Option(integer(low=1), default=1000, quick=56,
                           help="galaxies rendered with GalSim (cached in cache_dir)"),
    "image_size": Option(multiple_of(16, 16, "the FlowVAE halves the stamp four times"), default=64,
                         help="galaxy stamp size in pixels (64 in the paper)"),
    "epochs": Option(integer(low=1), default=10, quick=1, help="timed training epochs"),
    "warmup_epochs": Option(integer(low=0), default=2, quick=1,
                            help="untimed epochs before the timed ones (tracing, caches)"),
    "batch_sizes": Option(integers(low=1), default=(2, 4, 6, 8, 10, 12, 14, 32, 64),
                          quick=(2, 4, 8, 14), help="batch sizes of the deterministic estimator"),
    "bnn_batch_sizes": Option(integers(low=1), default=(2, 4, 6, 8, 16, 32), quick=(2, 4, 8),
                              help="batch sizes of the Bayesian estimator"),
    "vae_images": Option(integers(low=1), default=(1, 10, 100, 1000, 5000),
                         quick=(1, 10, 100, 500), help="numbers of images the FlowVAE generates"),
    "vae_repeats": Option(integer(low=1), default=5, quick=3,
                          help="timed generations per number of images (the median is reported)"),
    "cache_dir": Option(text(), default=None,
                        help="where rendered galaxies are cached (unset: <out>/galaxy_cache)"),
    "devices": Option(subset("cpu", "gpu", "ipu"), default=None,
                      help="device kinds to benchmark, among those found (unset: all found)"),
}


def _settings(ctx):
    s = {key: ctx.option(key) for key in OPTIONS}
    s["cache_dir"] = s["cache_dir"] or os.path.join(ctx.out_dir, "galaxy_cache")
    return s


def _device_kinds(requested):
    found = describe_devices()
    kinds = ["cpu"]
    if found["gpu"]:
        kinds.append("gpu")
    if found["ipu"]:
        kinds.append("ipu")
    if requested:
        kinds = [k for k in requested if k in kinds]
    return kinds, found


class _Device:
    """A strategy scope plus, for "cpu" on a machine with accelerators, a CPU placement."""

    def __init__(self, kind):
        self.kind = kind
        self.strategy = get_strategy(kind, num_devices=1 if kind == "gpu" else None)

    def __enter__(self):
        self._scopes = [self.strategy.scope()]
        if self.kind == "cpu":
            self._scopes.append(tf.device("/CPU:0"))
        for scope in self._scopes:
            scope.__enter__()
        return self

    def __exit__(self, *exc):
        for scope in reversed(self._scopes):
            scope.__exit__(*exc)


def _load_data(ctx, s):
    ctx.log("rendering / loading {} galaxies ({}x{}x6)".format(
        s["num_galaxies"], s["image_size"], s["image_size"]))
    data = make_galaxies(s["num_galaxies"], seed=ctx.seed, image_size=s["image_size"],
                         cache_dir=s["cache_dir"], progress=True)
    noise = np.sqrt([sky_per_pixel(b) for b in BANDS]).astype(np.float32)
    # Images in units of the sky noise per band (the networks start with BatchNorm anyway).
    return data["images"] / noise, data["targets"]


def _time_training(ctx, device, bayesian, batch_size, x, y, s):
    n = (len(x) // batch_size) * batch_size
    if n == 0:
        return None
    ctx.seed_everything(batch_size)
    with device:
        model = galaxy_shape_estimator(bayesian=bayesian, input_shape=x.shape[1:],
                                       num_train_examples=n)
        model.compile(keras.optimizers.Adam(1e-3), loss=NegativeLogLikelihood())
    ds = static_batches(x[:n], y[:n], batch_size=batch_size, shuffle=True, seed=ctx.seed)
    with device:
        if s["warmup_epochs"]:
            model.fit(ds, epochs=s["warmup_epochs"], verbose=0)
        start = time.perf_counter()
        hist = model.fit(ds, epochs=s["epochs"], verbose=0)
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "final_loss": float(hist.history["loss"][-1]),
            "parameters": int(model.count_params())}


def _time_generation(ctx, device, s):
    size = s["image_size"]
    with device:
        vae = FlowVAE(image_shape=(size, size, len(BANDS)), latent_dim=32)
        vae.build()
    out = {}
    for n in s["vae_images"]:
        fn = tf.function(lambda n=n: vae.generate(n))
        with device:
            for _ in range(2):  # warm-up: tracing and first runs
                fn().numpy()
            times = []
            for _ in range(s["vae_repeats"]):
                start = time.perf_counter()
                fn().numpy()
                times.append(time.perf_counter() - start)
        out[n] = float(np.median(times))
        ctx.log("[{}] generated {} images in {:.4f} s (median of {})".format(
            device.kind, n, out[n], s["vae_repeats"]))
    return out


def ratio_pair(kinds):
    """The two device kinds compared in the speed-ratio plot, or None for fewer than two.

    The paper compares GPU and IPU (R = t_GPU / t_IPU); the CPU is always
    benchmarked, so with a GPU and an IPU the pair is ("gpu", "ipu"), otherwise
    the CPU and the accelerator found.
    """
    kinds = list(kinds)
    if len(kinds) < 2:
        return None
    return kinds[-2], kinds[-1]


def speed_ratios(times_a, times_b):
    """{key: times_a[key] / times_b[key]} over the keys both have (R > 1: b is faster)."""
    return {k: times_a[k] / times_b[k] for k in times_a if k in times_b and times_b[k]}


def _plots(ctx, training, generation, kinds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, variant in zip(axes, ("deterministic", "bayesian")):
        for kind in kinds:
            points = sorted(training[kind][variant].items())
            if points:
                ax.plot([p[0] for p in points], [p[1]["seconds"] for p in points], "o-",
                        label=kind.upper())
        ax.set_xlabel("batch size")
        ax.set_ylabel("training time (s)")
        ax.set_title("{} estimator".format(variant))
        ax.legend()
    ctx.report.add_figure("training_time", fig,
                          "Training time for the timed epochs vs batch size (Figs. 2-3 left)")

    fig, ax = plt.subplots(figsize=(5, 4))
    for kind in kinds:
        points = sorted(generation[kind].items())
        ax.loglog([p[0] for p in points], [p[1] for p in points], "o-", label=kind.upper())
    ax.set_xlabel("number of images")
    ax.set_ylabel("generation time (s)")
    ax.legend()
    ctx.report.add_figure("generation_time", fig, "FlowVAE generation time (Fig. 4 left)")

    if ratio_pair(kinds):
        a, b = ratio_pair(kinds)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, variant in zip(axes[:2], ("deterministic", "bayesian")):
            ta = {k: v["seconds"] for k, v in training[a][variant].items()}
            tb = {k: v["seconds"] for k, v in training[b][variant].items()}
            ratio = sorted(speed_ratios(ta, tb).items())
            ax.plot([r[0] for r in ratio], [r[1] for r in ratio], "o-")
            ax.axhline(1.0, color="red")
            ax.set_xlabel("batch size")
            ax.set_ylabel("R = t_{} / t_{}".format(a.upper(), b.upper()))
            ax.set_title(variant)
        ratio = sorted(speed_ratios(generation[a], generation[b]).items())
        axes[2].semilogx([r[0] for r in ratio], [r[1] for r in ratio], "o-")
        axes[2].axhline(1.0, color="red")
        axes[2].set_xlabel("number of images")
        axes[2].set_title("generation")
        ctx.report.add_figure("speed_ratio", fig, "Speed ratios between {} and {} (Figs. 2-4 "
                              "right)".format(a.upper(), b.upper()))
    else:
        ctx.report.add_text("Only one device kind was found ({}), so there is no speed-ratio "
                            "plot; run on a machine with a GPU or Graphcore IPUs to get one."
                            .format(kinds[0].upper()))


def run(ctx):
    s = _settings(ctx)
    kinds, found = _device_kinds(s["devices"])
    ctx.log("devices found: {}; benchmarking: {}".format(found, kinds))
    x, y = _load_data(ctx, s)
    training, generation = {}, {}
    for kind in kinds:
        device = _Device(kind)
        training[kind] = {"deterministic": {}, "bayesian": {}}
        for variant, sizes in (("deterministic", s["batch_sizes"]),
                               ("bayesian", s["bnn_batch_sizes"])):
            for bs in sizes:
                result = _time_training(ctx, device, variant == "bayesian", bs, x, y, s)
                if result is None:
                    continue
                training[kind][variant][bs] = result
                ctx.log("[{}] {} batch {}: {:.2f} s for {} epoch(s), loss {:.3f}".format(
                    kind, variant, bs, result["seconds"], s["epochs"], result["final_loss"]))
        generation[kind] = _time_generation(ctx, device, s)

    rows = []
    for kind in kinds:
        for variant in ("deterministic", "bayesian"):
            for bs, r in sorted(training[kind][variant].items()):
                rows.append([kind.upper(), variant, bs, r["parameters"], r["seconds"],
                             r["final_loss"]])
    ctx.report.add_text(
        "Training: {} galaxies, {} warm-up epoch(s) then {} timed epoch(s) per batch size "
        "(the paper: 100 epochs after 10 warm-up epochs on a V100 GPU and a GC2 IPU). The "
        "Bayesian loss includes the KL term of Eq. 2 scaled by 1/N; with few galaxies and the "
        "small initial posterior scales it dominates the loss (the timing is what is "
        "measured here).".format(s["num_galaxies"], s["warmup_epochs"], s["epochs"]))
    ctx.report.add_table("Training time", ["device", "model", "batch size", "parameters",
                                           "time (s)", "final loss"], rows)
    gen_rows = [[kind.upper(), n, t, n / t] for kind in kinds
                for n, t in sorted(generation[kind].items())]
    ctx.report.add_table("FlowVAE generation", ["device", "images", "time (s)", "images / s"],
                         gen_rows)
    _plots(ctx, training, generation, kinds)
    ratios = {}
    if ratio_pair(kinds):
        a, b = ratio_pair(kinds)
        ratios = {variant: speed_ratios(
            {k: v["seconds"] for k, v in training[a][variant].items()},
            {k: v["seconds"] for k, v in training[b][variant].items()})
            for variant in ("deterministic", "bayesian")}
        ratios["generation"] = speed_ratios(generation[a], generation[b])
    ctx.report.add_metrics({"settings": {k: v for k, v in s.items() if k != "cache_dir"},
                            "devices": found, "kinds": kinds, "training": training,
                            "generation": generation, "speed_ratios": ratios,
                            "speed_ratio_pair": list(ratio_pair(kinds) or ())})
