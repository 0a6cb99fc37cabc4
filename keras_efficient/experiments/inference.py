"""Batched inference through one traced graph per model and input shape.

`keras.Model.predict` builds a `tf.function` per model whose Python code is shared
by every model (`Model.make_predict_function.<locals>.predict_function`), and
TensorFlow counts traces per code object: an experiment that predicts with many
small models (one trace each, plus one more for a partial last batch) logs
"N out of the last M calls ... triggered tf.function retracing" although no
single model retraces in a loop. `predict` traces `model(x, training=False)` once
per model and input shape, with the batch dimension left unknown (`None`), so
partial last batches and arrays of any length reuse that graph. The concrete
function is called directly, so nothing retraces and nothing is counted.
"""

import weakref

import numpy as np

from keras_efficient.backend import keras, tf

__all__ = ["inference_function", "predict"]

# model -> {(feature shape, dtype): concrete function}. The functions hold the
# model's variables, not the model (the traced closure keeps a weak reference), so
# an entry goes away with its model.
_FUNCTIONS = weakref.WeakKeyDictionary()


def _dtype(x):
    dtype = tf.as_dtype(x.dtype)
    # As Keras' data adapters: floating inputs run in floatx.
    return tf.as_dtype(keras.backend.floatx()) if dtype.is_floating else dtype


def inference_function(model, x):
    """The concrete function `model(x, training=False)` for batches shaped like `x[:1]`.

    Traced on the first request for a (model, feature shape, dtype) and reused
    after: the batch dimension is `None`. The graph reads the model's variables, so
    training in between is seen; Python-level state that changes what `call` builds
    at inference (not, e.g., ReBEL's `set_stage`, which changes the loss only) is not.
    """
    spec = tf.TensorSpec([None] + list(np.shape(x)[1:]), _dtype(x))
    functions = _FUNCTIONS.setdefault(model, {})
    key = (tuple(spec.shape[1:].as_list()), spec.dtype.name)
    if key not in functions:
        ref = weakref.ref(model)
        functions[key] = tf.function(
            lambda batch: ref()(batch, training=False)).get_concrete_function(spec)
    return functions[key]


def predict(model, x, batch_size=256):
    """`model.predict(x, batch_size)` without per-call retracing: NumPy outputs, same structure.

    `x` is one array (the model's single input); batches of `batch_size`, the last
    one possibly smaller, run through `inference_function`.
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("predict: no samples")
    fn = inference_function(model, x)
    dtype = fn.structured_input_signature[0][0].dtype
    outputs = [fn(tf.constant(x[start:start + batch_size], dtype=dtype))
               for start in range(0, len(x), batch_size)]
    return tf.nest.map_structure(lambda *parts: np.concatenate([np.asarray(p) for p in parts]),
                                 *outputs)
