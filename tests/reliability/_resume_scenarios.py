"""Interrupted-and-rebuilt vs uninterrupted training, run in a subprocess by test_resume.py.

`tf.config.experimental.enable_op_determinism()` cannot be switched off again
in a process, so each scenario runs in its own interpreter:

    python _resume_scenarios.py SCENARIO WORKDIR

and prints one JSON object per variant: the largest absolute weight difference
between an uninterrupted 4-epoch fit and a fit that raises in epoch 2 and is
then resumed with `keras.callbacks.BackupAndRestore` by a model, data pipeline
and callbacks rebuilt from scratch (as a restarted process would), plus
bookkeeping that shows the resume really happened.
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402
from keras_efficient.callbacks import StochasticWeightAveraging  # noqa: E402
from keras_efficient.data.minibatch_dropping import (  # noqa: E402
    drop_minibatches,
    smd_steps_per_epoch,
)
from keras_efficient.layers import AdaptiveDropout  # noqa: E402
from keras_efficient.schedules import RetentionTargetSchedule  # noqa: E402

EPOCHS, CRASH_EPOCH, CRASH_BATCH = 4, 2, 3


class _Crash(Exception):
    pass


class _CrashIn(keras.callbacks.Callback):
    """Raises in the middle of epoch `CRASH_EPOCH` (after batch `CRASH_BATCH`)."""

    def __init__(self):
        super().__init__()
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == CRASH_EPOCH and batch >= CRASH_BATCH:
            raise _Crash("simulated failure")


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, :2].sum(axis=1, keepdims=True) + 0.1 * rng.normal(size=(64, 1))).astype(np.float32)
    return x, y


def _model(jit=False, steps_per_execution=1):
    """Dense -> AdaptiveDropout(seed) -> Dense, SGD with momentum; a fresh process's build."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, name="d1")(inp)
    h = AdaptiveDropout(RetentionTargetSchedule(1.0, -1.0, 40), alpha=1e-3, gamma=1e-2, seed=3,
                        name="adl")(h)
    model = keras.Model(inp, keras.layers.Dense(1, name="d2")(h))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse", jit_compile=jit,
                  steps_per_execution=steps_per_execution)
    return model


def _fit(model, backup_dir, crash, extra=(), smd=False):
    x, y = _data()
    callbacks, epochs = _callbacks(backup_dir, crash, extra)
    if smd:
        base = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        if smd == "repeat":  # the plain stream: its pass counter lives in the dataset object
            train = drop_minibatches(base, 0.5, seed=4).repeat()
        else:
            train = drop_minibatches(base, 0.5, seed=4, position=model.optimizer.iterations)
        kwargs = dict(steps_per_epoch=smd_steps_per_epoch(8, 0.5))
        model.fit(train, epochs=EPOCHS, verbose=0, callbacks=callbacks, **kwargs)
    else:
        model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
                  callbacks=callbacks)
    return epochs.seen


def _compare(workdir, build, extra=lambda: (), smd=False, order="bnr-first"):
    """Uninterrupted vs crashed + rebuilt + resumed; returns the report of one variant."""
    reference = build()
    _fit(reference, None, crash=False, extra=extra(), smd=smd)
    want = [w.numpy() for w in reference.weights]

    backup = os.path.join(workdir, "backup")
    shutil.rmtree(backup, ignore_errors=True)
    first = build()
    callbacks = extra()
    try:
        _fit(first, backup, crash=True, extra=callbacks, smd=smd) if order == "bnr-first" else \
            _fit_swa_first(first, backup, callbacks, crash=True, smd=smd)
        crashed = False
    except _Crash:
        crashed = True
    resumed = build()  # everything rebuilt
    callbacks = extra()
    if order == "bnr-first":
        seen = _fit(resumed, backup, crash=False, extra=callbacks, smd=smd)
    else:
        seen = _fit_swa_first(resumed, backup, callbacks, crash=False, smd=smd)
    got = [w.numpy() for w in resumed.weights]
    report = {
        "crashed": crashed,
        "resumed_epochs": seen,
        "max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(want, got))),
        "step": int(resumed.get_layer("adl").step),
        "reference_step": int(reference.get_layer("adl").step),
        "iterations": int(resumed.optimizer.iterations.numpy()),
        "reference_iterations": int(reference.optimizer.iterations.numpy()),
    }
    swa = [c for c in callbacks if isinstance(c, StochasticWeightAveraging)]
    if swa:
        report["snapshots"] = swa[0].num_snapshots
    return report


def _fit_swa_first(model, backup, callbacks, crash, smd):
    """As `_fit`, with the SWA callback listed before BackupAndRestore."""
    x, y = _data()
    epochs = _Epochs()
    cbs = list(callbacks) + [keras.callbacks.BackupAndRestore(backup), epochs]
    if crash:
        cbs.append(_CrashIn())
    model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=cbs)
    return epochs.seen


# ---------------------------------------------------------------- general scenarios


def _resume(workdir, build, fit, summary):
    """Uninterrupted vs crashed + rebuilt + resumed, for any `build()` / `fit(...)`.

    `fit(model, backup_dir, crash)` returns (epochs seen, callbacks); `summary(model,
    callbacks)` returns a dict of what must match (compared by the test).
    """
    reference = build()
    _, ref_callbacks = fit(reference, None, False)
    want = [w.numpy() for w in reference.weights]
    backup = os.path.join(workdir, "backup")
    shutil.rmtree(backup, ignore_errors=True)
    try:
        fit(build(), backup, True)
        crashed = False
    except _Crash:
        crashed = True
    resumed = build()
    seen, callbacks = fit(resumed, backup, False)
    got = [w.numpy() for w in resumed.weights]
    assert len(want) == len(got)
    return {
        "crashed": crashed,
        "resumed_epochs": seen,
        "max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(want, got))),
        "iterations": int(resumed.optimizer.iterations.numpy()),
        "reference_iterations": int(reference.optimizer.iterations.numpy()),
        "summary": summary(resumed, callbacks),
        "reference_summary": summary(reference, ref_callbacks),
    }


def _callbacks(backup_dir, crash, extra):
    epochs = _Epochs()
    callbacks = list(extra) + [epochs]
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
    if crash:
        callbacks.append(_CrashIn())
    return callbacks, epochs


def _image_data(n=64, size=8, classes=3):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 0, 1] > 1)
    return x, np.minimum(y, classes - 1).astype(np.int64)


def _gated_model(budget=False):
    """Gated ResNet-14 (SLU) converted to PSG, SGD with momentum.

    With `budget`: gates forced open for the first 3 steps and a skip budget
    (`training.skip_budget`, target 0.4) on the converted model.
    """
    from keras_efficient.models import gated_resnet
    from keras_efficient.training import convert_to_psg

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    extra = dict(open_steps=3) if budget else {}
    model = gated_resnet(depth=14, num_classes=3, input_shape=(8, 8, 3), base_filters=4,
                         gate_bias=0.2, flops_weight=0.05, **extra)
    model = convert_to_psg(model, include=lambda layer: layer.name != "logits")
    if budget:
        from keras_efficient.training import skip_budget
        skip_budget(model, 0.4)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _gated_fit(model, backup_dir, crash):
    """SMD (position-keyed) + SWA (with BatchNorm re-estimation) + DropCounter + ComputeMeter."""
    from keras_efficient.callbacks import ComputeMeter
    from keras_efficient.data.minibatch_dropping import DropCounter

    x, y = _image_data()
    base = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    counter = DropCounter()
    train = drop_minibatches(base, 0.5, seed=4, counter=counter,
                             position=model.optimizer.iterations)
    extra = [StochasticWeightAveraging(start_epoch=1, data=base),
             ComputeMeter(batch_size=8, drop_counter=counter)]
    callbacks, epochs = _callbacks(backup_dir, crash, extra)
    model.fit(train, epochs=EPOCHS, steps_per_epoch=smd_steps_per_epoch(8, 0.5), verbose=0,
              callbacks=callbacks)
    return epochs.seen, extra + [counter]


def _gated_summary(model, callbacks):
    swa, meter, counter = callbacks
    totals = meter.totals
    budget = model._lookup_dependency("skip_budget")
    return {"skip_budget": None if budget is None else
            [np.asarray(v.numpy()).tolist() for v in budget.variables],
            "snapshots": swa.num_snapshots,
            "counter": counter.result(),
            "meter": {k: totals[k] for k in ("steps", "nominal_steps", "executed_macs",
                                             "accounted_macs", "energy_pj", "skip_ratio")},
            "meter_by_precision": totals["macs_by_precision"],
            "open_fraction": [float(layer.open_fraction.numpy()) for layer in model.layers
                              if hasattr(layer, "open_fraction")]}


def _no_read_ahead(dataset):
    """Without tf.data's injected prefetch the counter counts exactly the consumed batches."""
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return dataset.with_options(options)


def _meter_fit(model, backup_dir, crash):
    """The ADL model on a position-keyed SMD stream with a DropCounter and a ComputeMeter."""
    from keras_efficient.callbacks import ComputeMeter
    from keras_efficient.data.minibatch_dropping import DropCounter

    x, y = _data()
    base = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    counter = DropCounter()
    train = _no_read_ahead(drop_minibatches(base, 0.5, seed=4, counter=counter,
                                            position=model.optimizer.iterations))
    meter = ComputeMeter(batch_size=8, drop_counter=counter)
    callbacks, epochs = _callbacks(backup_dir, crash, [meter])
    model.fit(train, epochs=EPOCHS, steps_per_epoch=smd_steps_per_epoch(8, 0.5), verbose=0,
              callbacks=callbacks)
    return epochs.seen, [meter, counter]


def _meter_summary(model, callbacks):
    meter, counter = callbacks
    totals = meter.totals
    return {"counter": counter.result(),
            "meter": {k: totals[k] for k in ("steps", "nominal_steps", "executed_macs",
                                             "standard_macs", "energy_pj")},
            "per_layer": dict(meter.per_layer),
            "history_epochs": len(meter.history)}


class _KillIn(_CrashIn):
    """Kills its own process with SIGKILL in epoch `CRASH_EPOCH`: no cleanup at all."""

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == CRASH_EPOCH and batch >= CRASH_BATCH:
            import signal
            os.kill(os.getpid(), signal.SIGKILL)


def _killed_run(workdir, mode):
    """One process of the SIGKILL scenario: `reference`, `killed` (dies) or `restarted`.

    The ADL model on a position-keyed SMD stream with SWA; the final weights and
    bookkeeping go to WORKDIR/MODE.npz / the RESULT line.
    """
    model = _model()
    x, y = _data()
    base = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    train = drop_minibatches(base, 0.5, seed=4, position=model.optimizer.iterations)
    epochs = _Epochs()
    swa = StochasticWeightAveraging(start_epoch=1, reestimate_bn=False)
    callbacks = [swa, epochs]
    if mode != "reference":
        callbacks.insert(0, keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")))
    if mode == "killed":
        callbacks.append(_KillIn())
    model.fit(train, epochs=EPOCHS, steps_per_epoch=smd_steps_per_epoch(8, 0.5), verbose=0,
              callbacks=callbacks)
    np.savez(os.path.join(workdir, mode + ".npz"), *[w.numpy() for w in model.weights])
    return {"epochs": epochs.seen, "iterations": int(model.optimizer.iterations.numpy()),
            "step": int(model.get_layer("adl").step), "snapshots": swa.num_snapshots}


def _conformer_model(dropout_rate=0.0):
    """Frames -> adaptive ConformerBlock (5 ADL sites) -> pooled logits, with a parameter budget."""
    from keras_efficient.layers import ConformerBlock
    from keras_efficient.pruning import parameter_budget

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    h = ConformerBlock(8, 2, 16, 3, dropout_rate=dropout_rate, adaptive=True,
                       schedule=RetentionTargetSchedule(1.0, -1.0, 10), alpha=1e-3, gamma=1e-2,
                       seed=5, name="conformer")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(h))
    parameter_budget(model, 0.6, settle_step=6)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _conformer_fit(model, backup_dir, crash):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6, 8)).astype(np.float32)
    y = np.argmax(x.mean(axis=1)[:, :3], axis=-1).astype(np.int64)
    callbacks, epochs = _callbacks(backup_dir, crash, [])
    model.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    return epochs.seen, []


def _conformer_summary(model, callbacks):
    from keras_efficient.pruning import count_parameters
    from keras_efficient.pruning.budget import get_parameter_budget

    budget = get_parameter_budget(model)
    steps = [int(layer.step) for layer in model.get_layer("conformer").submodules
             if hasattr(layer, "step") and hasattr(layer, "seed")]
    return {"budget": [np.asarray(v.numpy()).tolist() for v in budget.variables],
            "ratio": count_parameters(model)["ratio"], "adl_steps": steps}


class _KLTrace(keras.callbacks.Callback):
    """The model's added losses (the KL terms) and the KL warm-up weights at epoch boundaries."""

    def __init__(self):
        super().__init__()
        self.begin, self.end, self.warmup = {}, {}, {}

    def _kl(self):
        return float(tf.add_n(self.model.losses).numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.begin[epoch] = self._kl()
        self.warmup[epoch] = [float(w.numpy()) for w in self.model.weights
                              if "kl_warmup" in w.name]

    def on_epoch_end(self, epoch, logs=None):
        self.end[epoch] = self._kl()


def _flipout_model():
    from keras_efficient.layers import FlipoutDense

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = FlipoutDense(16, activation="relu", num_train_examples=64, seed=3, name="f1")(inp)
    model = keras.Model(inp, FlipoutDense(1, num_train_examples=64, seed=4, name="f2")(h))
    model.compile(keras.optimizers.SGD(0.02, momentum=0.9), "mse")
    return model


_TRACES = []  # every run's _KLTrace, the crashed run's included


def _flipout_fit(model, backup_dir, crash):
    from keras_efficient.callbacks import KLWarmup

    x, y = _data()
    trace = _KLTrace()
    _TRACES.append(trace)
    callbacks, epochs = _callbacks(backup_dir, crash, [KLWarmup(epochs=3, initial_weight=0.1),
                                                       trace])
    history = model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
                        callbacks=callbacks)
    trace.loss = history.history["loss"]
    return epochs.seen, [trace]


def _trace_dict(trace):
    return {"kl_begin": trace.begin, "kl_end": trace.end, "warmup": trace.warmup,
            "loss": getattr(trace, "loss", None)}


def _flipout_summary(model, callbacks):
    return _trace_dict(callbacks[0])


def _flipout(workdir):
    """`_resume` of the Flipout model, plus the crashed run's trace."""
    del _TRACES[:]
    report = _resume(workdir, _flipout_model, _flipout_fit, _flipout_summary)
    report["crashed_summary"] = _trace_dict(_TRACES[1])
    return report


def main(scenario, workdir):
    tf.config.experimental.enable_op_determinism()
    out = {}
    if scenario == "adaptive_dropout":
        out["plain"] = _compare(workdir, _model)
        out["xla_steps_per_execution_2"] = _compare(
            workdir, lambda: _model(jit=True, steps_per_execution=2))
    elif scenario == "swa":
        def swa():
            return [StochasticWeightAveraging(start_epoch=1, reestimate_bn=False)]
        out["bnr_first"] = _compare(workdir, _model, extra=swa)
        out["swa_first"] = _compare(workdir, _model, extra=swa, order="swa-first")
    elif scenario == "smd":
        out["smd"] = _compare(workdir, _model, smd="position")
        out["smd_repeat_control"] = _compare(workdir, _model, smd="repeat")
    elif scenario.startswith("killed:"):
        out = _killed_run(workdir, scenario.split(":", 1)[1])
    elif scenario == "conformer":
        out["conformer"] = _resume(workdir, _conformer_model, _conformer_fit, _conformer_summary)
        out["conformer_dropout"] = _resume(workdir, lambda: _conformer_model(0.1),
                                           _conformer_fit, _conformer_summary)
    elif scenario == "flipout":
        out["flipout"] = _flipout(workdir)
    elif scenario == "meter":
        out["meter"] = _resume(workdir, _model, _meter_fit, _meter_summary)
    elif scenario == "gated":
        out["gated"] = _resume(workdir, _gated_model, _gated_fit, _gated_summary)
        out["gated_skip_budget"] = _resume(workdir, lambda: _gated_model(budget=True),
                                           _gated_fit, _gated_summary)
    else:
        raise SystemExit("unknown scenario {!r}".format(scenario))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
