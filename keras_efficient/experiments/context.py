"""What an experiment gets to run with: options, progress output and a report.

An experiment's `run(ctx)` trains and measures; it records what it found with
`ctx.report` and prints progress with `ctx.log` or the Keras callback from
`ctx.progress(label)`. `keras-efficient reproduce` then writes, into `ctx.out_dir`:

  report.md     -- the text, tables and figures, in the order they were added;
  metrics.json  -- every metric added, nested as given;
  *.png         -- one file per figure.

Each experiment module declares its options in an `OPTIONS` table,
{key: `Option(parser, default=..., quick=..., help=...)`}. `ExperimentContext`
checks the options given (`--option KEY=VALUE`) against that table before the
run starts: an unknown key or a value its parser rejects raises `OptionError`,
whose message lists the valid keys. The experiment then reads typed values with
`ctx.option(key)`; keys not given get their default (`quick` under `--quick`).
"""

import difflib
import json
import math
import numbers
import os
import sys
import time

import numpy as np

from keras_efficient.backend import keras

__all__ = [
    "ExperimentContext",
    "Option",
    "OptionError",
    "Report",
    "choice",
    "describe_options",
    "integer",
    "integers",
    "multiple_of",
    "number",
    "parser",
    "resnet_depth",
    "resolve_options",
    "subset",
    "text",
]


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


class OptionError(ValueError):
    """An unknown experiment option, or a value that its parser rejects."""


def parser(expected):
    """Decorator: marks `parse` (value -> typed value, or ValueError) with what it expects.

    `expected` ("an integer >= 1") is shown in the help and in error messages.
    """
    def mark(parse):
        parse.expected = expected
        return parse
    return mark


def _bounds(low, high, low_inclusive=True, high_inclusive=True):
    if low is not None and high is not None:
        return " in {}{}, {}{}".format("[" if low_inclusive else "(", low, high,
                                       "]" if high_inclusive else ")")
    if low is not None:
        return " {} {}".format(">=" if low_inclusive else ">", low)
    if high is not None:
        return " {} {}".format("<=" if high_inclusive else "<", high)
    return ""


def _check_bounds(value, low, high, low_inclusive=True, high_inclusive=True):
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(value)
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(value)
    return value


def integer(low=None, high=None):
    """Parser of an integer option ("12" or 12), optionally bounded (inclusive)."""
    @parser("an integer" + _bounds(low, high))
    def parse(value):
        if isinstance(value, str):
            value = int(value.strip())
        elif isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(value)
        return _check_bounds(int(value), low, high)
    return parse


def multiple_of(step, low, reason):
    """Parser of an integer option that is a multiple of `step` and >= `low`."""
    one = integer(low=low)

    @parser("a multiple of {}, >= {} ({})".format(step, low, reason))
    def parse(value):
        number = one(value)
        if number % step:
            raise ValueError(value)
        return number
    return parse


def resnet_depth():
    """Parser of a CIFAR ResNet depth: 6n + 2 with n >= 1 (8, 14, 20, ...)."""
    one = integer(low=8)

    @parser("a ResNet depth 6n+2 >= 8 (8, 14, 20, 32, ...)")
    def parse(value):
        depth = one(value)
        if (depth - 2) % 6:
            raise ValueError(value)
        return depth
    return parse


def number(low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Parser of a finite float option ("1e-3", 0.5 or 2), optionally bounded."""
    @parser("a number" + _bounds(low, high, low_inclusive, high_inclusive))
    def parse(value):
        if isinstance(value, str):
            value = float(value.strip())
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(value)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(value)
        return _check_bounds(value, low, high, low_inclusive, high_inclusive)
    return parse


def choice(*values):
    """Parser of an option that is one of `values` (strings)."""
    @parser("one of " + ", ".join(values))
    def parse(value):
        if value not in values:
            raise ValueError(value)
        return value
    return parse


def _items(value):
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(value)
    if not items or any(v == "" for v in items):
        raise ValueError(value)
    return items


def integers(low=None, high=None):
    """Parser of a comma-separated list of integers ("2,4,8" or [2, 4, 8]) -> tuple."""
    one = integer(low, high)

    @parser("comma-separated integers" + _bounds(low, high))
    def parse(value):
        return tuple(one(v) for v in _items(value))
    return parse


def subset(*values):
    """Parser of a comma-separated, non-empty selection of `values` -> tuple."""
    @parser("comma-separated names out of " + ", ".join(values))
    def parse(value):
        items = _items(value)
        if any(v not in values for v in items):
            raise ValueError(value)
        return tuple(items)
    return parse


def text():
    """Parser of a non-empty string option."""
    @parser("a non-empty string")
    def parse(value):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(value)
        return value.strip()
    return parse


_SAME = object()


class Option:
    """One declared option of an experiment.

    Args:
      parse: the parser, e.g. `integer(low=1)`: takes the command line's string
        (or an already typed value from Python) and returns the typed value, or
        raises `ValueError`; its `expected` attribute names what it accepts.
      default: the value when the option is not given (full run). `None` means
        "not set": the experiment decides (the help says what that means).
      quick: the default under `--quick`, when it differs from `default`.
      help: one line, shown by `keras-efficient reproduce NAME --help`.
    """

    def __init__(self, parse, default=None, quick=_SAME, help=""):  # noqa: A002 - argparse's name
        if not callable(parse):
            raise TypeError("Option expects a parser such as integer(low=1); "
                            "received {!r}".format(parse))
        self.parse = parse
        self.default = default
        self.quick = default if quick is _SAME else quick
        self.help = help

    @property
    def expected(self):
        return getattr(self.parse, "expected", "a value")

    def default_for(self, quick):
        """The default of a `--quick` run if `quick`, else of a full run."""
        return self.quick if quick else self.default


def _valid_keys(declared):
    return ", ".join(sorted(declared)) if declared else "(none: this experiment takes no options)"


def resolve_options(declared, given, quick=False, experiment="experiment"):
    """Typed values of every option in `declared`: `given` parsed, defaults for the rest.

    Args:
      declared: {key: Option}, an experiment module's `OPTIONS`.
      given: {key: value}, strings from the command line or typed values.
      quick: take the `--quick` defaults.
      experiment: the experiment's name, for the messages.

    Raises:
      OptionError: an unknown key or an invalid value; the message lists the valid keys.
    """
    given = dict(given or {})
    hint = "see `keras-efficient reproduce {} --help`".format(experiment)
    unknown = sorted(str(k) for k in given if k not in declared)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(declared), n=1)
        raise OptionError(
            "Unknown option{} {} for experiment {!r}{}. Valid options: {} ({}).".format(
                "s" if len(unknown) > 1 else "", ", ".join(repr(k) for k in unknown),
                experiment, " (did you mean {!r}?)".format(close[0]) if close else "",
                _valid_keys(declared), hint))
    values = {}
    for key, option in declared.items():
        if key not in given:
            values[key] = option.default_for(quick)
            continue
        try:
            values[key] = option.parse(given[key])
        except (TypeError, ValueError):
            raise OptionError(
                "Invalid value received for option `{0}` of experiment {1!r}. Expected {2}. "
                "Received: {0}={3!r}. Valid options: {4} ({5}).".format(
                    key, experiment, option.expected, given[key], _valid_keys(declared),
                    hint)) from None
    return values


def _show(value):
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def describe_options(declared):
    """Help text for an `OPTIONS` table: key, accepted values, quick/full defaults, help.

    Options are listed in the order the table declares them.
    """
    if not declared:
        return "  (this experiment takes no options)\n"
    lines = []
    for key, option in declared.items():
        if option.quick == option.default:
            default = "default {}".format(_show(option.default))
        else:
            default = "default {} with --quick, {} full".format(_show(option.quick),
                                                                _show(option.default))
        lines.append("  {}: {}; {}".format(key, option.expected, default))
        if option.help:
            lines.append("      {}".format(option.help))
    return "\n".join(lines) + "\n"


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
      options: {key: typed value} of every declared option (`--option key=value`
        parsed, the defaults of this `quick` for the others); read with `option(key)`.
      declared: the experiment's `OPTIONS` table ({key: Option}).
      report: the `Report` to fill.

    Raises:
      OptionError: `options` holds a key not in `declared` or a value its parser
        rejects (checked here, before the experiment runs).
    """

    def __init__(self, name, quick=False, seed=0, out_dir=None, options=None, stream=None,
                 declared=None):
        self.name = name
        self.quick = bool(quick)
        self.seed = int(seed)
        self.out_dir = out_dir or os.path.join("runs", name)
        self.declared = dict(declared or {})
        self.options = resolve_options(self.declared, options, self.quick, name)
        self.report = Report("keras-efficient reproduce {}{}".format(name, " --quick" if quick else ""))
        self._stream = stream or sys.stdout
        self._start = time.time()

    def option(self, key):
        """The typed value of option `key` (given, or its default for this run)."""
        if key not in self.options:
            raise KeyError("Experiment {!r} declares no option {!r}; its OPTIONS: {}".format(
                self.name, key, _valid_keys(self.declared)))
        return self.options[key]

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
