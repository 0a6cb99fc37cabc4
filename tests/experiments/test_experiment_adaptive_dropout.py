import json
import os

import numpy as np
import pytest

from keras_efficient.experiments import run_experiment
from keras_efficient.experiments.adaptive_dropout import _max_relative_difference, _real_frames
from keras_efficient.models import ConformerEncoder, conformer_parameters
from keras_efficient.pruning import prune
from keras_efficient.schedules import RetentionTargetSchedule


@pytest.mark.parametrize("blocks,dim,ffn,kernel", [(1, 16, 24, 3), (2, 12, 48, 7)])
def test_parameter_formula_used_for_hand_shrunk_baselines(blocks, dim, ffn, kernel):
    model = ConformerEncoder((64, 16), vocab_size=10, num_blocks=blocks, model_dim=dim,
                             num_heads=4, ffn_dim=ffn, kernel_size=kernel, adaptive=False)
    assert conformer_parameters((64, 16), 10, blocks, dim, ffn, kernel) == model.count_params()


@pytest.mark.slow
def test_tiny_run_writes_table_figure_and_metrics(tmp_path):
    out = os.path.join(str(tmp_path), "run")
    ctx = run_experiment("adaptive-dropout", quick=True, out_dir=out, options={
        "train_size": 64, "test_size": 16, "epochs": 1, "num_blocks": 1, "model_dim": 16})
    metrics = ctx.report.metrics
    names = [row["model"] for row in metrics["table1"]]
    assert names[:3] == ["Dense baseline", "ADL (hard mask, before pruning)",
                         "ADL pruned (proposed)"]
    assert any(n.startswith("Shallow") for n in names)
    assert any(n.startswith("Narrow (") for n in names)
    assert any(n.startswith("NarrowFFN") for n in names)
    assert metrics["pruned_max_relative_output_difference"] < 1e-5
    assert metrics["table1"][2]["parameters"] == metrics["parameters"]["effective"]
    assert len(metrics["surviving_units"]) == 5
    assert os.path.exists(os.path.join(out, "surviving_units.png"))
    with open(os.path.join(out, "metrics.json")) as f:
        assert "table1" in json.load(f)


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
