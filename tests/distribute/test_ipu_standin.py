"""The IPU path, tested with a STAND-IN for Graphcore's `tensorflow.python.ipu`.

No IPU or Poplar SDK is available here. These tests place a small fake module in
`sys.modules["tensorflow.python.ipu"]` that records how it is called, to check
the logic of `make_ipu_strategy` / `get_strategy("ipu")` (SDK 2.x `IPUConfig` and
SDK 1.x `ipu.utils` configuration, the `enable_keras_extensions` option, the
replica count). They do not show that anything runs on IPU hardware.
"""

import sys
import types

import pytest

from keras_efficient import distribute
from keras_efficient.distribute import ipu as ipu_module


class _Recorder:
    def __init__(self):
        self.calls = []


def _standin(recorder, new_api=True, accepts_extensions=True):
    ipu = types.ModuleType("tensorflow.python.ipu")

    class IPUStrategy:
        def __init__(self, **kwargs):
            if kwargs and not accepts_extensions:
                raise TypeError("unexpected keyword argument")
            recorder.calls.append(("IPUStrategy", kwargs))
            self.num_replicas_in_sync = 1  # as Graphcore's strategy reports

    ipu.ipu_strategy = types.SimpleNamespace(IPUStrategy=IPUStrategy)
    if new_api:
        class IPUConfig:
            auto_select_ipus = 0

            def configure_ipu_system(self):
                recorder.calls.append(("configure_ipu_system", self.auto_select_ipus))

        ipu.config = types.SimpleNamespace(IPUConfig=IPUConfig)
    else:
        def create_ipu_config():
            recorder.calls.append(("create_ipu_config",))
            return {}

        def auto_select_ipus(cfg, n):
            recorder.calls.append(("auto_select_ipus", n))
            return dict(cfg, n=n)

        def configure_ipu_system(cfg):
            recorder.calls.append(("configure_ipu_system", cfg["n"]))

        ipu.utils = types.SimpleNamespace(create_ipu_config=create_ipu_config,
                                          auto_select_ipus=auto_select_ipus,
                                          configure_ipu_system=configure_ipu_system)
    return ipu


@pytest.fixture
def fake_ipu(monkeypatch):
    def install(**kwargs):
        recorder = _Recorder()
        monkeypatch.setitem(sys.modules, "tensorflow.python.ipu", _standin(recorder, **kwargs))
        return recorder
    return install


def test_library_import_does_not_import_the_sdk():
    import subprocess
    code = ("import sys, keras_efficient.distribute as d; d.describe_devices(); "
            "d.resolve_strategy_kind('auto'); "
            "print(any(m.startswith('tensorflow.python.ipu') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_sdk2_config_and_strategy(fake_ipu):
    rec = fake_ipu()
    strategy = distribute.get_strategy("ipu", num_devices=2)
    assert rec.calls == [("configure_ipu_system", 2),
                         ("IPUStrategy", {"enable_keras_extensions": True})]
    # num_replicas_in_sync says 1; the requested replication is remembered.
    assert strategy.num_replicas_in_sync == 1
    assert distribute.ipu_replica_count(strategy) == 2


def test_default_one_ipu_and_keras_extensions_off(fake_ipu):
    rec = fake_ipu()
    strategy = distribute.make_ipu_strategy(enable_keras_extensions=False)
    assert rec.calls[0] == ("configure_ipu_system", 1)
    assert rec.calls[1] == ("IPUStrategy", {"enable_keras_extensions": False})
    assert distribute.ipu_replica_count(strategy) == 1


def test_sdk1_api_as_in_the_paper(fake_ipu):
    rec = fake_ipu(new_api=False, accepts_extensions=False)
    strategy = distribute.make_ipu_strategy(num_devices=1)
    assert rec.calls == [("create_ipu_config",), ("auto_select_ipus", 1),
                         ("configure_ipu_system", 1), ("IPUStrategy", {})]
    assert distribute.ipu_replica_count(strategy) == 1


def test_auto_prefers_ipus_when_the_sdk_sees_them(fake_ipu, monkeypatch):
    fake_ipu()
    assert distribute.ipu_sdk_available()
    monkeypatch.setattr(ipu_module, "ipu_device_count", lambda: 4)
    assert distribute.describe_devices()["ipu"] == 4
    assert distribute.resolve_strategy_kind("auto") == "ipu"
    monkeypatch.setattr(ipu_module, "ipu_device_count", lambda: 0)
    assert distribute.resolve_strategy_kind("auto") in ("gpu", "cpu")


def test_steps_per_execution_counts_ipu_replicas(fake_ipu):
    fake_ipu()
    strategy = distribute.make_ipu_strategy(num_devices=4)
    replicas = distribute.ipu_replica_count(strategy)
    # 64 batches over 4 replicas: 16 per replica; 16 divides, 32 does not.
    assert distribute.check_steps_per_execution(16, 64, num_replicas=replicas) == 16
    with pytest.raises(ValueError, match="steps_per_execution"):
        distribute.check_steps_per_execution(32, 64, num_replicas=replicas)


@pytest.mark.parametrize("num_devices,error", [(0, ValueError), (1.0, TypeError), ("1", TypeError)])
def test_bad_num_devices(fake_ipu, num_devices, error):
    fake_ipu()
    with pytest.raises(error, match="num_devices"):
        distribute.make_ipu_strategy(num_devices=num_devices)


def test_missing_sdk_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow.python.ipu", None)  # import raises ImportError
    assert not distribute.ipu_sdk_available()
    assert distribute.describe_devices()["ipu"] is None
    with pytest.raises(RuntimeError, match="Poplar SDK"):
        distribute.make_ipu_strategy()


def test_ipu_path_parses_as_python_38():
    """The last Graphcore wheels run Python 3.8: the modules the IPU path and this
    area's models import must parse with the 3.8 grammar (`ast` feature_version, a
    best-effort check: it rejects e.g. `match` and parenthesised context managers)
    and avoid str.removeprefix / removesuffix (3.9+)."""
    import ast
    import pathlib

    import keras_efficient

    root = pathlib.Path(keras_efficient.__file__).parent
    files = sorted((root / "distribute").glob("*.py")) + [root / p for p in (
        "backend.py", "utils/validation.py", "layers/bayesian.py", "layers/probabilistic_heads.py",
        "losses/negative_log_likelihood.py", "models/galaxy_estimator.py", "models/flow_vae.py")]
    for path in files:
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=(3, 8))
        assert ".removeprefix(" not in source and ".removesuffix(" not in source, path
    # The check itself rejects newer syntax.
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))
