"""Experiment ipu-gpu: speed_ratios and a tiny end-to-end run."""

import json
import os

import pytest

from keras_efficient.experiments import run_experiment
from keras_efficient.experiments.ipu_gpu import ratio_pair, speed_ratios


def test_speed_ratios():
    assert speed_ratios({2: 4.0, 4: 3.0, 8: 1.0}, {2: 1.0, 4: 3.0, 16: 2.0}) == {2: 4.0, 4: 1.0}
    assert speed_ratios({2: 1.0}, {2: 0.0}) == {}


def test_ratio_pair_compares_gpu_and_ipu_when_both_exist():
    # Figs. 2-3 of the paper: R = t_GPU / t_IPU; the CPU is always in the list.
    assert ratio_pair(["cpu", "gpu", "ipu"]) == ("gpu", "ipu")
    assert ratio_pair(["cpu", "ipu"]) == ("cpu", "ipu")
    assert ratio_pair(["cpu", "gpu"]) == ("cpu", "gpu")
    assert ratio_pair(["cpu"]) is None


@pytest.mark.slow  # about a minute: 16x16 galaxies, one batch size per model
def test_tiny_run_writes_tables_figures_and_metrics(tmp_path):
    out = os.path.join(str(tmp_path), "run")
    ctx = run_experiment("ipu-gpu", quick=True, out_dir=out, options={
        "num_galaxies": 8, "image_size": 16, "batch_sizes": "2,4", "bnn_batch_sizes": "4",
        "vae_images": "1,3", "vae_repeats": 1, "warmup_epochs": 0})
    metrics = ctx.report.metrics
    assert metrics["kinds"][0] == "cpu"
    assert sorted(metrics["training"]["cpu"]["deterministic"]) == ["2", "4"]
    assert sorted(metrics["training"]["cpu"]["bayesian"]) == ["4"]
    assert sorted(metrics["generation"]["cpu"]) == ["1", "3"]
    for name in ("training_time.png", "generation_time.png", "report.md", "metrics.json"):
        assert os.path.exists(os.path.join(out, name))
    with open(os.path.join(out, "metrics.json")) as f:
        assert "speed_ratios" in json.load(f)
