"""Built-in image data: shapes, ranges, fixed split, faithful resize; the data set names."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_efficient.data import load_digits32, load_images


def test_digits32_shapes_ranges_and_split():
    (x_train, y_train), (x_test, y_test) = load_digits32()
    assert x_train.shape == (1437, 32, 32, 3) and x_test.shape == (360, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    # The three channels are copies of one grey image.
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])


def test_digits32_split_is_fixed_and_covers_every_image():
    (a, ya), (b, yb) = load_digits32()
    (c, _), (d, _) = load_digits32()
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)
    # Class balance of the stratified split matches the full set within one image per class.
    full = np.bincount(load_digits().target, minlength=10)
    np.testing.assert_allclose(np.bincount(yb, minlength=10), full * 360 / 1797, atol=1.0)


def test_digits32_resize_preserves_the_image():
    """Average-pooling the 32x32 image back to 8x8 is close to the original digit."""
    digits = load_digits()
    (x_train, y_train), _ = load_digits32()
    # Find a training image by label and compare against every original of that label.
    img = x_train[0, ..., 0]
    pooled = img.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    originals = digits.images[digits.target == y_train[0]] / 16.0
    best = np.min(np.abs(originals - pooled).mean(axis=(1, 2)))
    assert best < 0.08


def test_load_images_rejects_unknown_names():
    with pytest.raises(ValueError, match="`name`"):
        load_images("mnist")


def test_load_images_digits_is_load_digits32():
    (a, _), _ = load_images("digits")
    (b, _), _ = load_digits32()
    np.testing.assert_array_equal(a, b)


def test_load_images_shapes_is_load_shapes32(monkeypatch):
    from keras_efficient.data import DATASETS, images

    assert "shapes" in DATASETS
    sentinel = ((np.zeros((1, 32, 32, 3), "float32"), np.zeros(1, "int64")),) * 2
    monkeypatch.setattr(images, "load_shapes32", lambda: sentinel)
    assert load_images("shapes") is sentinel


def test_load_images_keeps_the_first_images(monkeypatch):
    from keras_efficient.data import images, make_shapes32

    (x, y), (xt, yt) = load_images("digits")
    (a, b), (c, d) = load_images("digits", train_size=100, test_size=7)
    np.testing.assert_array_equal(a, x[:100])
    np.testing.assert_array_equal(b, y[:100])
    np.testing.assert_array_equal(c, xt[:7])
    np.testing.assert_array_equal(d, yt[:7])
    (a, _), (c, _) = load_images("digits", test_size=10 ** 6)  # more than there is: all
    assert len(a) == len(x) and len(c) == len(xt)
    # Shapes32 renders just the prefix, at most the default split's size.
    (a, b), (c, d) = load_images("shapes", train_size=20, test_size=10)
    (e, f), (g, h) = make_shapes32(20, 10)
    np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(d, h)
    asked = []
    monkeypatch.setattr(images, "make_shapes32", lambda n, m: asked.append((n, m)))
    load_images("shapes", train_size=10 ** 6)
    load_images("shapes", test_size=3)
    assert asked == [(images.NUM_TRAIN, images.NUM_TEST), (images.NUM_TRAIN, 3)]


@pytest.mark.parametrize("kwargs,name", [({"train_size": -1}, "train_size"),
                                         ({"test_size": 1.5}, "test_size")])
def test_load_images_bad_sizes(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        load_images("digits", **kwargs)


@pytest.mark.slow
def test_load_shapes32_default_split():
    """The default split renders 40,000 + 10,000 images (about 15-30 s)."""
    from keras_efficient.data import load_shapes32, make_shapes32

    (x_train, y_train), (x_test, y_test) = load_shapes32()
    assert x_train.shape == (40000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(y_train), [4000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    (a, _), (b, _) = make_shapes32(700, 600)
    np.testing.assert_array_equal(x_train[:700], a)
    np.testing.assert_array_equal(x_test[:600], b)
