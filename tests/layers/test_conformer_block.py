import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.layers import (
    AdaptiveDropout,
    ConformerBlock,
    ConformerConvolution,
    ConformerFeedForward,
    ConformerSelfAttention,
)
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.testing import run_layer_test

import test_conformer_reference as ref


SMALL = dict(model_dim=8, num_heads=2, ffn_dim=12, kernel_size=3, dropout_rate=0.1)


def test_run_layer_test_adaptive_block():
    run_layer_test(
        ConformerBlock, dict(SMALL, schedule=RetentionTargetSchedule(2.0, -1.0, 10), seed=1,
                            validate_args=True),
        input_shape=(2, 6, 8), expected_output_shape=(2, 6, 8),
        # 5 ADL sites: 5 retention parameters and 5 step counters (+2 BatchNorm statistics).
        expected_num_trainable_weights=33 + 5, expected_num_non_trainable_weights=2 + 5,
        expected_num_losses=5, expect_nan_error=True, supports_jit=True, rtol=1e-5, atol=1e-5,
        # Adaptive dropout masks are random in training and BatchNorm uses per-replica batch
        # statistics: MirroredStrategy is compared in inference mode.
        distributed_training=False)


def test_sites_have_the_paper_unit_shapes():
    block = ConformerBlock(**SMALL)
    block(tf.zeros((1, 5, 8)))
    sites = block.adaptive_dropout_sites
    assert list(sites) == ["ffn1", "attention_query", "attention_value", "conv", "ffn2"]
    assert all(isinstance(a, AdaptiveDropout) for a in sites.values())
    assert tuple(sites["ffn1"].retention_raw.shape) == (12,)
    assert tuple(sites["attention_query"].retention_raw.shape) == (2, 4)  # per head
    assert tuple(sites["attention_value"].retention_raw.shape) == (2, 4)
    assert tuple(sites["conv"].retention_raw.shape) == (8,)
    assert sites["attention_query"] is not sites["attention_value"]
    names = [w.name for w in block.weights]  # distinct names: the HDF5 format needs them
    assert len(set(names)) == len(names)
    assert "conformer_block/ffn1/dense1/kernel:0" in names


def test_inference_matches_numpy_reference_of_eqs_8_to_12():
    rng = np.random.default_rng(3)
    block = ConformerBlock(**SMALL)
    x = rng.standard_normal((3, 7, 8)).astype(np.float32)
    block(x)
    ref.randomise(block, rng)
    masks = [a.keep_mask.numpy() for a in block.adaptive_dropout_sites.values()]
    assert any(not m.all() for m in masks) and all(m.any() for m in masks)
    np.testing.assert_allclose(block(x, training=False).numpy(), ref.block(block, x),
                               rtol=1e-4, atol=1e-4)


def test_dense_block_matches_reference_and_round_trips_config():
    rng = np.random.default_rng(1)
    block = ConformerBlock(**dict(SMALL, adaptive=False))
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    block(x)
    ref.randomise(block, rng)
    assert block.adaptive_dropout_sites == {}
    assert len(block.weights) == 35 and not block.losses
    rebuilt = ConformerBlock.from_config(block.get_config())
    rebuilt(x)
    rebuilt.set_weights(block.get_weights())
    np.testing.assert_allclose(rebuilt(x).numpy(), block(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(block(x).numpy(), ref.block(block, x), rtol=1e-4, atol=1e-4)


def test_training_step_advances_all_sites_once():
    block = ConformerBlock(**SMALL)
    x = tf.random.normal((2, 5, 8))
    block(x, training=True)
    block(x, training=True)
    assert [int(a.step) for a in block.adaptive_dropout_sites.values()] == [2] * 5


def test_wrong_width_is_rejected():
    with pytest.raises(ValueError, match="model_dim"):
        ConformerBlock(**SMALL)(tf.zeros((1, 5, 7)))
    with pytest.raises(ValueError, match="rank 3"):
        ConformerBlock(**SMALL)(tf.zeros((1, 8)))


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(model_dim=0), "model_dim", ValueError),
    (dict(model_dim=8.0), "model_dim", TypeError),
    (dict(num_heads=3), "num_heads", ValueError),
    (dict(num_heads=0), "num_heads", ValueError),
    (dict(ffn_dim=-1), "ffn_dim", ValueError),
    (dict(ffn_dim=None), "ffn_dim", TypeError),
    (dict(kernel_size=4), "kernel_size", ValueError),
    (dict(kernel_size=0), "kernel_size", ValueError),
    (dict(dropout_rate=1.0), "dropout_rate", ValueError),
    (dict(dropout_rate=-0.1), "dropout_rate", ValueError),
    (dict(adaptive="yes"), "adaptive", TypeError),
    (dict(alpha=0.0), "alpha", ValueError),
    (dict(gamma=-1.0), "gamma", ValueError),
    (dict(inference="mean"), "inference", ValueError),
    (dict(schedule=1.0), "schedule", TypeError),
])
def test_invalid_block_arguments(kwargs, name, error):
    with pytest.raises(error, match="`{}`".format(name)):
        ConformerBlock(**dict(SMALL, **kwargs))


@pytest.mark.parametrize("cls,kwargs,name", [
    (ConformerFeedForward, dict(model_dim=8, ffn_dim=0), "ffn_dim"),
    (ConformerSelfAttention, dict(model_dim=8, num_heads=5), "num_heads"),
    (ConformerConvolution, dict(model_dim=8, kernel_size=3, conv_dim=0), "conv_dim"),
    (ConformerConvolution, dict(model_dim=8, kernel_size=2), "kernel_size"),
])
def test_invalid_module_arguments(cls, kwargs, name):
    with pytest.raises(ValueError, match="`{}`".format(name)):
        cls(**kwargs)
