"""TensorFlow's native start-up messages, kept off the command line's output.

TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs, CPU features,
"All log messages before absl::InitializeLog()") from C++ straight to file
descriptor 2, before and regardless of `TF_CPP_MIN_LOG_LEVEL`. The CLI imports
TensorFlow and initialises its devices inside `quiet_native_start()`, which
points descriptor 2 at a temporary file for that time and writes the captured
text back only if the start fails, so real errors are never hidden. Python's own
`sys.stderr` (warnings, tracebacks) is not redirected separately: it writes to
the same descriptor and is replayed the same way on failure.
"""

import contextlib
import os
import sys
import tempfile

__all__ = ["quiet_native_start"]


@contextlib.contextmanager
def quiet_native_start(enabled=True):
    """Silences native stderr while TensorFlow starts; replays it if the block raises."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not enabled:
        yield
        return
    fd = 2  # native code writes to the descriptor, whatever `sys.stderr` is
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def start_tensorflow_quietly():
    """Imports TensorFlow (through the backend) and lists its devices without the noise."""
    with quiet_native_start():
        from keras_efficient.backend import tf

        tf.config.list_physical_devices()
