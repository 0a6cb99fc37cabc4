"""keras-tuner search space for ReBEL (components per class, covariance, loss weights, latent size)."""

from keras_efficient.backend import keras
from keras_efficient.models.rebel import ReBEL
from keras_efficient.tuning.compat import import_keras_tuner
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

keras_tuner = import_keras_tuner()

__all__ = ["ReBELHyperModel"]


def _choices(name, values, kind):
    try:
        values = list(values)
    except TypeError:
        raise invalid_argument(name, "a non-empty list", values, TypeError) from None
    if not values or any(not isinstance(v, kind) or isinstance(v, bool) for v in values):
        raise invalid_argument(name, "a non-empty list of {}".format(kind.__name__), values)
    return values


def _range(name, value):
    try:
        low, high = value
    except (TypeError, ValueError):
        raise invalid_argument(name, "a (low, high) pair of positive floats", value,
                               TypeError) from None
    low = check_float(name, low, low=0.0, low_inclusive=False)
    high = check_float(name, high, low=0.0, low_inclusive=False)
    if high < low:
        raise invalid_argument(name, "low <= high", value)
    return low, high


class ReBELHyperModel(keras_tuner.HyperModel):
    """Builds compiled `ReBEL` models from keras-tuner hyperparameters.

    Hyperparameters (names as registered with `hp`):
      components_per_class: Choice over `components_choices` (paper: 8).
      covariance: Choice over `covariance_choices` ("full", "diag").
      latent_channels: Choice over `latent_channels_choices` (bottleneck size).
      beta, gamma: log-uniform Floats over `beta_range`, `gamma_range` (Eq. 5;
        paper: β = 0.001, γ = 0.1); α is fixed to 1 (only the ratios matter).
      learning_rate: log-uniform Float over `learning_rate_range` (Adam).

    Use with any tuner, e.g. `keras_tuner.RandomSearch(ReBELHyperModel(...),
    objective=keras_tuner.Objective("val_local_accuracy", "max"))`; every
    ReBEL loss term and accuracy is a metric, so any of them can be the objective.

    Args:
      teacher_head, tail: the split teacher (see `split_functional_model`).
      num_classes: C.
      projection_dim: fixed random projection size before the classifier (None: none).
      head_filters, decoder_filters: fixed Head₁ / Head₂ widths.
    """

    def __init__(self, teacher_head, tail, num_classes, projection_dim=None,
                 head_filters=(64, 64, 64), decoder_filters=(64, 64),
                 components_choices=(2, 4, 8), covariance_choices=("diag", "full"),
                 latent_channels_choices=(1, 2, 3), beta_range=(1e-4, 1e-2),
                 gamma_range=(1e-2, 1.0), learning_rate_range=(1e-4, 1e-2), name=None,
                 tunable=True):
        super().__init__(name=name, tunable=tunable)
        self.teacher_head, self.tail = teacher_head, tail
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.projection_dim = check_int("projection_dim", projection_dim, low=1, allow_none=True)
        self.head_filters, self.decoder_filters = tuple(head_filters), tuple(decoder_filters)
        self.components_choices = _choices("components_choices", components_choices, int)
        self.covariance_choices = _choices("covariance_choices", covariance_choices, str)
        bad = [c for c in self.covariance_choices if c not in ("full", "diag")]
        if bad:
            raise invalid_argument("covariance_choices", "values among 'full', 'diag'",
                                   covariance_choices)
        self.latent_channels_choices = _choices("latent_channels_choices",
                                                latent_channels_choices, int)
        self.beta_range = _range("beta_range", beta_range)
        self.gamma_range = _range("gamma_range", gamma_range)
        self.learning_rate_range = _range("learning_rate_range", learning_rate_range)

    @staticmethod
    def _float(hp, name, bounds):
        low, high = bounds
        if low == high:
            return hp.Fixed(name, low)
        return hp.Float(name, low, high, sampling="log")

    def build(self, hp):
        model = ReBEL(
            self.teacher_head, self.tail, self.num_classes,
            head_filters=self.head_filters, decoder_filters=self.decoder_filters,
            latent_channels=hp.Choice("latent_channels", self.latent_channels_choices),
            classifier="gmc",
            components_per_class=hp.Choice("components_per_class", self.components_choices),
            covariance=hp.Choice("covariance", self.covariance_choices),
            projection_dim=self.projection_dim,
            alpha=1.0,
            beta=self._float(hp, "beta", self.beta_range),
            gamma=self._float(hp, "gamma", self.gamma_range))
        model.compile(keras.optimizers.Adam(self._float(hp, "learning_rate",
                                                        self.learning_rate_range)))
        return model
