"""Built-in image classification data: digits and rendered shapes at CIFAR size, or CIFAR.

`load_digits32` needs no download: scikit-learn ships the 1,797 8×8 digit images.
They are resized bilinearly to 32×32, repeated over three channels and scaled to
[0, 1], so CIFAR-shaped models run on them unchanged. The train/test split is
fixed (stratified, 1,437 / 360, `random_state=0`). The digits are easy: CIFAR
ResNets reach about 99 % on them.

`"shapes"` (`keras_efficient.data.shapes.load_shapes32`) is a harder task that
needs no download either: 40,000 / 10,000 rendered images of ten shape kinds
with random textures, clutter, blur and noise.
"""

import numpy as np

from keras_efficient.data.shapes import NUM_TEST, NUM_TRAIN, load_shapes32, make_shapes32
from keras_efficient.utils.validation import check_int

__all__ = ["load_digits32", "load_images", "DATASETS"]

DATASETS = ("digits", "shapes", "cifar10", "cifar100")


def load_digits32():
    """Returns `((x_train, y_train), (x_test, y_test))` of the resized digits.

    x: float32 [N, 32, 32, 3] in [0, 1]; y: int64 labels 0..9; N = 1437 / 360.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from keras_efficient.backend import tf

    digits = load_digits()
    images = digits.images.astype("float32") / 16.0  # pixel values are 0..16
    resized = tf.image.resize(images[..., None], (32, 32), method="bilinear").numpy()
    x = np.clip(np.repeat(resized, 3, axis=-1), 0.0, 1.0).astype("float32")
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=360, random_state=0, stratify=y)
    return (x_train, y_train), (x_test, y_test)


def load_images(name="digits", train_size=None, test_size=None):
    """Returns `((x_train, y_train), (x_test, y_test))` for `name`.

    Args:
      name: "digits" or "shapes" (built in, no download; see `load_digits32` and
        `load_shapes32`), "cifar10" or "cifar100" (downloaded by `tf.keras.datasets` on
        first use; needs internet access once).
      train_size, test_size: keep the first N images of each split (None: all; a
        larger N keeps all). "shapes" renders only those: a smaller Shapes32 set is a
        prefix of a larger one.

    Images are float32 in [0, 1] with shape [N, 32, 32, 3]; labels int64 of shape [N].
    """
    if name not in DATASETS:
        raise ValueError("Invalid value received for argument `name`. Expected one of {}. "
                         "Received: name={!r}".format(", ".join(DATASETS), name))
    check_int("train_size", train_size, low=0, allow_none=True)
    check_int("test_size", test_size, low=0, allow_none=True)
    if name == "shapes" and (train_size is not None or test_size is not None):
        return make_shapes32(NUM_TRAIN if train_size is None else min(train_size, NUM_TRAIN),
                             NUM_TEST if test_size is None else min(test_size, NUM_TEST))
    data = _load_full(name)
    if train_size is None and test_size is None:
        return data
    (x_train, y_train), (x_test, y_test) = data
    return ((x_train[:train_size], y_train[:train_size]), (x_test[:test_size], y_test[:test_size]))


def _load_full(name):
    if name == "digits":
        return load_digits32()
    if name == "shapes":
        return load_shapes32()
    from keras_efficient.backend import keras

    module = keras.datasets.cifar10 if name == "cifar10" else keras.datasets.cifar100
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as err:  # urllib raises several types when offline
        raise RuntimeError(
            "Could not load {} ({}: {}). It is downloaded on first use and then cached in "
            "~/.keras/datasets; this machine seems to be offline. Use name='digits' or "
            "name='shapes' for a built-in data set.".format(name, type(err).__name__, err)) from err
    scale = np.float32(1.0 / 255.0)
    return ((x_train.astype("float32") * scale, y_train.reshape(-1).astype("int64")),
            (x_test.astype("float32") * scale, y_test.reshape(-1).astype("int64")))
