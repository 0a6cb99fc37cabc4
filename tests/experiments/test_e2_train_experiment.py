"""The e2-train experiment's training routine on a tiny subset (the full run is a benchmark)."""

import numpy as np
import pytest

from keras_efficient.experiments.e2_train import VARIANTS, run_variant

SETTINGS = {"depth": 8, "base_filters": 4, "epochs": 3, "batch_size": 16, "lr": 0.05,
            "psg_lr": 0.003, "drop_rate": 0.5, "flops_weight": 0.4, "final_survival": 0.5,
            "beta": 0.05}


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 32, 32, 3)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int64)
    return (x, y), (x[:16], y[:16])


def test_smd_variant_books_steps_and_saving():
    r = run_variant("SMD", _data(), SETTINGS, seed=0)
    assert r["epochs"] == 4  # 4/3 of the epochs: the paper's energy ratio 0.67
    assert r["steps"] == 4 * 2  # smd_steps_per_epoch(4 batches, 0.5) per epoch
    assert r["nominal_steps"] >= 12
    assert len(r["curve_macs"]) == 4 and np.all(np.diff(r["curve_macs"]) > 0)
    assert 0.0 <= r["test_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs(variant):
    r = run_variant(variant, _data(), SETTINGS, seed=0)
    assert np.isfinite(r["energy_j"]) and r["executed_macs"] > 0


def test_dataset_option_picks_the_data_and_the_class_count(monkeypatch, tmp_path):
    import io

    from keras_efficient.experiments import e2_train, run_experiment

    seen = []

    def fake_load_images(name):
        seen.append(name)
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(32, 32, 32, 3)).astype(np.float32)
        y = (np.arange(32) % 12).astype(np.int64)  # 12 classes: not the digits' 10
        return (x, y), (x[:8], y[:8])

    monkeypatch.setattr(e2_train, "load_images", fake_load_images)
    options = {"dataset": "cifar100", "variants": "SMB", "epochs": "1", "depth": "8",
               "base_filters": "2", "batch_size": "16"}
    ctx = run_experiment("e2-train", quick=True, out_dir=str(tmp_path), options=options,
                         stream=io.StringIO())
    assert seen == ["cifar100"]
    settings = ctx.report.metrics["settings"]
    assert settings["dataset"] == "cifar100" and settings["num_classes"] == 12
