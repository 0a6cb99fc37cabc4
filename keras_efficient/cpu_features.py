"""CPU features that decide how TensorFlow is started (read before TensorFlow is imported).

TensorFlow 2.14's oneDNN CPU kernels corrupt the native heap on Intel Xeons with
AMX or AVX-512 FP16 (Sapphire Rapids and later): `keras-efficient reproduce
e2-train --quick` aborted with "double free or corruption" inside its first
`model.fit`, and ran with `TF_ENABLE_ONEDNN_OPTS=0`. `keras_efficient.backend`
therefore calls `apply_onednn_workaround()` before it imports TensorFlow: on
Linux, with TensorFlow 2.14.x installed and `amx_tile` or `avx512_fp16` among
the CPU flags, it sets `TF_ENABLE_ONEDNN_OPTS=0` unless the variable is already
set (the user's own setting wins). Elsewhere it does nothing.

This module imports neither TensorFlow nor the rest of keras_efficient, so the
backend can import it before TensorFlow (it sits outside `keras_efficient.utils`,
whose validation module imports the backend).
"""

import os
import re
import sys

__all__ = [
    "ONEDNN_RISKY_FLAGS",
    "apply_onednn_workaround",
    "installed_tensorflow_version",
    "onednn_workaround_needed",
    "read_cpu_flags",
]

#: CPU flags (as in /proc/cpuinfo) of the CPUs where TF 2.14's oneDNN kernels crash.
ONEDNN_RISKY_FLAGS = frozenset({"amx_tile", "avx512_fp16"})

_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def _release(version):
    """(major, minor) of a version string such as "2.14.1" or "2.14.0rc1"; None if unparsable."""
    match = re.match(r"\s*(\d+)\.(\d+)(?!\d)", version if isinstance(version, str) else "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def onednn_workaround_needed(tf_version, cpu_flags):
    """Whether oneDNN must be turned off: TensorFlow 2.14.x on a CPU with AMX or AVX-512 FP16.

    Args:
      tf_version: TensorFlow's version string ("2.14.1", "2.14.0rc1"), or None.
      cpu_flags: the CPU flags, an iterable of names or one whitespace-separated
        string (the `flags` line of /proc/cpuinfo); None or empty when unknown.

    Returns:
      True only for TensorFlow 2.14.x and at least one of `ONEDNN_RISKY_FLAGS`.
    """
    if _release(tf_version) != (2, 14):
        return False
    if isinstance(cpu_flags, str):
        cpu_flags = cpu_flags.split()
    return bool({str(flag).lower() for flag in cpu_flags or ()} & ONEDNN_RISKY_FLAGS)


def read_cpu_flags(path="/proc/cpuinfo"):
    """The CPU flags of the first `flags` line of /proc/cpuinfo (empty: unreadable, not Linux)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open(path, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return frozenset(value.split())
    except (OSError, ValueError):
        pass
    return frozenset()


def installed_tensorflow_version():
    """The installed TensorFlow's version from its package metadata (no import), or None."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for distribution in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(distribution)
        except Exception:  # noqa: BLE001 - PackageNotFoundError or broken metadata
            continue
    return None


def apply_onednn_workaround(environ=None, tf_version=None, cpuinfo="/proc/cpuinfo"):
    """Sets TF_ENABLE_ONEDNN_OPTS=0 in `environ` where `onednn_workaround_needed` says so.

    Args:
      environ: the environment to change (default `os.environ`).
      tf_version: TensorFlow's version (default: the installed one, from its metadata).
      cpuinfo: the file the CPU flags are read from.

    Does nothing if the variable is already set (the user's choice wins) or if
    anything cannot be read. Returns True when it set the variable.
    """
    environ = os.environ if environ is None else environ
    try:
        if _VARIABLE in environ:
            return False
        version = installed_tensorflow_version() if tf_version is None else tf_version
        if _release(version) != (2, 14):  # the current line: /proc/cpuinfo is not even read
            return False
        if not onednn_workaround_needed(version, read_cpu_flags(cpuinfo)):
            return False
        environ[_VARIABLE] = "0"
        return True
    except Exception:  # noqa: BLE001 - a start-up check must never stop the import
        return False
