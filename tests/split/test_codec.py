"""Bottleneck wire formats: TF encode/decode against the NumPy quantiser, bytes, errors."""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.split.codec import BottleneckCodec
from keras_efficient.split.transmission import bytes_per_sample, dequantize_uint8, quantize_uint8

LOW, HIGH = -3.1, 2.7


def _z(seed=0):
    z = 2.0 * np.random.default_rng(seed).normal(size=(40, 6, 6, 3)).astype("float32")
    z[0, 0, 0, :] = [-50.0, 50.0, 0.0]          # clipped to the range
    return z


@pytest.mark.parametrize("mode", ["eager", "graph", "jit"])
def test_uint8_codes_equal_the_numpy_quantiser(mode):
    codec = BottleneckCodec("uint8", (LOW, HIGH))
    fn = {"eager": codec.encode, "graph": tf.function(codec.encode),
          "jit": tf.function(codec.encode, jit_compile=True)}[mode]
    z = _z()
    q = fn(tf.constant(z)).numpy()
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, quantize_uint8(z, LOW, HIGH))
    # Independent closed form (float64), away from the .5 rounding boundaries.
    scaled = (np.clip(z.astype(np.float64), LOW, HIGH) - LOW) / (HIGH - LOW) * 255.0
    safe = np.abs(scaled - np.floor(scaled) - 0.5) > 1e-3
    np.testing.assert_array_equal(q[safe], np.round(scaled[safe]).astype(np.uint8))
    assert q[0, 0, 0, 0] == 0 and q[0, 0, 0, 1] == 255


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_uint8_decode_equals_the_numpy_dequantiser(mode):
    codec = BottleneckCodec("uint8", (LOW, HIGH))
    fn = codec.decode if mode == "eager" else tf.function(codec.decode)
    q = np.arange(256, dtype=np.uint8).reshape(1, 256)
    decoded = fn(tf.constant(q)).numpy()
    assert decoded.dtype == np.float32
    # Graph mode may fuse the multiply-add (one float32 rounding instead of two).
    np.testing.assert_allclose(decoded, dequantize_uint8(q, LOW, HIGH), rtol=0, atol=1e-6)
    np.testing.assert_allclose(decoded[0], LOW + np.arange(256) / 255.0 * (HIGH - LOW),
                               atol=1e-6)
    z = _z(1)
    inside = (z > LOW) & (z < HIGH)
    round_trip = codec.decode(codec.encode(z)).numpy()
    assert np.max(np.abs(round_trip - z)[inside]) <= (HIGH - LOW) / 510 + 1e-6


def test_float_formats_and_bytes():
    z = _z()
    f16 = BottleneckCodec("float16")
    wire = f16.encode(z)
    assert wire.dtype == tf.float16
    np.testing.assert_array_equal(f16.decode(wire).numpy(), z.astype(np.float16).astype(np.float32))
    f32 = BottleneckCodec()
    np.testing.assert_array_equal(f32.decode(f32.encode(z)).numpy(), z)
    for dtype, size in (("float32", 4), ("float16", 2), ("uint8", 1)):
        codec = BottleneckCodec(dtype, (LOW, HIGH) if dtype == "uint8" else None)
        assert codec.bytes_per_sample((6, 6, 3)) == 108 * size == bytes_per_sample((6, 6, 3), dtype)
        encoded = codec.encode(z).numpy()
        assert encoded[0].nbytes == codec.bytes_per_sample(z.shape[1:])
        assert codec.get_config()["dtype"] == dtype


def test_calibrated_range_uses_quantiles():
    z = np.random.default_rng(2).normal(size=(500, 20)).astype("float32")
    codec = BottleneckCodec.calibrated(z, tail=0.01)
    low, high = codec.range
    assert low == pytest.approx(np.quantile(z, 0.005), rel=1e-6)
    assert high == pytest.approx(np.quantile(z, 0.995), rel=1e-6)
    np.testing.assert_allclose(codec.z_range.numpy(), [low, high], rtol=1e-6)
    assert BottleneckCodec.calibrated(z, tail=0.0).range == pytest.approx((z.min(), z.max()))
    assert BottleneckCodec.calibrated(z, dtype="float16").range is None


def test_nan_and_wrong_wire_dtype_rejected():
    codec = BottleneckCodec("uint8", (LOW, HIGH))
    z = _z()
    z[1, 2, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        codec.encode(z)
    with pytest.raises(ValueError, match="NaN"):
        quantize_uint8(z, LOW, HIGH)
    with pytest.raises(ValueError, match="uint8"):
        codec.decode(tf.zeros([2, 3], tf.float32))
    with pytest.raises(TypeError, match="q"):
        dequantize_uint8(np.zeros(3, np.float32), LOW, HIGH)


@pytest.mark.parametrize("kwargs,match", [
    ({"dtype": "int8"}, "dtype"),
    ({"dtype": None}, "dtype"),
    ({"dtype": "uint8"}, "z_range"),
    ({"dtype": "uint8", "z_range": (1.0, 1.0)}, "z_range"),
    ({"dtype": "uint8", "z_range": (2.0, 1.0)}, "z_range"),
    ({"dtype": "uint8", "z_range": (0.0, float("inf"))}, "z_range"),
    ({"dtype": "uint8", "z_range": (0.0, float("nan"))}, "z_range"),
    ({"dtype": "uint8", "z_range": 3.0}, "z_range"),
    ({"dtype": "uint8", "z_range": (0.0, 1.0, 2.0)}, "z_range"),
    ({"dtype": "uint8", "z_range": ("a", 1.0)}, "z_range"),
    ({"dtype": "float32", "z_range": (0.0, 1.0)}, "z_range"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BottleneckCodec(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"z": np.zeros((0, 3))}, "z"),
    ({"z": np.array([1.0, np.nan])}, "z"),
    ({"z": np.ones(4), "tail": 1.0}, "tail"),
    ({"z": np.ones(4), "tail": -0.1}, "tail"),
])
def test_bad_calibration_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BottleneckCodec.calibrated(**kwargs)
