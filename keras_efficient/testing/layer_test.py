"""`run_layer_test`: one call that checks what every keras_efficient layer promises.

In the spirit of Keras's own `run_layer_test`. For a layer class and its
constructor arguments it checks, in order:

1. output shape and dtype, counts of trainable / non-trainable weights and of
   `layer.losses`, and that every variable the layer reads is tracked;
2. registration for serialization, that `get_config` names every constructor
   argument, is JSON-serialisable and round-trips (`from_config` → `get_config`),
   and that a layer rebuilt from the JSON config gives the same outputs;
3. SavedModel round trip saved *without traces* (so the model is rebuilt from
   config) and `.keras` round trip, with identical inference outputs;
4. one `model.fit` step with a finite loss that moves the trainable weights;
5. `tf.function(jit_compile=True)` against eager, when the layer supports XLA;
6. the `mixed_float16` policy (restored afterwards): the inference output of
   the same weights is compared with the float32 output within
   `rtol=mixed_precision_rtol`, `atol=mixed_precision_atol * max(1, max|y32|)`
   (float16 keeps ~3 significant digits; the absolute term follows the output's
   magnitude so that large activations are not held to an absolute 1e-2);
7. one training step under `tf.distribute.MirroredStrategy` on two logical CPU
   devices (see `configure_logical_cpus`), compared with a single-device step of
   the same weights on the same batch: the loss and every trainable weight's
   gradient (the global-batch gradient: Keras sums the per-replica gradients of
   losses scaled by 1/replicas) within `distributed_rtol` / `distributed_atol`.
   The layer is called with `training=True` when `distributed_training=True`
   (the default) and with `training=False` otherwise: layers whose training
   output is random (dropout, sampling) or depends on the batch split (batch
   statistics) pass `distributed_training=False`; layers whose gradient is
   not a sum over examples pass `distributed_gradients=False` (loss only);
8. optionally, that NaN inputs and empty batches raise a clear error.

A failed check raises `AssertionError` naming the check.
"""

import inspect
import json
import os
import shutil
import tempfile

import numpy as np

from keras_efficient.backend import PACKAGE, keras, tf
from keras_efficient.testing.devices import logical_cpu_names, mirrored_cpu_strategy

__all__ = ["run_layer_test"]


def run_layer_test(
    layer_cls,
    init_kwargs=None,
    input_shape=None,
    input_data=None,
    *,
    input_dtype="float32",
    call_kwargs=None,
    expected_output_shape=None,
    expected_output_dtype=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_losses=None,
    output_fn=None,
    supports_jit=False,
    run_training_check=True,
    run_saved_model=True,
    run_keras_format=True,
    run_mixed_precision=True,
    expected_mixed_precision_output_dtype="float16",
    run_distributed=True,
    distributed_training=True,
    distributed_gradients=True,
    distributed_rtol=1e-4,
    distributed_atol=1e-5,
    mixed_precision_rtol=1e-2,
    mixed_precision_atol=1e-2,
    fit_loss="mse",
    fit_targets=None,
    expect_trainable_weights_change=True,
    expect_nan_error=False,
    expect_empty_batch_error=False,
    custom_objects=None,
    rtol=1e-6,
    atol=1e-6,
    seed=0,
):
    """Runs the layer contract checks and returns a dict `{check: "passed" | "skipped: why"}`.

    Args:
      layer_cls: the layer class.
      init_kwargs: constructor keyword arguments.
      input_shape: full input shape including the batch size (an even batch size,
        so the MirroredStrategy check can split it), or a list of shapes for a
        layer that takes a list of inputs. Random normal data is generated.
      input_data: an array or a list of arrays, instead of `input_shape`.
      input_dtype: dtype of generated data.
      call_kwargs: extra keyword arguments for `layer.__call__`.
      expected_output_shape: full output shape (tuple), checked at inference.
      expected_output_dtype: output dtype under the float32 policy.
      expected_num_trainable_weights / expected_num_non_trainable_weights /
        expected_num_losses: counts after one call in training mode.
      output_fn: maps a layer output to an array for comparisons (e.g. a
        distribution to its mean); default: the output itself.
      supports_jit: run the XLA check.
      run_training_check, run_saved_model, run_keras_format, run_mixed_precision,
        run_distributed: switch the corresponding checks.
      expected_mixed_precision_output_dtype: output dtype under mixed_float16
        (None: not checked).
      distributed_training: call the layer with `training=True` in the
        MirroredStrategy comparison; False compares inference-mode losses and
        gradients (for layers whose training output is random or depends on the
        per-replica batch, e.g. dropout, sampling, batch statistics).
      distributed_gradients: compare the gradients too (the default); False
        compares only the loss, for layers whose gradient is not a sum over
        examples (PSG's sign gradients, thresholds taken from the batch maximum).
      distributed_rtol, distributed_atol: tolerances of that comparison (float32
        all-reduce sums in a different order than one device).
      mixed_precision_rtol, mixed_precision_atol: tolerances of the mixed_float16
        output against the float32 output of the same weights; the absolute
        tolerance is multiplied by max(1, max |float32 output|).
      fit_loss: loss for the `fit` checks; fit_targets: targets (default zeros
        shaped like the output).
      expect_trainable_weights_change: the fit step must move a trainable weight.
      expect_nan_error / expect_empty_batch_error: the layer must reject NaN
        inputs / an empty batch with an error.
      custom_objects: only for objects that are not the library's own.
      rtol, atol: tolerances for "identical" outputs after a round trip.
      seed: seed for generated data and for `tf.random`.
    """
    init_kwargs = dict(init_kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    output_fn = output_fn or (lambda y: y)
    data = _make_inputs(input_shape, input_data, input_dtype, seed)
    report = {}
    tf.random.set_seed(seed)

    def call(layer, x, training):
        return layer(_unpack(x), training=training, **call_kwargs)

    # 1. Shapes, dtypes, weights, losses, tracking.
    layer = layer_cls(**init_kwargs)
    call(layer, data, training=True)
    _check_counts(layer, expected_num_trainable_weights, expected_num_non_trainable_weights,
                  expected_num_losses)
    eager_out = call(layer, data, training=False)
    eager_np = _to_numpy(output_fn(eager_out))
    _check_output_shape_dtype(eager_out, output_fn, expected_output_shape, expected_output_dtype)
    _check_tracking(layer, data, call_kwargs)
    report["shapes_weights_losses"] = "passed"

    # 2. Config.
    _check_config(layer_cls, layer, data, call, output_fn, eager_np, rtol, atol)
    report["config"] = "passed"

    model = _functional_model(layer_cls(**init_kwargs), data, call_kwargs)
    # Move every float weight off its initial value, so that a round trip that
    # silently re-initialises a variable (zeros, ones, a fixed pattern) shows.
    _perturb_weights(model, seed)
    ref = _to_numpy(output_fn(model(_unpack(data), training=False)))
    for value in tf.nest.flatten(ref):
        if not np.all(np.isfinite(value)):
            raise AssertionError("outputs are not finite after perturbing the weights slightly")
    workdir = tempfile.mkdtemp(prefix="keras_efficient_layer_test_")
    try:
        # 3. Serialization round trips.
        if run_saved_model:
            path = os.path.join(workdir, "saved_model")
            model.save(path, save_format="tf", save_traces=False)
            loaded = keras.models.load_model(path, custom_objects=custom_objects)
            _assert_close(ref, _to_numpy(output_fn(loaded(_unpack(data), training=False))),
                          rtol, atol, "SavedModel round trip (save_traces=False) changed the outputs")
            report["saved_model"] = "passed"
        else:
            report["saved_model"] = "skipped: run_saved_model=False"
        if run_keras_format:
            path = os.path.join(workdir, "model.keras")
            model.save(path)
            loaded = keras.models.load_model(path, custom_objects=custom_objects)
            _assert_close(ref, _to_numpy(output_fn(loaded(_unpack(data), training=False))),
                          rtol, atol, "`.keras` round trip changed the outputs")
            if len(loaded.weights) != len(model.weights):
                raise AssertionError("`.keras` round trip: {} weights before, {} after".format(
                    len(model.weights), len(loaded.weights)))
            report["keras_format"] = "passed"
        else:
            report["keras_format"] = "skipped: run_keras_format=False"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # 4. One fit step.
    targets = fit_targets if fit_targets is not None else np.zeros_like(ref)
    if run_training_check:
        _check_fit(model, data, targets, fit_loss, expect_trainable_weights_change, "fit")
        report["fit"] = "passed"
    else:
        report["fit"] = "skipped: run_training_check=False"

    # 5. XLA.
    if supports_jit:
        fn = tf.function(lambda *x: layer(_unpack(list(x)), training=False, **call_kwargs),
                         jit_compile=True)
        _assert_close(eager_np, _to_numpy(output_fn(fn(*data))), max(rtol, 1e-5), max(atol, 1e-5),
                      "jit_compile=True gives different outputs from eager")
        report["jit"] = "passed"
    else:
        report["jit"] = "skipped: the layer does not declare XLA support"

    # 6. Mixed precision.
    if run_mixed_precision:
        _check_mixed_precision(layer_cls, init_kwargs, data, call_kwargs, output_fn,
                               expected_mixed_precision_output_dtype, targets, fit_loss,
                               run_training_check, model, mixed_precision_rtol,
                               mixed_precision_atol)
        report["mixed_float16"] = "passed"
    else:
        report["mixed_float16"] = "skipped: run_mixed_precision=False"

    # 7. MirroredStrategy on two logical CPUs.
    if run_distributed:
        _check_distributed(layer_cls, init_kwargs, data, call_kwargs, targets, fit_loss,
                           run_training_check, model, distributed_training,
                           distributed_gradients, distributed_rtol, distributed_atol)
        report["mirrored_strategy"] = "passed"
    else:
        report["mirrored_strategy"] = "skipped: run_distributed=False"

    # 8. Bad inputs.
    if expect_nan_error:
        bad = [np.full_like(d, np.nan) if np.issubdtype(d.dtype, np.floating) else d for d in data]
        _expect_error(lambda: call(layer, bad, training=False), "NaN input")
        report["nan_input"] = "passed"
    if expect_empty_batch_error:
        empty = [d[:0] for d in data]
        _expect_error(lambda: call(layer, empty, training=False), "empty batch")
        report["empty_batch"] = "passed"
    return report


# ----------------------------------------------------------------------------- helpers


def _perturb_weights(model, seed):
    """w <- w * (1 + 0.1 u) + 0.01 n for every float weight (u ~ U(-1, 1), n ~ N(0, 1)).

    The relative term keeps positive statistics (e.g. moving variances) positive.
    """
    rng = np.random.default_rng(seed + 1)
    for w in model.weights:
        if not w.dtype.is_floating:
            continue
        value = w.numpy()
        noise = value * 0.1 * rng.uniform(-1.0, 1.0, value.shape) + 0.01 * rng.standard_normal(
            value.shape)
        w.assign((value + noise).astype(value.dtype))


def _make_inputs(input_shape, input_data, input_dtype, seed):
    if (input_shape is None) == (input_data is None):
        raise ValueError("Pass exactly one of `input_shape` and `input_data`.")
    if input_data is not None:
        items = input_data if isinstance(input_data, (list, tuple)) else [input_data]
        return [np.asarray(d) for d in items]
    shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        if np.issubdtype(np.dtype(input_dtype), np.integer):
            out.append(rng.integers(0, 4, size=shape).astype(input_dtype))
        else:
            out.append(rng.standard_normal(shape).astype(input_dtype))
    return out


def _unpack(data):
    return data[0] if len(data) == 1 else list(data)


def _to_numpy(value):
    return tf.nest.map_structure(lambda t: np.asarray(t), value)


def _assert_close(expected, actual, rtol, atol, message):
    flat_e, flat_a = tf.nest.flatten(expected), tf.nest.flatten(actual)
    if len(flat_e) != len(flat_a):
        raise AssertionError("{}: {} outputs before, {} after".format(message, len(flat_e), len(flat_a)))
    for e, a in zip(flat_e, flat_a):
        try:
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                       rtol=rtol, atol=atol)
        except AssertionError as err:
            raise AssertionError("{}.\n{}".format(message, err)) from None


def _check_counts(layer, n_trainable, n_non_trainable, n_losses):
    for name, expected, actual in (
        ("trainable weights", n_trainable, len(layer.trainable_weights)),
        ("non-trainable weights", n_non_trainable, len(layer.non_trainable_weights)),
        ("losses", n_losses, len(layer.losses)),
    ):
        if expected is not None and expected != actual:
            raise AssertionError("{}: expected {} {}, found {}".format(
                layer.__class__.__name__, expected, name, actual))


def _check_output_shape_dtype(out, output_fn, expected_shape, expected_dtype):
    value = output_fn(out)
    first = tf.nest.flatten(value)[0]
    if expected_shape is not None:
        shapes = tf.nest.map_structure(lambda t: tuple(np.shape(t)), value)
        expected = expected_shape
        if not isinstance(value, (list, tuple, dict)):
            expected = tuple(expected_shape)
        if _normalise_shapes(shapes) != _normalise_shapes(expected):
            raise AssertionError("Output shape: expected {}, found {}".format(expected, shapes))
    if expected_dtype is not None:
        dtype = tf.as_dtype(first.dtype).name
        if dtype != tf.as_dtype(expected_dtype).name:
            raise AssertionError("Output dtype: expected {}, found {}".format(expected_dtype, dtype))


def _normalise_shapes(shapes):
    if isinstance(shapes, dict):
        return {k: _normalise_shapes(v) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple)):
        return [tuple(s) for s in shapes]
    return tuple(shapes)


def _unwrap_variable(v):
    return getattr(v, "_variable", v)


def _check_tracking(layer, data, call_kwargs):
    """Every variable the layer reads at inference must be one of its weights."""
    specs = [tf.TensorSpec(d.shape, d.dtype) for d in data]
    fn = tf.function(lambda *x: layer(_unpack(list(x)), training=False, **call_kwargs))
    graph = fn.get_concrete_function(*specs).graph
    tracked = {_unwrap_variable(w).ref() for w in layer.weights}
    untracked = [v.name for v in graph.variables if _unwrap_variable(v).ref() not in tracked]
    if untracked:
        raise AssertionError(
            "{} reads variables that are not tracked as weights (they will not be saved): {}".format(
                layer.__class__.__name__, untracked))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tf.TensorShape):
        return obj.as_list()
    if isinstance(obj, tf.DType):
        return obj.name
    raise TypeError("{!r} is not JSON serialisable".format(obj))


def _check_config(layer_cls, layer, data, call, output_fn, eager_np, rtol, atol):
    name = layer_cls.__name__
    registered = keras.utils.get_registered_name(layer_cls)
    if not registered.startswith(PACKAGE + ">"):
        raise AssertionError("{} is not registered for serialization under package '{}' "
                             "(registered name: {!r})".format(name, PACKAGE, registered))
    config = layer.get_config()
    params = []
    if layer_cls.__init__ is not keras.layers.Layer.__init__:
        params = [
            p.name for p in inspect.signature(layer_cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    missing = [p for p in params if p not in config]
    if missing:
        raise AssertionError("{}.get_config() is missing constructor arguments: {}".format(name, missing))
    try:
        text = json.dumps(config, default=_json_default, sort_keys=True)
    except TypeError as err:
        raise AssertionError("{}.get_config() is not JSON-serialisable: {}".format(name, err)) from None
    rebuilt = layer_cls.from_config(json.loads(text))
    text2 = json.dumps(rebuilt.get_config(), default=_json_default, sort_keys=True)
    if text != text2:
        raise AssertionError("{}: get_config -> from_config -> get_config differs:\n{}\n{}".format(
            name, text, text2))
    call(rebuilt, data, training=False)
    if len(rebuilt.weights) != len(layer.weights):
        raise AssertionError("{} rebuilt from config has {} weights, the original {}".format(
            name, len(rebuilt.weights), len(layer.weights)))
    rebuilt.set_weights(layer.get_weights())
    _assert_close(eager_np, _to_numpy(output_fn(call(rebuilt, data, training=False))), rtol, atol,
                  "{} rebuilt from its JSON config gives different outputs".format(name))


def _functional_model(layer, data, call_kwargs):
    inputs = [keras.Input(shape=d.shape[1:], dtype=d.dtype) for d in data]
    outputs = layer(_unpack(inputs), **call_kwargs)
    return keras.Model(_unpack(inputs), outputs)


def _check_fit(model, data, targets, loss, expect_change, label):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(_unpack(data), targets, batch_size=len(data[0]), epochs=1, verbose=0)
    loss_value = history.history["loss"][-1]
    if not np.isfinite(loss_value):
        raise AssertionError("{}: one fit step gave a non-finite loss {}".format(label, loss_value))
    if expect_change and before:
        after = [w.numpy() for w in model.trainable_weights]
        if all(np.array_equal(b, a) for b, a in zip(before, after)):
            raise AssertionError("{}: one fit step did not move any trainable weight".format(label))


def _check_mixed_precision(layer_cls, init_kwargs, data, call_kwargs, output_fn, expected_dtype,
                           targets, loss, run_fit, reference_model, rtol, atol):
    ref = _to_numpy(output_fn(reference_model(_unpack(data), training=False)))
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = _functional_model(layer_cls(**init_kwargs), data, call_kwargs)
        _copy_weights(reference_model, model, "mixed_float16")
        out = output_fn(model(_unpack(data), training=False))
        first = tf.nest.flatten(out)[0]
        if expected_dtype is not None and tf.as_dtype(first.dtype).name != expected_dtype:
            raise AssertionError("mixed_float16: expected output dtype {}, found {}".format(
                expected_dtype, tf.as_dtype(first.dtype).name))
        out = _to_numpy(out)
        for t in tf.nest.flatten(out):
            if np.issubdtype(t.dtype, np.floating) and not np.all(np.isfinite(t)):
                raise AssertionError("mixed_float16: non-finite outputs")
        flat_ref = tf.nest.flatten(ref)
        scale = max([1.0] + [float(np.max(np.abs(r))) for r in flat_ref if np.size(r)])
        _assert_close(ref, out, rtol, atol * scale,
                      "mixed_float16 output differs from the float32 output of the same weights "
                      "(inference mode, rtol={}, atol={}*{:.3g})".format(rtol, atol, scale))
        # Keras's LossScaleOptimizer cannot take an empty variable list.
        if run_fit and model.trainable_weights:
            _check_fit(model, data, targets, loss, False, "mixed_float16 fit")
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _copy_weights(source, target, label):
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise AssertionError("{}: the model has {} weights, the float32 single-device one {}".format(
            label, len(dst), len(src)))
    for s, d in zip(src, dst):
        if tuple(s.shape) != tuple(d.shape):
            raise AssertionError("{}: weight {} has shape {}, the single-device one {}".format(
                label, d.name, tuple(d.shape), tuple(s.shape)))
        d.assign(tf.cast(s, d.dtype))


def _as_tuples(value):
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return np.asarray(value)


def _one_step(model, data, targets, training):
    """Loss and global-batch gradients of one step, under the model's strategy if any.

    Uses the compiled loss (which, under a strategy, divides by the number of
    replicas), so summing the per-replica gradients gives the global-batch gradient.
    """
    strategy = tf.distribute.get_strategy()
    # tf.data packs lists into one tensor: nested structures travel as tuples.
    x, y = _as_tuples(_unpack(data)), _as_tuples(targets)
    dataset = tf.data.Dataset.from_tensors((x, y))
    variables = model.trainable_weights

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            y_pred = model(xb, training=training)
            loss = model.compute_loss(xb, yb, y_pred)
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, variables)]
        return loss, grads

    @tf.function
    def step(batch):
        loss, grads = strategy.run(replica_step, args=batch)
        reduce = tf.distribute.ReduceOp.SUM
        return (strategy.reduce(reduce, loss, axis=None),
                [strategy.reduce(reduce, g, axis=None) for g in grads])

    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    loss, grads = step(batch)
    return float(loss), [g.numpy() for g in grads]


def _check_distributed(layer_cls, init_kwargs, data, call_kwargs, targets, loss, run_fit,
                       reference_model, training, compare_gradients, rtol, atol):
    devices = logical_cpu_names()
    if len(devices) < 2:
        raise RuntimeError(
            "The MirroredStrategy check needs two logical CPU devices; found {}. Call "
            "keras_efficient.testing.configure_logical_cpus(2) before TensorFlow initialises "
            "(for example at the top of conftest.py), or pass run_distributed=False.".format(
                len(devices)))
    if len(data[0]) % 2:
        raise ValueError("The MirroredStrategy check needs an even batch size; got {}".format(
            len(data[0])))
    mode = "training=True" if training else "training=False (distributed_training=False)"
    single = _functional_model(layer_cls(**init_kwargs), data, call_kwargs)
    _copy_weights(reference_model, single, "MirroredStrategy")
    single.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    tf.random.set_seed(0)
    single_loss, single_grads = _one_step(single, data, targets, training)
    strategy = mirrored_cpu_strategy()
    with strategy.scope():
        model = _functional_model(layer_cls(**init_kwargs), data, call_kwargs)
        _copy_weights(reference_model, model, "MirroredStrategy")
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        tf.random.set_seed(0)
        dist_loss, dist_grads = _one_step(model, data, targets, training)
    if not np.isfinite(dist_loss):
        raise AssertionError("MirroredStrategy ({}): non-finite loss {}".format(mode, dist_loss))
    _assert_close(single_loss, dist_loss, rtol, atol,
                  "MirroredStrategy loss ({}) differs from the single-device loss of the same "
                  "weights and batch".format(mode))
    for v, g1, g2 in zip(single.trainable_weights, single_grads, dist_grads):
        if not compare_gradients:
            break  # distributed_gradients=False: the loss alone was compared.
        _assert_close(g1, g2, rtol, atol,
                      "MirroredStrategy global-batch gradient of {} ({}) differs from the "
                      "single-device gradient".format(v.name, mode))
    if run_fit:
        with strategy.scope():
            _check_fit(model, data, targets, loss, False, "MirroredStrategy fit")


def _expect_error(fn, what):
    try:
        out = fn()
        tf.nest.map_structure(lambda t: np.asarray(t), out)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
        return
    raise AssertionError("The layer accepted an input with {} without raising an error".format(what))
