"""Argument handling shared by the Conformer modules (no public names)."""

from keras_efficient.backend import keras, tf
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout, _resolve_schedule
from keras_efficient.utils.validation import (
    VALIDATE_ARGS_DEFAULT,
    ValidateArgsMixin,
    check_bool,
    check_choice,
    check_float,
    check_input_rank,
    check_int,
)

__all__ = []


class AdaptiveSettings:
    """The `AdaptiveDropout` arguments a Conformer module passes to its ADL sites."""

    def __init__(self, adaptive, schedule, alpha, gamma, threshold, inference, seed):
        self.adaptive = check_bool("adaptive", adaptive)
        self.schedule = _resolve_schedule(schedule)
        self.alpha = check_float("alpha", alpha, low=0.0, low_inclusive=False)
        self.gamma = check_float("gamma", gamma, low=0.0, low_inclusive=False)
        self.threshold = check_float("threshold", threshold, allow_none=True)
        self.inference = check_choice("inference", inference, ("hard", "expected"))
        self.seed = check_int("seed", seed, allow_none=True)

    def make(self, name, unit_axes=(-1,), seed_offset=0):
        """A new AdaptiveDropout, or None when the module is not adaptive."""
        if not self.adaptive:
            return None
        seed = None if self.seed is None else self.seed + seed_offset
        return AdaptiveDropout(schedule=self.schedule, alpha=self.alpha, gamma=self.gamma,
                               threshold=self.threshold, unit_axes=unit_axes,
                               inference=self.inference, seed=seed, name=name)

    def config(self):
        return {
            "adaptive": self.adaptive,
            "schedule": keras.utils.serialize_keras_object(self.schedule),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "threshold": self.threshold,
            "inference": self.inference,
            "seed": self.seed,
        }


class ConformerModule(ValidateArgsMixin, keras.layers.Layer):
    """Base of the Conformer modules: width D, output dropout rate and the ADL settings.

    Validates and stores `model_dim`, `dropout_rate`, `validate_args` and the
    `AdaptiveDropout` arguments, exposes `adaptive`, and puts all of them in
    `get_config`. With `validate_args` a module checks its input's values
    (`ValidateArgsMixin`); its AdaptiveDropout sites do not check again.
    """

    def __init__(self, model_dim, dropout_rate, adaptive, schedule, alpha, gamma, threshold,
                 inference, seed, validate_args=VALIDATE_ARGS_DEFAULT, **kwargs):
        super().__init__(**kwargs)
        self._init_validate_args(validate_args)
        self.model_dim = check_int("model_dim", model_dim, low=1)
        self.dropout_rate = check_float("dropout_rate", dropout_rate, low=0.0, high=1.0,
                                        high_inclusive=False)
        self._settings = AdaptiveSettings(adaptive, schedule, alpha, gamma, threshold, inference,
                                          seed)

    @property
    def adaptive(self):
        return self._settings.adaptive

    def get_config(self):
        config = super().get_config()
        config.update({"model_dim": self.model_dim, "dropout_rate": self.dropout_rate,
                       **self._validate_args_config()})
        config.update(self._settings.config())
        return config


def build_sublayer(layer, input_shape):
    """Builds `layer` under its own name scope, so its weights get distinct names
    (`block/ffn1/dense1/kernel:0`, needed by the HDF5 weight format)."""
    with tf.name_scope(layer.name):
        layer.build(input_shape)


def check_sequence_input(layer_name, input_shape, model_dim):
    """[batch, time, model_dim] with a known last dimension equal to `model_dim`."""
    check_input_rank(layer_name, input_shape, rank=3)
    if input_shape[-1] != model_dim:
        raise ValueError("Input 0 of layer `{}` must have {} channels (model_dim). Received: "
                         "input_shape={}".format(layer_name, model_dim, input_shape))


def check_time_mask(layer_name, mask, inputs):
    """None, or `mask` as a boolean [batch, time] tensor matching `inputs`' first two dims."""
    if mask is None:
        return None
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank is not None and mask.shape.rank != 2:
        raise ValueError("The time mask of layer `{}` must have shape [batch, time]. Received: "
                         "mask.shape={}".format(layer_name, mask.shape))
    if mask.dtype != tf.bool:
        raise TypeError("The time mask of layer `{}` must be boolean. Received: mask.dtype={}"
                        .format(layer_name, mask.dtype.name))
    if mask.shape.rank is not None and not mask.shape.is_compatible_with(inputs.shape[:2]):
        static = inputs.shape[:2]
        raise ValueError("The time mask of layer `{}` must have shape {} (the input's [batch, "
                         "time]). Received: mask.shape={}".format(layer_name, static, mask.shape))
    return mask
