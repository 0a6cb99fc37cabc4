"""Wire format of the bottleneck z between device and server: float32, float16 or uint8."""

import numpy as np

from keras_efficient.backend import tf
from keras_efficient.split.transmission import BYTES_PER_ELEMENT, bytes_per_sample
from keras_efficient.utils.validation import check_choice, check_float, invalid_argument

__all__ = ["BottleneckCodec"]


def _check_range(z_range):
    try:
        low, high = z_range
    except (TypeError, ValueError):
        raise invalid_argument("z_range", "a pair (low, high) of finite floats with low < high",
                               z_range, TypeError) from None
    low = check_float("z_range", low)
    high = check_float("z_range", high)
    if not np.float32(high) > np.float32(low):
        raise invalid_argument("z_range", "a pair (low, high) of finite floats with low < high",
                               z_range)
    return low, high


class BottleneckCodec(tf.Module):
    """Encodes z for transmission and decodes it on the server, inside TensorFlow graphs.

    - "float32": z as is (4 bytes per element).
    - "float16": a cast (2 bytes per element).
    - "uint8": uniform quantisation over a fixed, calibrated range [low, high]
      (1 byte per element):

        q = round((clip(z, low, high) − low) / (high − low) · 255),
        ẑ = q / 255 · (high − low) + low,

      computed in float32 with round-half-to-even, exactly like the NumPy
      `quantize_uint8` / `dequantize_uint8`. The error is at most
      (high − low) / 510 per element inside the range; values outside are clipped.

    The range is fixed (stored in the device and the server SavedModels as the
    non-trainable variable `z_range`), not sent per sample: the payload is then
    exactly `bytes_per_sample(z_shape, "uint8")`, the size assumed by the
    transmission model, and the server needs no side information. A per-sample
    range would add 8 bytes (two float32) to every message and adapt to outliers,
    but calibrating on training embeddings (`calibrated`) clips only a chosen tail.

    Args:
      dtype: "float32", "float16" or "uint8".
      z_range: (low, high) with low < high, required for "uint8" and rejected otherwise.
    """

    def __init__(self, dtype="float32", z_range=None, name="bottleneck_codec"):
        super().__init__(name=name)
        self.dtype = check_choice("dtype", dtype, tuple(BYTES_PER_ELEMENT))
        if dtype == "uint8":
            if z_range is None:
                raise invalid_argument("z_range", "a pair (low, high) for the 'uint8' format "
                                       "(see BottleneckCodec.calibrated)", z_range)
            self._range = _check_range(z_range)
            self.z_range = tf.Variable(np.asarray(self._range, np.float32), trainable=False,
                                       name="z_range")
        elif z_range is not None:
            raise invalid_argument("z_range", "None for the {!r} format (a range applies to "
                                   "'uint8' only)".format(dtype), z_range)
        else:
            self._range = None

    @classmethod
    def calibrated(cls, z, dtype="uint8", tail=1e-3):
        """A codec whose uint8 range spans the [tail/2, 1 − tail/2] quantiles of all values of z.

        `z` are embeddings of training data (any shape); `tail` = 0 uses min and max.
        """
        tail = check_float("tail", tail, low=0.0, high=1.0, high_inclusive=False)
        values = np.asarray(z, np.float32).ravel()
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise invalid_argument("z", "a non-empty array of finite values",
                                   getattr(z, "shape", z))
        low, high = np.quantile(values, [tail / 2.0, 1.0 - tail / 2.0])
        if not high > low:
            high = low + 1.0
        return cls(dtype, (float(low), float(high)) if dtype == "uint8" else None)

    @property
    def wire_dtype(self):
        """The `tf.DType` of the transmitted tensor."""
        return tf.as_dtype(self.dtype)

    @property
    def range(self):
        """(low, high) for "uint8", else None."""
        return self._range

    def bytes_per_sample(self, shape):
        """Bytes on the wire for one z of `shape` (no batch axis): elements × bytes per element."""
        return bytes_per_sample(shape, self.dtype)

    def encode(self, z):
        """float z → the wire dtype (NaN is rejected; ±inf clip to the range for uint8)."""
        z = tf.cast(z, tf.float32)
        if self.dtype == "float32":
            return z
        if self.dtype == "float16":
            return tf.cast(z, tf.float16)
        check = tf.debugging.assert_equal(tf.reduce_any(tf.math.is_nan(z)), False,
                                          message="`z` received NaN values.")
        with tf.control_dependencies([check]):
            low, high = self.z_range[0], self.z_range[1]
            scaled = (tf.clip_by_value(z, low, high) - low) / (high - low) * 255.0
        return tf.cast(tf.round(scaled), tf.uint8)

    def decode(self, q):
        """Wire tensor → float32 z (the dequantised ẑ for uint8)."""
        if tf.as_dtype(q.dtype) != self.wire_dtype:
            raise ValueError("Expected z of dtype {} for this codec. Received: dtype={}".format(
                self.dtype, tf.as_dtype(q.dtype).name))
        if self.dtype != "uint8":
            return tf.cast(q, tf.float32)
        low, high = self.z_range[0], self.z_range[1]
        return tf.cast(q, tf.float32) / 255.0 * (high - low) + low

    def get_config(self):
        return {"dtype": self.dtype, "z_range": self._range}
