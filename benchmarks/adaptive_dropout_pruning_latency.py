"""Inference latency of physically pruned models against their parameter ratio.

For keep fractions p in {0.25, 0.5, 0.75} of every ADL site (random units):

1. Conformer encoder: the dense model vs `keras_efficient.pruning.prune(model)`, with
   ADL sites in the blocks only (the paper's sites) and with the front end's two
   subsampling convolutions pruned as well (`adaptive_subsampling=True`);
2. MLP (Dense 1024 -> ADL -> Dense 1024 -> ADL -> Dense): dense vs `prune`, and vs
   tfmot `prune_low_magnitude` + `strip_pruning` at the same sparsity (weights zeroed,
   shapes unchanged).

Reports latency ratio / parameter ratio (target <= 1.15 for our pruning), for the
Conformer also for its prunable part alone (against a floor model that keeps one unit
per site), and writes a JSON. Usage: python benchmarks/adaptive_dropout_pruning_latency.py [--out FILE]
"""

import argparse
import json

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import count_parameters, prune
from keras_efficient.schedules import RetentionTargetSchedule

from _timing import interleaved_medians, machine_info  # beside this script


def _latencies(models, x, repeats):
    """Median inference time of each model, measured alternately."""
    fns = {key: tf.function(lambda inp, m=model: m(inp, training=False))
           for key, model in models.items()}
    return interleaved_medians({key: (lambda fn=fn: fn(x).numpy()) for key, fn in fns.items()},
                               repeats, warmup=3)


def _set_keep(adl, fraction, rng):
    shape = adl.retention_raw.shape
    keep = np.zeros(int(np.prod(shape)), bool)
    keep[rng.permutation(keep.size)[:max(1, int(round(fraction * keep.size)))]] = True
    thr = adl.effective_threshold
    beta = np.where(keep.reshape(shape), thr + 1.0, thr - 1.0)
    scale = np.sqrt(adl.gamma / adl.alpha)
    adl.retention_raw.assign(((beta - float(adl.current_target)) / scale).astype(np.float32))


def _adls(model):
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, AdaptiveDropout)]


def _conformer_rows(fractions, rng, repeats, adaptive_subsampling=False):
    """Dense vs pruned encoders at every keep fraction, timed in one interleaved run.

    The "floor" model keeps one unit per site: its latency is the part of the cost
    that pruning cannot remove (subsampling, LayerNorms, softmax, CTC head, per-op
    overhead), so (t_pruned - t_floor) / (t_dense - t_floor) is the latency ratio of
    the prunable part, to set against its parameter ratio.
    """
    kwargs = dict(num_blocks=4, model_dim=144, num_heads=4, ffn_dim=576, kernel_size=15)
    models = {"dense": ConformerEncoder((256, 16), vocab_size=10, adaptive=False, **kwargs)}
    effective = {}
    for fraction in (0.0,) + tuple(fractions):
        model = ConformerEncoder((256, 16), vocab_size=10, adaptive=True,
                                 schedule=RetentionTargetSchedule(),
                                 adaptive_subsampling=adaptive_subsampling, **kwargs)
        for adl in _adls(model):
            _set_keep(adl, fraction, rng)
        models[fraction] = prune(model)
        counts = count_parameters(model)
        effective[fraction], total = counts["effective"], counts["total"]
    x = rng.standard_normal((8, 256, 16)).astype(np.float32)
    t = _latencies(models, x, repeats)
    t_dense, t_floor, p_floor = t["dense"], t[0.0], effective[0.0]
    rows = []
    for fraction in fractions:
        ratio = effective[fraction] / total
        latency = t[fraction] / t_dense
        prunable_latency = (t[fraction] - t_floor) / (t_dense - t_floor)
        prunable_params = (effective[fraction] - p_floor) / (total - p_floor)
        rows.append({"keep_fraction": fraction, "parameter_ratio": ratio,
                     "latency_dense_ms": 1e3 * t_dense, "latency_pruned_ms": 1e3 * t[fraction],
                     "latency_floor_ms": 1e3 * t_floor, "latency_ratio": latency,
                     "latency_over_parameter_ratio": latency / ratio,
                     "prunable_parameter_ratio": prunable_params,
                     "prunable_latency_ratio": prunable_latency,
                     "prunable_latency_over_parameter_ratio": prunable_latency / prunable_params})
    return rows


def _mlp(adaptive):
    inp = keras.Input((1024,))
    h = keras.layers.Dense(1024, activation="relu")(inp)
    if adaptive:
        h = AdaptiveDropout()(h)
    h = keras.layers.Dense(1024, activation="relu")(h)
    if adaptive:
        h = AdaptiveDropout()(h)
    return keras.Model(inp, keras.layers.Dense(10)(h))


def _mlp_row(fraction, rng, repeats):
    model = _mlp(True)
    for adl in _adls(model):
        _set_keep(adl, fraction, rng)
    pruned = prune(model)
    counts = count_parameters(model)
    ratio = counts["effective"] / counts["total"]
    dense = _mlp(False)
    x = rng.standard_normal((256, 1024)).astype(np.float32)
    row = {"keep_fraction": fraction, "parameter_ratio": ratio}
    models = {"dense": dense, "pruned": pruned}
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError:
        tfmot = None
        row["tfmot"] = "tensorflow-model-optimization is not installed"
    if tfmot is not None:
        models["tfmot"] = _tfmot_model(tfmot, 1.0 - ratio, x, row)
    t = _latencies(models, x, repeats)
    t_dense, t_pruned = t["dense"], t["pruned"]
    row.update(latency_dense_ms=1e3 * t_dense, latency_pruned_ms=1e3 * t_pruned,
               latency_ratio=t_pruned / t_dense,
               latency_over_parameter_ratio=t_pruned / t_dense / ratio)
    if tfmot is not None:
        row.update(latency_tfmot_ms=1e3 * t["tfmot"], tfmot_latency_ratio=t["tfmot"] / t_dense,
                   tfmot_latency_over_parameter_ratio=t["tfmot"] / t_dense / ratio)
    return row


def _tfmot_model(tfmot, sparsity, x, row):
    """prune_low_magnitude at `sparsity` for one step, then strip_pruning."""
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        _mlp(False),
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(sparsity, 0, frequency=1))
    wrapped.compile("sgd", "mse")
    wrapped.fit(x, np.zeros((256, 10), np.float32), batch_size=64, epochs=2, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    zeros = sum(int(np.sum(w == 0)) for w in stripped.get_weights())
    row.update(tfmot_sparsity=sparsity, tfmot_zero_weights=zeros,
               tfmot_parameters=stripped.count_params())
    return stripped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="adaptive_dropout_pruning_latency.json")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = dict(machine_info(), conformer=[], mlp=[])
    results["conformer"] = _conformer_rows((0.25, 0.5, 0.75), rng, args.repeats)
    results["conformer_front_end"] = _conformer_rows((0.25, 0.5, 0.75), rng, args.repeats,
                                                     adaptive_subsampling=True)
    for fraction in (0.25, 0.5, 0.75):
        results["mlp"].append(_mlp_row(fraction, rng, args.repeats))
    print("model                keep  params  latency  latency/params  tfmot latency/params")
    for name in ("conformer", "conformer_front_end", "mlp"):
        for r in results[name]:
            print("{:19s}  {:.2f}  {:.3f}   {:.3f}    {:.3f}          {}".format(
                name, r["keep_fraction"], r["parameter_ratio"], r["latency_ratio"],
                r["latency_over_parameter_ratio"],
                "{:.3f}".format(r["tfmot_latency_over_parameter_ratio"])
                if "tfmot_latency_over_parameter_ratio" in r else "-"))
    for name in ("conformer", "conformer_front_end"):
        print("{}, prunable part only (floor = one unit kept per site: {:.1f} ms of {:.1f} ms)"
              .format(name, results[name][0]["latency_floor_ms"],
                      results[name][0]["latency_dense_ms"]))
        for r in results[name]:
            print("                     {:.2f}  {:.3f}   {:.3f}    {:.3f}".format(
                r["keep_fraction"], r["prunable_parameter_ratio"], r["prunable_latency_ratio"],
                r["prunable_latency_over_parameter_ratio"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
