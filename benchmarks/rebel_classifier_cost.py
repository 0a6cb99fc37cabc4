"""Per-query cost of ReBEL's early classifiers: Gaussian mixture (full, diag) vs brute-force kNN.

Paper-like sizes (Table I): C = 100 classes, K = 8 components per class, GMC on
the projected d = 434 latent; kNN (k = 100) over n = 50,000 training embeddings
of the unprojected 867-dim latent (as with FAISS in the paper) and, for
reference, of the 434-dim projected one. All classifiers run as TensorFlow
graphs (`tf.function`) with parameters fixed in advance (the GMC's
`inference_factors()` are computed once, as a deployed model would).

Reports per query: FLOPs (analytic, multiply-add = 2), latency at batch 1 and
batch 64 (median of repeats), and model memory (parameters / stored embeddings).
kNN FLOPs are given two ways: "flops" for the cheapest exact form (one
multiply-add per stored value against precomputed norms, what this script runs)
and "flops_direct" for the squared differences sum((q - y)^2) per stored vector
(3 per value plus one heap comparison per vector), which is what a brute-force
index such as FAISS's flat L2 search executes for fewer than 20 queries at a time.
Writes a JSON next to this file unless --out is given.

    python benchmarks/rebel_classifier_cost.py [--quick] [--out FILE]
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from keras_efficient.layers import GaussianMixtureClassifier

from _timing import machine_info  # beside this script

JIT = False  # set from --jit: XLA-compile both classifiers


def time_fn(fn, x, repeats):
    fn(x)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gmc_case(covariance, num_classes, components, dim, repeats, batches):
    layer = GaussianMixtureClassifier(num_classes, components, covariance=covariance)
    rng = np.random.default_rng(0)
    layer(np.zeros((1, dim), "float32"))
    layer.scale_entries.assign(0.05 * rng.normal(size=layer.scale_entries.shape).astype("float32"))
    start = time.perf_counter()
    factors = {k: tf.constant(v.numpy()) for k, v in layer.inference_factors().items()}
    prep = time.perf_counter() - start
    fn = tf.function(lambda z: layer.log_class_probs(z, factors), jit_compile=JIT)
    memory = sum(int(np.prod(v.shape)) * 4 for v in factors.values())
    out = {"flops": layer.count_flops(), "parameters": layer.count_params(),
           "memory_bytes": memory, "factor_time_s": prep}
    for b in batches:
        z = tf.constant(rng.normal(size=(b, dim)).astype("float32"))
        out["latency_s_batch{}".format(b)] = time_fn(fn, z, repeats) / b
    return out


def knn_case(num_train, dim, k, num_classes, repeats, batches):
    rng = np.random.default_rng(1)
    train = tf.constant(rng.normal(size=(num_train, dim)).astype("float32"))
    labels = tf.constant(rng.integers(0, num_classes, num_train).astype("int32"))
    sq = tf.reduce_sum(tf.square(train), axis=1)

    @tf.function(jit_compile=JIT)
    def knn(q):
        dist = sq[None, :] - 2.0 * tf.matmul(q, train, transpose_b=True)
        _, idx = tf.math.top_k(-dist, k=k)
        votes = tf.reduce_sum(tf.one_hot(tf.gather(labels, idx), num_classes), axis=1)
        return tf.argmax(votes, -1), tf.reduce_max(votes, -1) / k

    out = {"flops": 2 * num_train * dim + 2 * num_train,
           "flops_direct": 3 * num_train * dim + num_train,
           "memory_bytes": num_train * dim * 4 + num_train * 4 * 2, "parameters": 0}
    for b in batches:
        q = tf.constant(rng.normal(size=(b, dim)).astype("float32"))
        out["latency_s_batch{}".format(b)] = time_fn(knn, q, repeats) / b
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--out", default=None)
    parser.add_argument("--jit", action="store_true", help="XLA-compile both classifiers")
    args = parser.parse_args()
    global JIT
    JIT = args.jit
    if args.quick:
        c, k, d, n, d_knn, repeats = 20, 4, 64, 5000, 128, 5
    else:
        c, k, d, n, d_knn, repeats = 100, 8, 434, 50000, 867, 15
    batches = (1, 64)
    results = {
        "config": {"classes": c, "components": k, "gmc_dim": d, "knn_train": n,
                   "knn_dim": d_knn, "knn_k": 100, "repeats": repeats, "jit": JIT,
                   "machine": machine_info()},
        "gmc_diag": gmc_case("diag", c, k, d, repeats, batches),
        "gmc_full": gmc_case("full", c, k, d, repeats, batches),
        "knn": knn_case(n, d_knn, 100, c, repeats, batches),
        "knn_projected": knn_case(n, d, 100, c, repeats, batches),
    }
    knn = results["knn"]
    ratios = {}
    for name in ("gmc_diag", "gmc_full"):
        g = results[name]
        ratios[name] = {"flops_ratio_knn_over_gmc": knn["flops"] / g["flops"],
                        "flops_direct_ratio_knn_over_gmc": knn["flops_direct"] / g["flops"],
                        "memory_ratio_knn_over_gmc": knn["memory_bytes"] / g["memory_bytes"]}
        for b in batches:
            key = "latency_s_batch{}".format(b)
            ratios[name]["time_ratio_knn_over_gmc_batch{}".format(b)] = knn[key] / g[key]
    results["ratios"] = ratios

    print("{:<16}{:>14}{:>14}{:>16}{:>16}".format("classifier", "FLOPs/query", "memory (MB)",
                                                  "batch-1 (ms)", "batch-64 (ms/q)"))
    for name in ("gmc_diag", "gmc_full", "knn", "knn_projected"):
        r = results[name]
        print("{:<16}{:>14,}{:>14.2f}{:>16.3f}{:>16.4f}".format(
            name, r["flops"], r["memory_bytes"] / 1e6, 1e3 * r["latency_s_batch1"],
            1e3 * r["latency_s_batch64"]))
    for name, r in ratios.items():
        print("kNN / {}: FLOPs {:.1f}x ({:.1f}x with direct differences), memory {:.1f}x, time batch-1 {:.1f}x, batch-64 {:.1f}x"
              .format(name, r["flops_ratio_knn_over_gmc"], r["flops_direct_ratio_knn_over_gmc"],
                      r["memory_ratio_knn_over_gmc"],
                      r["time_ratio_knn_over_gmc_batch1"], r["time_ratio_knn_over_gmc_batch64"]))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "rebel_classifier_cost{}{}.json".format(
                                       "_quick" if args.quick else "", "_jit" if JIT else ""))
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
