"""Training interrupted by an exception and resumed by a rebuilt model equals uninterrupted training.

Each scenario runs in a subprocess (`_resume_scenarios.py`) because op
determinism, which makes the comparison exact on CPU, cannot be switched off
again in a process. The model is Dense -> AdaptiveDropout(seed=3) -> Dense with
SGD + momentum; the run raises after batch 3 of epoch 2 (0-based) and is
resumed with `keras.callbacks.BackupAndRestore` from the end of epoch 1 by a
model, pipeline and callbacks built anew.
"""

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_resume_scenarios.py")
_TOLERANCE = 1e-6


def _run(scenario, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, _SCRIPT, scenario, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, "scenario {} failed:\n{}\n{}".format(
        scenario, proc.stdout[-3000:], proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


def _check_resumed(report, steps_per_epoch):
    assert report["crashed"], report
    assert report["resumed_epochs"] == [2, 3], report  # resumed, not started over
    total = 4 * steps_per_epoch
    assert report["iterations"] == report["reference_iterations"] == total, report
    # One AdaptiveDropout step per optimizer step, in the resumed run too.
    assert report["step"] == report["reference_step"] == total, report


@pytest.mark.slow
def test_adaptive_dropout_resume_equals_uninterrupted(tmp_path):
    out = _run("adaptive_dropout", tmp_path)
    for variant in ("plain", "xla_steps_per_execution_2"):
        report = out[variant]
        _check_resumed(report, steps_per_epoch=8)
        assert report["max_abs_diff"] <= _TOLERANCE, (variant, report)


@pytest.mark.slow
def test_swa_resume_equals_uninterrupted(tmp_path):
    out = _run("swa", tmp_path)
    for variant in ("bnr_first", "swa_first"):  # SWA listed after / before BackupAndRestore
        report = out[variant]
        _check_resumed(report, steps_per_epoch=8)
        assert report["snapshots"] == 3, (variant, report)  # epochs 1, 2, 3
        assert report["max_abs_diff"] <= _TOLERANCE, (variant, report)


@pytest.mark.slow
def test_smd_resume_equals_uninterrupted(tmp_path):
    out = _run("smd", tmp_path)
    report = out["smd"]
    _check_resumed(report, steps_per_epoch=4)
    assert report["max_abs_diff"] <= _TOLERANCE, report
    # Control: the plain repeated stream restarts at pass 0 in a rebuilt pipeline, so the
    # resumed run trains on other batches (why `position=` exists).
    control = out["smd_repeat_control"]
    _check_resumed(control, steps_per_epoch=4)
    assert control["max_abs_diff"] > 1e-4, control
