"""The TF 2.14 oneDNN workaround: which TensorFlow versions and CPU flags turn oneDNN off."""

import os

import pytest

from keras_efficient import backend
from keras_efficient import cpu_features as cpu
from keras_efficient.cpu_features import (
    apply_onednn_workaround,
    installed_tensorflow_version,
    onednn_workaround_needed,
    read_cpu_flags,
)

SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16"
AMD_EPYC = "fpu sse2 avx2 avx512f avx512dq avx512_bf16 avx512_vnni"  # this machine: no AMX
ICE_LAKE = "fpu sse2 avx2 avx512f avx512_vnni avx512_bitalg"


@pytest.mark.parametrize("version,flags,expected", [
    ("2.14.1", SAPPHIRE_RAPIDS, True),
    ("2.14.0", {"amx_tile"}, True),
    ("2.14.0rc1", ["avx512_fp16"], True),
    ("2.14", ("AMX_TILE",), True),
    ("2.14.1", AMD_EPYC, False),
    ("2.14.1", ICE_LAKE, False),
    ("2.14.1", {"amx_bf16", "amx_int8"}, False),  # only amx_tile / avx512_fp16 count
    ("2.14.1", "", False),
    ("2.14.1", None, False),
    ("2.21.0", SAPPHIRE_RAPIDS, False),   # the current line: not checked on AMX, left alone
    ("2.16.1", SAPPHIRE_RAPIDS, False),
    ("2.13.1", SAPPHIRE_RAPIDS, False),
    ("2.140.0", SAPPHIRE_RAPIDS, False),
    ("12.14.0", SAPPHIRE_RAPIDS, False),
    ("3.14.0", SAPPHIRE_RAPIDS, False),
    ("", SAPPHIRE_RAPIDS, False),
    (None, SAPPHIRE_RAPIDS, False),
    ("not a version", SAPPHIRE_RAPIDS, False),
])
def test_workaround_only_for_tf_2_14_on_amx_or_avx512_fp16(version, flags, expected):
    assert onednn_workaround_needed(version, flags) is expected


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: {}\n\n"
    path.write_text(block.format(0, flags) + block.format(1, flags))
    return str(path)


def test_read_cpu_flags_from_the_first_flags_line(tmp_path):
    assert read_cpu_flags(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) == frozenset(SAPPHIRE_RAPIDS.split())


@pytest.mark.parametrize("content", [None, "", "processor : 0\n", "\x00\xff garbage : flags\n"])
def test_read_cpu_flags_is_empty_when_there_is_nothing_to_read(tmp_path, content):
    path = tmp_path / "cpuinfo"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    assert read_cpu_flags(str(path)) == frozenset()
    assert read_cpu_flags(str(tmp_path)) == frozenset()  # a directory: OSError


def test_read_cpu_flags_does_nothing_outside_linux(tmp_path, monkeypatch):
    path = _cpuinfo(tmp_path, SAPPHIRE_RAPIDS)
    monkeypatch.setattr(cpu.sys, "platform", "darwin")
    assert read_cpu_flags(path) == frozenset()


def test_apply_sets_the_variable_only_where_needed(tmp_path):
    amx, epyc = _cpuinfo(tmp_path, SAPPHIRE_RAPIDS), str(tmp_path / "missing")
    environ = {}
    assert apply_onednn_workaround(environ, "2.14.1", amx) is True
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    for version, path in (("2.21.0", amx), ("2.14.1", epyc)):
        environ = {}
        assert apply_onednn_workaround(environ, version, path) is False
        assert environ == {}


@pytest.mark.parametrize("value", ["1", "0", ""])
def test_the_users_own_setting_wins(tmp_path, value):
    environ = {"TF_ENABLE_ONEDNN_OPTS": value}
    assert apply_onednn_workaround(environ, "2.14.1", _cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) is False
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


def test_apply_never_raises(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot read")

    monkeypatch.setattr(cpu, "read_cpu_flags", broken)
    environ = {}
    assert apply_onednn_workaround(environ, "2.14.1", _cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) is False
    assert environ == {}
    monkeypatch.setattr(cpu, "installed_tensorflow_version", broken)
    assert apply_onednn_workaround(environ) is False


def test_installed_version_is_read_without_importing_tensorflow():
    assert installed_tensorflow_version() == backend.tf.__version__


def test_backend_applied_the_decision_for_this_machine():
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") not in (None, "0"):
        pytest.skip("TF_ENABLE_ONEDNN_OPTS was set by the user; the backend left it alone")
    needed = onednn_workaround_needed(installed_tensorflow_version(), read_cpu_flags())
    assert isinstance(backend.ONEDNN_WORKAROUND, bool)
    if backend.ONEDNN_WORKAROUND:
        assert needed and os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    elif needed:
        # Not applied although needed: only because the variable was set before the import.
        assert "TF_ENABLE_ONEDNN_OPTS" in os.environ
    # The path-loaded check is repeatable and does not raise.
    assert backend._apply_onednn_workaround() is False


_FAKE_AMX_START = """
import builtins, io, os
real_open = builtins.open

def fake_open(path, *args, **kwargs):
    if path == "/proc/cpuinfo":
        return io.StringIO("processor\\t: 0\\n"
                           "flags\\t\\t: fpu avx512f amx_bf16 amx_tile amx_int8\\n")
    return real_open(path, *args, **kwargs)

builtins.open = fake_open
import keras_efficient.backend as backend
print("RESULT", backend.ONEDNN_WORKAROUND, os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
"""


@pytest.mark.parametrize("user_value", [None, "1"])
def test_backend_import_on_a_simulated_amx_cpu(user_value):
    """A fresh process whose /proc/cpuinfo reads like a Sapphire Rapids Xeon."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's "oneDNN custom operations are on" line
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    out = subprocess.run([sys.executable, "-c", _FAKE_AMX_START], capture_output=True,
                         text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    tf_214 = backend.TF_VERSION == (2, 14)
    if tf_214 and user_value is None:
        assert result == ["RESULT True 0"]
        assert "oneDNN custom operations are on" not in out.stderr  # TensorFlow read it
    else:
        assert result == ["RESULT False {}".format(user_value)]
