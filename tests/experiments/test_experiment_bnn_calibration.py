"""Experiment bnn-calibration: the split, the metrics and a tiny end-to-end run."""

import json
import os

import numpy as np
import pytest

from keras_efficient.experiments import run_experiment
from keras_efficient.experiments.bnn_calibration import (
    FAMILIES,
    LEVELS,
    MODELS,
    evaluate,
    split_indices,
)

TINY = {"num_galaxies": 24, "image_size": 16, "filters": "2,2", "epochs": 1, "num_samples": 2,
        "kl_warmup_epochs": 1, "batch_size": 8}


def test_split_indices_are_disjoint_and_cover_everything():
    train, val, test = split_indices(100, 0.2, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_split_indices_without_a_training_split_raises(n):
    with pytest.raises(ValueError, match="no training split"):
        split_indices(n, 0.2, 0.2)


def test_evaluate_matches_numpy_on_unit_gaussians():
    # y - mean ~ N(0, I) with predicted covariance I: coverage near the level (n = 4000:
    # binomial sd <= 0.008, tolerance 4 sd); scaled by 4 the ellipses hold nearly everything;
    # the Student-t with df = 1e6 is the Gaussian.
    rng = np.random.default_rng(0)
    n, d = 4000, 2
    y = rng.normal(size=(n, d))
    mean = np.zeros((n, d))
    cov = np.broadcast_to(np.eye(d), (n, d, d))
    pred = {"mean": mean, "covariance": cov, "mixture_nll": np.full(n, 1.0)}
    out = evaluate(y, pred, {"gaussian": (4.0 * cov, None), "student_t": (cov, 1e6)})
    np.testing.assert_allclose(out["rmse"], np.sqrt(np.mean(y ** 2)), rtol=1e-12)
    expected_nll = np.mean(0.5 * np.sum(y ** 2, axis=1) + np.log(2 * np.pi))
    np.testing.assert_allclose(out["gaussian_nll"], expected_nll, rtol=1e-6)
    np.testing.assert_allclose(out["nll_student_t"], expected_nll, rtol=1e-4)
    expected_scaled = np.mean(0.5 * np.sum(y ** 2, axis=1) / 4.0 + np.log(2 * np.pi * 4.0))
    np.testing.assert_allclose(out["nll_gaussian"], expected_scaled, rtol=1e-6)
    for level in LEVELS:
        assert abs(out["coverage"][str(level)] - level) < 0.035
        assert out["coverage_gaussian"][str(level)] > out["coverage"][str(level)]
        assert out["coverage_student_t"][str(level)] == pytest.approx(
            out["coverage"][str(level)], abs=2.0 / n)


def test_tiny_run_reports_every_model_before_and_after_recalibration(tmp_path):
    pytest.importorskip("galsim", reason="bnn-calibration renders galaxies with GalSim")
    out = os.path.join(str(tmp_path), "run")
    ctx = run_experiment("bnn-calibration", quick=True, out_dir=out, options=TINY)
    models = ctx.report.metrics["models"]
    assert tuple(models) == MODELS
    for kind, r in models.items():
        for key in ("rmse", "nll", "gaussian_nll", "nll_gaussian", "nll_student_t"):
            assert np.isfinite(r[key]), (kind, key)
        assert r["recalibration"]["gaussian"]["scale"] > 0
        assert r["recalibration"]["gaussian"]["df"] is None
        assert r["recalibration"]["student_t"]["df"] > 2
        for key in ["coverage"] + ["coverage_" + f for f in FAMILIES]:
            assert sorted(r[key]) == sorted(str(l) for l in LEVELS)
            assert all(0.0 <= v <= 1.0 for v in r[key].values()), (kind, key, r[key])
    assert models["deterministic"]["num_samples"] == 1
    assert models["flipout"]["num_samples"] == 2
    for name in ("reliability.png", "report.md", "metrics.json"):
        assert os.path.exists(os.path.join(out, name))
    with open(os.path.join(out, "metrics.json")) as f:
        assert "targets_met" in json.load(f)
