"""KL warm-up (annealing) for Bayesian networks: the KL term's weight rises from 0 to 1.

Early in training the KL term of Eq. 2 (KL / N per example, thousands of nats for
a network of a million Bayesian weights and a few thousand examples) dwarfs the
data term, and its gradient drags every posterior towards the prior before the
network has fitted anything. Warm-up (Bowman et al., 2016; Sonderby et al., 2016)
multiplies the KL by a weight w that grows linearly from `initial_weight` to 1
over the first `epochs` epochs:

    w = initial_weight + (1 - initial_weight) * min(1, progress / epochs),

progress = epoch + batch / steps_per_epoch (or the epoch alone with
`per_batch=False`). The weight lives in every Bayesian layer's non-trainable
`kl_warmup` weight, which the layer's KL loss reads; the callback only writes
it, so checkpoints restore the weight and a resumed `fit(initial_epoch=k)` sets
it from k. After warm-up the objective is the full Eq. 2 again.
"""

from keras_efficient.backend import keras
from keras_efficient.layers.bayesian import bayesian_layers
from keras_efficient.utils.validation import check_bool, check_float, check_int

__all__ = ["KLWarmup"]


class KLWarmup(keras.callbacks.Callback):
    """Linear KL warm-up of the Bayesian layers' KL terms.

    Args:
      epochs: epochs over which the weight rises to 1 (>= 1).
      initial_weight: weight at the start of training, in [0, 1).
      per_batch: raise the weight every batch (True, needs a known number of steps
        per epoch; otherwise per epoch) or only at the start of each epoch.

    The weight is logged as `kl_warmup` at the end of each epoch.

    Raises:
      ValueError (at the start of `fit`): the model has no Bayesian layer
      (`FlipoutDense`, `FlipoutConv2D`, `ReparameterizationDense`,
      `ReparameterizationConv2D`), so there is no KL to warm up.
    """

    def __init__(self, epochs, initial_weight=0.0, per_batch=True):
        super().__init__()
        self.epochs = check_int("epochs", epochs, low=1)
        self.initial_weight = check_float("initial_weight", initial_weight, low=0.0, high=1.0,
                                          high_inclusive=False)
        self.per_batch = check_bool("per_batch", per_batch)
        self._layers = []
        self._epoch = 0
        self.current_weight = None

    def weight(self, progress):
        """The warm-up weight after `progress` epochs (a float >= 0)."""
        fraction = min(1.0, max(0.0, float(progress)) / self.epochs)
        return self.initial_weight + (1.0 - self.initial_weight) * fraction

    def _set(self, value):
        if value == self.current_weight:  # after the warm-up: no assignment per batch
            return
        for layer in self._layers:
            layer.kl_warmup.assign(value)
        self.current_weight = value

    def on_train_begin(self, logs=None):
        self.current_weight = None  # a restored checkpoint may hold any weight: set it anew
        self._layers = bayesian_layers(self.model)
        if not self._layers:
            raise ValueError(
                "KLWarmup: model `{}` has no Bayesian layer, so there is no KL term to warm up. "
                "Build it with keras_efficient.layers.FlipoutDense / FlipoutConv2D / "
                "ReparameterizationDense / ReparameterizationConv2D (e.g. "
                "galaxy_shape_estimator(bayesian=True, num_train_examples=N)), or drop the "
                "callback.".format(self.model.name))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._set(self.weight(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if self.per_batch and steps:
            self._set(self.weight(self._epoch + batch / float(steps)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_warmup"] = self.current_weight

    def get_config(self):
        return {"epochs": self.epochs, "initial_weight": self.initial_weight,
                "per_batch": self.per_batch}
