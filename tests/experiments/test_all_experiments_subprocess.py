"""Every registered experiment, end to end through the CLI, each in its own process.

`python -m keras_efficient.cli reproduce NAME --quick --option ...` with options
that make the run tiny (one epoch, a few dozen examples, narrow models). Each run
is a child process, so a native abort -- TensorFlow 2.14's oneDNN kernels on AMX /
AVX-512 FP16 Xeons died with "double free or corruption" inside the first
`model.fit` of e2-train -- fails only its own test, with the signal and the tail
of the child's stderr, instead of killing the test session.

Default run: about 75 s of CPU time on 2 cores for the four experiments below
(resnet-digits ~7 s, e2-train ~22 s, ipu-gpu ~14 s, adaptive-dropout ~25 s, plus this
session's start); the wall time measured on a shared machine at load average 4-8 was
135-190 s. `rebel` trains a teacher, five bottlenecks,
k-means / kNN baselines and profiles FLOPs: about 45 s of CPU time even when
tiny, so it alone is marked slow (`pytest -m slow`).
"""

import importlib.util
import json
import signal
import subprocess
import sys

import pytest

from keras_efficient.experiments import EXPERIMENTS

#: experiment -> `--option` values of its tiny run.
TINY = {
    "resnet-digits": ["epochs=1", "depth=8", "base_filters=4", "batch_size=32", "train_size=64",
                      "test_size=32"],
    # SMD and SLU+SMD are left out: E2-Train runs SMD + SLU (+ PSG) already. Eight batches
    # per epoch: with two, SMD can drop the whole first pass and tf.data's repeat() then
    # ends the stream at once (Keras: "Empty logs").
    # One seed (quick runs three).
    "e2-train": ["epochs=1", "depth=8", "base_filters=2", "batch_size=8", "train_size=64",
                 "test_size=16", "variants=SMB,SD,SLU,E2-Train", "seeds=1"],
    "adaptive-dropout": ["epochs=1", "train_size=32", "test_size=16", "num_blocks=1",
                         "model_dim=16", "subsampling_filters=4", "baselines=none"],
    "ipu-gpu": ["num_galaxies=8", "image_size=16", "batch_sizes=4", "bnn_batch_sizes=4",
                "vae_images=1", "vae_repeats=1", "warmup_epochs=0", "epochs=1"],
    # 24 16x16 galaxies, two-stage estimators of 2 filters, 2 passes per BNN input.
    "bnn-calibration": ["num_galaxies=24", "image_size=16", "filters=2,2", "epochs=1",
                        "num_samples=2", "kl_warmup_epochs=1", "batch_size=8"],
    "rebel": ["teacher_epochs=1", "epochs=1", "tail_epochs=0", "depth=8", "filters=4",
              "projection_dim=8", "train_size=128", "test_size=64"],
}

#: experiments too large for the default run even when tiny.
SLOW = {"rebel"}

#: optional packages an experiment needs; without them its test is skipped.
REQUIRES = {"ipu-gpu": ("galsim",), "bnn-calibration": ("galsim",)}


def _tail(text, limit=3000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _exit_status(returncode):
    if returncode < 0:
        try:
            return "killed by {} (native abort or crash)".format(signal.Signals(-returncode).name)
        except ValueError:
            return "killed by signal {}".format(-returncode)
    return "exit status {}".format(returncode)


def test_every_registered_experiment_has_a_tiny_configuration():
    assert set(TINY) == set(EXPERIMENTS)
    assert SLOW <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in sorted(EXPERIMENTS)])
def test_tiny_run_in_a_subprocess_writes_report_and_metrics(name, tmp_path):
    if name not in TINY:
        pytest.fail("experiment {!r} has no tiny configuration in TINY".format(name))
    for module in REQUIRES.get(name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip("{} needs {}, which is not installed".format(name, module))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "keras_efficient.cli", "reproduce", name, "--quick",
               "--out", str(out), "--option"] + TINY[name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail("`{}` failed: {}.\n--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}".format(
            " ".join(command[1:]), _exit_status(done.returncode), _tail(done.stderr),
            _tail(done.stdout, 1500)), pytrace=False)
    report = (out / "report.md").read_text()
    assert report.startswith("# keras-efficient reproduce {} --quick".format(name))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["experiment"] == name and metrics["run"]["quick"] is True
    assert "report written to" in done.stdout
