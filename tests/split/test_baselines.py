"""Baseline early classifiers: kNN vote share, k-means cluster share, linear softmax."""

import numpy as np
import pytest

from keras_efficient.split.baselines import (
    KMeansEarlyClassifier,
    KNNEarlyClassifier,
    LinearEarlyClassifier,
)


def _blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [6, 0], [0, 6]], "float32")
    y = np.repeat(np.arange(3), n // 3)
    return centers[y] + rng.normal(size=(n, 2)).astype("float32") * 0.5, y


def test_knn_vote_share_by_brute_force():
    z, y = _blobs()
    q = np.random.default_rng(1).normal(size=(7, 2)).astype("float32") * 3
    knn = KNNEarlyClassifier(k=5).fit(z, y)
    labels, conf = knn.predict(q)
    for i in range(len(q)):
        nearest = np.argsort(((z - q[i]) ** 2).sum(1))[:5]
        votes = np.bincount(y[nearest], minlength=3)
        assert conf[i] == votes.max() / 5
        assert votes[labels[i]] == votes.max()
    assert knn.flops_per_query() == 2 * 60 * 2 + 2 * 60


def test_kmeans_cluster_share():
    z, y = _blobs()
    y = y.copy()
    y[:4] = 1  # four mislabelled points in cluster 0
    km = KMeansEarlyClassifier(num_clusters=3, seed=0).fit(z, y)
    labels, conf = km.predict(np.array([[0, 0], [6, 0]], "float32"))
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_allclose(conf, [16 / 20, 1.0])


def test_linear_separates_blobs():
    z, y = _blobs()
    lin = LinearEarlyClassifier().fit(z, y)
    labels, conf = lin.predict(z)
    assert np.mean(labels == y) == 1.0
    assert np.all((conf > 1 / 3) & (conf <= 1.0))


@pytest.mark.parametrize("cls", [LinearEarlyClassifier, KNNEarlyClassifier,
                                 KMeansEarlyClassifier])
def test_bad_inputs(cls):
    z, y = _blobs()
    model = cls(**({"k": 3} if cls is KNNEarlyClassifier else {}))
    with pytest.raises(ValueError, match="fitted"):
        model.predict(z)
    model.fit(z, y)
    with pytest.raises(ValueError, match="2-dim"):
        model.predict(np.zeros((2, 3), "float32"))
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.predict(bad)
    with pytest.raises(ValueError, match="y"):
        cls().fit(z, y[:-1])


def test_knn_k_too_large():
    z, y = _blobs(9)
    with pytest.raises(ValueError, match="k"):
        KNNEarlyClassifier(k=10).fit(z, y)
