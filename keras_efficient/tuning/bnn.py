"""keras-tuner search space for the Bayesian galaxy shape estimator (prior, KL weight, widths)."""

import numbers

from keras_efficient.backend import keras
from keras_efficient.losses.negative_log_likelihood import NegativeLogLikelihood
from keras_efficient.models.galaxy_estimator import galaxy_shape_estimator
from keras_efficient.utils.validation import check_choice, check_float, check_int, invalid_argument

__all__ = ["bnn_hyperparameters", "bnn_hypermodel"]

_ESTIMATORS = ("flipout", "reparameterization")


def _positive_range(hp, name, value, label):
    """Declares `name` as Fixed (a number) or log-uniform Float (a (low, high) pair)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise invalid_argument(label, "a positive number or a (low, high) pair", value)
        low = check_float(label, value[0], low=0.0, low_inclusive=False)
        high = check_float(label, value[1], low=0.0, low_inclusive=False)
        if not low < high:
            raise invalid_argument(label, "a (low, high) pair with low < high", value)
        return hp.Float(name, low, high, sampling="log")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid_argument(label, "a positive number or a (low, high) pair", value, TypeError)
    return hp.Fixed(name, check_float(label, value, low=0.0, low_inclusive=False))


def bnn_hyperparameters(hp, prior_scale=(0.1, 2.0), kl_weight=(1e-3, 1.0),
                        width_multipliers=(0.5, 1.0), base_filters=(32, 64, 128, 256),
                        estimators=None, prefix="bnn_"):
    """Declares the BNN's hyperparameters; returns `galaxy_shape_estimator` keyword arguments.

    * prior_scale: s of the N(0, s^2) weight prior (Eq. 2 uses 1), log-uniform;
    * kl_weight: multiplier of the KL term of Eq. 2, log-uniform;
    * width: a multiplier of `base_filters` (rounded, at least 1 filter), a choice;
    * estimator (only when `estimators` is given): "flipout" and/or
      "reparameterization", a choice.

    Each of `prior_scale` and `kl_weight` is a fixed positive number (`hp.Fixed`)
    or a (low, high) range.

    Args:
      hp: a `keras_tuner.HyperParameters`.
      prior_scale, kl_weight: value or (low, high).
      width_multipliers: the choices for the width multiplier (positive floats).
      base_filters: filters at multiplier 1.
      estimators: None (the model's default, Flipout; no hyperparameter) or a
        sequence of estimator names to choose from.
      prefix: prefix of the hyperparameter names.

    Returns:
      dict(prior_scale=..., kl_weight=..., filters=(...)[, estimator=...]).
    """
    try:
        choices = [check_float("width_multipliers", float(m) if isinstance(m, numbers.Real)
                               and not isinstance(m, bool) else m, low=0.0, low_inclusive=False)
                   for m in width_multipliers]
    except TypeError:
        raise invalid_argument("width_multipliers", "a sequence of positive floats",
                               width_multipliers, TypeError) from None
    if not choices:
        raise invalid_argument("width_multipliers", "a non-empty sequence", width_multipliers)
    base_filters = tuple(check_int("base_filters", f, low=1) for f in base_filters)
    prior = _positive_range(hp, prefix + "prior_scale", prior_scale, "prior_scale")
    weight = _positive_range(hp, prefix + "kl_weight", kl_weight, "kl_weight")
    width = hp.Choice(prefix + "width", sorted(set(choices)))
    filters = tuple(max(1, int(round(f * width))) for f in base_filters)
    kwargs = {"prior_scale": prior, "kl_weight": weight, "filters": filters}
    if estimators is not None:
        if isinstance(estimators, str) or not estimators:
            raise invalid_argument("estimators", "a non-empty sequence of estimator names",
                                   estimators)
        names = [check_choice("estimators", e, _ESTIMATORS) for e in estimators]
        kwargs["estimator"] = hp.Choice(prefix + "estimator", sorted(set(names)))
    return kwargs


def bnn_hypermodel(num_train_examples, input_shape=(64, 64, 6), learning_rate=1e-3, **search):
    """A keras-tuner `build(hp)` function for the Bayesian galaxy shape estimator.

    Example:
      tuner = keras_tuner.RandomSearch(bnn_hypermodel(len(x)), objective="val_loss",
                                       max_trials=10)
      tuner.search(x, y, validation_split=0.2, epochs=20)

    Args:
      num_train_examples: N of the KL scaling (Eq. 2).
      input_shape: image shape.
      learning_rate: Adam learning rate.
      **search: passed to `bnn_hyperparameters` (prior_scale, kl_weight,
        width_multipliers, base_filters, estimators, prefix).

    Returns:
      A function hp -> compiled model (loss: `NegativeLogLikelihood`; the KL terms
      come from the layers).
    """
    num_train_examples = check_int("num_train_examples", num_train_examples, low=1)
    learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_inclusive=False)

    def build(hp):
        kwargs = bnn_hyperparameters(hp, **search)
        model = galaxy_shape_estimator(bayesian=True, input_shape=input_shape,
                                       num_train_examples=num_train_examples, **kwargs)
        model.compile(keras.optimizers.Adam(learning_rate), loss=NegativeLogLikelihood())
        return model

    return build
