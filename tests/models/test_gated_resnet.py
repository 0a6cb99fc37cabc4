"""Gated and stochastic-depth ResNets built on cifar_resnet's block_wrapper hook."""

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.layers import GatedResidualBlock, StochasticDepth
from keras_efficient.models import gated_blocks_of, gated_resnet, stochastic_depth_resnet


def test_gated_resnet_structure_flops_fractions_and_fit():
    keras.utils.set_random_seed(0)
    model = gated_resnet(depth=14, input_shape=(8, 8, 3), base_filters=4, mode="gather",
                         flops_weight=0.5)
    blocks = gated_blocks_of(model)
    assert len(blocks) == 4  # 6 blocks, 2 of them change shape
    assert blocks[0].gate is not None and all(b.gate is None for b in blocks[1:])
    # One gate, shared; the state is threaded explicitly (each block returns [y, h, c]).
    assert all(b.recurrent_gate is blocks[0].gate and b.return_state for b in blocks)
    fractions = np.array([float(b.flops_fraction.numpy()) for b in blocks])
    assert fractions.sum() == pytest.approx(1.0)
    flops = np.array([b.counted_flops for b in blocks], float)
    np.testing.assert_allclose(fractions, flops / flops.sum(), rtol=1e-6)
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(np.float32)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(k.endswith("_gate_rate") for k in hist.history)


def test_gated_resnet_open_steps_hold_every_gate_open_then_release():
    keras.utils.set_random_seed(0)
    # gate_bias -4: every gate would be closed; open_steps=2 holds them open for 2 steps.
    model = gated_resnet(depth=14, input_shape=(8, 8, 3), base_filters=4, mode="mask",
                         gate_bias=-4.0, open_steps=2)
    blocks = gated_blocks_of(model)
    assert [b.open_steps for b in blocks] == [2] * 4
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(np.float32)
    y = np.arange(8) % 10
    rates = []
    for _ in range(3):
        model.train_on_batch(x, y)
        rates.append([float(b.open_fraction.numpy()) for b in blocks])
    assert rates[0] == rates[1] == [1.0] * 4
    assert max(rates[2]) < 1.0
    assert [int(b.gate_step.numpy()) for b in blocks] == [3] * 4


def test_gated_resnet_gather_equals_mask_at_inference():
    keras.utils.set_random_seed(1)
    a = gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4, mode="gather")
    b = gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4, mode="mask")
    b.set_weights(a.get_weights())
    x = np.random.default_rng(1).uniform(size=(6, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(a(x).numpy(), b(x).numpy(), rtol=1e-5, atol=1e-5)


def test_stochastic_depth_resnet_linear_decay():
    model = stochastic_depth_resnet(depth=14, input_shape=(8, 8, 3), base_filters=4,
                                    final_survival=0.5)
    layers = [l for l in model.layers if isinstance(l, StochasticDepth)]
    assert len(layers) == 4
    # blocks 0,1 (stage 1), 3 (stage 2), 5 (stage 3) of L = 6: p_l = 1 - (l+1)/6 * 0.5
    np.testing.assert_allclose([l.survival_probability for l in layers],
                               [1 - k / 6 * 0.5 for k in (1, 2, 4, 6)])
    assert not any(isinstance(l, GatedResidualBlock) for l in model.layers)


def _analytic_block_flops(h, c):
    # 2 x (two 3x3 convs + two BN, 1 MAC per element) + one residual add per element.
    return 2 * (2 * h * h * 9 * c * c + 2 * h * h * c) + h * h * c


def test_set_gate_flops_fractions_on_a_hand_built_model():
    from keras_efficient.layers import RecurrentGate, ResidualBlock
    from keras_efficient.models import set_gate_flops_fractions

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    a = GatedResidualBlock(ResidualBlock(4), gate=RecurrentGate(), flops_weight=0.3, mode="mask")
    down = ResidualBlock(8, strides=2)
    b = GatedResidualBlock(ResidualBlock(8), flops_weight=0.3, mode="mask")
    model = keras.Model(inp, b(down(a(inp))))
    flops = np.array([_analytic_block_flops(8, 4), _analytic_block_flops(4, 8)], float)
    fractions = set_gate_flops_fractions(model)
    np.testing.assert_allclose(fractions, flops / flops.sum(), rtol=1e-12)
    np.testing.assert_allclose([a.flops_fraction.numpy(), b.flops_fraction.numpy()],
                               flops / flops.sum(), rtol=1e-6)
    # With all gates forced open the regulariser is α·C = α·1 (every gateable FLOP runs).
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 4)).astype(np.float32)
    y = a(x, decisions=np.ones(4))
    b(down(y), decisions=np.ones(4))
    total = float(a.losses[0]) + float(b.losses[0])
    assert total == pytest.approx(0.3, rel=1e-6)
