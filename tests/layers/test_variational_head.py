"""VariationalHead (Head₁) and BottleneckDecoder (Head₂) of ReBEL."""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.layers.variational_head import BottleneckDecoder, VariationalHead
from keras_efficient.testing import run_layer_test



HEAD = {"filters": [6, 5], "latent_channels": 2, "strides": [2, 1]}


def test_head_run_layer_test():
    zeros = np.zeros((4, 4, 4, 2), "float32")
    run_layer_test(
        VariationalHead, HEAD, input_shape=(4, 8, 8, 3),
        expected_output_shape=[(4, 4, 4, 2)] * 3,
        # 2 convs × (kernel, bias) + 2 GDN × (beta, gamma) + output conv (kernel, bias)
        expected_num_trainable_weights=10, expected_num_losses=0,
        fit_targets=(zeros, zeros, zeros), rtol=1e-5, atol=1e-5,
        # The latent sample is random in training: MirroredStrategy is compared in
        # inference mode.
        distributed_training=False)


def test_head_outputs_and_sampling():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    head = VariationalHead(**HEAD)
    z, mean, var = head(x, training=False)
    np.testing.assert_array_equal(z.numpy(), mean.numpy())
    assert np.all(var.numpy() > 0)
    # Reparameterised samples: z = μ + sqrt(σ)·ε. Standardised residuals are N(0, 1).
    samples = np.stack([head(x, training=True)[0].numpy() for _ in range(200)])
    eps = (samples - mean.numpy()) / np.sqrt(var.numpy())
    # 12,800 draws: 4 standard errors on the mean (1/sqrt(n)) and the std (1/sqrt(2n)).
    n = eps.size
    assert abs(eps.mean()) < 4.0 / np.sqrt(n), eps.mean()
    assert abs(eps.std() - 1.0) < 4.0 / np.sqrt(2.0 * n), eps.std()
    # training as a tensor (Keras graph mode) and sample_at_inference
    z_t = tf.function(lambda t: head(x, training=t)[0])(tf.constant(True))
    assert not np.allclose(z_t.numpy(), mean.numpy())
    sampler = VariationalHead(**HEAD, sample_at_inference=True)
    z2, m2, _ = sampler(x, training=False)
    assert not np.allclose(z2.numpy(), m2.numpy())


def test_head_variance_is_exp_of_clipped_log_variance():
    head = VariationalHead(**HEAD, log_variance_min=-1.0, log_variance_max=0.5)
    x = 100.0 * np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    _, _, var = head(x, training=False)
    _, log_var = head.posterior(x)
    np.testing.assert_allclose(var.numpy(), np.exp(np.clip(log_var.numpy(), -1.0, 0.5)),
                               rtol=1e-6)


def test_decoder_run_layer_test():
    run_layer_test(
        BottleneckDecoder, {"target_shape": [4, 4, 5], "filters": [6], "validate_args": True},
        input_shape=(4, 4, 4, 2),
        expected_output_shape=(4, 4, 4, 5), expected_num_trainable_weights=6,
        expected_num_losses=0, expect_nan_error=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_hw,target", [((8, 8), (4, 4, 3)), ((2, 2), (8, 8, 3))])
def test_decoder_resamples_to_target(in_hw, target):
    dec = BottleneckDecoder(target, filters=[4])
    out = dec(np.zeros((2,) + in_hw + (2,), "float32"))
    assert out.shape == (2,) + target


def test_decoder_bad_spatial_size():
    with pytest.raises(ValueError, match="integer strides"):
        BottleneckDecoder((5, 5, 3))(np.zeros((1, 4, 4, 2), "float32"))


@pytest.mark.parametrize("kwargs,match", [
    ({"filters": []}, "filters"),
    ({"filters": [0]}, "filters"),
    ({"filters": 8}, "filters"),
    ({"filters": [4.0], "strides": [1]}, "filters"),
    ({"filters": [4], "strides": [1, 1]}, "strides"),
    ({"latent_channels": 0}, "latent_channels"),
    ({"latent_channels": None}, "latent_channels"),
    ({"kernel_size": 2}, "kernel_size"),
    ({"sample_at_inference": "yes"}, "sample_at_inference"),
    ({"log_variance_min": 2.0, "log_variance_max": 1.0}, "log_variance_max"),
])
def test_head_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VariationalHead(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"target_shape": (4, 4)}, "target_shape"),
    ({"target_shape": (4, 0, 3)}, "target_shape"),
    ({"target_shape": None}, "target_shape"),
    ({"target_shape": (4, 4, 3), "kernel_size": 0}, "kernel_size"),
    ({"target_shape": (4, 4, 3), "validate_inputs": "yes"}, "validate_inputs"),
    ({"target_shape": (4, 4, 3), "validate_args": 1}, "validate_args"),
])
def test_decoder_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BottleneckDecoder(**kwargs)


def test_head_bad_input_rank():
    with pytest.raises(ValueError, match="images"):
        VariationalHead(**HEAD)(np.zeros((2, 8, 3), "float32"))
