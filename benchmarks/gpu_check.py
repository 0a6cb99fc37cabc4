"""One short, prepared check on a GPU machine: several GPUs, mixed precision, XLA.

Three phases, each bounded in time; a table is printed and a JSON written (--out):

1. galaxy: `galaxy_shape_estimator` (deterministic by default) trained on the built-in
   GalSim galaxies (`keras_efficient.data.make_galaxies`; random images of the same shape
   when GalSim is not installed, recorded as such) under `tf.distribute.MirroredStrategy`
   over all visible GPUs (`get_strategy("gpu")`) against one GPU (`OneDeviceStrategy`).
   The per-replica batch is fixed, so the global batch grows with the replica count;
   steps/s, examples/s and their ratios. With one GPU visible the multi-GPU row equals
   the one-GPU row and is not run.
2. mixed: the same estimator on one GPU, `mixed_float16` against float32: the ratio of
   train-step times and whether every loss stayed finite.
3. adl: train step of AdaptiveDropout against keras Dropout in the same model, compiled
   with `jit_compile=True`: the Dense model (Input -> Dense -> site -> Dense) and the
   ConformerBlock comparison of `benchmarks/adaptive_dropout_train_step.py` (its presets
   and its Dropout-sites block, imported); whether XLA compiled each step.

Warm-up (tracing, XLA compilation: two blocks of steps per variant) is excluded; the
variants then alternate block by block (`_timing.interleaved_medians`), median reported.
Each phase has a budget: after warm-up it runs as many timed rounds as fit (at least one,
at most --repeats). A watchdog writes the partial JSON and exits with code 3 when a phase
overruns its budget by --grace seconds (a hung compile, say) or the run passes
--max-seconds. A phase that raises is recorded (and printed) and the next phase still runs.

Without a GPU it refuses (exit code 2) unless --allow-cpu: CPU numbers are not GPU
numbers, and the multi-device row then runs MirroredStrategy on two logical CPUs that
share the same cores (it exercises the mirrored path, it measures no speed-up).
--dry-run is --tiny --allow-cpu: every phase end to end at tiny sizes, on whatever is there.

Usage: python benchmarks/gpu_check.py [--out gpu_check.json] [--tiny] [--allow-cpu]
           [--dry-run] [--phases galaxy,mixed,adl] [--repeats N] [--grace S]
           [--max-seconds S]
           [--galaxy-variant deterministic|flipout|reparameterization]
           [--data auto|galsim|random] [--cache-dir DIR]
Exit codes: 0 every phase ran, 1 a phase raised, 2 no GPU (without --allow-cpu),
3 the watchdog stopped a phase.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402

from _timing import interleaved_medians, machine_info  # noqa: E402  (beside this script)

PHASES = ("galaxy", "mixed", "adl")
VARIANTS = ("deterministic", "flipout", "reparameterization")

# *_steps: train steps per timed block; budgets: seconds per phase, warm-up included
# (tiny: sized for a busy 2-core CPU, where mixed_float16 takes seconds per step).
SIZES = {
    "default": dict(galaxies=128, galaxy_batch=64, galaxy_steps=20, mixed_steps=20,
                    layer_batch=256, preset="conformer_l", block_shape=None, adl_steps=10,
                    repeats=5, budgets=dict(galaxy=90, mixed=60, adl=100)),
    "tiny": dict(galaxies=8, galaxy_batch=4, galaxy_steps=2, mixed_steps=1, layer_batch=32,
                 preset="small", block_shape=(2, 16), adl_steps=2, repeats=2,
                 budgets=dict(galaxy=60, mixed=90, adl=120)),
}

_T0 = time.perf_counter()


def log(message):
    print("[{:6.1f} s] {}".format(time.perf_counter() - _T0, message), flush=True)


def write_json(results, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, path)


class Watchdog:
    """Writes the partial results and ends the process when a phase overruns."""

    def __init__(self, results, out, grace, max_seconds):
        self.results, self.out, self.grace = results, out, grace
        self.end = _T0 + max_seconds
        self.phase, self.deadline = None, None
        threading.Thread(target=self._watch, daemon=True).start()

    def start(self, phase, budget):
        self.phase = phase
        self.deadline = min(time.perf_counter() + budget + self.grace, self.end)

    def stop(self):
        self.deadline = None

    def _watch(self):
        while True:
            time.sleep(1.0)
            deadline = self.deadline
            if deadline is not None and time.perf_counter() > deadline:
                message = ("phase {!r} ran past its budget + {:.0f} s grace or the run's "
                           "--max-seconds; stopped".format(self.phase, self.grace))
                self.results["aborted"] = message
                log("WATCHDOG: " + message + "; partial results in " + self.out)
                try:
                    write_json(self.results, self.out)
                finally:
                    os._exit(3)


def _nvidia_smi():
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines() if done.returncode == 0 else None


def _keras_version():
    try:
        return keras.__version__
    except AttributeError:  # TensorFlow 2.14's tf.keras: the version is the keras package's
        import keras as keras_package

        return keras_package.__version__


def device_info():
    """Devices, TensorFlow and CUDA build, after the logical devices are configured."""
    info = machine_info()
    build = tf.sysconfig.get_build_info()
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": device.name, "device_name": details.get("device_name"),
                     "compute_capability": details.get("compute_capability")})
    info.update(python=platform.python_version(), keras=_keras_version(),
                cuda_build=tf.test.is_built_with_cuda(), cuda_version=build.get("cuda_version"),
                cudnn_version=build.get("cudnn_version"), gpus=gpus,
                logical_devices=[d.name for d in tf.config.list_logical_devices()],
                nvidia_smi=_nvidia_smi())
    return info


def _train_block(model, iterator, steps, losses):
    """A callable running `steps` train steps; it waits for the last loss."""
    step = model.make_train_function()

    def block():
        for _ in range(steps):
            logs = step(iterator)
            losses.append(logs["loss"])
        float(logs["loss"])
    return block


def _measure(fns, repeats, deadline):
    """Two warm-up blocks per variant, then interleaved timed rounds that fit the deadline."""
    first, round_s = {}, 0.0
    for key, fn in fns.items():
        start = time.perf_counter()
        fn()
        first[key] = time.perf_counter() - start
    for fn in fns.values():
        start = time.perf_counter()
        fn()
        round_s += time.perf_counter() - start
    fit = int((deadline - time.perf_counter()) // max(round_s, 1e-9))
    rounds = max(1, min(repeats, fit))
    return interleaved_medians(fns, rounds), first, rounds


def _finite(losses):
    return bool(np.all(np.isfinite([float(v) for v in losses])))


_GALAXIES = {}


def _galaxy_data(num, args):
    """(images / 400, targets, source); random arrays when GalSim is missing (--data auto)."""
    if num not in _GALAXIES:
        _GALAXIES[num] = _make_galaxy_data(num, args)
    return _GALAXIES[num]


def _make_galaxy_data(num, args):
    from keras_efficient.data import make_galaxies

    use_galsim = args.data == "galsim"
    if args.data == "auto":
        try:
            import galsim  # noqa: F401
            use_galsim = True
        except ImportError:
            pass
    if use_galsim:
        data = make_galaxies(num, seed=0, cache_dir=args.cache_dir, batch_size=max(1, num // 4))
        return data["images"] / 400.0, data["targets"], "GalSim (make_galaxies, seed 0)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num, 64, 64, 6)).astype(np.float32)
    y = (0.2 * rng.standard_normal((num, 2))).astype(np.float32)
    why = "--data random" if args.data == "random" else "GalSim not installed"
    return x, y, "random N(0, 1) images ({})".format(why)


def _galaxy_model(args, num):
    from keras_efficient.losses import NegativeLogLikelihood
    from keras_efficient.models import galaxy_shape_estimator

    bayesian = args.galaxy_variant != "deterministic"
    estimator = args.galaxy_variant if bayesian else "flipout"
    model = galaxy_shape_estimator(bayesian=bayesian, estimator=estimator, num_train_examples=num)
    model.compile(keras.optimizers.Adam(1e-4), loss=NegativeLogLikelihood())
    return model


def _devices():
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return gpus, [d.name for d in tf.config.list_logical_devices("CPU")]


def phase_galaxy(args, sizes, deadline):
    from keras_efficient.distribute import get_strategy

    x, y, source = _galaxy_data(sizes["galaxies"], args)
    log("galaxy: {} examples, {}".format(len(x), source))
    gpus, cpus = _devices()
    one = tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    if len(gpus) > 1:
        multi, multi_label = get_strategy("gpu"), "MirroredStrategy, {} GPUs".format(len(gpus))
    elif gpus:
        multi, multi_label = None, None
    else:
        multi, multi_label = get_strategy("cpu", num_devices=2), \
            "MirroredStrategy, 2 logical CPUs (same cores)"
    strategies = {"one_device": one}
    if multi is not None:
        strategies["mirrored"] = multi
    per_replica = sizes["galaxy_batch"]
    steps = sizes["galaxy_steps"]
    fns, losses, info = {}, {}, {}
    for key, strategy in strategies.items():
        replicas = strategy.num_replicas_in_sync
        global_batch = per_replica * replicas
        with strategy.scope():
            model = _galaxy_model(args, len(x))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
            global_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        losses[key] = []
        fns[key] = _train_block(model, iterator, steps, losses[key])
        info[key] = {"strategy": type(strategy).__name__, "replicas": replicas,
                     "global_batch": global_batch,
                     "devices": list(getattr(strategy.extended, "worker_devices", []))}
    log("galaxy: {} model ({:,} parameters), per-replica batch {}, {} steps per block; "
        "warm-up".format(args.galaxy_variant, model.count_params(), per_replica, steps))
    medians, first, rounds = _measure(fns, sizes["repeats"], deadline)
    out = {"data": source, "variant": args.galaxy_variant, "steps_per_block": steps,
           "rounds": rounds, "per_replica_batch": per_replica}
    for key, median in medians.items():
        row = dict(info[key], steps_per_s=steps / median, s_per_step=median / steps,
                   examples_per_s=steps * info[key]["global_batch"] / median,
                   first_block_s=first[key], loss_finite=_finite(losses[key]),
                   last_loss=float(losses[key][-1]))
        out[key] = row
        log("galaxy: {:10s} {:.2f} steps/s, {:.1f} examples/s".format(
            key, row["steps_per_s"], row["examples_per_s"]))
    if multi is None:
        out["mirrored"] = {"same_as_one_device": True,
                           "note": "one GPU visible: the multi-GPU row equals the one-GPU row"}
    else:
        out["mirrored"]["label"] = multi_label
        out["ratio_steps_per_s"] = out["mirrored"]["steps_per_s"] / out["one_device"]["steps_per_s"]
        out["ratio_examples_per_s"] = (out["mirrored"]["examples_per_s"]
                                       / out["one_device"]["examples_per_s"])
    return out


def phase_mixed(args, sizes, deadline):
    x, y, source = _galaxy_data(sizes["galaxies"], args)
    gpus, cpus = _devices()
    strategy = tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    batch, steps = sizes["galaxy_batch"], sizes["mixed_steps"]
    previous = keras.mixed_precision.global_policy()
    fns, losses, models = {}, {}, {}
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            with strategy.scope():
                models[policy] = _galaxy_model(args, len(x))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
            batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        losses[policy] = []
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        fns[policy] = _train_block(models[policy], iterator, steps, losses[policy])
    log("mixed: float32 vs mixed_float16 on {}, batch {}, {} steps per block; warm-up".format(
        strategy.extended.worker_devices[0], batch, steps))
    medians, first, rounds = _measure(fns, sizes["repeats"], deadline)
    out = {"data": source, "device": strategy.extended.worker_devices[0], "batch": batch,
           "steps_per_block": steps, "rounds": rounds}
    for policy, median in medians.items():
        optimizer = models[policy].optimizer
        row = {"s_per_step": median / steps, "first_block_s": first[policy],
               "loss_finite": _finite(losses[policy]), "first_loss": float(losses[policy][0]),
               "last_loss": float(losses[policy][-1]), "optimizer": type(optimizer).__name__}
        if hasattr(optimizer, "loss_scale"):
            row["final_loss_scale"] = float(optimizer.loss_scale)
        out[policy] = row
        log("mixed: {:13s} {:.2f} ms/step, losses finite: {}".format(
            policy, 1e3 * row["s_per_step"], row["loss_finite"]))
    out["ratio_mixed_to_float32"] = medians["mixed_float16"] / medians["float32"]
    return out


def _xla_marked(model):
    """True when the traced Keras train function holds a must-compile (XLA) call."""
    function = model.train_function
    try:
        concrete = function._list_all_concrete_functions()  # private; best effort
    except AttributeError:
        return None
    for fn in concrete:
        graph_def = fn.graph.as_graph_def()
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        if any(n.attr["_XlaMustCompile"].b for n in nodes if "_XlaMustCompile" in n.attr):
            return True
    return False


def _xla_lowers(model, x, y):
    """Whether the train step lowers to XLA HLO (a new trace; not timed)."""
    try:
        step = tf.function(model.train_step, jit_compile=True)
        hlo = step.experimental_get_compiler_ir((tf.constant(x), tf.constant(y)))(stage="hlo")
        return True, hlo.count("\n")
    except Exception as error:  # noqa: BLE001  (recorded, not fatal)
        return False, repr(error)[:300]


def phase_adl(args, sizes, deadline):
    from adaptive_dropout_train_step import PRESETS, _dropout_sites_block
    from keras_efficient.layers import AdaptiveDropout, ConformerBlock

    rng = np.random.default_rng(0)
    steps = sizes["adl_steps"]
    dims, shape = PRESETS[sizes["preset"]]
    batch, frames = sizes["block_shape"] or shape
    xl = rng.standard_normal((sizes["layer_batch"], 512)).astype(np.float32)
    yl = rng.standard_normal((sizes["layer_batch"], 64)).astype(np.float32)
    xb = rng.standard_normal((batch, frames, dims["model_dim"])).astype(np.float32)

    def layer_model(site):
        inp = keras.Input((512,))
        h = keras.layers.Dense(1024, activation="relu")(inp)
        return keras.Model(inp, keras.layers.Dense(64)(site(h)))

    def block_model(block):
        inp = keras.Input(xb.shape[1:])
        return keras.Model(inp, block(inp))

    comparisons = {
        "layer": ((xl, yl), {
            "adaptive_dropout": lambda: layer_model(AdaptiveDropout(seed=0)),
            "keras_dropout": lambda: layer_model(keras.layers.Dropout(0.1))}),
        "conformer_block": ((xb, xb), {
            "adaptive_dropout": lambda: block_model(
                ConformerBlock(dropout_rate=0.1, seed=0, **dims)),
            "keras_dropout": lambda: block_model(_dropout_sites_block(rate=0.1, **dims))}),
    }
    out = {"jit_compile": True, "preset": dict(dims, name=sizes["preset"], batch=batch,
                                               frames=frames),
           "layer_batch": sizes["layer_batch"], "steps_per_block": steps}
    start = time.perf_counter()
    for index, (name, ((x, y), makers)) in enumerate(comparisons.items()):
        # The layer comparison gets a third of the phase's remaining time, the block the rest.
        share = 1.0 / 3.0 if index == 0 else 1.0
        until = time.perf_counter() + share * (deadline - time.perf_counter())
        fns, models, losses = {}, {}, {}
        for key, make in makers.items():
            models[key] = make()
            models[key].compile(keras.optimizers.Adam(1e-3), "mse", jit_compile=True)
            losses[key] = []
            data = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
            fns[key] = _train_block(models[key], data, steps, losses[key])
        log("adl: {} ({} steps per block, jit_compile=True); warm-up and XLA compilation".format(
            name, steps))
        medians, first, rounds = _measure(fns, sizes["repeats"], until)
        result = {"rounds": rounds}
        for key, median in medians.items():
            lowered, detail = _xla_lowers(models[key], x, y)
            marked = _xla_marked(models[key])
            result[key] = {"s_per_step": median / steps, "first_block_s": first[key],
                           "loss_finite": _finite(losses[key]),
                           "keras_jit_compile": bool(models[key].jit_compile),
                           "xla_must_compile_in_graph": marked, "hlo_lowers": lowered,
                           "hlo_lines" if lowered else "hlo_error": detail,
                           "xla_compiled": bool(models[key].jit_compile and marked and lowered)}
        result["ratio"] = medians["adaptive_dropout"] / medians["keras_dropout"]
        out[name] = result
        log("adl: {:15s} ADL {:.3f} ms/step, Dropout {:.3f} ms/step, ratio {:.3f}, "
            "XLA compiled: {}/{}".format(
                name, 1e3 * result["adaptive_dropout"]["s_per_step"],
                1e3 * result["keras_dropout"]["s_per_step"], result["ratio"],
                result["adaptive_dropout"]["xla_compiled"],
                result["keras_dropout"]["xla_compiled"]))
        keras.backend.clear_session()
    out["seconds"] = time.perf_counter() - start
    return out


def table(results):
    """The printed summary: (phase, what, value) rows."""
    rows = []
    unit = "GPU" if results["machine"]["gpus"] else "CPU device"
    g = results["phases"].get("galaxy")
    if g and "error" not in g:
        one = g["one_device"]
        rows.append(("galaxy", "1 {} (batch {})".format(unit, one["global_batch"]),
                     "{:.2f} steps/s, {:.1f} ex/s".format(one["steps_per_s"],
                                                          one["examples_per_s"])))
        m = g["mirrored"]
        if m.get("same_as_one_device"):
            rows.append(("galaxy", "all GPUs (1 visible)", "= the 1 GPU row"))
        else:
            rows.append(("galaxy", "{} (batch {})".format(m["label"], m["global_batch"]),
                         "{:.2f} steps/s, {:.1f} ex/s".format(m["steps_per_s"],
                                                              m["examples_per_s"])))
            rows.append(("galaxy", "ratio mirrored / 1 device",
                         "steps/s {:.2f}x, examples/s {:.2f}x".format(
                             g["ratio_steps_per_s"], g["ratio_examples_per_s"])))
    m = results["phases"].get("mixed")
    if m and "error" not in m:
        for policy in ("float32", "mixed_float16"):
            rows.append(("mixed", policy, "{:.2f} ms/step, losses finite: {}".format(
                1e3 * m[policy]["s_per_step"], m[policy]["loss_finite"])))
        rows.append(("mixed", "ratio mixed / float32", "{:.2f}x".format(
            m["ratio_mixed_to_float32"])))
    a = results["phases"].get("adl")
    if a and "error" not in a:
        for name in ("layer", "conformer_block"):
            r = a[name]
            rows.append(("adl (XLA)", name + " ADL / Dropout",
                         "{:.3f} / {:.3f} ms, ratio {:.3f}, XLA compiled: {}".format(
                             1e3 * r["adaptive_dropout"]["s_per_step"],
                             1e3 * r["keras_dropout"]["s_per_step"], r["ratio"],
                             "yes" if r["adaptive_dropout"]["xla_compiled"]
                             and r["keras_dropout"]["xla_compiled"] else "NO")))
    for phase, result in results["phases"].items():
        if "error" in result:
            rows.append((phase, "ERROR", result["error"].splitlines()[-1][:90]))
    width = [max(len(r[i]) for r in rows) for i in range(2)] if rows else [0, 0]
    return "\n".join("{:{}}  {:{}}  {}".format(r[0], width[0], r[1], width[1], r[2])
                     for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds per phase)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without a GPU (CPU numbers are not GPU numbers)")
    parser.add_argument("--dry-run", action="store_true", help="--tiny --allow-cpu")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--repeats", type=int, default=None, help="most timed rounds per phase")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds past a phase's budget before the watchdog stops it")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="the watchdog stops any phase still running this long after start "
                        "(default 480 on a GPU, 900 with --allow-cpu)")
    parser.add_argument("--galaxy-variant", choices=VARIANTS, default="deterministic")
    parser.add_argument("--data", choices=("auto", "galsim", "random"), default="auto")
    parser.add_argument("--cache-dir", default=None, help="cache of the rendered galaxies")
    args = parser.parse_args()
    if args.dry_run:
        args.tiny = args.allow_cpu = True
    if args.max_seconds is None:
        args.max_seconds = 900.0 if args.allow_cpu else 480.0
    phases = [p for p in args.phases.split(",") if p]
    for p in phases:
        if p not in PHASES:
            parser.error("unknown phase {!r}; expected some of {}".format(p, ", ".join(PHASES)))
    sizes = dict(SIZES["tiny" if args.tiny else "default"])
    if args.repeats is not None:
        sizes["repeats"] = max(1, args.repeats)

    gpus = tf.config.list_physical_devices("GPU")  # does not start the runtime
    if not gpus and not args.allow_cpu:
        sys.stderr.write(
            "gpu_check: refusing: TensorFlow {} sees no GPU (CUDA build: {}). Install the "
            "CUDA wheels (current line: `pip install -e \".[gpu]\"`; 2.14 line: "
            "`pip install \"tensorflow[and-cuda]==2.14.1\"`), check `nvidia-smi` and "
            "CUDA_VISIBLE_DEVICES; or pass --allow-cpu (or --dry-run = --tiny --allow-cpu) "
            "to run the same checks on the CPU, whose numbers are not GPU numbers.\n".format(
                tf.__version__, tf.test.is_built_with_cuda()))
        return 2
    if gpus:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    else:
        from keras_efficient.testing.devices import configure_logical_cpus

        configure_logical_cpus(2)  # before the runtime starts: MirroredStrategy on 2 replicas
    keras.utils.set_random_seed(0)
    results = {"benchmark": "gpu_check", "mode": "tiny" if args.tiny else "default",
               "on_gpu": bool(gpus), "sizes": sizes, "machine": device_info(), "phases": {}}
    log("TensorFlow {}, Keras {}, GPUs: {}; mode {}{}".format(
        tf.__version__, results["machine"]["keras"],
        [g["device_name"] for g in results["machine"]["gpus"]] or "none",
        results["mode"], "" if gpus else " ON CPU (--allow-cpu): not GPU numbers"))
    watchdog = Watchdog(results, args.out, args.grace, args.max_seconds)
    runners = {"galaxy": phase_galaxy, "mixed": phase_mixed, "adl": phase_adl}
    failed = False
    for number, phase in enumerate(phases, start=1):
        budget = sizes["budgets"][phase]
        log("phase {}/{} {} (budget {} s)".format(number, len(phases), phase, budget))
        start = time.perf_counter()
        watchdog.start(phase, budget)
        try:
            results["phases"][phase] = runners[phase](args, sizes, start + budget)
        except Exception:  # noqa: BLE001  (recorded; the next phase still runs)
            failed = True
            results["phases"][phase] = {"error": traceback.format_exc()}
            log("phase {} FAILED:\n{}".format(phase, results["phases"][phase]["error"]))
        finally:
            watchdog.stop()
            keras.backend.clear_session()
        results["phases"][phase]["phase_seconds"] = time.perf_counter() - start
        write_json(results, args.out)
    results["total_seconds"] = time.perf_counter() - _T0
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    write_json(results, args.out)
    print(table(results))
    log("wrote {}".format(args.out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
