"""Shapes32: format, determinism, balance, geometry, argument checks, difficulty."""

import hashlib

import numpy as np
import pytest

from keras_efficient.data import SHAPE_NAMES, make_shapes32
from keras_efficient.data import shapes as shapes_module


def test_shapes_dtypes_and_range():
    (x_train, y_train), (x_test, y_test) = make_shapes32(30, 20, seed=0)
    assert x_train.shape == (30, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_train.shape == (30,) and y_test.shape == (20,)
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert np.all(np.isfinite(x_train))
    assert set(np.unique(y_train)) == set(range(10)) and len(SHAPE_NAMES) == 10
    # Colour images, not grey copies.
    assert np.abs(x_train[..., 0] - x_train[..., 1]).mean() > 0.05


def test_empty_splits_are_allowed():
    (x_train, y_train), (x_test, y_test) = make_shapes32(0, 3, seed=1)
    assert x_train.shape == (0, 32, 32, 3) and y_train.shape == (0,)
    assert x_test.shape == (3, 32, 32, 3)


def test_same_seed_same_images_other_seed_other_images():
    (a, ya), (b, yb) = make_shapes32(40, 10, seed=3)
    (c, yc), (d, yd) = make_shapes32(40, 10, seed=3)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(ya, yc)
    np.testing.assert_array_equal(b, d)
    (e, ye), _ = make_shapes32(40, 10, seed=4)
    assert np.abs(a - e).mean() > 0.1
    assert not np.array_equal(ya, ye)


def test_smaller_set_is_a_prefix_of_a_larger_one():
    """Images span two 500-image blocks; each block has its own random stream."""
    (a, ya), (b, yb) = make_shapes32(620, 15, seed=2)
    (c, yc), (d, yd) = make_shapes32(530, 7, seed=2)
    np.testing.assert_array_equal(a[:530], c)
    np.testing.assert_array_equal(ya[:530], yc)
    np.testing.assert_array_equal(b[:7], d)


def test_classes_are_balanced_in_every_prefix():
    (_, y), (_, y_test) = make_shapes32(1000, 500, seed=0)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [50] * 10)
    for n in (7, 23, 555):
        counts = np.bincount(y[:n], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts)
    # Not in a fixed cyclic order.
    assert not np.array_equal(y[:10], y[10:20])


def test_train_and_test_do_not_overlap():
    (x_train, _), (x_test, _) = make_shapes32(500, 500, seed=0)
    digest = lambda img: hashlib.sha1(img.tobytes()).hexdigest()  # noqa: E731
    train = {digest(img) for img in x_train}
    assert len(train) == 500
    assert not train & {digest(img) for img in x_test}
    # Not merely shifted copies: the nearest training image is far from each test image.
    flat_train = x_train.reshape(500, -1)
    flat_test = x_test[:50].reshape(50, -1)
    dist = ((flat_test[:, None, :] - flat_train[None]) ** 2).mean(-1)
    assert dist.min() > 0.01


@pytest.mark.parametrize("kind, area", [
    (0, np.pi),                       # unit disk
    (1, 1.64 ** 2),                   # square of half-side 0.82
    (4, np.pi * (1.0 - 0.5 ** 2)),    # ring between radii 0.5 and 1
    (6, np.pi * 0.5),                 # ellipse with semi-axes 1 and 0.5
    (9, 1.7 ** 2 - 0.9 ** 2),         # square frame, outer half-side 0.85, inner 0.45
])
def test_rendered_area_matches_the_shape(kind, area):
    """Anti-aliased coverage sums to the closed-form area (radius 10 px) within 2 %."""
    radius = 10.0
    angles = np.array([0.0, 0.3, 1.1])
    alpha = shapes_module._alpha(np.full(3, kind), np.full(3, 16.0), np.full(3, 16.0),
                                 np.full(3, radius), angles, np.ones(3))
    np.testing.assert_allclose(alpha.sum(axis=(1, 2)), area * radius ** 2, rtol=0.02)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"num_train": -1}, ValueError, "num_train"),
    ({"num_train": 2.5}, TypeError, "num_train"),
    ({"num_train": None}, TypeError, "num_train"),
    ({"num_train": "10"}, TypeError, "num_train"),
    ({"num_train": True}, TypeError, "num_train"),
    ({"num_test": -5}, ValueError, "num_test"),
    ({"num_test": 1.0}, TypeError, "num_test"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": None}, TypeError, "seed"),
    ({"seed": "0"}, TypeError, "seed"),
])
def test_invalid_arguments(kwargs, error, name):
    args = {"num_train": 10, "num_test": 10, "seed": 0}
    args.update(kwargs)
    with pytest.raises(error, match="`{}`".format(name)):
        make_shapes32(**args)


def test_pixel_baselines_are_far_from_solving_the_task():
    """Nearest class mean on the pixels and logistic regression on 8x8 grey thumbnails
    (scikit-learn), 1,500 training images: near chance (10 %), while a small ResNet
    learns the task (79 % after 8 epochs on 10,000 images, see docs/data_and_cli.md)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid

    (x_train, y_train), (x_test, y_test) = make_shapes32(1500, 500, seed=0)
    thumb = lambda x: x.mean(-1).reshape(len(x), 8, 4, 8, 4).mean((2, 4)).reshape(len(x), -1)  # noqa
    ncm = NearestCentroid().fit(x_train.reshape(len(x_train), -1), y_train)
    assert ncm.score(x_test.reshape(len(x_test), -1), y_test) < 0.3
    logreg = LogisticRegression(max_iter=200).fit(thumb(x_train), y_train)
    assert logreg.score(thumb(x_test), y_test) < 0.4
