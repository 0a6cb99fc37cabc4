"""The command line: help, list, unknown experiments, and a real end-to-end reproduce."""

import io
import json
import os
import subprocess
import sys

import pytest

from keras_efficient.cli import main
from keras_efficient.experiments import EXPERIMENTS, available_experiments


def test_reproduce_help_runs_in_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "keras_efficient.cli", "reproduce", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--seed" in out.stdout and "--out" in out.stdout


def test_list_names_every_importable_experiment():
    stream = io.StringIO()
    assert main(["list"], stream=stream) == 0
    listed = {line.split()[0] for line in stream.getvalue().splitlines()}
    assert listed == set(available_experiments())
    assert "resnet-digits" in listed
    assert listed <= set(EXPERIMENTS)


def test_unknown_experiment_is_a_clear_error():
    stream = io.StringIO()
    assert main(["reproduce", "no-such-experiment"], stream=stream) == 2
    assert "Unknown experiment 'no-such-experiment'" in stream.getvalue()


def test_bad_option_syntax():
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["reproduce", "resnet-digits", "--option", "epochs"], stream=io.StringIO())


def test_info_prints_versions_devices_and_strategy():
    stream = io.StringIO()
    assert main(["info"], stream=stream) == 0
    text = stream.getvalue()
    from keras_efficient.backend import tf

    assert "tensorflow {}".format(tf.__version__) in text
    assert "keras (Keras 2 API) 2." in text
    assert "devices: cpu=" in text
    assert "strategy for kind='auto':" in text


def test_reproduce_writes_report_metrics_and_plot(tmp_path):
    """A real (tiny) run of the reference experiment, end to end through the CLI."""
    stream = io.StringIO()
    out = tmp_path / "run"
    code = main(["reproduce", "resnet-digits", "--quick", "--out", str(out), "--seed", "3",
                 "--option", "epochs=1"], stream=stream)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["seed"] == 3 and metrics["epochs"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert len(metrics["history"]["loss"]) == 1
    report = (out / "report.md").read_text()
    assert "| ResNet-8 |" in report and "learning_curves.png" in report
    assert os.path.getsize(out / "learning_curves.png") > 1000
    assert "epoch 1/1" in stream.getvalue()


def test_dataset_flag_reaches_the_experiment(monkeypatch):
    """--dataset is passed to the experiment as the `dataset` option (offline: cifar fails clearly)."""
    seen = {}

    def fake_run(name, quick, seed, out_dir, options, stream):
        seen.update(name=name, options=options)

    monkeypatch.setattr("keras_efficient.experiments.run_experiment", fake_run)
    assert main(["reproduce", "resnet-digits", "--dataset", "cifar100", "--option", "epochs=2"],
                stream=io.StringIO()) == 0
    assert seen == {"name": "resnet-digits", "options": {"epochs": "2", "dataset": "cifar100"}}
    with pytest.raises(SystemExit):
        main(["reproduce", "resnet-digits", "--dataset", "mnist"], stream=io.StringIO())


def test_dataset_flag_choices_are_the_built_in_and_downloaded_sets(monkeypatch):
    from keras_efficient.cli.main import DATASET_CHOICES
    from keras_efficient.data import DATASETS

    assert tuple(DATASET_CHOICES) == tuple(DATASETS)
    seen = {}
    monkeypatch.setattr("keras_efficient.experiments.run_experiment",
                        lambda name, quick, seed, out_dir, options, stream: seen.update(options))
    assert main(["reproduce", "rebel", "--dataset", "shapes"], stream=io.StringIO()) == 0
    assert seen == {"dataset": "shapes"}


def _write_broken_package(root, name, error):
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("raise {}\n".format(error))


def test_info_reports_a_broken_optional_package_in_its_line(tmp_path):
    # As tensorflow-compression on a TensorFlow it was not built for: the import fails
    # inside its compiled ops, not with "no module named".
    _write_broken_package(tmp_path, "tensorflow_compression",
                          "ImportError('undefined symbol: _ZN10tensorflow8OpKernel')")
    _write_broken_package(tmp_path, "galsim", "RuntimeError('broken galsim')")
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "keras_efficient.cli", "info"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    tfc_line = [line for line in lines if line.startswith("tensorflow-compression ")]
    assert tfc_line == ["tensorflow-compression broken (ImportError: undefined symbol: "
                        "_ZN10tensorflow8OpKernel)"]
    assert "galsim broken (RuntimeError: broken galsim)" in lines
    assert "strategy for kind='auto':" in out.stdout


def test_info_keeps_tensorflow_start_up_noise_off_the_terminal():
    out = subprocess.run([sys.executable, "-m", "keras_efficient.cli", "info"],
                         capture_output=True, text=True, timeout=180,
                         env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert out.returncode == 0, out.stderr
    for noise in ("oneDNN", "absl::InitializeLog", "cuda", "cpu_feature_guard"):
        assert noise not in out.stderr, out.stderr


def test_quiet_start_replays_native_output_when_the_start_fails(capfd):
    from keras_efficient.cli.quiet import quiet_native_start

    with pytest.raises(RuntimeError, match="start failed"):
        with quiet_native_start():
            os.write(2, b"native line before the failure\n")
            raise RuntimeError("start failed")
    assert "native line before the failure" in capfd.readouterr().err
    with quiet_native_start():
        os.write(2, b"native noise\n")
    assert "native noise" not in capfd.readouterr().err


# Declared experiment options: unknown keys and bad values exit 2, --help lists them.


def test_unknown_option_exits_2_with_the_valid_keys_and_no_traceback():
    out = subprocess.run([sys.executable, "-m", "keras_efficient.cli", "reproduce",
                          "resnet-digits", "--quick", "--option", "epochs=1", "depht=8"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Unknown option 'depht' for experiment 'resnet-digits' (did you mean 'depth'?)" \
        in out.stdout
    assert "Valid options: base_filters, batch_size, dataset, depth, epochs" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert "experiment resnet-digits" not in out.stdout  # nothing ran


@pytest.mark.parametrize("argv,message", [
    (["--option", "epochs=0"], "Invalid value received for option `epochs` of experiment "
                               "'resnet-digits'. Expected an integer >= 1. Received: epochs='0'"),
    (["--option", "depth=9"], "Expected a ResNet depth 6n+2"),
    (["--option", "epochs=two"], "Received: epochs='two'"),
])
def test_bad_option_value_exits_2_before_the_run(argv, message, monkeypatch):
    calls = []
    monkeypatch.setattr("keras_efficient.experiments.run_experiment",
                        lambda *args, **kwargs: calls.append(args))
    stream = io.StringIO()
    assert main(["reproduce", "resnet-digits", "--quick"] + argv, stream=stream) == 2
    assert message in stream.getvalue()
    assert "Valid options: base_filters, batch_size" in stream.getvalue()
    assert calls == []


def test_dataset_flag_on_an_experiment_without_images_is_an_unknown_option():
    stream = io.StringIO()
    assert main(["reproduce", "adaptive-dropout", "--dataset", "digits"], stream=stream) == 2
    assert "Unknown option 'dataset' for experiment 'adaptive-dropout'" in stream.getvalue()


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_reproduce_name_help_lists_every_option_with_quick_and_full_defaults(name):
    from keras_efficient.experiments.context import _show
    from keras_efficient.experiments.registry import experiment_options

    stream = io.StringIO()
    assert main(["reproduce", name, "--help"], stream=stream) == 0
    text = stream.getvalue()
    assert "--quick" in text and "options of {} (--option KEY=VALUE):".format(name) in text
    for key, option in experiment_options(name).items():
        line = [line for line in text.splitlines() if line.startswith("  {}: ".format(key))]
        assert len(line) == 1, (key, text)
        assert option.expected in line[0]
        if option.quick == option.default:
            assert line[0].endswith("; default {}".format(_show(option.default)))
        else:
            assert line[0].endswith("; default {} with --quick, {} full".format(
                _show(option.quick), _show(option.default)))
        assert "      {}".format(option.help) in text


def test_reproduce_help_without_a_name_lists_the_experiments():
    stream = io.StringIO()
    assert main(["reproduce", "--help"], stream=stream) == 0
    assert "--option KEY=VALUE" in stream.getvalue()
    assert "experiments: " + ", ".join(sorted(available_experiments())) in stream.getvalue()
    with pytest.raises(SystemExit) as info:
        main(["reproduce"], stream=io.StringIO())
    assert info.value.code == 2


def test_typed_defaults_and_options_reach_the_experiment(monkeypatch, tmp_path):
    from keras_efficient.experiments import registry

    module = registry.load_experiment("resnet-digits")
    seen = {}
    monkeypatch.setattr(module, "run", lambda ctx: seen.update(ctx.options))
    assert main(["reproduce", "resnet-digits", "--quick", "--out", str(tmp_path), "--dataset",
                 "cifar10", "--option", "epochs=2", "train_size=64", "--option", "batch_size=8"],
                stream=io.StringIO()) == 0
    assert seen == {"dataset": "cifar10", "depth": 8, "base_filters": 16, "epochs": 2,
                    "batch_size": 8, "train_size": 64, "test_size": None}
