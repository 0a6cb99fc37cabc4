"""Older spellings of `validate_args` load as deprecated aliases; `get_config` writes the new one.

`validate_inputs` (GaussianMixtureClassifier, BottleneckDecoder) and `check_finite`
(the Bayesian layers) were the layers' own switches before the convention; configs
saved with them must still load and behave as `validate_args` = that value.
"""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import (
    BottleneckDecoder,
    FlipoutConv2D,
    FlipoutDense,
    GaussianMixtureClassifier,
    MultivariateNormalHead,
    ReparameterizationDense,
)

# (class, constructor kwargs, old key, input shape)
ALIASES = [
    (GaussianMixtureClassifier, {"num_classes": 3, "components_per_class": 2}, "validate_inputs",
     (2, 4)),
    (BottleneckDecoder, {"target_shape": (4, 4, 3), "filters": (2,)}, "validate_inputs",
     (2, 4, 4, 2)),
    (FlipoutDense, {"units": 3}, "check_finite", (2, 4)),
    (ReparameterizationDense, {"units": 3}, "check_finite", (2, 4)),
    (FlipoutConv2D, {"filters": 2, "kernel_size": 3}, "check_finite", (2, 5, 5, 2)),
]
IDS = [a[0].__name__ for a in ALIASES]


def _old_config(cls, kwargs, old_key, value):
    """A config as the layer wrote it before `validate_args`: the old key, no new one."""
    config = cls(name="probe", **kwargs).get_config()
    del config["validate_args"]
    config[old_key] = value
    return config


def _nan(shape):
    x = np.ones(shape, np.float32)
    x.reshape(-1)[0] = np.nan
    return x


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("cls,kwargs,old_key,shape", ALIASES, ids=IDS)
def test_old_key_loads_as_validate_args(cls, kwargs, old_key, shape, value):
    with pytest.warns(DeprecationWarning, match=old_key):
        layer = cls.from_config(_old_config(cls, kwargs, old_key, value))
    assert layer.validate_args is value
    config = layer.get_config()
    assert config["validate_args"] is value and old_key not in config
    if value:
        with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
            layer(_nan(shape))
    else:
        out = tf.convert_to_tensor(layer(_nan(shape)))
        assert np.isnan(out.numpy()).any()  # not checked: NaN reaches the output


@pytest.mark.parametrize("cls,kwargs,old_key,shape", ALIASES, ids=IDS)
def test_old_key_through_keras_deserialize(cls, kwargs, old_key, shape):
    config = {"class_name": keras.utils.get_registered_name(cls),
              "config": _old_config(cls, kwargs, old_key, True)}
    with pytest.warns(DeprecationWarning):
        layer = keras.layers.deserialize(config)
    assert isinstance(layer, cls) and layer.validate_args is True


@pytest.mark.parametrize("cls,kwargs,old_key,shape", ALIASES, ids=IDS)
def test_both_spellings(cls, kwargs, old_key, shape):
    with pytest.raises(ValueError, match="validate_args=True.*{}=False".format(old_key)):
        cls(validate_args=True, **{old_key: False}, **kwargs)
    with pytest.raises(ValueError, match="validate_args=False.*{}=True".format(old_key)):
        cls.from_config({**_old_config(cls, kwargs, old_key, True), "validate_args": False})
    with pytest.warns(DeprecationWarning):  # agreeing values are accepted
        assert cls(validate_args=True, **{old_key: True}, **kwargs).validate_args is True
    with pytest.raises(TypeError, match=old_key):
        cls(**{old_key: "yes"}, **kwargs)
    assert cls(**kwargs).validate_args is False  # neither: the default


def test_head_configs_with_both_keys_load():
    """The head had `validate_args` (TFP's checks) and `check_finite` (on by default)
    side by side; its old configs carry both and load unchanged."""
    old = MultivariateNormalHead(2, name="probe").get_config()
    assert old["validate_args"] is False and old["check_finite"] is True
    head = MultivariateNormalHead.from_config(old)
    assert head.get_config() == old
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
        head(_nan((2, 4)))
    quiet = MultivariateNormalHead(2, check_finite=False, name="probe")
    assert np.isnan(tf.convert_to_tensor(quiet(_nan((2, 4)))).numpy()).any()
    strict = MultivariateNormalHead(2, validate_args=True, check_finite=False, name="probe")
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
        strict(_nan((2, 4)))
    # and the distribution runs TFP's own argument checks
    assert strict(np.ones((2, 4), np.float32)).validate_args is True
    assert quiet(np.ones((2, 4), np.float32)).validate_args is False
