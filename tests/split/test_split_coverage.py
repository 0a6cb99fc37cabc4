"""Coverage curve, threshold calibration and split accuracy against direct counting."""

import numpy as np
import pytest

from keras_efficient.split.coverage import (
    accuracy_vs_coverage,
    coverage_curve,
    exit_score,
    max_coverage_at_accuracy,
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


def test_exit_score_is_monotone_and_unsaturated():
    from scipy.special import log_softmax
    logits = np.array([[0.0, -100.0, -120.0], [0.0, -90.0, -200.0], [1.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0]])
    lp = log_softmax(logits, axis=-1).astype("float32")
    conf = np.exp(lp.max(1))
    assert conf[0] == conf[1] == 1.0  # saturated in float32
    score = exit_score(lp)
    top = np.exp(log_softmax(logits[2:], axis=-1).max(1))
    np.testing.assert_allclose(score[2:], -np.log(1.0 - top), rtol=1e-6)
    np.testing.assert_allclose(score[:2], [100.0, 90.0], rtol=1e-5)
    assert score[0] > score[1] > score[2] > score[3]
    with pytest.raises(ValueError, match="log_probs"):
        exit_score(np.zeros((3, 1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.8886, 0.97])
def test_max_coverage_at_accuracy_is_the_brute_force_optimum(seed, target):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.integers(0, 4, n)
    remote = np.where(rng.uniform(size=n) < 0.9, labels, (labels + 1) % 4)
    # Confidence loosely tied to local correctness, with ties (cluster shares).
    local = np.where(rng.uniform(size=n) < 0.75, labels, (labels + 2) % 4)
    conf = np.round(0.5 * (local == labels) + 0.6 * rng.uniform(size=n), 1)
    out = max_coverage_at_accuracy(conf, local, remote, labels, target)
    # Brute force over every threshold (each distinct confidence, and above all of them).
    best = None
    for t in list(np.unique(conf)) + [np.inf]:
        exited = conf >= t
        overall = np.mean(np.where(exited, local, remote) == labels)
        if overall >= target and (best is None or exited.mean() > best[0]):
            best = (exited.mean(), overall)
    assert out["feasible"] == (best is not None)
    if best is not None:
        assert out["coverage"] == pytest.approx(best[0])
        assert out["overall_accuracy"] == pytest.approx(best[1])
        assert out["overall_accuracy"] >= target
        assert np.mean(conf >= out["threshold"]) == pytest.approx(best[0])


def test_max_coverage_extremes():
    labels = np.array([0, 1, 2, 0])
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    # Local always right: everything local.
    out = max_coverage_at_accuracy(conf, labels, labels, labels, 1.0)
    assert out["coverage"] == 1.0 and out["feasible"]
    # Local always wrong, remote right: 1 of 4 local keeps 0.75.
    wrong = (labels + 1) % 3
    out = max_coverage_at_accuracy(conf, wrong, labels, labels, 0.75)
    assert out["coverage"] == 0.25 and out["threshold"] == 0.9
    # Target above remote-only: infeasible, nothing local.
    out = max_coverage_at_accuracy(conf, wrong, wrong, labels, 0.5)
    assert not out["feasible"] and out["coverage"] == 0.0
    with pytest.raises(ValueError, match="min_accuracy"):
        max_coverage_at_accuracy(conf, labels, labels, labels, 1.5)
    with pytest.raises(ValueError, match="length"):
        max_coverage_at_accuracy(conf[:3], labels, labels, labels, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        max_coverage_at_accuracy(np.array([0.1, np.nan, 0.2, 0.3]), labels, labels, labels, 0.5)
