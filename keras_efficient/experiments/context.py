"""What an experiment gets to run with: options, progress output and a report.

An experiment's `run(ctx)` trains and measures; it records what it found with
`ctx.report` and prints progress with `ctx.log` or the Keras callback from
`ctx.progress(label)`. `keras-efficient reproduce` then writes, into `ctx.out_dir`:

  report.md     -- the text, tables and figures, in the order they were added;
  metrics.json  -- every metric added, nested as given;
  *.png         -- one file per figure.
"""

import json
import os
import sys
import time

import numpy as np

from keras_efficient.backend import keras

__all__ = ["ExperimentContext", "Report"]


class Report:
    """Collects Markdown blocks, tables, figures and JSON metrics."""

    def __init__(self, title):
        self.title = title
        self.blocks = []
        self.metrics = {}
        self.figures = []

    def add_text(self, markdown):
        self.blocks.append(markdown.strip() + "\n")

    def add_table(self, title, headers, rows, floatfmt="{:.4g}"):
        """A Markdown table; floats are formatted with `floatfmt`."""
        def cell(v):
            if isinstance(v, (float, np.floating)):
                return floatfmt.format(float(v))
            return str(v)
        lines = ["**{}**".format(title), "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.blocks.append("\n".join(lines) + "\n")

    def add_metrics(self, metrics, key=None):
        """Merges `metrics` (JSON-serialisable, nested) into metrics.json, under `key` if given."""
        target = self.metrics if key is None else self.metrics.setdefault(key, {})
        target.update(_jsonable(metrics))

    def add_figure(self, name, figure, caption=""):
        """Adds a matplotlib figure, saved as `<name>.png`."""
        self.figures.append((name, figure))
        self.blocks.append("![{0}]({1}.png)\n\n*{0}*\n".format(caption or name, name))

    def write(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        for name, figure in self.figures:
            figure.savefig(os.path.join(out_dir, name + ".png"), dpi=120, bbox_inches="tight")
            plt.close(figure)
        with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
            f.write("# {}\n\n".format(self.title) + "\n".join(self.blocks))
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(self.metrics, f, indent=2, sort_keys=True)
        return out_dir


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "numpy"):
        return _jsonable(value.numpy())
    return value


class _ProgressCallback(keras.callbacks.Callback):
    """One line per epoch: label, epoch, elapsed time and the logs."""

    def __init__(self, ctx, label):
        super().__init__()
        self.ctx, self.label = ctx, label

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        items = " ".join("{}={:.4g}".format(k, v) for k, v in sorted((logs or {}).items())
                         if isinstance(v, (int, float, np.floating)))
        total = self.params.get("epochs", "?")
        self.ctx.log("{} epoch {}/{} ({:.1f}s) {}".format(
            self.label, epoch + 1, total, time.time() - self._start, items))


class ExperimentContext:
    """Options and output of one experiment run.

    Attributes:
      name: the experiment's registered name.
      quick: a reduced run (the `--quick` flag): minutes on 2 CPU cores.
      seed: the random seed; experiments seed NumPy and TensorFlow from it.
      out_dir: where the report is written.
      options: extra experiment-specific options (`--option key=value`).
      report: the `Report` to fill.
    """

    def __init__(self, name, quick=False, seed=0, out_dir=None, options=None, stream=None):
        self.name = name
        self.quick = bool(quick)
        self.seed = int(seed)
        self.out_dir = out_dir or os.path.join("runs", name)
        self.options = dict(options or {})
        self.report = Report("keras-efficient reproduce {}{}".format(name, " --quick" if quick else ""))
        self._stream = stream or sys.stdout
        self._start = time.time()

    def log(self, message):
        """Prints a progress line with the elapsed time."""
        self._stream.write("[{:7.1f}s] {}\n".format(time.time() - self._start, message))
        self._stream.flush()

    def progress(self, label):
        """A Keras callback that prints one progress line per epoch."""
        return _ProgressCallback(self, label)

    def seed_everything(self, offset=0):
        """Seeds Python, NumPy and TensorFlow from `seed + offset`."""
        keras.utils.set_random_seed(self.seed + offset)
