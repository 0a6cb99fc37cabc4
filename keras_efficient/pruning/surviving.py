"""Surviving units per adaptive-dropout site (the paper's Fig. 2)."""

import numpy as np

from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock

__all__ = ["surviving_units"]


def surviving_units(model):
    """Counts the units with beta >= threshold at every AdaptiveDropout site.

    Args:
      model: a Keras model or layer holding `AdaptiveDropout` layers, directly or
        inside `ConformerBlock`s.

    Returns:
      A list of dicts, in layer order: `site` ("<block>/<ffn1|attention_query|
      attention_value|conv|ffn2>" for Conformer sites, the layer name
      otherwise), `block` (the ConformerBlock name or None), `kind`, `total`,
      `surviving`, `fraction`.
    """
    rows = []
    seen = set()
    layers = [model] if isinstance(model, ConformerBlock) else model._flatten_layers(
        include_self=False)
    for layer in layers:
        if isinstance(layer, ConformerBlock):
            for kind, adl in layer.adaptive_dropout_sites.items():
                seen.add(id(adl))
                rows.append(_row("{}/{}".format(layer.name, kind), layer.name, kind, adl))
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, AdaptiveDropout) and id(layer) not in seen:
            rows.append(_row(layer.name, None, "dense", layer))
    return rows


def _row(site, block, kind, adl):
    keep = np.asarray(adl.keep_mask.numpy())
    total, surviving = int(keep.size), int(keep.sum())
    return {"site": site, "block": block, "kind": kind, "total": total, "surviving": surviving,
            "fraction": surviving / total}
