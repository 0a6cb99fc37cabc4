"""Coverage curves, threshold calibration and local/remote/overall accuracy (Fig. 6-7)."""

import numpy as np

from keras_efficient.utils.validation import check_float, invalid_argument

__all__ = ["coverage_curve", "threshold_for_coverage", "split_accuracy",
           "accuracy_vs_coverage", "exit_score", "max_coverage_at_accuracy"]


def _vector(name, value, dtype=None):
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != 1 or arr.size == 0:
        raise invalid_argument(name, "a non-empty 1-D array", getattr(arr, "shape", value))
    return arr


def exit_score(log_probs):
    """−log(1 − max_c γ_c), from class log-probabilities (n, C), in float64.

    A monotone transform of the confidence max_c γ_c that does not saturate: a
    Gaussian mixture classifier often gives max γ = 1.0 exactly in float32 for
    many samples, which ties them at the top and makes low coverages unreachable
    by a threshold on γ. log(1 − max γ) = logsumexp of the other classes' log γ,
    which stays distinct. Threshold t on γ equals threshold −log(1 − t) on the score.
    """
    lp = np.asarray(log_probs, np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise invalid_argument("log_probs", "an (n, C) array with C >= 2",
                               getattr(lp, "shape", log_probs))
    top = lp.argmax(1)
    others = lp.copy()
    others[np.arange(len(lp)), top] = -np.inf
    peak = others.max(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        lse = peak[:, 0] + np.log(np.sum(np.exp(others - np.where(np.isfinite(peak), peak, 0.0)),
                                         axis=1))
    return np.where(np.isfinite(peak[:, 0]), -lse, np.inf)


def coverage_curve(confidence, correct, thresholds=None):
    """Coverage and local accuracy for each threshold (Fig. 6a/6b).

    coverage(t) = fraction of samples with confidence >= t; local accuracy(t) =
    accuracy among those samples (NaN when none is covered).

    Returns:
      dict of arrays `threshold`, `coverage`, `local_accuracy`.
    """
    confidence = _vector("confidence", confidence, np.float64)
    correct = _vector("correct", correct, bool)
    if confidence.shape != correct.shape:
        raise ValueError("`confidence` and `correct` differ in length: {} vs {}".format(
            confidence.shape, correct.shape))
    if thresholds is None:
        thresholds = np.linspace(0.0, 1.0, 101)
    thresholds = _vector("thresholds", thresholds, np.float64)
    covered = confidence[None, :] >= thresholds[:, None]
    count = covered.sum(1)
    hits = (covered & correct[None, :]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return {"threshold": thresholds, "coverage": count / confidence.size, "local_accuracy": acc}


def threshold_for_coverage(confidence, target_coverage):
    """The largest threshold t with coverage(t) >= target_coverage.

    Equal to the ceil(target·n)-th largest confidence, so exactly that many samples
    are covered when confidences are distinct (ties can add more). For target 0
    the result is just above the largest confidence; it exceeds 1 (and no
    threshold in [0, 1] covers nothing) when some confidence is exactly 1.
    """
    confidence = _vector("confidence", confidence, np.float64)
    target = check_float("target_coverage", target_coverage, low=0.0, high=1.0)
    n = confidence.size
    k = int(np.ceil(target * n - 1e-9))
    ordered = np.sort(confidence)[::-1]
    if k == 0:
        return float(np.nextafter(ordered[0], np.inf))
    return float(ordered[k - 1])


def split_accuracy(local_label, remote_label, labels, exited):
    """Local, remote and overall accuracy of a split deployment (Fig. 7b).

    local: accuracy of the early classifier on the exited samples; remote: of the
    server on the others; overall: of the merged answers. NaN when a part is empty.
    """
    local_label = _vector("local_label", local_label)
    remote_label = _vector("remote_label", remote_label)
    labels = _vector("labels", labels)
    exited = _vector("exited", exited, bool)
    if not (local_label.shape == remote_label.shape == labels.shape == exited.shape):
        raise ValueError("All inputs must have the same length.")
    final = np.where(exited, local_label, remote_label)

    def acc(pred, mask):
        return float(np.mean(pred[mask] == labels[mask])) if mask.any() else float("nan")

    return {"coverage": float(exited.mean()), "local_accuracy": acc(local_label, exited),
            "remote_accuracy": acc(remote_label, ~exited),
            "overall_accuracy": float(np.mean(final == labels))}


def accuracy_vs_coverage(confidence, local_label, remote_label, labels, coverages):
    """`split_accuracy` at the thresholds calibrated for each target coverage."""
    confidence = _vector("confidence", confidence, np.float64)
    rows = []
    for target in coverages:
        t = threshold_for_coverage(confidence, target)
        row = split_accuracy(local_label, remote_label, labels, confidence >= t)
        row.update({"target_coverage": float(target), "threshold": t})
        rows.append(row)
    return rows


def max_coverage_at_accuracy(confidence, local_label, remote_label, labels, min_accuracy):
    """The largest coverage whose overall accuracy stays >= `min_accuracy` (Table II).

    Thresholds are the distinct confidences (a threshold covers every sample with
    confidence >= it, ties together) and "above the largest" (nothing local, the
    remote-only accuracy). Overall accuracy need not fall monotonically with
    coverage, so every threshold is checked and the largest feasible coverage wins.

    Returns:
      `split_accuracy` at that threshold plus `threshold`, `min_accuracy` and
      `feasible` (False when even remote-only misses the target; coverage is then 0).
    """
    confidence = _vector("confidence", confidence, np.float64)
    local_label = _vector("local_label", local_label)
    remote_label = _vector("remote_label", remote_label)
    labels = _vector("labels", labels)
    if not (confidence.shape == local_label.shape == remote_label.shape == labels.shape):
        raise ValueError("All inputs must have the same length.")
    if np.isnan(confidence).any():
        raise ValueError("`confidence` received NaN values.")
    min_accuracy = check_float("min_accuracy", min_accuracy, low=0.0, high=1.0)
    n = confidence.size
    order = np.argsort(-confidence, kind="stable")
    ordered = confidence[order]
    gain = ((local_label == labels).astype(np.int64) - (remote_label == labels).astype(np.int64))
    correct = np.sum(remote_label == labels) + np.concatenate([[0], np.cumsum(gain[order])])
    # k local samples is reachable by a threshold only at the end of a run of ties.
    k = np.arange(n + 1)
    reachable = np.ones(n + 1, bool)
    reachable[1:n] = ordered[:-1] != ordered[1:]
    feasible = reachable & (correct >= min_accuracy * n - 1e-9)
    best = int(k[feasible].max()) if feasible.any() else 0
    threshold = (float(ordered[best - 1]) if best else float(np.nextafter(ordered[0], np.inf)))
    row = split_accuracy(local_label, remote_label, labels, confidence >= threshold)
    row.update({"threshold": threshold, "min_accuracy": min_accuracy,
                "feasible": bool(feasible.any())})
    return row
