"""Declared experiment options: parsers, central validation, defaults, help text."""

import io
import os

import pytest

from keras_efficient.experiments import EXPERIMENTS, ExperimentContext, run_experiment
from keras_efficient.experiments.context import (
    Option,
    OptionError,
    choice,
    describe_options,
    integer,
    integers,
    number,
    resnet_depth,
    resolve_options,
    subset,
    text,
)
from keras_efficient.experiments.registry import experiment_options, load_experiment
from keras_efficient.experiments.runner import check_options

DECLARED = {
    "depth": Option(resnet_depth(), default=20, quick=8, help="ResNet depth"),
    "epochs": Option(integer(low=1), default=20, quick=2, help="epochs"),
    "lr": Option(number(low=0.0, low_inclusive=False), default=0.1, help="learning rate"),
    "dataset": Option(choice("digits", "cifar10"), default="digits", help="data"),
    "sizes": Option(integers(low=1), default=(2, 4), help="batch sizes"),
    "kinds": Option(subset("cpu", "gpu"), default=None, help="device kinds"),
    "cache": Option(text(), default=None, help="cache directory"),
}


@pytest.mark.parametrize("parse,value,expected", [
    (integer(low=1), "3", 3),
    (integer(low=1), " 12 ", 12),
    (integer(low=1), 5, 5),
    (integer(low=0, high=2), "0", 0),
    (resnet_depth(), "14", 14),
    (number(low=0.0), "1e-3", 1e-3),
    (number(low=0.0), 2, 2.0),
    (number(low=0.0, high=1.0, high_inclusive=False), "0.5", 0.5),
    (choice("a", "b"), "b", "b"),
    (integers(low=1), "2,4, 8", (2, 4, 8)),
    (integers(low=1), [2, 4], (2, 4)),
    (subset("x", "y", "z"), "z,x", ("z", "x")),
    (text(), " runs/cache ", "runs/cache"),
])
def test_parsers_accept_strings_and_typed_values(parse, value, expected):
    assert parse(value) == expected
    assert type(parse(value)) is type(expected)


@pytest.mark.parametrize("parse,value", [
    (integer(low=1), "0"),          # zero
    (integer(low=1), "-3"),         # negative
    (integer(low=1), "2.5"),        # float where int
    (integer(low=1), 2.5),
    (integer(low=1), None),
    (integer(low=1), True),
    (integer(low=1), "ten"),        # string
    (integer(low=0, high=2), "3"),
    (resnet_depth(), "9"),
    (resnet_depth(), "2"),
    (number(low=0.0, low_inclusive=False), "0"),
    (number(low=0.0), "nan"),
    (number(low=0.0), "inf"),
    (number(low=0.0), None),
    (number(high=1.0, high_inclusive=False), "1.0"),
    (choice("a", "b"), "c"),
    (choice("a", "b"), None),
    (integers(low=1), "2,,4"),
    (integers(low=1), ""),
    (integers(low=1), "2,0"),
    (subset("x", "y"), "x,w"),
    (subset("x", "y"), ""),
    (text(), ""),
    (text(), 3),
])
def test_parsers_reject_bad_values(parse, value):
    with pytest.raises((ValueError, TypeError)):
        parse(value)


def test_option_needs_a_parser():
    with pytest.raises(TypeError, match="parser"):
        Option(3)


def test_defaults_depend_on_quick_and_given_values_are_typed():
    full = resolve_options(DECLARED, {}, quick=False)
    quick = resolve_options(DECLARED, {}, quick=True)
    assert full == {"depth": 20, "epochs": 20, "lr": 0.1, "dataset": "digits", "sizes": (2, 4),
                    "kinds": None, "cache": None}
    assert quick == dict(full, depth=8, epochs=2)
    given = resolve_options(DECLARED, {"epochs": "3", "sizes": "8,16", "kinds": "gpu"}, quick=True)
    assert given == dict(quick, epochs=3, sizes=(8, 16), kinds=("gpu",))


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(OptionError) as info:
        resolve_options(DECLARED, {"epoch": "3", "zzz": "1"}, experiment="demo")
    message = str(info.value)
    assert "Unknown options 'epoch', 'zzz' for experiment 'demo'" in message
    assert "did you mean 'epochs'?" in message
    assert "Valid options: cache, dataset, depth, epochs, kinds, lr, sizes" in message
    assert "keras-efficient reproduce demo --help" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key,value,expected", [
    ("epochs", "0", "an integer >= 1"),
    ("epochs", "two", "an integer >= 1"),
    ("depth", "9", "6n+2"),
    ("lr", "-1", "a number > 0.0"),
    ("dataset", "mnist", "one of digits, cifar10"),
    ("sizes", "2,x", "comma-separated integers >= 1"),
])
def test_bad_value_says_what_was_expected_and_received(key, value, expected):
    with pytest.raises(OptionError) as info:
        resolve_options(DECLARED, {key: value}, experiment="demo")
    message = str(info.value)
    assert "Invalid value received for option `{}` of experiment 'demo'".format(key) in message
    assert expected in message
    assert "Received: {}={!r}".format(key, value) in message
    assert "Valid options: cache, dataset, depth" in message


def test_describe_options_lists_quick_and_full_defaults_and_help():
    text_ = describe_options(DECLARED)
    assert ("  depth: a ResNet depth 6n+2 >= 8 (8, 14, 20, 32, ...); "
            "default 8 with --quick, 20 full") in text_
    assert "  sizes: comma-separated integers >= 1; default 2,4" in text_
    assert "  kinds: comma-separated names out of cpu, gpu; default unset" in text_
    assert "      learning rate" in text_
    assert describe_options({}) == "  (this experiment takes no options)\n"


def test_context_validates_and_reads_typed_values(tmp_path):
    ctx = ExperimentContext("demo", quick=True, out_dir=str(tmp_path), options={"epochs": "4"},
                            stream=io.StringIO(), declared=DECLARED)
    assert ctx.option("epochs") == 4 and ctx.option("depth") == 8
    with pytest.raises(KeyError, match="declares no option 'epoch'"):
        ctx.option("epoch")
    with pytest.raises(OptionError, match="Unknown option 'epoch'"):
        ExperimentContext("demo", options={"epoch": "4"}, declared=DECLARED)
    with pytest.raises(OptionError, match="takes no options"):
        ExperimentContext("demo", options={"epochs": "4"})


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_declares_consistent_options(name):
    declared = experiment_options(name)
    assert declared, "{} declares no OPTIONS".format(name)
    for key, option in declared.items():
        assert isinstance(option, Option), key
        assert option.help and "\n" not in option.help, key
        assert getattr(option.parse, "expected", None), key
        for default in {option.default, option.quick} - {None}:
            # Every default is a value its own parser accepts, unchanged.
            assert option.parse(default) == default, (key, default)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("quick", [True, False])
def test_defaults_reach_the_experiment(name, quick, monkeypatch, tmp_path):
    module = load_experiment(name)
    seen = {}
    monkeypatch.setattr(module, "run", lambda ctx: seen.update(ctx.options))
    run_experiment(name, quick=quick, out_dir=str(tmp_path), stream=io.StringIO())
    expected = {key: option.default_for(quick) for key, option in module.OPTIONS.items()}
    assert seen == expected
    assert seen == check_options(name, quick=quick)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_unknown_option_fails_before_the_run_starts(name, monkeypatch, tmp_path):
    module = load_experiment(name)
    calls = []
    monkeypatch.setattr(module, "run", calls.append)
    out = os.path.join(str(tmp_path), "run")
    with pytest.raises(OptionError, match="Unknown option 'no_such_option'"):
        run_experiment(name, quick=True, out_dir=out, options={"no_such_option": "1"},
                       stream=io.StringIO())
    key = sorted(module.OPTIONS)[0]
    with pytest.raises(OptionError, match="option `{}`".format(key)):
        run_experiment(name, quick=True, out_dir=out, options={key: "not a valid value ,,"},
                       stream=io.StringIO())
    assert calls == [] and not os.path.exists(out)


def test_given_values_reach_the_experiment_typed(monkeypatch, tmp_path):
    module = load_experiment("e2-train")
    seen = {}
    monkeypatch.setattr(module, "run", lambda ctx: seen.update(ctx.options))
    run_experiment("e2-train", quick=True, out_dir=str(tmp_path), stream=io.StringIO(),
                   options={"epochs": "2", "lr": "0.1", "variants": "SMB,SLU", "depth": 8})
    assert seen["epochs"] == 2 and seen["lr"] == 0.1 and seen["depth"] == 8
    assert seen["variants"] == ("SMB", "SLU")
    assert seen["base_filters"] == 8  # the --quick default

