"""Graphcore IPU strategy, isolated: `tensorflow.python.ipu` is imported only when used.

Graphcore ships its own TensorFlow build (the tensorflow wheel of the Poplar SDK;
the last releases target TensorFlow 2.6 on Python 3.8). On any other TensorFlow
this module imports fine and `make_ipu_strategy` raises a clear error.

What differs on IPUs, and how the library handles it:

* Static shapes: every batch must have the same size -> build datasets with
  `keras_efficient.distribute.static_batches` (`drop_remainder=True`).
* `steps_per_execution` counts steps per replica and must divide the number of
  batches per epoch per replica -> `check_steps_per_execution`.
* `strategy.num_replicas_in_sync` is 1 even with replication -> the replica count
  chosen here is kept and returned by `ipu_replica_count(strategy)`.
* Graphcore's Keras extensions refuse models with an overridden `train_step`
  unless the strategy is created with `enable_keras_extensions=False`.
* No float64 -> `check_ipu_compatible(model)` rejects float64 weights and inputs
  with undefined non-batch dimensions.

APIs newer than TensorFlow 2.6 are avoided on this path: no
`BatchNormalization(synchronized=...)` (TF 2.12), no `keras.optimizers.experimental`
/ new-optimizer-only arguments, no `tf.keras.utils.SidecarEvaluator`, no
`Model.compile(jit_compile=...)`, no `keras.saving` (.keras) calls.
"""

import importlib
import importlib.util

from keras_efficient.backend import tf
from keras_efficient.utils.validation import check_bool, check_int

__all__ = [
    "IPU_SDK_MESSAGE",
    "ipu_sdk_available",
    "ipu_device_count",
    "make_ipu_strategy",
    "ipu_replica_count",
    "check_ipu_compatible",
]

IPU_SDK_MESSAGE = (
    "The 'ipu' strategy needs Graphcore's TensorFlow: the tensorflow wheel shipped with the "
    "Poplar SDK (it provides `tensorflow.python.ipu`; the last releases target TensorFlow 2.6 "
    "and Python 3.8). This TensorFlow ({}) has no IPU support. Install the Poplar SDK and its "
    "TensorFlow wheel (https://docs.graphcore.ai), enable the SDK environment, then retry.")

_REPLICAS_ATTR = "_keras_efficient_ipu_replicas"


def ipu_sdk_available():
    """True when `tensorflow.python.ipu` can be imported (Graphcore's TensorFlow)."""
    import sys
    if "tensorflow.python.ipu" in sys.modules:
        return sys.modules["tensorflow.python.ipu"] is not None
    try:
        return importlib.util.find_spec("tensorflow.python.ipu") is not None
    except (ImportError, ValueError):
        return False


def ipu_device_count():
    """Number of IPUs TensorFlow sees, or None when the SDK is absent (no side effects)."""
    if not ipu_sdk_available():
        return None
    return len(tf.config.list_physical_devices("IPU"))


def _import_ipu():
    try:
        return importlib.import_module("tensorflow.python.ipu")
    except ImportError:
        raise RuntimeError(IPU_SDK_MESSAGE.format(tf.__version__)) from None


def make_ipu_strategy(num_devices=None, enable_keras_extensions=True):
    """Configures the IPU system and returns an `IPUStrategy`.

    Args:
      num_devices: IPUs to attach with `auto_select_ipus` (default 1). Data
        parallel replication over them is then the model's business (Graphcore
        Keras: `model.set_replication_factor` / pipelining); the count is kept for
        `ipu_replica_count`.
      enable_keras_extensions: Graphcore's Keras extensions (needed for IPU
        specific `fit` features). Pass False for models that override
        `train_step` (for example `FlowVAE`), which the extensions refuse.

    Returns:
      The strategy; use `with strategy.scope():` to build and compile the model.

    Raises:
      RuntimeError: when Graphcore's TensorFlow (Poplar SDK) is not installed.
    """
    num_devices = check_int("num_devices", 1 if num_devices is None else num_devices, low=1)
    enable_keras_extensions = check_bool("enable_keras_extensions", enable_keras_extensions)
    ipu = _import_ipu()
    config_module = getattr(ipu, "config", None)
    if config_module is not None and hasattr(config_module, "IPUConfig"):
        config = config_module.IPUConfig()
        config.auto_select_ipus = num_devices
        config.configure_ipu_system()
    else:  # SDK 1.x (TensorFlow 2.1), as used in the paper.
        config = ipu.utils.create_ipu_config()
        config = ipu.utils.auto_select_ipus(config, num_devices)
        ipu.utils.configure_ipu_system(config)
    strategy_cls = ipu.ipu_strategy.IPUStrategy
    try:
        strategy = strategy_cls(enable_keras_extensions=enable_keras_extensions)
    except TypeError:
        # Older SDKs: no Keras extensions and no such argument.
        strategy = strategy_cls()
    setattr(strategy, _REPLICAS_ATTR, num_devices)
    return strategy


def ipu_replica_count(strategy):
    """Replicas of a strategy, including IPU replication that `num_replicas_in_sync` hides."""
    count = getattr(strategy, _REPLICAS_ATTR, None)
    if count is not None:
        return int(count)
    return int(getattr(strategy, "num_replicas_in_sync", 1))


def check_ipu_compatible(model):
    """Raises ValueError when `model` cannot run on an IPU: float64 weights or dynamic shapes."""
    bad = [w.name for w in model.weights if w.dtype.base_dtype == tf.float64]
    if bad:
        raise ValueError("IPUs have no float64; these weights are float64: {}".format(bad))
    for inp in getattr(model, "inputs", None) or []:
        shape = inp.shape
        if shape.rank is None or any(d is None for d in shape[1:]):
            raise ValueError(
                "IPUs need fully defined shapes; input `{}` has shape {} (only the batch "
                "dimension may be None, and batches must come from drop_remainder=True "
                "datasets).".format(inp.name, shape))
        if inp.dtype == tf.float64:
            raise ValueError("IPUs have no float64; input `{}` is float64".format(inp.name))
