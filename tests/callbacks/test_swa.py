"""SWA: the final weights are the mean of the snapshots; BN statistics match NumPy."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import StochasticWeightAveraging, reestimate_batchnorm


def _model(bn=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((5,)), keras.layers.Dense(6, name="d1")]
    if bn:
        layers.append(keras.layers.BatchNormalization(name="bn1"))
    layers += [keras.layers.ReLU(), keras.layers.Dense(3, name="d2")]
    if bn:
        layers.append(keras.layers.BatchNormalization(name="bn2"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32) * 2 + 1
    y = rng.normal(size=(64, 3)).astype(np.float32)
    return x, y


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.items = []

    def on_epoch_end(self, epoch, logs=None):
        self.items.append([w.numpy().copy() for w in self.model.trainable_weights])


def test_final_weights_are_mean_of_snapshots_without_bn():
    x, y = _data()
    model = _model(bn=False)
    snaps = _Snapshots()
    swa = StochasticWeightAveraging(start_epoch=2, frequency=2)
    model.fit(x, y, batch_size=16, epochs=7, verbose=0, callbacks=[snaps, swa])
    picked = [snaps.items[e] for e in (2, 4, 6)]
    assert swa.num_snapshots == 3
    for i, w in enumerate(model.trainable_weights):
        np.testing.assert_allclose(w.numpy(), np.mean([p[i] for p in picked], axis=0),
                                   rtol=1e-5, atol=1e-6)


def _np_bn_stats(weights, batches, eps=1e-3):
    """Forward in training mode in NumPy: per-batch statistics, averaged over batches."""
    w1, b1, g1, be1, w2, b2, g2, be2 = weights
    stats = {"m1": [], "v1": [], "m2": [], "v2": []}
    for xb in batches:
        h = xb.astype(np.float64) @ w1 + b1
        m, v = h.mean(0), h.var(0)
        stats["m1"].append(m)
        stats["v1"].append(v)
        h = np.maximum(g1 * (h - m) / np.sqrt(v + eps) + be1, 0) @ w2 + b2
        stats["m2"].append(h.mean(0))
        stats["v2"].append(h.var(0))
    return {k: np.mean(v, axis=0) for k, v in stats.items()}


def test_bn_statistics_match_numpy_recomputation():
    x, y = _data()
    model = _model(bn=True)
    snaps = _Snapshots()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    swa = StochasticWeightAveraging(start_epoch=1, data=ds)
    model.fit(ds, epochs=4, verbose=0, callbacks=[snaps, swa])
    for i, w in enumerate(model.trainable_weights):
        np.testing.assert_allclose(w.numpy(), np.mean([s[i] for s in snaps.items[1:]], axis=0),
                                   rtol=1e-5, atol=1e-6)
    weights = [model.get_layer("d1").kernel, model.get_layer("d1").bias,
               model.get_layer("bn1").gamma, model.get_layer("bn1").beta,
               model.get_layer("d2").kernel, model.get_layer("d2").bias,
               model.get_layer("bn2").gamma, model.get_layer("bn2").beta]
    want = _np_bn_stats([w.numpy().astype(np.float64) for w in weights],
                        [x[i:i + 16] for i in range(0, 64, 16)])
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), want["m1"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), want["v1"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), want["m2"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), want["v2"], rtol=1e-4, atol=1e-5)
    assert bn1.momentum == 0.99


def test_bn_model_without_data_fails_clearly():
    x, y = _data()
    with pytest.raises(ValueError, match="data="):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[StochasticWeightAveraging(0)])


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(start_epoch=-1), "start_epoch", ValueError),
    (dict(start_epoch=1.5), "start_epoch", TypeError),
    (dict(start_epoch=0, frequency=0), "frequency", ValueError),
    (dict(start_epoch=0, data=3), "data", TypeError),
])
def test_bad_arguments(kwargs, name, error):
    with pytest.raises(error, match=name):
        StochasticWeightAveraging(**kwargs)


class _SkipOnNegativeMean(keras.layers.Layer):
    """Runs Dense + BatchNormalization only on batches whose first feature has a positive mean."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="inner_dense")
        self.bn = keras.layers.BatchNormalization(name="inner_bn")

    def call(self, inputs, training=None):
        return tf.cond(tf.reduce_mean(inputs[:, 0]) > 0.0,
                       lambda: self.bn(self.dense(inputs), training=training),
                       lambda: inputs[:, :4])


def test_bn_of_a_skipped_block_averages_only_the_batches_it_ran_on():
    # A BN layer inside a block that some batches skip (a closed gate, a dropped
    # stochastic-depth block) must average the statistics of the batches it saw,
    # not mix in its statistics from before the pass.
    keras.utils.set_random_seed(0)
    block = _SkipOnNegativeMean()
    model = keras.Sequential([keras.Input((5,)), block])
    bn = block.bn
    bn.moving_mean.assign(np.full(4, 100.0, np.float32))
    bn.moving_variance.assign(np.full(4, 50.0, np.float32))
    rng = np.random.default_rng(3)
    signs = [-1, 1, -1, 1, 1, -1]
    batches = []
    for s in signs:
        xb = rng.normal(size=(8, 5)).astype(np.float32)
        xb[:, 0] = s * (np.abs(xb[:, 0]) + 0.1)
        batches.append(xb)
    assert reestimate_batchnorm(model, batches) == len(batches)
    w, b = (v.numpy().astype(np.float64) for v in block.dense.weights)
    ran = [xb.astype(np.float64) @ w + b for xb, s in zip(batches, signs) if s > 0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([h.mean(0) for h in ran], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([h.var(0) for h in ran], 0),
                               rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99 and "call" not in vars(bn)


def test_average_lives_in_the_model_checkpoint(tmp_path):
    # The running average and count are variables tracked by the model (not NumPy in the
    # callback): a TensorFlow-format checkpoint restores them into a rebuilt model, whose
    # new callback continues from them. model.weights is unchanged.
    x, y = _data()
    model = _model(bn=False)
    n_weights = len(model.weights)
    snaps = _Snapshots()
    swa = StochasticWeightAveraging(start_epoch=1)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[snaps, swa])
    assert len(model.weights) == n_weights
    assert swa.num_snapshots == 2
    average = swa.average()
    for i, a in enumerate(average):
        np.testing.assert_allclose(a, np.mean([s[i] for s in snaps.items[1:]], axis=0),
                                   rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "ckpt")
    model.save_weights(path)
    fresh = _model(bn=False)
    again = StochasticWeightAveraging(start_epoch=1)
    again.set_model(fresh)
    again.on_train_begin()  # attaches the (empty) state, as fit does
    assert again.num_snapshots == 0 and again.average() is None
    fresh.load_weights(path)
    assert again.num_snapshots == 2
    for a, b in zip(again.average(), average):
        np.testing.assert_array_equal(a, b)


def test_new_fit_from_epoch_zero_starts_a_new_average():
    x, y = _data()
    model = _model(bn=False)
    swa = StochasticWeightAveraging(start_epoch=0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[swa])
    assert swa.num_snapshots == 2
    snaps = _Snapshots()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[snaps, swa])
    assert swa.num_snapshots == 2
    for i, w in enumerate(model.trainable_weights):
        np.testing.assert_allclose(w.numpy(), np.mean([s[i] for s in snaps.items], axis=0),
                                   rtol=1e-5, atol=1e-6)
    # Continuing with initial_epoch after the last snapshot extends the average.
    model.fit(x, y, batch_size=16, epochs=3, initial_epoch=2, verbose=0, callbacks=[swa])
    assert swa.num_snapshots == 3
