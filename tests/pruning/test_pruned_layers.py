import numpy as np
import pytest
from scipy.special import softmax

from keras_efficient.backend import tf
from keras_efficient.pruning import ConstantOutput, PrunedConformerBlock, PrunedSelfAttention
from keras_efficient.testing import run_layer_test


def test_run_layer_test_pruned_block_with_ragged_heads_and_empty_modules():
    run_layer_test(
        PrunedConformerBlock,
        dict(model_dim=8, num_heads=3, head_dim=4, ffn1_units=0, ffn2_units=5,
             query_units=[2, 0, 0], value_units=[1, 3, 0], conv_units=3, kernel_size=3,
             dropout_rate=0.1),
        input_shape=(2, 5, 8), expected_output_shape=(2, 5, 8), expect_nan_error=True,
        supports_jit=True, rtol=1e-5, atol=1e-5,
        # dropout_rate=0.1 (random in training) and the convolution module's BatchNorm
        # (per-replica batch statistics): MirroredStrategy is compared in inference mode.
        distributed_training=False)


def test_run_layer_test_constant_output():
    run_layer_test(ConstantOutput, dict(units=3, activation="sigmoid"), input_shape=(4, 2, 5),
                   expected_output_shape=(4, 2, 3), expected_num_trainable_weights=1,
                   supports_jit=True)


def test_pruned_attention_matches_per_head_reference():
    rng = np.random.default_rng(0)
    layer = PrunedSelfAttention(6, head_dim=4, query_units=[3, 0], value_units=[2, 1])
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    layer(x)
    for w in layer.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32) * 0.5)
    g, b = layer.norm.gamma.numpy(), layer.norm.beta.numpy()
    xn = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    q = xn @ layer.query_kernel.numpy() + layer.query_bias.numpy()
    k = xn @ layer.key_kernel.numpy() + layer.key_bias.numpy()
    v = xn @ layer.value_kernel.numpy() + layer.value_bias.numpy()
    w0 = softmax(np.einsum("btk,bsk->bts", q, k) / 2.0, axis=-1)   # 1/sqrt(head_dim = 4)
    ctx0 = np.einsum("bts,bsk->btk", w0, v[..., :2])
    ctx1 = np.broadcast_to(v[..., 2:].mean(axis=1, keepdims=True), (2, 5, 1))  # uniform weights
    expected = np.concatenate([ctx0, ctx1], -1) @ layer.output_kernel.numpy() + \
        layer.output_bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert layer.count_params() == 2 * 6 + 2 * (6 * 3 + 3) + (6 * 3 + 3) + 3 * 6 + 6


@pytest.mark.parametrize("kwargs,name", [
    (dict(query_units=[1], value_units=[0]), "value_units"),
    (dict(query_units=[1, 0], value_units=[0, 2]), "query_units"),
    (dict(query_units=[5], value_units=[1]), "query_units"),
    (dict(query_units=[1], value_units=[1, 1]), "value_units"),
    (dict(query_units=[], value_units=[]), "query_units"),
])
def test_pruned_attention_invalid_sizes(kwargs, name):
    with pytest.raises(ValueError, match="`{}".format(name)):
        PrunedSelfAttention(8, head_dim=4, **kwargs)


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(ffn1_units=-1), "ffn1_units", ValueError),
    (dict(conv_units=1.5), "conv_units", TypeError),
    (dict(query_units=[1, 1, 1]), "query_units", ValueError),
    (dict(kernel_size=0), "kernel_size", ValueError),
])
def test_pruned_block_invalid_arguments(kwargs, name, error):
    args = dict(model_dim=8, num_heads=2, head_dim=4, ffn1_units=3, ffn2_units=3,
                query_units=[1, 2], value_units=[1, 2], conv_units=2, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match="`{}`".format(name)):
        PrunedConformerBlock(**args)


def test_constant_output_invalid_units():
    with pytest.raises(ValueError, match="`units`"):
        ConstantOutput(0)
