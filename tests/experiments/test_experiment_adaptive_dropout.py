import json
import os

import pytest

from keras_efficient.experiments import run_experiment
from keras_efficient.models import ConformerEncoder, conformer_parameters


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
