"""The e2-train experiment: its routines on tiny configurations (the full run is a benchmark)."""

import io

import numpy as np
import pytest

from keras_efficient.experiments import e2_train
from keras_efficient.experiments.e2_train import (
    METRICS,
    VARIANTS,
    add_savings,
    aggregate,
    check_targets,
    matched_final_survival,
    mean_std,
    run_variant,
)

SETTINGS = {"depth": 8, "base_filters": 4, "epochs": 3, "batch_size": 16, "lr": 0.05,
            "psg_lr": 0.003, "drop_rate": 0.5, "flops_weight": 0.4, "final_survival": 0.5,
            "beta": 0.05, "target_skip": 0.0, "e2_target_skip": 0.0, "open_epochs": 0}


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 32, 32, 3)).astype(np.float32)
    y = (np.arange(n) % 10).astype(np.int64)
    return (x, y), (x[:16], y[:16])


def _fake_run(variant, seed, rng):
    """A result dict as `run_variant` returns it, with random numbers."""
    return {"variant": variant, "seed": seed, "epochs": 4,
            "test_accuracy": float(rng.uniform(0.8, 0.9)),
            "executed_macs": float(rng.uniform(1e9, 2e9)), "energy_j": float(rng.uniform(1, 2)),
            "skip_ratio": float(rng.uniform(0, 0.6)), "wall_time_s": float(rng.uniform(5, 9)),
            "cpu_time_s": float(rng.uniform(5, 9)),
            "epoch_train_times_s": [float(t) for t in rng.uniform(1, 3, size=4)],
            "gate_rates": ({"gated_a": (float(rng.uniform()), float(rng.uniform()))}
                           if variant == "SLU" else {})}


def _fake_runs(seeds=3):
    rng = np.random.default_rng(7)
    runs = []
    for seed in range(seeds):
        run = {v: _fake_run(v, seed, rng) for v in ("SMB", "SLU", "E2-Train")}
        for r in run.values():
            r["train_time_s"] = sum(r["epoch_train_times_s"])
        runs.append(add_savings(run))
    return runs


def test_savings_are_against_the_same_seeds_smb_run():
    run = _fake_runs(1)[0]
    smb, slu = run["SMB"], run["SLU"]
    np.testing.assert_allclose(slu["compute_saving"], 1 - slu["executed_macs"] / smb["executed_macs"])
    np.testing.assert_allclose(slu["energy_saving_estimate"], 1 - slu["energy_j"] / smb["energy_j"])
    np.testing.assert_allclose(slu["time_saving"],
                               1 - sum(slu["epoch_train_times_s"]) / sum(smb["epoch_train_times_s"]))
    np.testing.assert_allclose(
        slu["steady_time_saving"],
        1 - sum(slu["epoch_train_times_s"][1:]) / sum(smb["epoch_train_times_s"][1:]))
    assert smb["compute_saving"] == 0.0 and smb["time_saving"] == 0.0


def test_aggregate_matches_numpy_mean_and_sample_std():
    runs = _fake_runs(3)
    summary = aggregate(runs)
    assert list(summary) == ["SMB", "SLU", "E2-Train"]
    for variant in summary:
        for key in METRICS:
            values = np.array([run[variant][key] for run in runs])
            n = len(values)
            mean = values.sum() / n
            std = np.sqrt(((values - mean) ** 2).sum() / (n - 1))
            np.testing.assert_allclose(summary[variant][key]["mean"], mean, rtol=1e-12)
            np.testing.assert_allclose(summary[variant][key]["std"], std, rtol=1e-12)
    rates = np.array([run["SLU"]["gate_rates"]["gated_a"] for run in runs])
    np.testing.assert_allclose(summary["SLU"]["gate_rates"]["gated_a"]["mean"],
                               (rates[:, 0].mean(), rates[:, 0].std(ddof=1)))
    np.testing.assert_allclose(summary["SLU"]["gate_rates"]["gated_a"]["last_epoch"],
                               (rates[:, 1].mean(), rates[:, 1].std(ddof=1)))
    assert summary["SMB"]["gate_rates"] == {}


def test_mean_std_of_one_value_has_zero_std():
    assert mean_std([0.25]) == (0.25, 0.0)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))


def _summary(smb_acc, slu_acc, slu_skip, e2_acc, e2_compute, e2_energy):
    def entry(mean):
        return {"mean": mean, "std": 0.0, "values": [mean]}
    return {
        "SMB": {"test_accuracy": entry(smb_acc)},
        "SLU": {"test_accuracy": entry(slu_acc), "skip_ratio": entry(slu_skip)},
        "E2-Train": {"test_accuracy": entry(e2_acc), "compute_saving": entry(e2_compute),
                     "energy_saving_estimate": entry(e2_energy)},
    }


@pytest.mark.parametrize("values, met", [
    # SMB 0.90; SLU within 1 pt and >= 40% skip; E2 within 2 pts, >= 60% / 80% saving.
    ((0.90, 0.895, 0.40, 0.885, 0.60, 0.80), [True, True, True, True, True]),
    ((0.90, 0.889, 0.45, 0.879, 0.70, 0.85), [True, False, True, True, False]),
    ((0.90, 0.95, 0.39, 0.95, 0.59, 0.79), [False, True, False, False, True]),
])
def test_targets_column(values, met):
    rows = check_targets(_summary(*values))
    assert [r[:2] for r in rows] == [
        ("SLU", "block-FLOP saving >= 40%"), ("SLU", "accuracy within 1 pt of SMB"),
        ("E2-Train", "computational saving >= 60%"),
        ("E2-Train", "energy saving (estimate) >= 80%"),
        ("E2-Train", "accuracy within 2 pts of SMB")]
    assert [r[3] for r in rows] == met


def test_targets_skip_variants_that_did_not_run():
    summary = _summary(0.9, 0.9, 0.5, 0.9, 0.7, 0.9)
    del summary["E2-Train"]
    assert [r[0] for r in check_targets(summary)] == ["SLU", "SLU"]


@pytest.mark.parametrize("depth, target", [(8, 0.2), (14, 0.4), (20, 0.4), (20, 0.25)])
def test_matched_sd_survival_gives_the_target_skip(depth, target):
    from keras_efficient.layers import StochasticDepth
    from keras_efficient.models import stochastic_depth_resnet

    p_last = matched_final_survival(depth, target)
    model = stochastic_depth_resnet(depth=depth, base_filters=2, final_survival=p_last)
    drops = [1.0 - layer.survival_probability for layer in model.layers
             if isinstance(layer, StochasticDepth)]
    np.testing.assert_allclose(np.mean(drops), target, atol=1e-6)


def test_matched_sd_survival_is_clipped():
    assert matched_final_survival(20, 0.9) == pytest.approx(0.01)  # would be negative
    assert matched_final_survival(20, 0.0) == 1.0


def test_smd_variant_books_steps_and_saving():
    r = run_variant("SMD", _data(), SETTINGS, seed=0)
    assert r["epochs"] == 4  # 4/3 of the epochs: the paper's energy ratio 0.67
    assert r["steps"] == 4 * 2  # smd_steps_per_epoch(4 batches, 0.5) per epoch
    assert r["nominal_steps"] >= 12
    assert len(r["curve_macs"]) == 4 and np.all(np.diff(r["curve_macs"]) > 0)
    assert len(r["epoch_train_times_s"]) == 4 and r["train_time_s"] > 0
    assert 0.0 <= r["test_accuracy"] <= 1.0


def _fake_load_images(seen, classes=10, n=32):
    def load(name, train_size=None, test_size=None):
        seen.append(name)
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(n, 32, 32, 3)).astype(np.float32)
        y = (np.arange(n) % classes).astype(np.int64)
        return (x[:train_size], y[:train_size]), (x[:8][:test_size], y[:8][:test_size])
    return load


def _run(monkeypatch, tmp_path, variants, seeds, **extra):
    from keras_efficient.experiments import run_experiment

    seen = []
    monkeypatch.setattr(e2_train, "load_images", _fake_load_images(seen, extra.pop("classes", 10)))
    options = {"variants": variants, "seeds": str(seeds), "epochs": "1", "depth": "8",
               "base_filters": "2", "batch_size": "8", "target_skip": "0.5",
               "e2_target_skip": "0", "open_epochs": "0"}
    options.update(extra)
    ctx = run_experiment("e2-train", quick=True, out_dir=str(tmp_path), options=options,
                         stream=io.StringIO())
    return ctx, seen


def test_two_seeds_give_mean_std_targets_and_gate_rates(monkeypatch, tmp_path):
    ctx, _ = _run(monkeypatch, tmp_path, "SLU", 2)
    metrics = ctx.report.metrics
    summary = metrics["summary"]
    assert list(summary) == ["SMB", "SLU"] and len(metrics["runs"]) == 2
    acc = [run["SLU"]["test_accuracy"] for run in metrics["runs"]]
    np.testing.assert_allclose(summary["SLU"]["test_accuracy"]["std"], np.std(acc, ddof=1))
    assert summary["SLU"]["seeds"] == [0, 1]
    assert list(summary["SLU"]["gate_rates"]) == ["gated_stage1_block0"]
    assert [t["target"] for t in metrics["targets"]] == ["block-FLOP saving >= 40%",
                                                         "accuracy within 1 pt of SMB"]
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4  # every finished run is kept, in case the run is interrupted
    report = (tmp_path / "report.md").read_text()
    assert "Targets" in report and "Per-block gate open rates" in report


@pytest.mark.slow
def test_every_variant_runs_for_two_seeds(monkeypatch, tmp_path):
    ctx, _ = _run(monkeypatch, tmp_path, ",".join(VARIANTS), 2)
    summary = ctx.report.metrics["summary"]
    assert list(summary) == list(VARIANTS)
    for variant in VARIANTS:
        assert len(summary[variant]["test_accuracy"]["values"]) == 2
        assert all(np.isfinite(summary[variant]["energy_saving_estimate"]["values"]))


def test_dataset_option_picks_the_data_and_the_class_count(monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    trained = []

    def fake_run_variant(variant, data, s, seed, progress=None):
        trained.append((variant, len(data[0][0]), s["num_classes"]))
        run = _fake_run(variant, seed, rng)
        run["train_time_s"] = sum(run["epoch_train_times_s"])
        run.update(curve_macs=[1.0] * 4, curve_energy_j=[1.0] * 4, curve_accuracy=[0.5] * 4)
        return run

    monkeypatch.setattr(e2_train, "run_variant", fake_run_variant)
    ctx, seen = _run(monkeypatch, tmp_path, "SMB", 1, dataset="cifar100", classes=12,
                     train_size="20")
    assert trained == [("SMB", 20, 12)]
    assert seen == ["cifar100"]
    settings = ctx.report.metrics["settings"]
    assert settings["dataset"] == "cifar100" and settings["num_classes"] == 12
