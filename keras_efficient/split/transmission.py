"""Bytes on the wire, end-to-end delay and network load of a split deployment (Sec. VI-D)."""

import numpy as np

from keras_efficient.utils.validation import check_choice, check_float, check_int, invalid_argument

__all__ = ["BYTES_PER_ELEMENT", "bytes_per_sample", "network_time", "end_to_end_delay",
           "network_load_bps", "quantize_uint8", "dequantize_uint8"]

BYTES_PER_ELEMENT = {"float32": 4, "float16": 2, "uint8": 1}


def bytes_per_sample(shape, dtype="float32"):
    """Serialized bytes of one tensor of `shape` (no batch axis) sent as `dtype`.

    An RGB 32×32 image as uint8 is 3072 bytes; ReBEL's 867-element bottleneck as
    uint8 is 867 bytes (0.28 of the image, Sec. VI-A), as float32 3468 bytes.
    """
    check_choice("dtype", dtype, tuple(BYTES_PER_ELEMENT))
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):
        raise invalid_argument("shape", "a sequence of positive integers", shape,
                               TypeError) from None
    if not dims or any(d < 1 for d in dims):
        raise invalid_argument("shape", "a sequence of positive integers", shape)
    return int(np.prod(dims)) * BYTES_PER_ELEMENT[dtype]


def network_time(num_bytes, bandwidth_bps, rtt_s):
    """Seconds to deliver `num_bytes` on an ideal link: 8·bytes / bandwidth + RTT (0 if nothing is sent)."""
    num_bytes = check_float("num_bytes", num_bytes, low=0.0)
    bandwidth_bps = check_float("bandwidth_bps", bandwidth_bps, low=0.0, low_inclusive=False)
    rtt_s = check_float("rtt_s", rtt_s, low=0.0)
    if num_bytes == 0:
        return 0.0
    return 8.0 * num_bytes / bandwidth_bps + rtt_s


def end_to_end_delay(batch_size, sample_bytes, bandwidth_bps, rtt_s, coverage=0.0,
                     device_time_s=0.0, server_time_s=0.0):
    """Delay of one batch (Fig. 10): device time + network time + server time.

    The (1 − coverage) share of the batch not answered locally is sent (bytes ×
    count), then processed on the server; results coming back are neglected
    (a few bytes), as in the paper. `server_time_s` is the server time for the
    whole batch and is scaled by the share sent.

    Returns:
      dict with `device_s`, `network_s`, `server_s` and `total_s`.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    coverage = check_float("coverage", coverage, low=0.0, high=1.0)
    device = check_float("device_time_s", device_time_s, low=0.0)
    server = check_float("server_time_s", server_time_s, low=0.0)
    sent = int(round((1.0 - coverage) * batch_size))
    net = network_time(sent * check_float("sample_bytes", sample_bytes, low=0.0), bandwidth_bps,
                       rtt_s)
    server = server * sent / batch_size
    return {"device_s": device, "network_s": net, "server_s": server,
            "total_s": device + net + server}


def network_load_bps(num_devices, frames_per_second, sample_bytes, coverage=0.0):
    """Aggregate uplink load in bit/s: devices × fps × bytes × 8 × (1 − coverage).

    The paper's example (Sec. VI-D), 100 devices at 25 fps: raw 3×32×32 uint8
    images give 100·25·3072·8 = 61.44 Mbit/s; an 867-byte bottleneck 17.34 Mbit/s;
    with 23 % and 49 % of queries answered locally 13.35 and 8.84 Mbit/s.
    """
    num_devices = check_int("num_devices", num_devices, low=1)
    fps = check_float("frames_per_second", frames_per_second, low=0.0, low_inclusive=False)
    sample_bytes = check_float("sample_bytes", sample_bytes, low=0.0)
    coverage = check_float("coverage", coverage, low=0.0, high=1.0)
    return num_devices * fps * sample_bytes * 8.0 * (1.0 - coverage)


def quantize_uint8(z, low, high):
    """Uniform uint8 quantisation of z clipped to [low, high] (for 1-byte transmission).

    q = round((clip(z, low, high) − low) / (high − low) · 255) in float32 (round half
    to even), the reference of `BottleneckCodec("uint8", (low, high)).encode`.
    """
    low, high = _range32(low, high)
    z = np.asarray(z, np.float32)
    if np.isnan(z).any():
        raise ValueError("`z` received NaN values.")
    scaled = (np.clip(z, low, high) - low) / (high - low) * np.float32(255.0)
    return np.round(scaled).astype(np.uint8)


def dequantize_uint8(q, low, high):
    """Inverse of `quantize_uint8`: q / 255 · (high − low) + low in float32.

    The error is at most (high − low) / 510 per element inside [low, high].
    """
    low, high = _range32(low, high)
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise invalid_argument("q", "a uint8 array", q.dtype, TypeError)
    return q.astype(np.float32) / np.float32(255.0) * (high - low) + low


def _range32(low, high):
    low = np.float32(check_float("low", low))
    high = np.float32(check_float("high", high))
    if not high > low:
        raise invalid_argument("high", "a float > low ({})".format(low), high)
    return low, high
