"""Inference latency of physically pruned models against their parameter and FLOP ratios.

At parameter budgets rho in {0.5, 0.3} (`--budgets`): the same fraction p of the units of
every ADL site is kept (random units; p found by bisection so that
`count_parameters(model)["ratio"]` is the nearest reachable to rho), then

1. Conformer encoder: the dense model vs `keras_efficient.pruning.prune(model)`, with
   ADL sites in the blocks only (the paper's sites) and with the front end's two
   subsampling convolutions pruned as well (`adaptive_subsampling=True`);
2. MLP (Dense 1024 -> ADL -> Dense 1024 -> ADL -> Dense): dense vs `prune`, and vs
   tfmot `prune_low_magnitude` + `strip_pruning` at the same sparsity (weights zeroed,
   shapes unchanged).

Reports latency ratio / parameter ratio and latency ratio / FLOP ratio (target <= 1.15;
FLOPs from `keras_efficient.training.flops.encoder_flops` for the encoders, sum of the
Dense kernels for the MLP), for the Conformer also for its prunable part alone (against
a floor model that keeps one unit per site), and writes a JSON.
Usage: python benchmarks/adaptive_dropout_pruning_latency.py [--out FILE] [--repeats N]
[--budgets 0.5,0.3]
"""

import argparse
import json

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout
from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import count_parameters, prune
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.training.flops import encoder_flops

from _timing import interleaved_medians, machine_info  # beside this script


def _latencies(models, x, repeats):
    """Median inference time of each model, measured alternately."""
    fns = {key: tf.function(lambda inp, m=model: m(inp, training=False))
           for key, model in models.items()}
    return interleaved_medians({key: (lambda fn=fn: fn(x).numpy()) for key, fn in fns.items()},
                               repeats, warmup=3)


def _set_keep(adl, fraction, order):
    """Keeps the first max(1, round(fraction * units)) units of the permutation `order`."""
    shape = adl.retention_raw.shape
    keep = np.zeros(int(np.prod(shape)), bool)
    keep[order[:max(1, int(round(fraction * keep.size)))]] = True
    thr = adl.effective_threshold
    beta = np.where(keep.reshape(shape), thr + 1.0, thr - 1.0)
    scale = np.sqrt(adl.gamma / adl.alpha)
    adl.retention_raw.assign(((beta - float(adl.current_target)) / scale).astype(np.float32))


def _adls(model):
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, AdaptiveDropout)]


def _keep_for_budget(model, budget, rng):
    """Sets a random keep pattern whose parameter ratio is the nearest to `budget`.

    The same keep fraction p at every site (one random unit order per site, fixed, so
    the ratio grows with p); p by bisection. Returns p. p = 0 keeps one unit per site.
    """
    adls = _adls(model)
    orders = [rng.permutation(int(np.prod(adl.retention_raw.shape))) for adl in adls]

    def ratio(p):
        for adl, order in zip(adls, orders):
            _set_keep(adl, p, order)
        return count_parameters(model)["ratio"]

    if budget is None or budget <= 0:
        ratio(0.0)
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) < budget else (lo, mid)
    p = lo if abs(ratio(lo) - budget) <= abs(ratio(hi) - budget) else hi
    ratio(p)
    return p


def _conformer_rows(budgets, rng, repeats, adaptive_subsampling=False):
    """Dense vs pruned encoders at every budget, timed in one interleaved run.

    The "floor" model keeps one unit per site: its latency is the part of the cost
    that pruning cannot remove (subsampling, LayerNorms, softmax, CTC head, per-op
    overhead), so (t_pruned - t_floor) / (t_dense - t_floor) is the latency ratio of
    the prunable part, to set against its parameter and FLOP ratios.
    """
    kwargs = dict(num_blocks=4, model_dim=144, num_heads=4, ffn_dim=576, kernel_size=15)
    models = {"dense": ConformerEncoder((256, 16), vocab_size=10, adaptive=False, **kwargs)}
    effective, keep, flops = {}, {}, {"dense": encoder_flops(models["dense"])["flops"]}
    for budget in (0.0,) + tuple(budgets):
        model = ConformerEncoder((256, 16), vocab_size=10, adaptive=True,
                                 schedule=RetentionTargetSchedule(),
                                 adaptive_subsampling=adaptive_subsampling, **kwargs)
        keep[budget] = _keep_for_budget(model, budget, rng)
        models[budget] = prune(model)
        flops[budget] = encoder_flops(models[budget])["flops"]
        counts = count_parameters(model)
        effective[budget], total = counts["effective"], counts["total"]
    x = rng.standard_normal((8, 256, 16)).astype(np.float32)
    t = _latencies(models, x, repeats)
    t_dense, t_floor, p_floor, f_floor = t["dense"], t[0.0], effective[0.0], flops[0.0]
    rows = []
    for budget in budgets:
        ratio = effective[budget] / total
        flop_ratio = flops[budget] / flops["dense"]
        latency = t[budget] / t_dense
        prunable_latency = (t[budget] - t_floor) / (t_dense - t_floor)
        prunable_params = (effective[budget] - p_floor) / (total - p_floor)
        prunable_flops = (flops[budget] - f_floor) / (flops["dense"] - f_floor)
        rows.append({"budget": budget, "keep_fraction": keep[budget], "parameter_ratio": ratio,
                     "flops_dense": flops["dense"], "flops_pruned": flops[budget],
                     "flops_floor": f_floor, "flop_ratio": flop_ratio,
                     "latency_dense_ms": 1e3 * t_dense, "latency_pruned_ms": 1e3 * t[budget],
                     "latency_floor_ms": 1e3 * t_floor, "latency_ratio": latency,
                     "latency_over_parameter_ratio": latency / ratio,
                     "latency_over_flop_ratio": latency / flop_ratio,
                     "prunable_parameter_ratio": prunable_params,
                     "prunable_flop_ratio": prunable_flops,
                     "prunable_latency_ratio": prunable_latency,
                     "prunable_latency_over_parameter_ratio": prunable_latency / prunable_params,
                     "prunable_latency_over_flop_ratio": prunable_latency / prunable_flops})
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


def _dense_macs(model):
    """Per-example MACs of an MLP: the sum of its Dense kernel sizes."""
    return sum(int(np.prod(layer.kernel.shape)) for layer in model.layers
               if isinstance(layer, keras.layers.Dense))


def _mlp_row(budget, rng, repeats):
    model = _mlp(True)
    keep = _keep_for_budget(model, budget, rng)
    pruned = prune(model)
    counts = count_parameters(model)
    ratio = counts["effective"] / counts["total"]
    dense = _mlp(False)
    flop_ratio = _dense_macs(pruned) / _dense_macs(dense)
    x = rng.standard_normal((256, 1024)).astype(np.float32)
    row = {"budget": budget, "keep_fraction": keep, "parameter_ratio": ratio,
           "flop_ratio": flop_ratio}
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
               latency_over_parameter_ratio=t_pruned / t_dense / ratio,
               latency_over_flop_ratio=t_pruned / t_dense / flop_ratio)
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
    parser.add_argument("--budgets", default="0.5,0.3",
                        help="comma-separated parameter budgets (fractions in (0, 1))")
    args = parser.parse_args()
    budgets = tuple(float(b) for b in args.budgets.split(","))
    rng = np.random.default_rng(0)
    results = dict(machine_info(), conformer=[], mlp=[], repeats=args.repeats)
    results["conformer"] = _conformer_rows(budgets, rng, args.repeats)
    results["conformer_front_end"] = _conformer_rows(budgets, rng, args.repeats,
                                                     adaptive_subsampling=True)
    for budget in budgets:
        results["mlp"].append(_mlp_row(budget, rng, args.repeats))
    print("model                budget keep   params  FLOPs  latency  lat/params  lat/FLOPs  "
          "tfmot lat/params")
    for name in ("conformer", "conformer_front_end", "mlp"):
        for r in results[name]:
            print("{:19s}  {:.2f}   {:.3f}  {:.3f}   {:.3f}  {:.3f}    {:.3f}       {:.3f}      "
                  "{}".format(name, r["budget"], r["keep_fraction"], r["parameter_ratio"],
                              r["flop_ratio"], r["latency_ratio"],
                              r["latency_over_parameter_ratio"], r["latency_over_flop_ratio"],
                              "{:.3f}".format(r["tfmot_latency_over_parameter_ratio"])
                              if "tfmot_latency_over_parameter_ratio" in r else "-"))
    for name in ("conformer", "conformer_front_end"):
        print("{}, prunable part only (floor = one unit kept per site: {:.1f} ms of {:.1f} ms, "
              "{:.1f} of {:.1f} MFLOPs)".format(
                  name, results[name][0]["latency_floor_ms"], results[name][0]["latency_dense_ms"],
                  results[name][0]["flops_floor"] / 1e6, results[name][0]["flops_dense"] / 1e6))
        for r in results[name]:
            print("                     {:.2f}          {:.3f}  {:.3f}   {:.3f}  {:.3f}    "
                  "{:.3f}".format(r["budget"], r["prunable_parameter_ratio"],
                                  r["prunable_flop_ratio"], r["prunable_latency_ratio"],
                                  r["prunable_latency_over_parameter_ratio"],
                                  r["prunable_latency_over_flop_ratio"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
