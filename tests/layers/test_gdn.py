"""GDN: NumPy closed form, equality with tensorflow_compression.GDN (2.14 line), lower bound."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import GDN
from keras_efficient.layers.gdn import _lower_bound, _nonnegative_initial, _nonnegative_value
from keras_efficient.testing import run_layer_test

PEDESTAL = 2.0 ** -36  # offset² with tfc's offset 2⁻¹⁸


def _random_parameters(channels, seed):
    """β in [0.5, 2], γ in [0, 0.3] and not symmetric (so γ's orientation is tested)."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.5, 2.0, channels)
    gamma = rng.uniform(0.0, 0.3, (channels, channels))
    gamma[0, -1] = 0.0  # an exact zero: its variable sits on the bound 2⁻¹⁸
    return beta, gamma


def _set_parameters(layer, beta, gamma):
    """Sets the effective β, γ through the reparameterised variables: v = sqrt(value + 2⁻³⁶)."""
    for variable, value in ((layer.reparam_beta, beta), (layer.reparam_gamma, gamma)):
        variable.assign(np.sqrt(value + PEDESTAL).astype(variable.dtype.as_numpy_dtype))


def _numpy_gdn(x, beta, gamma, inverse, rectify, alpha, epsilon, channels_first):
    """y_i = x_i / (β_i + Σ_j γ_ji |x_j|^α)^ε along the channel axis, in float64."""
    x = np.asarray(x, np.float64)
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    if rectify:
        x = np.maximum(x, 0.0)
    pool = (beta + np.abs(x) ** alpha @ gamma) ** epsilon
    y = x * pool if inverse else x / pool
    return np.moveaxis(y, -1, 1) if channels_first else y


SETTINGS = [
    # inverse, rectify, alpha, epsilon, data_format, input shape
    (False, False, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (True, False, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (False, True, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (False, False, 2.0, 0.5, "channels_last", (3, 5, 4, 6)),
    (True, True, 2.0, 0.5, "channels_last", (4, 6)),
    (False, False, 1.5, 0.75, "channels_last", (3, 7, 6)),
    (False, True, 2.0, 1.0, "channels_first", (3, 6, 5, 4)),
    (True, False, 1.0, 0.5, "channels_first", (3, 6, 7)),
    (False, False, 2.0, 0.5, "channels_last", (2, 3, 3, 2, 6)),
]


@pytest.mark.parametrize("inverse,rectify,alpha,epsilon,data_format,shape", SETTINGS)
def test_matches_numpy_closed_form(inverse, rectify, alpha, epsilon, data_format, shape):
    channels = shape[1] if data_format == "channels_first" else shape[-1]
    layer = GDN(inverse=inverse, rectify=rectify, alpha_parameter=alpha,
                epsilon_parameter=epsilon, data_format=data_format)
    layer.build(shape)
    beta, gamma = _random_parameters(channels, seed=len(shape))
    _set_parameters(layer, beta, gamma)
    np.testing.assert_allclose(layer.beta.numpy(), beta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.gamma.numpy(), gamma, rtol=1e-6, atol=1e-7)
    x = 2.0 * np.random.default_rng(7).standard_normal(shape).astype("float32")
    expected = _numpy_gdn(x, beta, gamma, inverse, rectify, alpha, epsilon,
                          data_format == "channels_first")
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    jitted = tf.function(layer, jit_compile=True)
    np.testing.assert_allclose(jitted(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_initial_values_and_reparameterisation():
    layer = GDN()
    layer.build((None, 4))
    # tfc's initialisers: β = 1, γ = 0.1·I, stored as sqrt(value + 2⁻³⁶).
    np.testing.assert_allclose(layer.beta.numpy(), np.ones(4), rtol=1e-6, atol=0)
    np.testing.assert_allclose(layer.gamma.numpy(), 0.1 * np.eye(4), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.reparam_beta.numpy(), np.sqrt(1.0 + PEDESTAL), rtol=1e-7)
    np.testing.assert_allclose(layer.reparam_gamma.numpy(),
                               np.sqrt(0.1 * np.eye(4) + PEDESTAL), rtol=1e-6)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["reparam_beta:0", "reparam_gamma:0"]
    # Below the bound the effective values are the minima: β >= 1e-6, γ >= 0.
    layer.reparam_beta.assign(-np.ones(4, "float32"))
    layer.reparam_gamma.assign(-np.ones((4, 4), "float32"))
    np.testing.assert_allclose(layer.beta.numpy(), 1e-6, rtol=1e-5)
    np.testing.assert_allclose(layer.gamma.numpy(), 0.0, atol=1e-12)


def test_nonnegative_helpers_round_trip_in_float64():
    values = np.array([0.0, 1e-9, 1e-6, 0.1, 1.0, 7.5])
    for minimum in (0.0, 1e-6):
        v = _nonnegative_initial(tf.constant(values))
        got = _nonnegative_value(v, minimum).numpy()
        np.testing.assert_allclose(got, np.maximum(values, minimum), rtol=1e-9, atol=1e-15)
    # Negative initial values are stored at sqrt(pedestal) (value 0).
    np.testing.assert_allclose(_nonnegative_initial(tf.constant([-3.0], tf.float64)).numpy(),
                               [2.0 ** -18], rtol=1e-12)


def test_lower_bound_identity_if_towards_gradient():
    x = tf.constant([-1.0, 0.5, 2.0, 0.5, 3.0, 1.0])
    dy = tf.constant([1.0, -1.0, 1.0, 1.0, -2.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _lower_bound(x, 1.0)
    grad = tape.gradient(y, x, output_gradients=dy).numpy()
    np.testing.assert_array_equal(y.numpy(), [1.0, 1.0, 2.0, 1.0, 3.0, 1.0])
    # Passed where x >= bound (2.0, 3.0 and 1.0 on the bound) or where descent moves x
    # up towards the bound (dy < 0 at x = 0.5); zero below the bound when it points away.
    np.testing.assert_array_equal(grad, [0.0, -1.0, 1.0, 0.0, -2.0, 1.0])
    # Same under XLA.
    @tf.function(jit_compile=True)
    def jitted(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _lower_bound(x, 1.0)
        return tape.gradient(y, x, output_gradients=dy)
    np.testing.assert_array_equal(jitted(x, dy).numpy(), grad)


def test_reparameterised_gradient_by_hand():
    # d/dv [lower_bound(v, b)² − p] = 2v where passed, 0 where blocked; b = sqrt(1e-6 + p).
    v = tf.Variable([-0.5, 0.0005, 0.5, -0.5], dtype=tf.float64)
    dy = tf.constant([1.0, -1.0, 3.0, -2.0], tf.float64)
    with tf.GradientTape() as tape:
        value = _nonnegative_value(v, 1e-6)
    grad = tape.gradient(value, v, output_gradients=dy).numpy()
    b = np.sqrt(1e-6 + PEDESTAL)
    np.testing.assert_allclose(value.numpy(), np.maximum(v.numpy(), b) ** 2 - PEDESTAL,
                               rtol=1e-12)
    np.testing.assert_allclose(grad, [0.0, -1.0 * 2 * b, 3.0 * 2 * 0.5, -2.0 * 2 * b],
                               rtol=1e-12)


@pytest.mark.parametrize("inverse,rectify,alpha,epsilon", [(False, False, 1.0, 0.5),
                                                           (True, True, 2.0, 1.0)])
def test_input_gradient_matches_finite_differences(inverse, rectify, alpha, epsilon):
    layer = GDN(inverse=inverse, rectify=rectify, alpha_parameter=alpha,
                epsilon_parameter=epsilon, dtype="float64")
    layer.build((2, 3, 4))
    _set_parameters(layer, *_random_parameters(4, seed=3))
    rng = np.random.default_rng(4)
    x = rng.uniform(0.2, 1.5, (2, 3, 4)) * rng.choice([-1.0, 1.0], (2, 3, 4))  # away from 0
    theoretical, numerical = tf.test.compute_gradient(layer, [tf.constant(x)])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-7)


def test_mixed_float16_pool_in_float32(mixed_precision):
    layer = GDN(alpha_parameter=2.0, epsilon_parameter=0.5)
    x = np.full((2, 3, 8), 1000.0, "float32")  # Σ γ x² = 0.1·10⁶ overflows float16
    y = layer(x)
    assert y.dtype == tf.float16 and layer.reparam_beta.dtype == tf.float32
    expected = _numpy_gdn(x, np.ones(8), 0.1 * np.eye(8), False, False, 2.0, 0.5, False)
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, rtol=1e-3, atol=0)


@pytest.mark.parametrize("inverse,rectify,alpha,epsilon,data_format,shape", [
    (False, False, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (True, False, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (False, True, 1.0, 1.0, "channels_last", (3, 5, 4, 6)),
    (True, True, 1.0, 1.0, "channels_last", (5, 6)),
    (False, False, 2.0, 0.5, "channels_last", (3, 5, 4, 6)),
    (True, False, 2.0, 0.5, "channels_last", (3, 7, 6)),
    (False, True, 2.0, 1.0, "channels_last", (5, 6)),
    (False, False, 1.0, 0.5, "channels_first", (3, 6, 5, 4)),
    (True, True, 2.0, 1.0, "channels_first", (3, 6, 7)),
])
def test_equals_tensorflow_compression(inverse, rectify, alpha, epsilon, data_format, shape):
    tfc = pytest.importorskip("tensorflow_compression")
    kwargs = dict(inverse=inverse, rectify=rectify, alpha_parameter=alpha,
                  epsilon_parameter=epsilon, data_format=data_format)
    ours, theirs = GDN(**kwargs), tfc.GDN(**kwargs)
    ours.build(shape)
    theirs.build(shape)
    channels = shape[1] if data_format == "channels_first" else shape[-1]
    beta, gamma = _random_parameters(channels, seed=11)
    _set_parameters(ours, beta, gamma)
    # Some variables below their bound, so the lower bound's gradient rule matters.
    ours.reparam_beta.assign(tf.tensor_scatter_nd_update(ours.reparam_beta, [[1]], [-0.2]))
    ours.reparam_gamma.assign(tf.tensor_scatter_nd_update(ours.reparam_gamma,
                                                          [[0, 1], [2, 3]], [-0.1, 0.0]))
    ours_vars = [ours.reparam_beta, ours.reparam_gamma]
    theirs_vars = [theirs.beta_parameter.variable, theirs.gamma_parameter.variable]
    for a, b in zip(ours_vars, theirs_vars):
        b.assign(a)
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal(shape).astype("float32"))
    upstream = tf.constant(rng.standard_normal(shape).astype("float32"))  # mixed-sign gradients

    def forward_backward(layer, variables):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x] + variables)

    ours_out = forward_backward(ours, ours_vars)
    theirs_out = forward_backward(theirs, theirs_vars)
    np.testing.assert_allclose(ours.beta.numpy(), theirs.beta.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(ours.gamma.numpy(), theirs.gamma.numpy(), rtol=0, atol=0)
    for name, a, b in zip(["output", "d/dx", "d/dreparam_beta", "d/dreparam_gamma"],
                          ours_out, theirs_out):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"inverse": "yes"}, TypeError, "inverse"),
    ({"inverse": None}, TypeError, "inverse"),
    ({"inverse": 1}, TypeError, "inverse"),
    ({"rectify": 0}, TypeError, "rectify"),
    ({"data_format": "NHWC"}, ValueError, "data_format"),
    ({"data_format": None}, ValueError, "data_format"),
    ({"alpha_parameter": 0.0}, ValueError, "alpha_parameter"),
    ({"alpha_parameter": -1.0}, ValueError, "alpha_parameter"),
    ({"alpha_parameter": float("nan")}, ValueError, "alpha_parameter"),
    ({"alpha_parameter": None}, TypeError, "alpha_parameter.*trainable"),
    ({"alpha_parameter": "1"}, TypeError, "alpha_parameter"),
    ({"alpha_parameter": True}, TypeError, "alpha_parameter"),
    ({"alpha_parameter": lambda: 1.0}, TypeError, "alpha_parameter"),
    ({"epsilon_parameter": 0}, ValueError, "epsilon_parameter"),
    ({"epsilon_parameter": None}, TypeError, "epsilon_parameter.*trainable"),
    ({"epsilon_parameter": "0.5"}, TypeError, "epsilon_parameter"),
    ({"beta_initializer": "no_such_initializer"}, ValueError, "beta_initializer"),
    ({"beta_initializer": None}, ValueError, "beta_initializer"),
    ({"gamma_initializer": 3}, ValueError, "gamma_initializer"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        GDN(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank >= 2.*input_shape=\(3,\)"):
        GDN().build((3,))
    with pytest.raises(ValueError, match=r"channel dimension.*input_shape=\(2, 4, None\)"):
        GDN().build((2, 4, None))
    with pytest.raises(ValueError, match=r"channel dimension.*input_shape=\(2, None, 4\)"):
        GDN(data_format="channels_first").build((2, None, 4))
    with pytest.raises(ValueError, match="rank >= 2"):
        GDN().build(tf.TensorShape(None))
    layer = GDN()
    layer(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError, match="axis -1|axis 2|incompatible"):
        layer(np.zeros((2, 3, 5), "float32"))
    with pytest.raises(RuntimeError, match="build"):
        GDN().beta  # noqa: B018


def test_validate_args():
    x = np.ones((2, 3, 4), "float32")
    x[0, 1, 2] = np.nan
    assert GDN().get_config()["validate_args"] is False
    assert np.isnan(GDN()(x)).any()  # default: values are not checked
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        GDN(validate_args=True)(x)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="empty batch"):
        GDN(validate_args=True)(np.zeros((0, 3, 4), "float32"))
    with pytest.raises(TypeError, match="floating-point"):  # dtype: always checked
        GDN()(np.ones((2, 3, 4), "int32"))
    with pytest.raises(TypeError, match="validate_args"):
        GDN(validate_args=1)


def test_config_round_trip_with_custom_initializers():
    layer = GDN(inverse=True, rectify=True, data_format="channels_first", alpha_parameter=2,
                epsilon_parameter=0.5, beta_initializer=keras.initializers.Constant(2.0),
                gamma_initializer=keras.initializers.Identity(gain=0.3))
    config = layer.get_config()
    assert config["alpha_parameter"] == 2.0 and isinstance(config["alpha_parameter"], float)
    rebuilt = GDN.from_config(config)
    assert rebuilt.get_config() == config
    rebuilt.build((None, 3, 5))
    np.testing.assert_allclose(rebuilt.beta.numpy(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(rebuilt.gamma.numpy(), 0.3 * np.eye(3), rtol=1e-6, atol=1e-10)


def test_run_layer_test_default():
    run_layer_test(GDN, {}, input_shape=(4, 3, 3, 5), expected_output_shape=(4, 3, 3, 5),
                   expected_num_trainable_weights=2, expected_num_non_trainable_weights=0,
                   expected_num_losses=0, supports_jit=True)


def test_run_layer_test_inverse_rectify_channels_first():
    run_layer_test(GDN, {"inverse": True, "rectify": True, "alpha_parameter": 2.0,
                         "epsilon_parameter": 0.5, "data_format": "channels_first"},
                   input_shape=(4, 5, 3), expected_output_shape=(4, 5, 3),
                   expected_num_trainable_weights=2, supports_jit=True)
