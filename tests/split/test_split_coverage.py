"""Coverage curve, threshold calibration and split accuracy against direct counting."""

import numpy as np
import pytest

from keras_efficient.split.coverage import (
    accuracy_vs_coverage,
    coverage_curve,
    split_accuracy,
    threshold_for_coverage,
)


def test_coverage_curve_counts():
    conf = np.array([0.9, 0.2, 0.6, 0.6, 1.0])
    correct = np.array([1, 0, 0, 1, 1], bool)
    out = coverage_curve(conf, correct, [0.0, 0.6, 0.95, 1.0])
    np.testing.assert_allclose(out["coverage"], [1.0, 0.8, 0.2, 0.2])
    np.testing.assert_allclose(out["local_accuracy"], [0.6, 0.75, 1.0, 1.0])
    assert np.isnan(coverage_curve(conf, correct, [1.01])["local_accuracy"][0])


@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
def test_threshold_for_coverage(target):
    conf = np.random.default_rng(0).uniform(size=200)
    t = threshold_for_coverage(conf, target)
    covered = np.mean(conf >= t)
    assert covered == np.ceil(target * 200) / 200
    # The largest such threshold: anything above covers less.
    if target > 0:
        assert np.mean(conf >= np.nextafter(t, 2.0)) < target


def test_split_accuracy():
    labels = np.array([0, 1, 2, 0, 1])
    local = np.array([0, 0, 2, 1, 1])
    remote = np.array([0, 1, 1, 0, 0])
    exited = np.array([1, 1, 0, 0, 1], bool)
    out = split_accuracy(local, remote, labels, exited)
    assert out["coverage"] == 0.6
    assert out["local_accuracy"] == pytest.approx(2 / 3)
    assert out["remote_accuracy"] == pytest.approx(1 / 2)
    assert out["overall_accuracy"] == pytest.approx(3 / 5)
    assert np.isnan(split_accuracy(local, remote, labels, np.zeros(5, bool))["local_accuracy"])
    rows = accuracy_vs_coverage([0.9, 0.8, 0.1, 0.2, 0.95], local, remote, labels, [0.0, 0.6, 1.0])
    assert [r["coverage"] for r in rows] == [0.0, 0.6, 1.0]
    assert rows[1]["local_accuracy"] == pytest.approx(2 / 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="target_coverage"):
        threshold_for_coverage([0.5], 1.5)
    with pytest.raises(ValueError, match="confidence"):
        coverage_curve([], [])
    with pytest.raises(ValueError, match="differ"):
        coverage_curve([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="same length"):
        split_accuracy([0], [0, 1], [0], [True])
