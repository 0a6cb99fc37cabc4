import json

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.schedules import RetentionTargetSchedule


def _reference(t, c0, cinf, k):
    # Eq. (6), written independently: linear interpolation clipped at c_inf.
    if t >= k:
        return cinf
    return c0 + (cinf - c0) * (t / k)


@pytest.mark.parametrize("c0,cinf,k", [(10.0, -2.0, 100_000), (3.0, -4.5, 7), (0.5, 0.0, 1)])
def test_matches_eq6_at_key_points(c0, cinf, k):
    schedule = RetentionTargetSchedule(c0, cinf, k)
    for t in (0, k / 2, k, 2 * k, 10 * k):
        t_int = int(t) if float(t).is_integer() else t
        np.testing.assert_allclose(float(schedule(t_int)), _reference(t_int, c0, cinf, k),
                                   rtol=1e-6, atol=1e-6)
    assert float(schedule(0)) == pytest.approx(c0)
    assert float(schedule(k)) == pytest.approx(cinf)
    assert float(schedule(2 * k)) == pytest.approx(cinf)


def test_accepts_tensors_and_int64_steps_in_graphs():
    schedule = RetentionTargetSchedule(10.0, -2.0, 100)
    fn = tf.function(lambda t: schedule(t))
    out = fn(tf.constant(50, tf.int64))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), 4.0, rtol=1e-6)


def test_monotone_non_increasing():
    schedule = RetentionTargetSchedule(2.0, -1.0, 37)
    values = [float(schedule(t)) for t in range(0, 80)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_config_round_trip_and_keras_serialization():
    schedule = RetentionTargetSchedule(4.0, -3.0, 1234)
    config = json.loads(json.dumps(schedule.get_config()))
    rebuilt = RetentionTargetSchedule.from_config(config)
    assert rebuilt.get_config() == schedule.get_config()
    ser = keras.utils.serialize_keras_object(schedule)
    back = keras.utils.deserialize_keras_object(ser)
    assert isinstance(back, RetentionTargetSchedule)
    assert back.get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(final_target=10.0), "final_target", ValueError),
    (dict(final_target=11.0), "final_target", ValueError),
    (dict(decay_steps=0), "decay_steps", ValueError),
    (dict(decay_steps=-5), "decay_steps", ValueError),
    (dict(decay_steps=10.5), "decay_steps", TypeError),
    (dict(decay_steps=None), "decay_steps", TypeError),
    (dict(initial_target="a"), "initial_target", TypeError),
    (dict(initial_target=None), "initial_target", TypeError),
    (dict(final_target=float("nan")), "final_target", ValueError),
    (dict(initial_target=float("inf")), "initial_target", ValueError),
    (dict(final_target=float("-inf")), "final_target", ValueError),
])
def test_invalid_arguments(kwargs, name, error):
    with pytest.raises(error, match="`{}`".format(name)):
        RetentionTargetSchedule(**kwargs)
