"""Baseline early classifiers on bottleneck embeddings: linear softmax, kNN, k-means (Sec. VI-A)."""

import numpy as np

from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["LinearEarlyClassifier", "KNNEarlyClassifier", "KMeansEarlyClassifier"]


def _xy(z, y=None):
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape[0] == 0:
        raise invalid_argument("z", "a non-empty (n, d) array", getattr(z, "shape", z))
    if not np.all(np.isfinite(z)):
        raise ValueError("`z` received non-finite values (NaN or Inf).")
    if y is None:
        return z
    y = np.asarray(y)
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise invalid_argument("y", "non-negative integer labels of shape ({},)".format(
            z.shape[0]), getattr(y, "shape", y))
    return z, y


class _Base:
    def _check_fitted(self, z):
        if getattr(self, "dim_", None) is None:
            raise ValueError("{} must be fitted before predict.".format(type(self).__name__))
        z = _xy(z)
        if z.shape[1] != self.dim_:
            raise ValueError("{} was fitted on {}-dim embeddings. Received: shape={}".format(
                type(self).__name__, self.dim_, z.shape))
        return z


class LinearEarlyClassifier(_Base):
    """Linear layer + softmax (as in Panda et al.); confidence = max softmax probability.

    Multinomial logistic regression (scikit-learn, L-BFGS) on standardised
    embeddings. Parameters d·C + C; FLOPs per query ≈ 2·d·C (+ standardisation 2d).
    """

    def __init__(self, max_iter=300, l2=1e-3, seed=0):
        self.max_iter = check_int("max_iter", max_iter, low=1)
        self.l2 = check_float("l2", l2, low=0.0, low_inclusive=False)
        self.seed = check_int("seed", seed, low=0)
        self.dim_ = None

    def fit(self, z, y):
        from sklearn.linear_model import LogisticRegression
        z, y = _xy(z, y)
        self.mean_, self.scale_ = z.mean(0), z.std(0) + 1e-6
        self.model_ = LogisticRegression(C=1.0 / self.l2, max_iter=self.max_iter,
                                         random_state=self.seed)
        self.model_.fit((z - self.mean_) / self.scale_, y)
        self.dim_ = z.shape[1]
        return self

    def predict(self, z):
        """(labels, confidence) for each row of z."""
        z = self._check_fitted(z)
        proba = self.model_.predict_proba((z - self.mean_) / self.scale_)
        return self.model_.classes_[proba.argmax(1)], proba.max(1)

    def flops_per_query(self):
        c = len(self.model_.classes_)
        return 2 * self.dim_ * c + 2 * self.dim_ + 3 * c

    def num_parameters(self):
        return self.model_.coef_.size + self.model_.intercept_.size + 2 * self.dim_

    def memory_bytes(self):
        return 4 * self.num_parameters()


class KNNEarlyClassifier(_Base):
    """Brute-force k-nearest neighbours (Euclidean); confidence = vote share of the winner.

    Stores the n training embeddings; per query ‖q − x‖² = ‖q‖² − 2 q·x + ‖x‖²
    for all n (≈ 2·n·d FLOPs + 2n), then a top-k. The paper uses k = 100 (FAISS).
    """

    def __init__(self, k=100, batch_size=256):
        self.k = check_int("k", k, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.dim_ = None

    def fit(self, z, y):
        z, y = _xy(z, y)
        if self.k > len(z):
            raise invalid_argument("k", "at most the number of training samples ({})".format(
                len(z)), self.k)
        self.train_, self.labels_ = z, y
        self.sq_norms_ = np.sum(z * z, axis=1)
        self.num_classes_ = int(y.max()) + 1
        self.dim_ = z.shape[1]
        return self

    def predict(self, z):
        z = self._check_fitted(z)
        labels, conf = [], []
        for start in range(0, len(z), self.batch_size):
            q = z[start:start + self.batch_size]
            dist = self.sq_norms_[None, :] - 2.0 * q @ self.train_.T
            nearest = np.argpartition(dist, self.k - 1, axis=1)[:, :self.k]
            votes = np.zeros((len(q), self.num_classes_))
            np.add.at(votes, (np.arange(len(q))[:, None], self.labels_[nearest]), 1.0)
            labels.append(votes.argmax(1))
            conf.append(votes.max(1) / self.k)
        return np.concatenate(labels), np.concatenate(conf)

    def flops_per_query(self):
        n = len(self.train_)
        return 2 * n * self.dim_ + 2 * n

    def memory_bytes(self):
        return self.train_.nbytes + self.labels_.nbytes + self.sq_norms_.nbytes


class KMeansEarlyClassifier(_Base):
    """k-means clusters labelled by their predominant class (Kumar et al.).

    A query takes the label of its nearest centroid; confidence = share of that
    label among the cluster's training samples. The paper uses 8 clusters per
    class (800 on CIFAR-100). FLOPs per query ≈ 2·clusters·d.
    """

    def __init__(self, num_clusters=80, seed=0, n_init=3):
        self.num_clusters = check_int("num_clusters", num_clusters, low=1)
        self.seed = check_int("seed", seed, low=0)
        self.n_init = check_int("n_init", n_init, low=1)
        self.dim_ = None

    def fit(self, z, y):
        from sklearn.cluster import KMeans
        z, y = _xy(z, y)
        k = min(self.num_clusters, len(z))
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(z)
        self.centroids_ = km.cluster_centers_.astype(np.float32)
        num_classes = int(y.max()) + 1
        counts = np.zeros((k, num_classes))
        np.add.at(counts, (km.labels_, y), 1.0)
        self.cluster_label_ = counts.argmax(1)
        self.cluster_confidence_ = counts.max(1) / np.maximum(counts.sum(1), 1.0)
        self.dim_ = z.shape[1]
        return self

    def predict(self, z):
        z = self._check_fitted(z)
        dist = (np.sum(self.centroids_ ** 2, 1)[None, :] - 2.0 * z @ self.centroids_.T)
        nearest = dist.argmin(1)
        return self.cluster_label_[nearest], self.cluster_confidence_[nearest]

    def flops_per_query(self):
        return 2 * len(self.centroids_) * self.dim_ + 2 * len(self.centroids_)

    def memory_bytes(self):
        return self.centroids_.nbytes + self.cluster_label_.nbytes + self.cluster_confidence_.nbytes
