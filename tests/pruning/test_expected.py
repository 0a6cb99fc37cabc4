"""expected_parameters: hard counts equal count_parameters, soft ones an independent NumPy sum."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout, ConformerBlock
from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import count_parameters, expected_parameters
from keras_efficient.schedules import RetentionTargetSchedule


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _set_logits(adl, beta):
    """Sets beta' so that the layer's retention logits are `beta`."""
    scale = np.sqrt(adl.gamma / adl.alpha)
    adl.retention_raw.assign(((beta - float(adl.current_target)) / scale).astype(np.float32))


def _random_logits(adl, rng, keep_fraction=None, spread=3.0):
    """Random beta around the threshold; with `keep_fraction`, clear keeps and drops
    (|beta - threshold| >= 0.1)."""
    thr = adl.effective_threshold
    shape = tuple(adl.retention_raw.shape)
    if keep_fraction is None:
        beta = thr + rng.uniform(-spread, spread, shape)
    else:
        keep = rng.uniform(size=shape) < keep_fraction
        gap = rng.uniform(0.1, 2.0, shape)
        beta = np.where(keep, thr + gap, thr - gap)
    _set_logits(adl, beta)
    return np.asarray(adl.retention_logits.numpy(), np.float64)


def _probabilities(beta, adl, temperature=1.0, hard=False):
    thr = adl.effective_threshold
    if hard:
        return (beta >= thr).astype(np.float64)
    return _sigmoid((beta - thr) / temperature)


# ----------------------------------------------------------------------------- MLP


def _mlp(units=12, inputs=5, outputs=3, out_bias=True):
    inp = keras.Input((inputs,))
    h = keras.layers.Dense(units, activation="relu", name="d1")(inp)
    h = AdaptiveDropout(schedule=RetentionTargetSchedule(2.0, -1.0, 10), name="adl")(h)
    out = keras.layers.Dense(outputs, use_bias=out_bias, name="d2")(h)
    return keras.Model(inp, out)


def _mlp_closed_form(p, inputs=5, outputs=3, out_bias=True):
    """Dense(in -> H) -> ADL -> Dense(H -> out): each unit costs in + 1 + out; the
    second Dense keeps its bias, or (no bias) becomes a zero constant of `out`
    entries when no unit survives."""
    base = outputs if out_bias else outputs * np.prod(1.0 - p)
    return float(np.sum(p) * (inputs + 1 + outputs) + base)


@pytest.mark.parametrize("out_bias", [True, False])
@pytest.mark.parametrize("keep_fraction", [0.0, 0.4, 1.0])
def test_mlp_hard_equals_count_parameters(out_bias, keep_fraction):
    rng = np.random.default_rng(int(10 * keep_fraction) + out_bias)
    model = _mlp(out_bias=out_bias)
    adl = model.get_layer("adl")
    beta = _random_logits(adl, rng, keep_fraction)
    hard = expected_parameters(model, hard=True)
    assert hard.dtype == tf.float32
    closed = _mlp_closed_form(_probabilities(beta, adl, hard=True), out_bias=out_bias)
    assert float(hard) == closed == count_parameters(model)["effective"]


@pytest.mark.parametrize("out_bias", [True, False])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_mlp_soft_equals_numpy(out_bias, temperature):
    rng = np.random.default_rng(3)
    model = _mlp(out_bias=out_bias)
    adl = model.get_layer("adl")
    beta = _random_logits(adl, rng)
    soft = expected_parameters(model, temperature=temperature, dtype="float64")
    assert soft.dtype == tf.float64
    p = _probabilities(beta, adl, temperature)
    np.testing.assert_allclose(float(soft), _mlp_closed_form(p, out_bias=out_bias), rtol=1e-6)


@pytest.mark.parametrize("out_bias", [True, False])
def test_mlp_gradient_is_cost_times_dp(out_bias):
    rng = np.random.default_rng(4)
    model = _mlp(out_bias=out_bias)
    adl = model.get_layer("adl")
    beta = _random_logits(adl, rng)
    tau = 0.7
    with tf.GradientTape() as tape:
        value = expected_parameters(model, temperature=tau, dtype="float64")
    grad = tape.gradient(value, adl.retention_raw).numpy()
    p = _probabilities(beta, adl, tau)
    dp = p * (1.0 - p) / tau                     # dP/dbeta
    scale = np.sqrt(adl.gamma / adl.alpha)       # dbeta/dbeta'
    cost = 5 + 1 + 3
    analytic = scale * cost * dp
    if not out_bias:  # d/dP_i of out * prod(1 - P) = -out * prod_{j != i}(1 - P_j)
        analytic -= scale * 3 * dp * np.prod(1.0 - p) / (1.0 - p)
    np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- ConformerBlock

D, HEADS, FFN, KERNEL = 8, 2, 12, 3


def _block_model():
    inp = keras.Input((6, D))
    block = ConformerBlock(D, HEADS, FFN, KERNEL, schedule=RetentionTargetSchedule(1.0, -1.0, 10),
                           name="block")
    return keras.Model(inp, block(inp)), block


def _block_closed_form(p):
    """The block's parameters given per-site keep probabilities, written out:
    module = d (output bias, always) + 2d (its LayerNorm, if any unit survives) +
    units * per-unit cost; a query unit's Q and K rows go with its head's last value."""
    d, k = D, KERNEL

    def alive(q):
        return 1.0 - np.prod(1.0 - q)

    ffn = [d + 2 * d * alive(p[s]) + np.sum(p[s]) * (d + 1 + d) for s in ("ffn1", "ffn2")]
    conv = d + 2 * d * alive(p["conv"]) + np.sum(p["conv"]) * (2 * d + 2 + k + 4 + d)
    value, query = p["attention_value"], p["attention_query"]
    heads = sum(alive(value[h]) * np.sum(query[h]) for h in range(HEADS))
    attention = d + 2 * d * alive(value) + np.sum(value) * (d + 1 + d) + heads * 2 * (d + 1)
    return float(sum(ffn) + conv + attention + 2 * d)


def _block_total():
    d, k, f = D, KERNEL, FFN
    ffn = 2 * d + d * f + f + f * d + d
    attention = 2 * d + 4 * (d * d + d)
    conv = 2 * d + d * 2 * d + 2 * d + k * d + 4 * d + d * d + d
    return 2 * ffn + attention + conv + 2 * d


@pytest.mark.parametrize("seed, fractions", [
    (0, (0.5, 0.5, 0.5, 0.5, 0.5)),
    (1, (0.0, 0.3, 0.0, 1.0, 0.2)),   # ffn1 and the values dead: the queries go too
    (2, (1.0, 1.0, 1.0, 1.0, 1.0)),
    (3, (0.0, 0.0, 0.0, 0.0, 0.0)),
])
def test_block_hard_equals_count_parameters(seed, fractions):
    rng = np.random.default_rng(seed)
    model, block = _block_model()
    p = {}
    for (name, adl), fraction in zip(block.adaptive_dropout_sites.items(), fractions):
        p[name] = _probabilities(_random_logits(adl, rng, fraction), adl, hard=True)
    if seed == 0:  # one head without value units but with query units
        p["attention_value"][0] = 0.0
        beta = np.asarray(block.attention.value_dropout.retention_logits.numpy())
        beta[0] = block.attention.value_dropout.effective_threshold - 1.0
        _set_logits(block.attention.value_dropout, beta)
    counts = count_parameters(model)
    assert counts["total"] == _block_total()
    hard = float(expected_parameters(model, hard=True))
    assert hard == _block_closed_form(p) == counts["effective"]


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_block_soft_equals_numpy(temperature):
    rng = np.random.default_rng(11)
    model, block = _block_model()
    p = {name: _probabilities(_random_logits(adl, rng), adl, temperature)
         for name, adl in block.adaptive_dropout_sites.items()}
    soft = expected_parameters(model, temperature=temperature, dtype="float64")
    np.testing.assert_allclose(float(soft), _block_closed_form(p), rtol=1e-9)


def test_block_gradient_matches_finite_differences():
    rng = np.random.default_rng(12)
    model, block = _block_model()
    for adl in block.adaptive_dropout_sites.values():
        _random_logits(adl, rng, spread=1.5)
    variables = [adl.retention_raw for adl in block.adaptive_dropout_sites.values()]
    with tf.GradientTape() as tape:
        value = expected_parameters(model, dtype="float64")
    grads = tape.gradient(value, variables)
    eps = 1e-2
    for var, grad in zip(variables, grads):
        flat = var.numpy().ravel()
        for i in rng.choice(flat.size, 3, replace=False):
            shifted = []
            for sign in (1, -1):
                moved = flat.copy()
                moved[i] += sign * eps
                var.assign(moved.reshape(var.shape))
                shifted.append(float(expected_parameters(model, dtype="float64")))
            var.assign(flat.reshape(var.shape))
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            np.testing.assert_allclose(grad.numpy().ravel()[i], numeric, rtol=2e-3, atol=1e-3)


# ----------------------------------------------------------------------------- encoder


FEATURES, FILTERS, FRAMES = 10, 6, 16


def _encoder():
    return ConformerEncoder((FRAMES, FEATURES), vocab_size=3, num_blocks=2, model_dim=D,
                            num_heads=HEADS, ffn_dim=FFN, kernel_size=KERNEL,
                            subsampling_filters=FILTERS, adaptive=True,
                            schedule=RetentionTargetSchedule(1.0, -1.0, 10),
                            adaptive_subsampling=True)


def _encoder_closed_form(p):
    """Front end: conv1 (3x3, 1 -> n1 filters), conv2 (3x3, n1 -> n2), the projection
    (F/4 positions x n2 channels -> D); a front-end site keeps max(n, 1) channels, so
    E[kept] = sum P + prod(1 - P). Then the two blocks, the CTC layer (D -> 4)."""
    def kept(q):
        return np.sum(q) + np.prod(1.0 - q)

    n1, n2 = kept(p["subsample_adl1"]), kept(p["subsample_adl2"])
    positions = FEATURES // 4 + (FEATURES % 4 > 0)
    front = (9 * n1 + n1) + (9 * n1 * n2 + n2) + (positions * n2 * D + D)
    blocks = sum(_block_closed_form(p[name]) for name in ("conformer_block_0", "conformer_block_1"))
    return float(front + blocks + D * 4 + 4)


def _encoder_logits(model, rng, soft, temperature=1.0):
    p = {}
    for name in ("subsample_adl1", "subsample_adl2"):
        adl = model.get_layer(name)
        beta = _random_logits(adl, rng, None if soft else rng.choice([0.0, 0.5, 1.0]))
        p[name] = _probabilities(beta, adl, temperature, hard=not soft)
    for name in ("conformer_block_0", "conformer_block_1"):
        p[name] = {}
        for site, adl in model.get_layer(name).adaptive_dropout_sites.items():
            beta = _random_logits(adl, rng, None if soft else rng.uniform(0.0, 1.0))
            p[name][site] = _probabilities(beta, adl, temperature, hard=not soft)
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoder_hard_equals_count_parameters(seed):
    rng = np.random.default_rng(seed)
    model = _encoder()
    p = _encoder_logits(model, rng, soft=False)
    hard = float(expected_parameters(model, hard=True))
    assert hard == _encoder_closed_form(p) == count_parameters(model)["effective"]


def test_encoder_soft_equals_numpy_and_gradient():
    rng = np.random.default_rng(21)
    model = _encoder()
    p = _encoder_logits(model, rng, soft=True, temperature=1.5)
    adl = model.get_layer("subsample_adl2")
    with tf.GradientTape() as tape:
        soft = expected_parameters(model, temperature=1.5, dtype="float64")
    np.testing.assert_allclose(float(soft), _encoder_closed_form(p), rtol=1e-9)
    # d/dbeta'_i of the front end through n2 = sum P + prod(1 - P):
    # dn2/dP_i = 1 - prod_{j != i}(1 - P_j); E depends on n2 as (9 n1 + 1 + positions D) n2.
    q = p["subsample_adl2"]
    n1 = np.sum(p["subsample_adl1"]) + np.prod(1.0 - p["subsample_adl1"])
    positions = FEATURES // 4 + (FEATURES % 4 > 0)
    dn2 = 1.0 - np.prod(1.0 - q) / (1.0 - q)
    scale = np.sqrt(adl.gamma / adl.alpha)
    analytic = (9 * n1 + 1 + positions * D) * dn2 * q * (1.0 - q) / 1.5 * scale
    grad = tape.gradient(soft, adl.retention_raw).numpy()
    np.testing.assert_allclose(grad, analytic, rtol=1e-4)


def test_soft_tends_to_hard_at_low_temperature():
    rng = np.random.default_rng(5)
    model = _encoder()
    _encoder_logits(model, rng, soft=False)  # every |beta - threshold| >= 0.1
    hard = float(expected_parameters(model, hard=True))
    cold = float(expected_parameters(model, temperature=1e-3, dtype="float64"))
    assert cold == pytest.approx(hard, abs=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"temperature": "1"}, TypeError, "temperature"),
    ({"temperature": None}, TypeError, "temperature"),
    ({"hard": 1}, TypeError, "hard"),
    ({"dtype": "float16"}, ValueError, "dtype"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        expected_parameters(_mlp(), **kwargs)


def test_unsupported_model_is_rejected():
    layer = keras.layers.Dense(2)
    with pytest.raises(ValueError, match="functional or Sequential"):
        expected_parameters(layer)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 1.0])
def test_nested_model_hard_equals_count_parameters(keep_fraction):
    rng = np.random.default_rng(8)
    inner = _mlp()
    inp = keras.Input((5,))
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(inner(inp)))
    beta = _random_logits(inner.get_layer("adl"), rng, keep_fraction)
    p = _probabilities(beta, inner.get_layer("adl"), hard=True)
    hard = float(expected_parameters(model, hard=True))
    assert hard == _mlp_closed_form(p) + 3 * 2 + 2 == count_parameters(model)["effective"]
    soft = expected_parameters(model, temperature=0.5, dtype="float64")
    p = _probabilities(beta, inner.get_layer("adl"), 0.5)
    np.testing.assert_allclose(float(soft), _mlp_closed_form(p) + 8, rtol=1e-9)
