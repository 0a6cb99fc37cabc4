"""Split computing with early exit (ReBEL): decisions, export, coverage, transmission, baselines."""

from keras_efficient.split.baselines import (
    KMeansEarlyClassifier,
    KNNEarlyClassifier,
    LinearEarlyClassifier,
)
from keras_efficient.split.codec import BottleneckCodec
from keras_efficient.split.coverage import (
    accuracy_vs_coverage,
    coverage_curve,
    exit_score,
    max_coverage_at_accuracy,
    split_accuracy,
    threshold_for_coverage,
)
from keras_efficient.split.early_exit import EarlyExitPredictor, early_exit_decision
from keras_efficient.split.export import (
    DeviceModule,
    ServerModule,
    export_device_model,
    export_device_tflite,
    export_server_model,
)
from keras_efficient.split.partition import dirichlet_partition, gini_index
from keras_efficient.split.transmission import (
    BYTES_PER_ELEMENT,
    bytes_per_sample,
    dequantize_uint8,
    end_to_end_delay,
    network_load_bps,
    network_time,
    quantize_uint8,
)

__all__ = [
    "BYTES_PER_ELEMENT",
    "BottleneckCodec",
    "DeviceModule",
    "EarlyExitPredictor",
    "KMeansEarlyClassifier",
    "KNNEarlyClassifier",
    "LinearEarlyClassifier",
    "ServerModule",
    "accuracy_vs_coverage",
    "bytes_per_sample",
    "coverage_curve",
    "dequantize_uint8",
    "dirichlet_partition",
    "early_exit_decision",
    "end_to_end_delay",
    "exit_score",
    "export_device_model",
    "export_device_tflite",
    "export_server_model",
    "gini_index",
    "max_coverage_at_accuracy",
    "network_load_bps",
    "network_time",
    "quantize_uint8",
    "split_accuracy",
    "threshold_for_coverage",
]
