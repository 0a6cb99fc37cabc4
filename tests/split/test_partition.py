"""Dirichlet partitions and the Gini index."""

import numpy as np
import pytest

from keras_efficient.split.partition import dirichlet_partition, gini_index


def test_partition_covers_every_sample_once():
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, 0.5, 7, seed=3)
    assert len(parts) == 7
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(500))
    again = dirichlet_partition(labels, 0.5, 7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_small_alpha_is_unbalanced_large_alpha_balanced():
    labels = np.repeat(np.arange(20), 200)
    ginis = {}
    for alpha in (0.01, 100.0):
        parts = dirichlet_partition(labels, alpha, 10, seed=0)
        ginis[alpha] = np.mean([gini_index(labels[p], 20) for p in parts if len(p)])
    assert ginis[0.01] > 0.8
    assert ginis[100.0] < 0.15


def test_gini_values():
    assert gini_index(np.repeat(np.arange(5), 3), 5) == pytest.approx(0.0)
    assert gini_index(np.zeros(9, int), 10) == pytest.approx(0.9)
    # Independent formula: G = (2 Σ i·x_(i)) / (n Σ x) − (n + 1) / n with sorted counts.
    counts = np.array([0, 1, 2, 7])
    labels = np.repeat(np.arange(4), counts)
    x = np.sort(counts)
    expected = 2 * np.sum(np.arange(1, 5) * x) / (4 * x.sum()) - 5 / 4
    assert gini_index(labels, 4) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"num_clients": 0}, "num_clients"),
    ({"num_clients": 2.0}, "num_clients"),
    ({"labels": np.array([0.5, 1.0])}, "labels"),
    ({"labels": np.array([], int)}, "labels"),
])
def test_bad_arguments(kwargs, match):
    args = {"labels": np.array([0, 1, 1]), "alpha": 1.0, "num_clients": 2}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        dirichlet_partition(**args)
    if "labels" in kwargs:
        with pytest.raises(ValueError, match="labels"):
            gini_index(kwargs["labels"], 3)


def test_gini_label_range():
    with pytest.raises(ValueError, match="labels"):
        gini_index(np.array([0, 3]), 3)
