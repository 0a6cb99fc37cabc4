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
    epochs = _Epochs()
    callbacks = list(extra) + [epochs]
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
    if crash:
        callbacks.append(_CrashIn())
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
    else:
        raise SystemExit("unknown scenario {!r}".format(scenario))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
