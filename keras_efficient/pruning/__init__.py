"""Physical pruning of units that adaptive dropout switched off.

`surviving_units(model)` reports every AdaptiveDropout site, `count_parameters`
the total and effective parameter counts, and `prune(model)` builds the smaller
model. `PrunedConformerBlock`, `PrunedSelfAttention` and `ConstantOutput` are
the layers a pruned model is made of.
"""

from keras_efficient.pruning.budget import parameter_budget
from keras_efficient.pruning.expected import expected_parameters
from keras_efficient.pruning.parameters import count_parameters
from keras_efficient.pruning.prune import prune
from keras_efficient.pruning.pruned_layers import (
    ConstantOutput,
    PrunedConformerBlock,
    PrunedSelfAttention,
)
from keras_efficient.pruning.surviving import surviving_units

__all__ = [
    "ConstantOutput",
    "PrunedConformerBlock",
    "PrunedSelfAttention",
    "count_parameters",
    "expected_parameters",
    "parameter_budget",
    "prune",
    "surviving_units",
]
