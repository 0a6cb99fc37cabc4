"""Writes the 2.14-line fixtures of tests/saving/test_legacy.py. Run it on the 2.14 line.

    python tests/saving/make_fixtures.py            # from the repository root, TF 2.14.1

It writes, under tests/saving/data/:

- `legacy_v214.keras`: `model.save` of a small model with library layers (a
  `ResidualBlock` with a projection shortcut, `AdaptiveDropout` between Dense
  layers), compiled with Adam and trained for two steps, so the file holds moved
  BatchNormalization statistics, the dropout step counter and optimizer state;
- `legacy_v214_portable/`: `keras_efficient.saving.export_portable` of the same model;
- `legacy_v214.npz`: a fixed input `x`, the inference-mode output `y` computed on
  2.14, every weight (`weight_0`, ... in `model.weights` order) and the optimizer's
  step count `iterations`.

Regenerating changes the values; the tests only compare against the stored ones.
"""

import os
import shutil
import sys

import numpy as np

from keras_efficient.backend import LEGACY_KERAS_PACKAGE, keras, tf
from keras_efficient.layers import AdaptiveDropout, ResidualBlock
from keras_efficient.saving import export_portable

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
KERAS_FILE = os.path.join(DATA, "legacy_v214.keras")
PORTABLE_DIR = os.path.join(DATA, "legacy_v214_portable")
ARRAYS_FILE = os.path.join(DATA, "legacy_v214.npz")


def build_model():
    """The fixture's architecture (the tests rebuild it for the round trips)."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = ResidualBlock(8, strides=2, name="block")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    x = AdaptiveDropout(threshold=-0.5, seed=3, name="adl")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="legacy_fixture")


def main():
    if LEGACY_KERAS_PACKAGE:
        sys.exit("Run this on the 2.14 line (TensorFlow 2.14.1); this is TensorFlow {}."
                 .format(tf.__version__))
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(0)
    train_x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    train_y = rng.randint(0, 3, size=(16,))
    model.fit(train_x, train_y, batch_size=8, epochs=1, verbose=0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = model(x, training=False).numpy()

    os.makedirs(DATA, exist_ok=True)
    model.save(KERAS_FILE, overwrite=True)
    if os.path.isdir(PORTABLE_DIR):
        shutil.rmtree(PORTABLE_DIR)
    export_portable(model, PORTABLE_DIR)
    arrays = {"x": x, "y": y, "iterations": model.optimizer.iterations.numpy()}
    arrays.update({"weight_{}".format(i): w.numpy() for i, w in enumerate(model.weights)})
    np.savez(ARRAYS_FILE, **arrays)
    print("wrote {}, {}/ and {} (TensorFlow {})".format(KERAS_FILE, PORTABLE_DIR, ARRAYS_FILE,
                                                        tf.__version__))


if __name__ == "__main__":
    main()
