"""Training interrupted and resumed by a rebuilt model equals uninterrupted training.

Each scenario runs in a subprocess (`_resume_scenarios.py`) because op
determinism, which makes the comparison exact on CPU, cannot be switched off
again in a process. The base model is Dense -> AdaptiveDropout(seed=3) -> Dense
with SGD + momentum; others: a gated ResNet-14 (SLU) converted to PSG on an SMD
stream with SWA, `DropCounter` and `ComputeMeter`. The run raises after batch 3
of epoch 2 (0-based) and is resumed with `keras.callbacks.BackupAndRestore` from
the end of epoch 1 by a model, pipeline and callbacks built anew.
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


def _check_general(report, steps_per_epoch):
    assert report["crashed"], report
    assert report["resumed_epochs"] == [2, 3], report
    assert report["iterations"] == report["reference_iterations"] == 4 * steps_per_epoch, report
    assert report["max_abs_diff"] <= _TOLERANCE, report


@pytest.mark.slow
def test_drop_counter_and_compute_meter_totals_resume(tmp_path):
    report = _run("meter", tmp_path)["meter"]
    _check_general(report, steps_per_epoch=4)
    got, want = report["summary"], report["reference_summary"]
    # Totals of the whole run, not of the resumed epochs only.
    # The counter runs ahead of the step by Keras's prefetch buffer (same in both runs here).
    for counts in (got["counter"], want["counter"]):
        assert 16 <= counts["performed_steps"] <= 18, report
    if got["counter"]["performed_steps"] == want["counter"]["performed_steps"]:
        assert got["counter"] == want["counter"], report
    assert got["meter"] == want["meter"], report
    assert got["per_layer"] == want["per_layer"], report
    assert got["history_epochs"] == 2 and want["history_epochs"] == 4, report  # per-fit list
    meter = got["meter"]
    assert meter["steps"] == 16, report
    # Executed MACs in closed form: steps x batch x 3 (forward + 2 backward) x (8*16 + 16*1).
    assert meter["executed_macs"] == 16 * 8 * 3 * (8 * 16 + 16 * 1), report
    assert got["counter"]["nominal_steps"] > got["counter"]["performed_steps"], report


@pytest.mark.slow
def test_gated_resnet_smd_slu_psg_swa_resume_equals_uninterrupted(tmp_path):
    out = _run("gated", tmp_path)
    for variant in ("gated", "gated_skip_budget"):  # the second: open phase + skip budget
        report = out[variant]
        _check_general(report, steps_per_epoch=4)
        got, want = report["summary"], report["reference_summary"]
        assert got["snapshots"] == want["snapshots"] == 3, (variant, report)
        assert got["meter"] == want["meter"], (variant, report)
        assert got["meter_by_precision"] == want["meter_by_precision"], (variant, report)
        assert got["open_fraction"] == want["open_fraction"], (variant, report)
        assert got["skip_budget"] == want["skip_budget"], (variant, report)
        assert got["counter"]["performed_steps"] - 16 in (0, 1, 2), (variant, report)
        # PSG precisions were counted, and the gates skipped something.
        assert set(got["meter_by_precision"]) >= {"int8x8", "int8x16", "fp32"}, report
        assert 0.0 < got["meter"]["skip_ratio"] < 1.0, (variant, report)
    assert out["gated"]["summary"]["skip_budget"] is None
    assert out["gated_skip_budget"]["summary"]["skip_budget"], out["gated_skip_budget"]


def _process(mode, workdir, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, _SCRIPT, "killed:" + mode, str(workdir)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _result(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout[-3000:],
                                            proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_process_killed_with_sigkill_mid_epoch_restarts_equal(tmp_path):
    """A training process dies by SIGKILL in epoch 2 (no exception, no cleanup); a new process
    with BackupAndRestore resumes from the end of epoch 1 and ends equal to an uninterrupted one."""
    import numpy as np

    reference = _result(_process("reference", tmp_path))
    killed = _process("killed", tmp_path)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert not any(line.startswith("RESULT ") for line in killed.stdout.splitlines())
    assert os.listdir(os.path.join(str(tmp_path), "backup")), "no backup was written"
    restarted = _result(_process("restarted", tmp_path))
    assert restarted["epochs"] == [2, 3], restarted
    assert restarted["iterations"] == reference["iterations"] == 16, (reference, restarted)
    assert restarted["step"] == reference["step"] == 16, (reference, restarted)
    assert restarted["snapshots"] == reference["snapshots"] == 3, (reference, restarted)
    want = np.load(os.path.join(str(tmp_path), "reference.npz"))
    got = np.load(os.path.join(str(tmp_path), "restarted.npz"))
    assert len(want.files) == len(got.files)
    diff = max(float(np.max(np.abs(want[k] - got[k]))) for k in want.files)
    assert diff <= _TOLERANCE, diff


@pytest.mark.slow
def test_adaptive_conformer_with_parameter_budget_resume_equals_uninterrupted(tmp_path):
    out = _run("conformer", tmp_path)
    report = out["conformer"]
    _check_general(report, steps_per_epoch=4)
    got, want = report["summary"], report["reference_summary"]
    assert got == want, report  # budget multipliers and step, parameter ratio, ADL steps
    assert got["adl_steps"] == [16] * 5, report
    # Known gap, kept as a control: the block's ordinary Keras Dropout (dropout_rate > 0)
    # draws from a generator whose state is not in the checkpoint, so that resume is not
    # exact; nothing resets though (same steps, same budget state).
    control = out["conformer_dropout"]
    assert control["crashed"] and control["resumed_epochs"] == [2, 3], control
    assert control["summary"]["adl_steps"] == [16] * 5, control
    assert control["max_abs_diff"] < 0.5, control


@pytest.mark.slow
def test_flipout_bnn_resume_continues(tmp_path):
    """Flipout draws from TensorFlow's stateful seed stream, whose position is not in the
    checkpoint, so the resumed run is not exact; what is checked is that nothing restarts."""
    import math

    report = _run("flipout", tmp_path)["flipout"]
    assert report["crashed"] and report["resumed_epochs"] == [2, 3], report
    assert report["iterations"] == report["reference_iterations"] == 32, report
    got, crashed = report["summary"], report["crashed_summary"]
    # The KL term at the start of the resumed epoch 2 is the one the crashed run had at the
    # start of its epoch 2 (restored posterior and warm-up weight), not the initial one.
    assert got["kl_begin"]["2"] == crashed["kl_begin"]["2"], report
    assert got["kl_begin"]["2"] > 2 * crashed["kl_begin"]["0"], report
    # KL warm-up continues: weight 0.1 + 0.9 * epoch / 3 (closed form), not back to 0.1.
    for epoch, weights in got["warmup"].items():
        assert weights == pytest.approx([0.1 + 0.9 * min(1.0, int(epoch) / 3.0)] * 2), report
    assert all(math.isfinite(v) for v in got["loss"]), report
    # Close to the uninterrupted run (same data and state, other noise draws).
    assert report["max_abs_diff"] < 0.05, report
