"""Compute meter: analytic MACs, dropped batches, gated blocks, PSG precisions, energy table."""

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.callbacks import ComputeMeter
from keras_efficient.data import DropCounter, drop_minibatches
from keras_efficient.models import gated_blocks_of, gated_resnet
from keras_efficient.training import PSGDense, mac_energy_pj


def test_energy_table_values():
    assert mac_energy_pj("fp32") == pytest.approx(3.7 + 0.9 + 10 * 32 / 64)
    assert mac_energy_pj("int8x8") == pytest.approx(0.2 + 0.03 * 2 + 10 * 8 / 64)
    assert mac_energy_pj("int8x8") < 0.2 * mac_energy_pj("fp32")
    with pytest.raises(ValueError, match="precision"):
        mac_energy_pj("bf16")


def _conv_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.Conv2D(3, 3, padding="valid", name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(4, name="d")])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def _xy(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 6, 2)).astype(np.float32), rng.normal(size=(n, 4)).astype(
        np.float32)


def test_plain_model_counts_analytic_macs():
    x, y = _xy()
    meter = ComputeMeter(batch_size=8)
    _conv_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[meter])
    per_sample = 4 * 4 * 3 * 3 * 2 * 3 + 48 * 4
    res = meter.result()
    assert res["steps"] == 8
    assert res["executed_macs"] == pytest.approx(8 * 8 * 3 * per_sample)
    assert res["compute_saving"] == pytest.approx(0.0)
    assert res["energy_pj"] == pytest.approx(res["executed_macs"] * mac_energy_pj("fp32"))
    assert len(meter.history) == 2


def test_dropped_batches_count_zero():
    x, y = _xy(80)
    counter = DropCounter()
    ds = drop_minibatches(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 0.5, seed=2,
                          counter=counter)
    meter = ComputeMeter(batch_size=8, drop_counter=counter)
    _conv_model().fit(ds, epochs=1, verbose=0, callbacks=[meter])
    res = meter.result()
    kept, nominal = int(counter.kept.numpy()), int(counter.nominal.numpy())
    assert nominal == 10 and res["steps"] == kept < 10
    assert res["compute_saving"] == pytest.approx(1 - kept / nominal)


def test_gated_blocks_count_open_fraction():
    keras.utils.set_random_seed(0)
    model = gated_resnet(depth=8, input_shape=(8, 8, 3), base_filters=4, gate_bias=0.0,
                         flops_weight=0.0)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    block = gated_blocks_of(model)[0]
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: rates.append(float(block.open_fraction.numpy())))
    meter = ComputeMeter(batch_size=8)
    x = np.random.default_rng(0).uniform(size=(32, 8, 8, 3)).astype(np.float32)
    hist = model.fit(x, np.arange(32) % 10, batch_size=8, epochs=2, verbose=0,
                     callbacks=[record, meter])
    c = 4
    block_macs = 2 * (8 * 8 * 9 * c * c) + 2 * (8 * 8 * c)
    names = [n for n in meter.per_layer if n.startswith(block.name + "/")
             and not n.endswith("/gate")]
    executed = sum(meter.per_layer[n] for n in names)
    assert executed == pytest.approx(3 * block_macs * 8 * sum(rates), rel=1e-6)
    res = meter.result()
    steps = len(rates)
    gate = meter.per_layer[block.name + "/gate"]
    assert gate == pytest.approx(3 * (c * 10 + 4 * 10 * (10 + 10) + 10) * 8 * steps)
    skipped = 3 * block_macs * 8 * (steps - sum(rates))
    assert res["executed_macs"] == pytest.approx(res["standard_macs"] - skipped + gate, rel=1e-6)
    assert res["skip_ratio"] == pytest.approx(1 - sum(rates) / steps, abs=1e-6)
    # The skip ratio is also a logged metric (cumulative per epoch).
    assert hist.history["skip_ratio"][-1] == pytest.approx(res["skip_ratio"], abs=1e-6)
    assert hist.history["skip_ratio"][0] == pytest.approx(1 - sum(rates[:4]) / 4, abs=1e-6)


def test_psg_precisions_and_fraction():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), PSGDense(4, name="p")])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    fracs = []
    layer = model.get_layer("p")
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: fracs.append(float(layer.predicted_fraction.numpy())))
    meter = ComputeMeter(batch_size=4)
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(16, 4)), batch_size=4,
              verbose=0, callbacks=[record, meter])
    by = meter.result()["macs_by_precision"]
    fwd = 5 * 4 * 4
    assert by["int8x8"] == pytest.approx(4 * fwd)
    assert by["int16x8"] == pytest.approx(4 * fwd)
    assert by["int4x10"] == pytest.approx(4 * fwd)
    assert by["int8x16"] == pytest.approx(sum(1 - f for f in fracs) * fwd)
    assert meter.result()["energy_saving"] > 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        ComputeMeter(batch_size=0)
    with pytest.raises(TypeError, match="drop_counter"):
        ComputeMeter(batch_size=2, drop_counter=3)


def test_totals_are_checkpointed_and_continue_or_restart_with_the_epochs(tmp_path):
    x, y = _xy()
    per_step = 8 * 3 * (4 * 4 * 3 * 3 * 2 * 3 + 48 * 4)
    model = _conv_model()
    meter = ComputeMeter(batch_size=8)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[meter])
    assert meter.result()["executed_macs"] == pytest.approx(8 * per_step)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    # A fresh model and meter restored from the checkpoint continue at epoch 2.
    fresh = _conv_model()
    tf.train.Checkpoint(model=fresh).restore(path)
    again = ComputeMeter(batch_size=8)
    fresh.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, verbose=0, callbacks=[again])
    assert again.result()["steps"] == 12
    assert again.result()["executed_macs"] == pytest.approx(12 * per_step)
    assert len(fresh.weights) == len(model.weights)  # not a weight of the model
    # A fit that starts over (epoch 0) starts new totals.
    fresh.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[again])
    assert again.result()["steps"] == 4
    with pytest.raises(RuntimeError, match="before"):
        ComputeMeter(batch_size=8).result()
