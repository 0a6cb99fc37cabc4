"""Bytes, delay and the paper's 100 devices × 25 fps network-load example."""

import numpy as np
import pytest

from keras_efficient.split.transmission import (
    bytes_per_sample,
    dequantize_uint8,
    end_to_end_delay,
    network_load_bps,
    network_time,
    quantize_uint8,
)


def test_bytes_per_sample():
    assert bytes_per_sample((32, 32, 3), "uint8") == 3072
    assert bytes_per_sample((17, 17, 3), "uint8") == 867
    assert bytes_per_sample((17, 17, 3), "float16") == 1734
    assert bytes_per_sample((17, 17, 3)) == 3468
    assert bytes_per_sample((17, 17, 3), "uint8") / 3072 == pytest.approx(0.28, abs=0.005)


def test_paper_network_load_example():
    raw = network_load_bps(100, 25, 3072)
    hnd = network_load_bps(100, 25, 867)
    assert raw / 1e6 == pytest.approx(61.44)
    assert hnd / 1e6 == pytest.approx(17.34)
    assert network_load_bps(100, 25, 867, 0.23) / 1e6 == pytest.approx(13.35, abs=0.005)
    assert network_load_bps(100, 25, 867, 0.49) / 1e6 == pytest.approx(8.84, abs=0.005)


def test_delay():
    # 64 samples, 867 bytes each, 1 Mbit/s, 10 ms RTT: 64·867·8 / 1e6 + 0.01 s.
    out = end_to_end_delay(64, 867, 1e6, 0.01, coverage=0.0, device_time_s=0.002,
                           server_time_s=0.004)
    assert out["network_s"] == pytest.approx(64 * 867 * 8 / 1e6 + 0.01)
    assert out["total_s"] == pytest.approx(out["network_s"] + 0.006)
    half = end_to_end_delay(64, 867, 1e6, 0.01, coverage=0.5, server_time_s=0.004)
    assert half["network_s"] == pytest.approx(32 * 867 * 8 / 1e6 + 0.01)
    assert half["server_s"] == pytest.approx(0.002)
    assert end_to_end_delay(64, 867, 1e6, 0.01, coverage=1.0)["network_s"] == 0.0
    assert network_time(0, 1e6, 0.01) == 0.0


def test_quantisation_round_trip():
    z = np.random.default_rng(0).uniform(-3, 3, size=(10, 7)).astype("float32")
    q = quantize_uint8(z, -3.0, 3.0)
    assert q.dtype == np.uint8
    assert np.max(np.abs(dequantize_uint8(q, -3.0, 3.0) - z)) <= 6.0 / 510 + 1e-6


@pytest.mark.parametrize("call,match", [
    (lambda: bytes_per_sample((3, 0)), "shape"),
    (lambda: bytes_per_sample((3,), "int4"), "dtype"),
    (lambda: network_time(10, 0.0, 0.01), "bandwidth_bps"),
    (lambda: network_time(10, 1e6, -1.0), "rtt_s"),
    (lambda: end_to_end_delay(0, 10, 1e6, 0.0), "batch_size"),
    (lambda: end_to_end_delay(4, 10, 1e6, 0.0, coverage=1.2), "coverage"),
    (lambda: network_load_bps(0, 25, 10), "num_devices"),
    (lambda: quantize_uint8([1.0], 1.0, 1.0), "high"),
])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
