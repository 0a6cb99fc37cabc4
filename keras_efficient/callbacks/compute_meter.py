"""Compute meter: training MACs executed, by layer and precision, and an energy ESTIMATE.

Counted per training step that runs (a batch dropped by `drop_minibatches`
never reaches a step and counts 0), per sample, from the layers' shapes
(`keras_efficient.training.flops`):

  * forward: each Conv2D / Dense / BatchNormalization's MACs;
  * backward: 2 × forward MACs (input gradient + weight gradient) for ordinary
    layers; for PSG layers the input gradient at int16×int8, the weight-gradient
    predictor at int{B_x^msb}×{B_g^msb} for every weight, and the full int8×16
    weight gradient only for the fraction (1 − predicted_fraction) of weights
    that Eq. (2) takes from it;
  * a `GatedResidualBlock` in "gather" mode executes its block for the open
    fraction of the batch (its `open_fraction` weight, per step); in "mask" mode
    it executes everything (the saving is only in `accounted_*`); the gate's own
    projection, LSTM and head are counted in float32;
  * a `StochasticDepth` block executes iff it ran this step.

The standard run it is compared with: the same model in float32 with every block,
stepping on every nominal batch (from the `DropCounter`, or the steps seen).
Energies use `keras_efficient.training.energy.mac_energy_pj` (Horowitz, 45 nm):
an ESTIMATE of arithmetic and SRAM operand energy, not a measurement.
"""

import collections

from keras_efficient.backend import keras, tf
from keras_efficient.layers.gated_residual import GatedResidualBlock
from keras_efficient.layers.stochastic_depth import StochasticDepth
from keras_efficient.training.energy import mac_energy_pj
from keras_efficient.training.flops import layer_macs
from keras_efficient.training.psg_layers import PSGConv2D, PSGDense
from keras_efficient.utils.validation import check_int, invalid_argument

__all__ = ["ComputeMeter", "model_mac_entries"]

_Entry = collections.namedtuple("_Entry", "name layer macs scale_source")


def _block_sublayers(block):
    names = ("conv1", "bn1", "conv2", "bn2")
    return [(n, getattr(block, n)) for n in names]


def _residual_entries(prefix, block, input_shape, scale_source):
    out = []
    shape = tf.TensorShape(input_shape)
    for name, sub in _block_sublayers(block):
        macs, _, shape = layer_macs(sub, shape)
        out.append(_Entry(prefix + "/" + name, sub, macs, scale_source))
    if getattr(block, "shortcut", None) is not None:
        macs, _, sshape = layer_macs(block.shortcut, input_shape)
        out.append(_Entry(prefix + "/shortcut", block.shortcut, macs, scale_source))
        macs, _, _ = layer_macs(block.shortcut_bn, sshape)
        out.append(_Entry(prefix + "/shortcut_bn", block.shortcut_bn, macs, scale_source))
    return out


def _gate_hidden_units(model):
    for layer in model.layers:
        if isinstance(layer, GatedResidualBlock) and layer.gate is not None:
            return layer.gate.hidden_units
    return 0


def model_mac_entries(model):
    """Per-sample forward MACs of every counted layer of a functional model.

    Returns:
      A list of `(name, layer, macs, scale_source)` where `scale_source` is None
      (always executed) or the wrapper whose weights tell the executed fraction.
    """
    entries = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.input_shape
        except (AttributeError, RuntimeError):
            continue
        if isinstance(shape, list):
            if len(shape) != 1:
                continue
            shape = shape[0]
        shape = tf.TensorShape(shape)
        if isinstance(layer, GatedResidualBlock):
            entries += _residual_entries(layer.name, layer.block, shape, layer)
            proj = int(shape[-1]) * layer.projection_dim
            hidden = _gate_hidden_units(model)
            gate = 4 * hidden * (layer.projection_dim + hidden) + hidden
            entries.append(_Entry(layer.name + "/gate", layer.projection, proj + gate, None))
        elif isinstance(layer, StochasticDepth):
            entries += _residual_entries(layer.name, layer.block, shape, layer)
        elif hasattr(layer, "conv1") and hasattr(layer, "bn2"):
            entries += _residual_entries(layer.name, layer, shape, None)
        else:
            macs, _, _ = layer_macs(layer, shape)
            if macs:
                entries.append(_Entry(layer.name, layer, macs, None))
    return entries


_STATE_NAME = "keras_efficient_compute_meter"
_SCALARS = ("steps", "accounted", "skippable_full", "skippable_executed")


def _precisions(entries):
    keys = set()
    for entry in entries:
        layer = entry.layer
        if isinstance(layer, (PSGConv2D, PSGDense)):
            keys.update(["int{}x{}".format(layer.input_bits, layer.weight_bits),
                         "int{}x{}".format(layer.grad_bits, layer.weight_bits),
                         "int{}x{}".format(layer.input_msb_bits, layer.grad_msb_bits),
                         "int{}x{}".format(layer.input_bits, layer.grad_bits)])
        else:
            keys.add("fp32")
    return sorted(keys)


class _MeterState(tf.Module):
    """The meter's running totals as float64 / int64 variables (a checkpoint dependency)."""

    def __init__(self, num_precisions, num_entries, nominal_start, kept_start):
        super().__init__(name="compute_meter_state")
        self.scalars = tf.Variable(tf.zeros([len(_SCALARS)], tf.float64), trainable=False,
                                   name="scalars")
        self.by_precision = tf.Variable(tf.zeros([num_precisions], tf.float64), trainable=False,
                                        name="by_precision")
        self.per_layer = tf.Variable(tf.zeros([num_entries], tf.float64), trainable=False,
                                     name="per_layer")
        self.starts = tf.Variable([nominal_start, kept_start], dtype=tf.int64, trainable=False,
                                  name="drop_counter_starts")
        self.last_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="last_epoch")


class ComputeMeter(keras.callbacks.Callback):
    """Counts executed training MACs per step, by layer and precision, with an energy estimate.

    Args:
      batch_size: samples per step (the last, partial batch of an epoch is counted
        as full).
      drop_counter: the `DropCounter` of `drop_minibatches`, for the nominal steps
        of the standard run (default: the steps seen).

    Attributes (after training):
      totals: dict with `executed_macs`, `standard_macs`, `compute_saving`,
        `energy_pj`, `standard_energy_pj`, `energy_saving` (estimates),
        `accounted_macs` (mask-mode gates counted as skipping), `steps`,
        `nominal_steps`, `macs_by_precision`, `skip_ratio` (the skipped fraction of
        the MACs of gated / stochastic-depth blocks).
      per_layer: executed MACs per layer name.
      by_precision: executed MACs per precision.
      history: list of per-epoch `totals` snapshots (cumulative) of this `fit`.

    Each epoch's logs (and so `model.fit`'s History) get `compute_saving`,
    `energy_saving_estimate` and `skip_ratio` (cumulative).

    State and resuming: the running totals are float64 variables of a `tf.Module`
    the meter attaches to the model as the checkpoint dependency
    `keras_efficient_compute_meter` (`model.weights` unchanged), updated after
    every step. A checkpoint of the model therefore holds them, and a run
    interrupted and resumed with `keras.callbacks.BackupAndRestore` (the default
    `save_freq="epoch"`; with a batch-level `save_freq`, list the meter before
    `BackupAndRestore`) ends with the totals of the uninterrupted run, given the
    same `DropCounter` counts (exact with `drop_minibatches(..., position=...)`).
    A `fit` whose first epoch is not after the last epoch counted (e.g. a second
    `fit` from epoch 0) starts new totals; one that continues (`initial_epoch`
    after it) extends them. `history` is a Python list and covers one `fit` call.
    """

    def __init__(self, batch_size, drop_counter=None):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, low=1)
        if drop_counter is not None and not hasattr(drop_counter, "nominal"):
            raise invalid_argument("drop_counter", "a DropCounter or None", drop_counter,
                                   TypeError)
        self.drop_counter = drop_counter
        self.history = []
        self._state = None

    def _counter_values(self):
        counter = self.drop_counter
        if counter is None:
            return 0, 0
        return int(counter.nominal.numpy()), int(counter.kept.numpy())

    def on_train_begin(self, logs=None):
        self.history = []
        self.entries = model_mac_entries(self.model)
        self.precisions = _precisions(self.entries)
        self.standard_step_macs = 3 * sum(e.macs for e in self.entries
                                          if not e.name.endswith("/gate")) * self.batch_size
        model = self.model
        state = model._lookup_dependency(_STATE_NAME)
        if state is None or int(state.by_precision.shape[0]) != len(self.precisions) or \
                int(state.per_layer.shape[0]) != len(self.entries):
            nominal, kept = self._counter_values()
            with model.distribute_strategy.scope():
                state = _MeterState(len(self.precisions), len(self.entries), nominal, kept)
            model._track_trackable(state, name=_STATE_NAME, overwrite=True)
        self._state = state

    def _reset(self):
        state = self._state
        for variable in (state.scalars, state.by_precision, state.per_layer):
            variable.assign(tf.zeros_like(variable))
        state.starts.assign(list(self._counter_values()))
        state.last_epoch.assign(-1)

    def on_epoch_begin(self, epoch, logs=None):
        if int(self._state.last_epoch.numpy()) >= epoch:
            self._reset()  # a new run of epochs, not a continuation

    def _scale(self, entry):
        src = entry.scale_source
        if src is None:
            return 1.0, 1.0
        if isinstance(src, StochasticDepth):
            value = float(src.ran.numpy())
            return value, value
        value = float(src.open_fraction.numpy())
        return (value if src.mode == "gather" else 1.0), value

    def on_train_batch_end(self, batch, logs=None):
        n = float(self.batch_size)
        index = {p: k for k, p in enumerate(self.precisions)}
        by_precision = [0.0] * len(self.precisions)
        per_layer = [0.0] * len(self.entries)
        accounted = skippable_full = skippable_executed = 0.0
        for k, entry in enumerate(self.entries):
            executed, accounted_scale = self._scale(entry)
            fwd = entry.macs * n
            layer = entry.layer
            if isinstance(layer, (PSGConv2D, PSGDense)):
                frac = float(layer.predicted_fraction.numpy())
                parts = {
                    "int{}x{}".format(layer.input_bits, layer.weight_bits): fwd,
                    "int{}x{}".format(layer.grad_bits, layer.weight_bits): fwd,
                    "int{}x{}".format(layer.input_msb_bits, layer.grad_msb_bits): fwd,
                }
                key = "int{}x{}".format(layer.input_bits, layer.grad_bits)
                parts[key] = parts.get(key, 0.0) + (1.0 - frac) * fwd
            else:
                parts = {"fp32": 3.0 * fwd}
            if entry.scale_source is not None:
                total = sum(parts.values())
                skippable_full += total
                skippable_executed += executed * total
            for precision, macs in parts.items():
                by_precision[index[precision]] += executed * macs
                per_layer[k] += executed * macs
                accounted += accounted_scale * macs
        state = self._state
        state.scalars.assign_add(tf.constant(
            [1.0, accounted, skippable_full, skippable_executed], tf.float64))
        state.by_precision.assign_add(tf.constant(by_precision, tf.float64))
        state.per_layer.assign_add(tf.constant(per_layer, tf.float64))

    def _scalar(self, name):
        return float(self._state.scalars.numpy()[_SCALARS.index(name)])

    @property
    def steps(self):
        return 0 if self._state is None else int(round(self._scalar("steps")))

    @property
    def by_precision(self):
        if self._state is None:
            return {}
        values = self._state.by_precision.numpy()
        return {p: float(v) for p, v in zip(self.precisions, values)}

    @property
    def per_layer(self):
        if self._state is None:
            return {}
        values = self._state.per_layer.numpy()
        out = collections.Counter()
        for entry, value in zip(self.entries, values):
            out[entry.name] += float(value)
        return out

    def _nominal_steps(self):
        """Nominal batches behind the steps run.

        The input pipeline reads ahead of the step (prefetching), so the counter may
        have seen more batches than the steps consumed; the nominal count is scaled
        by steps / kept batches to remove that read-ahead.
        """
        steps = self.steps
        if self.drop_counter is None:
            return steps
        nominal_start, kept_start = (int(v) for v in self._state.starts.numpy())
        nominal = int(self.drop_counter.nominal.numpy()) - nominal_start
        kept = int(self.drop_counter.kept.numpy()) - kept_start
        if kept > steps > 0:
            nominal = int(round(nominal * steps / float(kept)))
        return max(nominal, steps)

    def result(self):
        if self._state is None:
            raise RuntimeError("ComputeMeter has no totals before `fit` starts.")
        by_precision = self.by_precision
        executed = float(sum(by_precision.values()))
        nominal = self._nominal_steps()
        standard = float(self.standard_step_macs) * nominal
        skippable_full = self._scalar("skippable_full")
        energy = sum(mac_energy_pj(p) * m for p, m in by_precision.items())
        standard_energy = mac_energy_pj("fp32") * standard
        return {
            "steps": self.steps, "nominal_steps": nominal,
            "executed_macs": executed, "accounted_macs": self._scalar("accounted"),
            "standard_macs": standard,
            "compute_saving": 1.0 - executed / standard if standard else 0.0,
            "energy_pj": float(energy), "standard_energy_pj": float(standard_energy),
            "energy_saving": 1.0 - energy / standard_energy if standard_energy else 0.0,
            "macs_by_precision": by_precision,
            "skip_ratio": (1.0 - self._scalar("skippable_executed") / skippable_full
                           if skippable_full else 0.0),
        }

    def on_epoch_end(self, epoch, logs=None):
        self._state.last_epoch.assign(epoch)
        snapshot = self.result()
        self.history.append(snapshot)
        if logs is not None:
            logs["compute_saving"] = snapshot["compute_saving"]
            logs["energy_saving_estimate"] = snapshot["energy_saving"]
            logs["skip_ratio"] = snapshot["skip_ratio"]

    @property
    def totals(self):
        return self.result()
