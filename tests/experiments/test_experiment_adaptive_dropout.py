import json
import os

import numpy as np
import pytest

from keras_efficient.experiments import run_experiment
from keras_efficient.experiments.adaptive_dropout import (
    OPTIONS,
    _floor_fraction,
    _max_relative_difference,
    _mean_std,
    _real_frames,
)
from keras_efficient.experiments.context import resolve_options
from keras_efficient.models import ConformerEncoder, conformer_parameters
from keras_efficient.pruning import count_parameters, prune
from keras_efficient.schedules import RetentionTargetSchedule


@pytest.mark.parametrize("blocks,dim,ffn,kernel", [(1, 16, 24, 3), (2, 12, 48, 7)])
def test_parameter_formula_used_for_hand_shrunk_baselines(blocks, dim, ffn, kernel):
    model = ConformerEncoder((64, 16), vocab_size=10, num_blocks=blocks, model_dim=dim,
                             num_heads=4, ffn_dim=ffn, kernel_size=kernel, adaptive=False)
    assert conformer_parameters((64, 16), 10, blocks, dim, ffn, kernel) == model.count_params()


def test_tiny_quick_run_writes_tables_figures_and_metrics(tmp_path):
    """The quick path (budget attached, prune, a hand-shrunk baseline) in a tiny setup."""
    out = os.path.join(str(tmp_path), "run")
    ctx = run_experiment("adaptive-dropout", quick=True, out_dir=out, options={
        "train_size": 32, "test_size": 8, "epochs": 1, "num_blocks": 1, "model_dim": 8,
        "subsampling_filters": 4, "baselines": "narrow", "budgets": "0.5"})
    metrics = ctx.report.metrics
    assert metrics["settings"]["seeds"] == 1 and metrics["settings"]["budgets"] == [0.5]
    rows = {row["kind"]: row for row in metrics["table1"]}
    assert [row["kind"] for row in metrics["table1"]] == ["dense", "adl", "narrow"]
    dense, adl = rows["dense"], rows["adl"]
    assert dense["parameters"] == metrics["dense_parameters"] and dense["parameter_ratio"] == 1.0
    assert rows["narrow"]["model"].startswith("Narrow (D=4)")
    assert rows["narrow"]["parameters"] < dense["parameters"]
    run = metrics["adl_runs"]["0.5"][0]
    # The budget is reached (the tiny run settles within one unit) and pruning is exact.
    assert abs(run["ratio"] - 0.5) < 0.05
    assert run["parameters"] == adl["parameters"] < dense["parameters"]
    assert metrics["pruned_max_relative_output_difference"] < 1e-5
    assert run["flops"] < dense["flops"]
    for row in metrics["table1"]:
        assert 0.0 <= row["error_mean"] and row["error_std"] == 0.0 and len(row["errors"]) == 1
    assert len(metrics["surviving_units"]["0.5"]) == 5
    for name in ("surviving_units.png", "error_vs_parameters.png", "metrics.json"):
        assert os.path.exists(os.path.join(out, name))
    with open(os.path.join(out, "metrics.json")) as f:
        assert "table1" in json.load(f)
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert "Fig. 2 analog, budget 0.5" in report and "± 0.0000" in report


def test_quick_and_full_defaults():
    quick = resolve_options(OPTIONS, {}, quick=True)
    full = resolve_options(OPTIONS, {}, quick=False)
    assert quick["seeds"] == 1 and quick["budgets"] == (0.5,)
    assert full["seeds"] == 3 and full["budgets"] == (0.5, 0.3)
    assert resolve_options(OPTIONS, {"budgets": "0.4, 0.2"})["budgets"] == (0.4, 0.2)
    for bad in ("0", "1", "0.5,", "x", "-0.1"):
        with pytest.raises(ValueError, match="budgets"):
            resolve_options(OPTIONS, {"budgets": bad})
    assert resolve_options(OPTIONS, {"baselines": "none"})["baselines"] == ()
    assert resolve_options(OPTIONS, {"baselines": "narrow,shallow"})["baselines"] == (
        "narrow", "shallow")
    with pytest.raises(ValueError, match="baselines"):
        resolve_options(OPTIONS, {"baselines": "wide"})


def test_mean_std_is_the_sample_std():
    mean, std = _mean_std([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1)
    assert _mean_std([0.25]) == (0.25, 0.0)


def test_floor_fraction_is_the_all_pruned_ratio_and_restores_the_logits():
    model = ConformerEncoder((32, 8), vocab_size=4, num_blocks=1, model_dim=8, num_heads=2,
                             ffn_dim=8, kernel_size=3, adaptive=True,
                             schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    before = [w.numpy() for w in model.weights]
    floor = _floor_fraction(model)
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), value)
    assert 0.0 < floor < count_parameters(model)["ratio"] == 1.0


def test_output_difference_is_measured_over_real_frames_only():
    reference = np.array([[[1.0, -2.0], [0.5, 4.0]],
                          [[2.0, 1.0], [0.0, -1e4]]])   # example 1: frame 1 is padding
    real = np.array([[True, True], [True, False]])
    outputs = reference.copy()
    outputs[0, 1, 0] += 0.02
    outputs[1, 1, 1] += 5.0                            # at a padded frame: ignored
    assert _max_relative_difference(reference, outputs, real) == pytest.approx(0.02 / 4.0)
    assert _max_relative_difference(reference, outputs, np.zeros_like(real)) == 0.0


def test_pruned_difference_of_a_variable_length_encoder_ignores_the_padding_logits():
    rng = np.random.default_rng(0)
    model = ConformerEncoder((30, 6), vocab_size=4, num_blocks=1, model_dim=8, num_heads=2,
                             ffn_dim=8, kernel_size=3, dropout_rate=0.0, variable_length=True,
                             adaptive=True, schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    for adl in model.get_layer("conformer_block_0").adaptive_dropout_sites.values():
        adl.retention_raw.assign(rng.choice([-0.5, 0.5], adl.retention_raw.shape))
    x = rng.standard_normal((4, 30, 6)).astype(np.float32)
    for i, length in enumerate([30, 17, 9, 0]):
        x[i, length:] = 0.0
    real = _real_frames(model, x)
    np.testing.assert_array_equal(real.sum(axis=1), [8, 5, 3, 0])
    reference = model.predict(x, verbose=0)
    assert np.abs(reference).max() == pytest.approx(1e4)        # the padding logits
    assert np.abs(reference[real]).max() < 1e3
    np.testing.assert_array_equal(real, ~(reference[..., 1:] <= -1e3).all(axis=-1))
    pruned = prune(model)
    assert _max_relative_difference(reference, pruned.predict(x, verbose=0), real) < 1e-5
    # A real change of the logits: the old measure (over all frames) divided it by 1e4.
    bias = pruned.get_layer("ctc_logits").bias
    bias.assign(bias + 0.05)
    changed = pruned.predict(x, verbose=0)
    largest = np.abs(reference[real]).max()
    assert _max_relative_difference(reference, changed, real) == pytest.approx(
        0.05 / largest, rel=1e-3)
    assert np.abs(changed - reference).max() / np.abs(reference).max() < 1e-5
