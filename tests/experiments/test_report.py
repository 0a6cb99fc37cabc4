"""The experiment report writer: Markdown tables, JSON metrics, PNG figures."""

import json

import numpy as np

from keras_efficient.experiments import Report


def test_report_writes_markdown_json_and_png(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = Report("title")
    report.add_text("Some *text*.")
    report.add_table("T", ["a", "b"], [[1, 0.123456], ["x", np.float32(2.5)]])
    report.add_metrics({"acc": np.float32(0.5), "curve": np.arange(3)}, key="run1")
    report.add_metrics({"n": np.int64(4)})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.add_figure("curve", fig, "A curve")
    report.write(str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# title")
    assert "| 1 | 0.1235 |" in md and "| x | 2.5 |" in md
    assert "![A curve](curve.png)" in md
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == {"run1": {"acc": 0.5, "curve": [0, 1, 2]}, "n": 4}
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
