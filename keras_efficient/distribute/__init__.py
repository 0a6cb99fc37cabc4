"""CPU / GPU / IPU / multi-worker strategies: change one argument to change the hardware.

`get_strategy(kind)` returns the `tf.distribute` strategy; `describe_devices()`
and `resolve_strategy_kind("auto")` say what is there and what "auto" would pick
(both cheap, without side effects). The IPU path lives in
`keras_efficient.distribute.ipu` and imports Graphcore's SDK only when used.
"""

from keras_efficient.distribute.batching import (
    batches_per_epoch,
    check_steps_per_execution,
    static_batches,
)
from keras_efficient.distribute.ipu import (
    IPU_SDK_MESSAGE,
    check_ipu_compatible,
    ipu_device_count,
    ipu_replica_count,
    ipu_sdk_available,
    make_ipu_strategy,
)
from keras_efficient.distribute.multi_worker import (
    find_free_ports,
    local_cluster_tf_configs,
    parse_tf_config,
)
from keras_efficient.distribute.strategy import (
    STRATEGY_KINDS,
    describe_devices,
    get_strategy,
    resolve_strategy_kind,
)

__all__ = [
    "IPU_SDK_MESSAGE",
    "STRATEGY_KINDS",
    "batches_per_epoch",
    "check_ipu_compatible",
    "check_steps_per_execution",
    "describe_devices",
    "find_free_ports",
    "get_strategy",
    "ipu_device_count",
    "ipu_replica_count",
    "ipu_sdk_available",
    "local_cluster_tf_configs",
    "make_ipu_strategy",
    "parse_tf_config",
    "resolve_strategy_kind",
    "static_batches",
]
