"""`keras-efficient`: environment information and experiment reproduction.

  keras-efficient info
  keras-efficient list
  keras-efficient reproduce <experiment> [--quick] [--out DIR] [--seed N] [--dataset NAME]
                            [--option KEY=VALUE [KEY=VALUE ...]]
  keras-efficient reproduce <experiment> --help   # the experiment's options and defaults

`--option` keys and values are checked against the experiment's declared options
before anything runs; an unknown key or a bad value exits with status 2 and a
message listing the valid keys.
"""

import argparse
import os
import platform
import sys

from keras_efficient.cli.quiet import start_tensorflow_quietly

# `keras_efficient.data.DATASETS`, spelled out so that parsing arguments does not start
# TensorFlow (tests/cli/test_cli.py checks that the two agree).
DATASET_CHOICES = ("digits", "shapes", "cifar10", "cifar100")

__all__ = ["main", "build_parser"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-efficient",
        description="Efficient deep learning in Keras: reproduce the library's experiments.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("info", help="print versions, devices found and the strategy 'auto' picks")
    sub.add_parser("list", help="list the registered experiments")
    rep = sub.add_parser(
        "reproduce", help="run a registered experiment and write a report", add_help=False,
        description="Runs a registered experiment, prints progress, and writes report.md, "
                    "metrics.json and PNG plots into --out.")
    rep.set_defaults(reproduce_parser=rep)
    # --help is handled in main(): after the experiment's name it lists its options.
    rep.add_argument("-h", "--help", action="store_true",
                     help="show this help, and with an experiment its options and defaults")
    rep.add_argument("experiment", nargs="?", help="experiment name (see `keras-efficient list`)")
    rep.add_argument("--quick", action="store_true",
                     help="a reduced run that takes minutes on 2 CPU cores")
    rep.add_argument("--out", default=None, help="output directory (default: runs/<experiment>)")
    rep.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    rep.add_argument("--dataset", default=None, choices=DATASET_CHOICES,
                     help="image data set for the image experiments (e2-train, rebel, resnet-digits); "
                          "default: each experiment's own (see its --help); digits and shapes are "
                          "built in, cifar10/100 are downloaded on first use")
    rep.add_argument("--option", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                     help="experiment-specific options, repeatable (e.g. --option epochs=3 "
                          "depth=14); `reproduce NAME --help` lists them")
    return parser


def _parse_options(groups):
    options = {}
    for item in (item for group in groups for item in group):
        if "=" not in item:
            raise SystemExit("--option expects KEY=VALUE, got {!r}".format(item))
        key, value = item.split("=", 1)
        options[key.strip()] = value.strip()
    return options


def _first_line(error, limit=160):
    text = str(error).strip().splitlines()
    text = text[0] if text else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _info(stream):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_efficient import distribute
    from keras_efficient.backend import keras, tf
    from keras_efficient.version import __version__

    def version(module_name):
        # A broken optional package (e.g. tensorflow-compression's compiled ops on a
        # TensorFlow it was not built for) is reported in its line, never raised.
        try:
            module = __import__(module_name, fromlist=["__version__"])
            return getattr(module, "__version__", "installed")
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                return "not installed"
            return "broken ({}: {})".format(type(error).__name__, _first_line(error))
        except Exception as error:  # noqa: BLE001 - any failure of an optional import
            return "broken ({}: {})".format(type(error).__name__, _first_line(error))

    lines = [
        "keras_efficient {}".format(__version__),
        "python {} ({})".format(platform.python_version(), platform.machine()),
        "tensorflow {}".format(tf.__version__),
        "keras (Keras 2 API) {}".format(getattr(keras, "__version__", None) or version("keras")),
        "tensorflow-probability {}".format(version("tensorflow_probability")),
        "tensorflow-compression {}".format(version("tensorflow_compression")),
        "tensorflow-model-optimization {}".format(version("tensorflow_model_optimization")),
        "keras-tuner {}".format(version("keras_tuner")),
        "numpy {}".format(version("numpy")),
        "galsim {}".format(version("galsim")),
    ]
    devices = distribute.describe_devices()
    lines.append("devices: " + ", ".join("{}={}".format(k, devices[k] or 0)
                                         for k in ("cpu", "gpu", "ipu")))
    lines.append("strategy for kind='auto': {}".format(distribute.resolve_strategy_kind("auto")))
    stream.write("\n".join(lines) + "\n")
    return 0


def _list(stream):
    from keras_efficient.experiments import available_experiments

    for name, description in sorted(available_experiments().items()):
        stream.write("{:18s} {}\n".format(name, description))
    return 0


def main(argv=None, stream=None):
    stream = stream or sys.stdout
    args = build_parser().parse_args(argv)
    start_tensorflow_quietly()
    if args.command == "info":
        return _info(stream)
    if args.command == "list":
        return _list(stream)
    return _reproduce(args, stream)


def _reproduce(args, stream):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_efficient import experiments
    from keras_efficient.experiments.context import OptionError, describe_options
    from keras_efficient.experiments.registry import experiment_options
    from keras_efficient.experiments.runner import check_options

    known = ", ".join(sorted(experiments.available_experiments()))
    if args.experiment is None:
        if not args.help:
            args.reproduce_parser.error("the following arguments are required: experiment")
        stream.write(args.reproduce_parser.format_help())
        stream.write("\nexperiments: {}\n`keras-efficient reproduce NAME --help` lists the "
                     "options of one.\n".format(known))
        return 0
    if args.experiment not in experiments.available_experiments():
        stream.write("Unknown experiment {!r}. Available: {}\n".format(args.experiment, known))
        return 2
    if args.help:
        stream.write(args.reproduce_parser.format_help())
        stream.write("\noptions of {} (--option KEY=VALUE):\n".format(args.experiment))
        stream.write(describe_options(experiment_options(args.experiment)))
        return 0
    options = _parse_options(args.option)
    if args.dataset is not None:
        options["dataset"] = args.dataset
    try:
        check_options(args.experiment, options, quick=args.quick)
    except OptionError as error:
        stream.write("keras-efficient reproduce: {}\n".format(error))
        return 2
    experiments.run_experiment(args.experiment, quick=args.quick, seed=args.seed,
                               out_dir=args.out, options=options, stream=stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
