"""CIFAR ResNet: depth bookkeeping, parameter count, block hook, and the residual block."""

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.layers import ResidualBlock
from keras_efficient.models import cifar_resnet
from keras_efficient.testing import run_layer_test


def _expected_params(n, base=16, classes=10):
    """Independent count of ResNet-(6n+2) parameters with projection shortcuts."""
    total = 3 * 3 * 3 * base + 4 * base  # stem conv + BN (gamma, beta, mean, var)
    cin = base
    for stage in range(3):
        f = base * 2 ** stage
        for b in range(n):
            total += 9 * cin * f + 4 * f + 9 * f * f + 4 * f
            if cin != f:
                total += cin * f + 4 * f
            cin = f
    return total + cin * classes + classes


@pytest.mark.parametrize("depth", [8, 20])
def test_parameter_count_and_block_names(depth):
    n = (depth - 2) // 6
    model = cifar_resnet(depth)
    assert model.count_params() == _expected_params(n)
    blocks = [l for l in model.layers if isinstance(l, ResidualBlock)]
    assert [b.name for b in blocks] == ["stage{}_block{}".format(s, b)
                                        for s in (1, 2, 3) for b in range(n)]
    conv_layers = 1 + 2 * len(blocks) + 1  # stem + two per block + dense
    assert conv_layers == depth
    assert model.output_shape == (None, 10)


def test_block_wrapper_sees_identity_flags():
    seen = []

    def wrapper(block, index, is_identity):
        seen.append((index, block.name, is_identity))
        return block

    cifar_resnet(14, block_wrapper=wrapper)
    assert seen == [(0, "stage1_block0", True), (1, "stage1_block1", True),
                    (2, "stage2_block0", False), (3, "stage2_block1", True),
                    (4, "stage3_block0", False), (5, "stage3_block1", True)]


@pytest.mark.parametrize("kwargs, arg", [
    ({"depth": 21}, "depth"), ({"depth": 2}, "depth"), ({"depth": 20.0}, "depth"),
    ({"num_classes": 0}, "num_classes"), ({"block_wrapper": 3}, "block_wrapper"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match="`{}`".format(arg)):
        cifar_resnet(**kwargs)


def test_residual_block_identity_equals_manual_computation():
    block = ResidualBlock(4)
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 4)).astype("float32")
    y = block(x, training=False).numpy()
    h = np.maximum(block.bn1(block.conv1(x), training=False).numpy(), 0)
    h = block.bn2(block.conv2(h), training=False).numpy()
    np.testing.assert_allclose(y, np.maximum(h + x, 0), rtol=1e-5, atol=1e-6)
    assert block.is_identity


def test_residual_block_contract():
    run_layer_test(ResidualBlock, {"filters": 6, "strides": 2}, input_shape=(4, 8, 8, 3),
                   expected_output_shape=(4, 4, 4, 6), expected_num_trainable_weights=9,
                   expected_num_non_trainable_weights=6, expected_num_losses=0, supports_jit=True,
                   # BatchNorm normalises each replica's half batch with its own statistics
                   # in training: MirroredStrategy is compared in inference mode.
                   distributed_training=False)


@pytest.mark.parametrize("kwargs, arg", [
    ({"filters": 0}, "filters"), ({"filters": 4, "strides": 3}, "strides"),
    ({"filters": 4, "weight_decay": -1.0}, "weight_decay"), ({"filters": "4"}, "filters"),
])
def test_residual_block_bad_arguments(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match="`{}`".format(arg)):
        ResidualBlock(**kwargs)


def test_residual_block_rejects_wrong_rank():
    with pytest.raises(ValueError, match="rank 4"):
        ResidualBlock(4)(np.zeros((2, 3), "float32"))


def test_residual_block_float32_inside_mixed_precision(mixed_precision):
    """A block asked for float32 keeps its sublayers in float32 under mixed_float16."""
    block = ResidualBlock(4, dtype="float32")
    y = block(np.ones((2, 5, 5, 4), "float32"))
    assert y.dtype == "float32"
    assert block.conv1.compute_dtype == "float32" and block.bn2.compute_dtype == "float32"
