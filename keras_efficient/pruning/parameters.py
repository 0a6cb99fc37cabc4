"""Total and effective parameter counts (the paper's Table 1 count)."""

import numpy as np

from keras_efficient.pruning.plan import (
    adaptive_dropout_weights,
    model_plans,
    pruned_parameters,
    site_roles,
)

__all__ = ["count_parameters"]


def _size(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def count_parameters(model):
    """Counts the parameters a pruned model keeps.

    `total` counts every weight of the model except those of the AdaptiveDropout
    layers (their retention parameters and step counters, which inference does
    not need; reported as `adaptive_dropout`). `effective` is `total` minus the
    parameters attached to units with beta < threshold (Table 1): FFN W1 columns,
    b1 entries and W2 rows; per-head W_Q/b_Q/W_K/b_K rows for query units and
    W_V/b_V rows and W_O columns for value units; LConv W_I/W_G/b_I/b_G rows,
    depthwise kernels, BatchNorm parameters and W_O columns. Parameters that are
    left without any effect are removed as well and counted as removed: the
    LayerNorm of a module with no surviving unit, and the query/key units of a
    head without surviving value units. At a top-level site: the producing
    Dense columns or Conv2D filters with their biases and the consuming Dense rows
    (f·C + c behind a flattening Reshape) or Conv2D input channels; a Conv2D site
    without survivors keeps one zero-weight unit, which is counted (see `prune`).
    Nested functional models are counted recursively. `effective` equals
    `prune(model).count_params()`.

    Returns:
      dict with `total`, `effective`, `removed`, `adaptive_dropout` and
      `ratio` (effective / total).
    """
    blocks, sites, nested = model_plans(model)
    adl_weights = adaptive_dropout_weights(model)
    adl_ids = {id(w) for w in adl_weights}
    total = _size([w for w in model.weights if id(w) not in adl_ids])
    removed = 0
    for block, plan in blocks.items():
        block_total = _size([w for w in block.weights if id(w) not in adl_ids])
        removed += block_total - plan.pruned_parameters()
    for layer, (rows, cols, _) in site_roles(sites).items():
        removed += layer.count_params() - pruned_parameters(layer, rows, cols)
    for inner in nested:
        removed += count_parameters(inner)["removed"]
    effective = total - removed
    return {"total": total, "effective": effective, "removed": removed,
            "adaptive_dropout": _size(adl_weights), "ratio": effective / max(total, 1)}
