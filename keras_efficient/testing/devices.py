"""Logical CPU devices for testing distribution strategies on one machine."""

from keras_efficient.backend import tf

__all__ = ["configure_logical_cpus", "logical_cpu_names", "mirrored_cpu_strategy"]

_STRATEGY = []


def configure_logical_cpus(count=2):
    """Splits the first physical CPU into `count` logical devices.

    Must run before TensorFlow initialises its runtime (before the first op or
    device query); a pytest `conftest.py` is the place. Returns the number of
    logical CPUs available afterwards. When the runtime is already initialised
    the existing configuration is kept and the current count is returned.
    """
    cpus = tf.config.list_physical_devices("CPU")
    if not cpus:
        return 0
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        pass  # Runtime already initialised: keep what is there.
    return len(tf.config.list_logical_devices("CPU"))


def logical_cpu_names():
    """Names of the logical CPU devices, e.g. ['/device:CPU:0', '/device:CPU:1']."""
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def mirrored_cpu_strategy():
    """A process-wide `MirroredStrategy` over the first two logical CPU devices.

    One instance is shared by every caller: in TensorFlow 2.14, a second
    MirroredStrategy in the same process reuses collective instance keys and
    its all-reduces can abort with "Shape mismatch in the collective instance".
    Raises RuntimeError when fewer than two logical CPUs exist.
    """
    if not _STRATEGY:
        devices = logical_cpu_names()
        if len(devices) < 2:
            raise RuntimeError(
                "MirroredStrategy on CPUs needs two logical CPU devices; found {}. Call "
                "keras_efficient.testing.configure_logical_cpus(2) before TensorFlow "
                "initialises (for example at the top of conftest.py).".format(len(devices)))
        _STRATEGY.append(tf.distribute.MirroredStrategy(devices[:2]))
    return _STRATEGY[0]
