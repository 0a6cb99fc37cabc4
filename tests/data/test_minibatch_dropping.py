"""SMD: binomial drop rate, determinism, dropped batches never reach the training step."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.data import DropCounter, drop_minibatches, smd_steps_per_epoch


def _indices(ds):
    return [int(b) for b in ds.as_numpy_iterator()]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_drop_fraction_within_binomial_tolerance(rate):
    n = 2000
    kept = len(_indices(drop_minibatches(tf.data.Dataset.range(n), rate, seed=1)))
    mean, sd = n * (1 - rate), np.sqrt(n * rate * (1 - rate))
    assert abs(kept - mean) < 4 * sd


def test_same_seed_same_batches_and_new_draws_each_epoch():
    a = drop_minibatches(tf.data.Dataset.range(200), 0.5, seed=7)
    b = drop_minibatches(tf.data.Dataset.range(200), 0.5, seed=7)
    a1, a2 = _indices(a), _indices(a)
    b1, b2 = _indices(b), _indices(b)
    assert a1 == b1 and a2 == b2
    assert a1 != a2
    assert a1 != _indices(drop_minibatches(tf.data.Dataset.range(200), 0.5, seed=8))
    assert a1 == sorted(a1) and set(a1) <= set(range(200))


def test_rate_zero_keeps_everything_and_counter_books():
    counter = DropCounter()
    assert _indices(drop_minibatches(tf.data.Dataset.range(30), 0.0, seed=0, counter=counter)) == \
        list(range(30))
    assert counter.result() == {"nominal_steps": 30, "performed_steps": 30, "dropped_steps": 0,
                                "energy_ratio": 1.0}
    counter.reset()
    kept = _indices(drop_minibatches(tf.data.Dataset.range(100), 0.5, seed=3, counter=counter))
    assert int(counter.nominal.numpy()) == 100 and int(counter.kept.numpy()) == len(kept)
    assert counter.energy_ratio == pytest.approx(len(kept) / 100)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    # Momentum moves the weights on any executed step, even with a zero gradient.
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_dropped_batches_never_reach_the_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.normal(size=(40, 3)).astype(np.float32)
    base = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    kept = list(drop_minibatches(base, 0.5, seed=11).as_numpy_iterator())
    assert 0 < len(kept) < 10
    counter = DropCounter()
    model = _model()
    steps = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: steps.append(int(model.optimizer.iterations.numpy())))
    model.fit(drop_minibatches(base, 0.5, seed=11, counter=counter), epochs=1, verbose=0,
              callbacks=[record])
    # One optimizer iteration per kept batch. (After the epoch Keras's counter may read one
    # more on any dataset of unknown cardinality, filtered or not, without an update.)
    assert steps == list(range(1, len(kept) + 1))
    assert len(kept) == int(counter.kept.numpy())
    assert int(counter.nominal.numpy()) == 10
    # Independent reference: step only on the kept batches.
    ref = _model()
    for bx, by in kept:
        ref.train_on_batch(bx, by)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # ... and differs from stepping on every batch.
    full = _model()
    full.fit(base, epochs=1, verbose=0)
    assert not np.allclose(full.get_weights()[0], model.get_weights()[0])


@pytest.mark.parametrize("rate,error", [(1.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
                                        ("0.5", TypeError), (None, TypeError)])
def test_bad_rate(rate, error):
    with pytest.raises(error, match="rate"):
        drop_minibatches(tf.data.Dataset.range(3), rate)


def test_bad_dataset_seed_counter():
    with pytest.raises(TypeError, match="dataset"):
        drop_minibatches([1, 2, 3], 0.5)
    with pytest.raises(ValueError, match="seed"):
        drop_minibatches(tf.data.Dataset.range(3), 0.5, seed=-1)
    with pytest.raises(TypeError, match="counter"):
        drop_minibatches(tf.data.Dataset.range(3), 0.5, counter=object())


def test_repeated_stream_with_fit_steps_per_epoch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = rng.normal(size=(80, 3)).astype(np.float32)
    base = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    counter = DropCounter()
    steps = smd_steps_per_epoch(10, 0.5)
    assert steps == 5 and smd_steps_per_epoch(3, 0.9) == 1
    model = _model()
    model.fit(drop_minibatches(base, 0.5, seed=4, counter=counter).repeat(), epochs=6,
              steps_per_epoch=steps, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 30
    kept, nominal = int(counter.kept.numpy()), int(counter.nominal.numpy())
    assert kept >= 30 and nominal >= 40
    with pytest.raises(ValueError, match="num_batches"):
        smd_steps_per_epoch(0, 0.5)


def test_position_stream_continues_the_repeated_stream_from_the_position():
    # With `position`, the stream is the repeated SMD sequence started after `position`
    # kept batches, read when iteration starts (as a restored optimizer.iterations is).
    reference = _indices(drop_minibatches(tf.data.Dataset.range(10), 0.5, seed=7).repeat(6))
    position = tf.Variable(0, dtype=tf.int64)
    stream = drop_minibatches(tf.data.Dataset.range(10), 0.5, seed=7, position=position)
    assert _indices(stream.take(20)) == reference[:20]
    for start in (1, 7, 13):
        position.assign(start)
        assert _indices(stream.take(10)) == reference[start:start + 10]


def test_bad_position():
    with pytest.raises(TypeError, match="position"):
        drop_minibatches(tf.data.Dataset.range(3), 0.5, position=3)
    with pytest.raises(TypeError, match="position"):
        drop_minibatches(tf.data.Dataset.range(3), 0.5, position=tf.Variable(0.0))
    unknown = tf.data.Dataset.range(6).filter(lambda i: i < 4)
    with pytest.raises(ValueError, match="cardinality"):
        drop_minibatches(unknown, 0.5, position=tf.Variable(0, dtype=tf.int64))


def _draws(seed, rate, num_batches, count):
    """Independent loop over the documented draws u(e, i) >= rate: the kept flags in order."""
    flags = []
    for j in range(count):
        e, i = divmod(j, num_batches)
        u = float(tf.random.stateless_uniform([], seed=tf.constant([seed, e * 2 ** 32 + i],
                                                                   tf.int64)))
        flags.append(u >= rate)
    return flags


def test_position_stream_sets_the_counter_to_the_counts_up_to_the_position():
    flags = _draws(7, 0.5, 10, 60)
    kept_at = [j for j, flag in enumerate(flags) if flag]
    position = tf.Variable(0, dtype=tf.int64)
    counter = DropCounter()
    stream = drop_minibatches(tf.data.Dataset.range(10), 0.5, seed=7, counter=counter,
                              position=position)
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False  # no read-ahead in this test
    stream = stream.with_options(options)
    for start in (0, 1, 7, 13):
        counter.reset()
        position.assign(start)
        got = _indices(stream.take(3))
        assert got == [j % 10 for j in kept_at[start:start + 3]]
        # As if the stream had run from position 0: every draw through the last kept batch.
        assert int(counter.kept.numpy()) == start + 3
        assert int(counter.nominal.numpy()) == kept_at[start + 2] + 1


def test_drop_counter_tracked_by_the_model_is_in_its_checkpoint(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    counter = DropCounter()
    assert counter.track(model) is model
    counter.nominal.assign(11)
    counter.kept.assign(5)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored = DropCounter()
    restored.track(fresh)
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    assert restored.result()["nominal_steps"] == 11 and restored.result()["performed_steps"] == 5
    assert len(fresh.weights) == 2  # not a weight of the model
    with pytest.raises(TypeError, match="model"):
        counter.track(object())
