"""A callback that reports how far adaptive-dropout pruning has progressed."""

import numpy as np

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock
from keras_efficient.pruning.surviving import surviving_units
from keras_efficient.utils.validation import check_int, invalid_argument

__all__ = ["AdaptiveDropoutMonitor"]


def _sites(model):
    """(site name, AdaptiveDropout) pairs in the order of `surviving_units`."""
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, (AdaptiveDropout, ConformerBlock))}
    result = []
    for row in surviving_units(model):
        if row["block"] is None:
            result.append((row["site"], layers[row["site"]]))
        else:
            result.append((row["site"], layers[row["block"]].adaptive_dropout_sites[row["kind"]]))
    return result


@register_serializable
class AdaptiveDropoutMonitor(keras.callbacks.Callback):
    """Logs per-site pruning progress into the Keras logs and TensorBoard.

    At the end of every epoch it adds, for every AdaptiveDropout site of the
    model (named as in `keras_efficient.pruning.surviving_units`):

    - `adl/<site>/surviving_fraction`: fraction of units with beta >= threshold;
    - `adl/<site>/mean_retention`: mean of sigma(beta);
    - `adl/<site>/target`: c(t) at the layer's step;

    and `adl/surviving_fraction`, the unit-weighted fraction over all sites.
    These appear in `History` (and in callbacks placed after this one). With
    `log_dir`, the same scalars and a histogram of beta per site are written as
    TensorBoard summaries every `histogram_freq` epochs.

    Args:
      log_dir: TensorBoard directory, or None for Keras logs only.
      histogram_freq: epochs between beta histograms (>= 1).
      prefix: prefix of every log key.
    """

    def __init__(self, log_dir=None, histogram_freq=1, prefix="adl/"):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, str):
            raise invalid_argument("log_dir", "a string or None", log_dir, TypeError)
        if not isinstance(prefix, str):
            raise invalid_argument("prefix", "a string", prefix, TypeError)
        self.log_dir = log_dir
        self.histogram_freq = check_int("histogram_freq", histogram_freq, low=1)
        self.prefix = prefix
        self._writer = None

    def on_train_begin(self, logs=None):
        if not _sites(self.model):
            raise ValueError("AdaptiveDropoutMonitor: the model has no AdaptiveDropout layer.")
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        total = kept = 0
        scalars = {}
        betas = {}
        for site, adl in _sites(self.model):
            beta = np.asarray(adl.retention_logits.numpy(), np.float64)
            keep = beta >= adl.effective_threshold
            scalars["{}{}/surviving_fraction".format(self.prefix, site)] = float(keep.mean())
            scalars["{}{}/mean_retention".format(self.prefix, site)] = float(
                np.mean(1.0 / (1.0 + np.exp(-beta))))
            scalars["{}{}/target".format(self.prefix, site)] = float(adl.current_target)
            total += keep.size
            kept += int(keep.sum())
            betas[site] = beta
        scalars["{}surviving_fraction".format(self.prefix)] = kept / max(total, 1)
        logs.update(scalars)
        if self._writer is not None:
            with self._writer.as_default():
                for key, value in scalars.items():
                    tf.summary.scalar(key, value, step=epoch)
                if epoch % self.histogram_freq == 0:
                    for site, beta in betas.items():
                        tf.summary.histogram("{}{}/beta".format(self.prefix, site), beta,
                                             step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir, "histogram_freq": self.histogram_freq,
                "prefix": self.prefix}
