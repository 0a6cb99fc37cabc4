"""One argument chooses the hardware: `get_strategy(kind)` for CPU, GPU, IPU or workers."""

from keras_efficient.backend import tf
from keras_efficient.distribute import ipu as _ipu
from keras_efficient.distribute.multi_worker import parse_tf_config
from keras_efficient.utils.validation import check_bool, check_int, invalid_argument

__all__ = ["STRATEGY_KINDS", "get_strategy", "describe_devices", "resolve_strategy_kind"]

STRATEGY_KINDS = ("auto", "cpu", "gpu", "ipu", "multi_worker")

def describe_devices():
    """Counts of the devices TensorFlow can use: {"cpu": n, "gpu": n, "ipu": n or None}.

    Cheap and without side effects: it lists physical devices only (it does not
    initialise the TensorFlow runtime, so logical devices can still be configured
    afterwards) and does not import the IPU SDK. "ipu" is None when Graphcore's
    TensorFlow is not installed.
    """
    return {
        "cpu": len(tf.config.list_physical_devices("CPU")),
        "gpu": len(tf.config.list_physical_devices("GPU")),
        "ipu": _ipu.ipu_device_count(),
    }


def _check_kind(kind):
    if kind not in STRATEGY_KINDS:
        raise invalid_argument("kind", "one of {}".format(", ".join(repr(k) for k in STRATEGY_KINDS)),
                               kind)
    return kind


def resolve_strategy_kind(kind="auto"):
    """The concrete kind `get_strategy(kind)` uses: "auto" -> "ipu" | "gpu" | "cpu".

    "auto" picks IPUs when Graphcore's TensorFlow sees any, else GPUs when visible,
    else the CPU. Other kinds are validated and returned unchanged.
    """
    _check_kind(kind)
    if kind != "auto":
        return kind
    devices = describe_devices()
    if devices["ipu"]:
        return "ipu"
    if devices["gpu"]:
        return "gpu"
    return "cpu"


def get_strategy(kind="auto", num_devices=None, enable_keras_extensions=True):
    """Returns a `tf.distribute` strategy for `kind`.

    Build and compile the model under `strategy.scope()`, then `fit` as usual.

    Kinds:
      "cpu": the default strategy (one device); with `num_devices=n > 1`, a
        MirroredStrategy over the first n logical CPU devices
        (reducing through one device) (configure them with
        `keras_efficient.testing.configure_logical_cpus` before TensorFlow starts).
      "gpu": MirroredStrategy over the visible GPUs (all, or the first n).
      "ipu": Graphcore IPUStrategy (see `keras_efficient.distribute.ipu`).
      "multi_worker": MultiWorkerMirroredStrategy configured from TF_CONFIG.
      "auto": `resolve_strategy_kind("auto")`.

    Args:
      kind: one of STRATEGY_KINDS.
      num_devices: devices to use (None: all for "gpu", 1 for "cpu" and "ipu");
        must be None for "multi_worker" (the cluster comes from TF_CONFIG).
      enable_keras_extensions: IPU only; False for models overriding `train_step`.

    Raises:
      ValueError: unknown kind, bad `num_devices`, too few devices, bad TF_CONFIG.
      RuntimeError: no GPU visible for "gpu"; Graphcore's TensorFlow missing for "ipu".
    """
    kind = resolve_strategy_kind(kind)
    num_devices = check_int("num_devices", num_devices, low=1, allow_none=True)
    check_bool("enable_keras_extensions", enable_keras_extensions)
    if kind == "cpu":
        if num_devices is None or num_devices == 1:
            return tf.distribute.get_strategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(cpus) < num_devices:
            raise ValueError(
                "get_strategy('cpu', num_devices={}) needs {} logical CPU devices; found {}. "
                "Split the CPU with keras_efficient.testing.configure_logical_cpus({}) before "
                "TensorFlow initialises.".format(num_devices, num_devices, len(cpus), num_devices))
        # Reduction through one device instead of collective ops: CPU collectives of
        # different MirroredStrategy objects in one process share group and instance
        # keys, and TensorFlow then mixes up their all-reduces ("Shape mismatch in the
        # collective instance ...").
        return tf.distribute.MirroredStrategy(
            cpus[:num_devices], cross_device_ops=tf.distribute.ReductionToOneDevice())
    if kind == "gpu":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not gpus:
            raise RuntimeError(
                "get_strategy('gpu') found no GPU. TensorFlow {} sees none: install a CUDA build "
                "(pip install 'keras_efficient[gpu]'), check the driver with nvidia-smi and "
                "CUDA_VISIBLE_DEVICES, or use kind='cpu' / 'auto'.".format(tf.__version__))
        if num_devices is not None and num_devices > len(gpus):
            raise ValueError("get_strategy('gpu', num_devices={}): only {} GPU(s) visible.".format(
                num_devices, len(gpus)))
        return tf.distribute.MirroredStrategy(gpus[:num_devices] if num_devices else gpus)
    if kind == "ipu":
        return _ipu.make_ipu_strategy(num_devices, enable_keras_extensions=enable_keras_extensions)
    # multi_worker
    if num_devices is not None:
        raise invalid_argument("num_devices", "None for kind='multi_worker' (TF_CONFIG defines "
                               "the workers)", num_devices)
    parse_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()
