"""keras-tuner search space and hypermodel for E²-Train (drop rate, α, PSG β and bit widths)."""

import math
import numbers

from keras_efficient.backend import keras, tf
from keras_efficient.data.minibatch_dropping import drop_minibatches, smd_steps_per_epoch
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["E2TrainHyperModel", "e2_train_hyperparameters"]


def _pair_or_number(name, value, integer=False):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise invalid_argument(name, "a number or a (low, high) pair", value)
        check = check_int if integer else check_float
        low, high = check(name, value[0]), check(name, value[1])
        if not low < high:
            raise invalid_argument(name, "a (low, high) pair with low < high", value)
        return low, high
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid_argument(name, "a number or a (low, high) pair", value, TypeError)
    return check_int(name, value) if integer else check_float(name, value)


def _declare(hp, name, value, integer=False, log=False):
    if isinstance(value, tuple):
        if integer:
            return hp.Int(name, value[0], value[1])
        return hp.Float(name, value[0], value[1], sampling="log" if log else "linear")
    return hp.Fixed(name, value)


def e2_train_hyperparameters(hp, drop_rate=(0.0, 0.7), flops_weight=(0.01, 1.0),
                             beta=(0.01, 0.2), input_msb_bits=(2, 8), grad_msb_bits=(4, 16),
                             input_bits=8, grad_bits=16, prefix="e2_"):
    """Declares SMD's drop rate, SLU's α and PSG's β and predictor widths.

    Each argument is a fixed value (`hp.Fixed`) or a (low, high) range: the drop
    rate and β linearly, α log-uniformly, the widths as integers. Ranges are
    checked against the constraints of the layers: rate in [0, 1), α >= 0, β in
    [0, 1], 2 <= predictor width <= full width.

    Args:
      hp: a `keras_tuner.HyperParameters`.
      drop_rate, flops_weight, beta, input_msb_bits, grad_msb_bits: value or range.
      input_bits, grad_bits: the full PSG widths (fixed).
      prefix: prefix of the hyperparameter names.

    Returns:
      dict(drop_rate=..., flops_weight=..., psg=dict(input_bits, grad_bits,
      input_msb_bits, grad_msb_bits, beta)).
    """
    rate = _pair_or_number("drop_rate", drop_rate)
    alpha = _pair_or_number("flops_weight", flops_weight)
    beta_v = _pair_or_number("beta", beta)
    xm = _pair_or_number("input_msb_bits", input_msb_bits, integer=True)
    gm = _pair_or_number("grad_msb_bits", grad_msb_bits, integer=True)
    input_bits = check_int("input_bits", input_bits, low=2, high=32)
    grad_bits = check_int("grad_bits", grad_bits, low=2, high=32)
    for name, value, low, high in (("drop_rate", rate, 0.0, 1.0 - 1e-9), ("beta", beta_v, 0.0, 1.0),
                                   ("flops_weight", alpha, 0.0, None),
                                   ("input_msb_bits", xm, 2, input_bits),
                                   ("grad_msb_bits", gm, 2, grad_bits)):
        for v in (value if isinstance(value, tuple) else (value,)):
            if v < low or (high is not None and v > high):
                raise invalid_argument(name, "values in [{}, {}]".format(low, high), value)
    if isinstance(alpha, tuple) and alpha[0] <= 0:
        raise invalid_argument("flops_weight", "a range with a positive lower bound (log scale)",
                               alpha)
    return {
        "drop_rate": _declare(hp, prefix + "drop_rate", rate),
        "flops_weight": _declare(hp, prefix + "flops_weight", alpha, log=True),
        "psg": {
            "input_bits": input_bits, "grad_bits": grad_bits,
            "input_msb_bits": _declare(hp, prefix + "input_msb_bits", xm, integer=True),
            "grad_msb_bits": _declare(hp, prefix + "grad_msb_bits", gm, integer=True),
            "beta": _declare(hp, prefix + "beta", beta_v),
        },
    }


def _hypermodel_base():
    from keras_efficient.tuning.compat import import_keras_tuner
    return import_keras_tuner().HyperModel


class E2TrainHyperModel(_hypermodel_base()):
    """A gated ResNet trained with SMD + SLU + PSG, for keras-tuner searches.

    `build(hp)` makes `gated_resnet(...)` converted with `convert_to_psg` (stem and
    classifier kept float32) and compiled with SGD; `fit(hp, model, x, y, ...)`
    batches the arrays, drops mini-batches at the sampled rate and trains with
    `smd_steps_per_epoch` steps per epoch.

    Args:
      depth, base_filters, input_shape, num_classes: the ResNet.
      learning_rate: SGD learning rate (momentum 0.9).
      batch_size: mini-batch size.
      search: keyword arguments for `e2_train_hyperparameters`.
      seed: seed of the mini-batch drops.
    """

    def __init__(self, depth=14, base_filters=8, input_shape=(32, 32, 3), num_classes=10,
                 learning_rate=0.003, batch_size=64, search=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.depth = check_int("depth", depth, low=8)
        self.base_filters = check_int("base_filters", base_filters, low=1)
        self.input_shape = tuple(input_shape)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.learning_rate = check_float("learning_rate", learning_rate, low=0.0,
                                         low_inclusive=False)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.search = dict(search or {})
        self.seed = check_int("seed", seed, low=0)

    def build(self, hp):
        from keras_efficient.models.gated_resnet import gated_resnet
        from keras_efficient.training.psg_convert import convert_to_psg

        params = e2_train_hyperparameters(hp, **self.search)
        model = gated_resnet(depth=self.depth, num_classes=self.num_classes,
                             input_shape=self.input_shape, base_filters=self.base_filters,
                             flops_weight=params["flops_weight"])
        model = convert_to_psg(model, include=lambda l: l.name not in ("stem_conv", "logits"),
                               **params["psg"])
        model.compile(keras.optimizers.SGD(self.learning_rate, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.e2_drop_rate = params["drop_rate"]
        return model

    def fit(self, hp, model, x, y, **kwargs):
        rate = hp.get(self._name("drop_rate")) if self._name("drop_rate") in hp.values else 0.0
        kwargs.pop("batch_size", None)
        num_batches = int(math.ceil(len(x) / float(self.batch_size)))
        data = (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=self.seed).batch(self.batch_size))
        train = drop_minibatches(data, rate, seed=self.seed).repeat()
        return model.fit(train, steps_per_epoch=smd_steps_per_epoch(num_batches, rate), **kwargs)

    def _name(self, key):
        return self.search.get("prefix", "e2_") + key
