"""CIFAR ResNets with SLU gates or stochastic depth on their identity-shaped blocks (E²-Train)."""

from keras_efficient.layers.gated_residual import GatedResidualBlock
from keras_efficient.layers.recurrent_gate import RecurrentGate
from keras_efficient.layers.stochastic_depth import StochasticDepth
from keras_efficient.models.resnet import cifar_resnet
from keras_efficient.utils.validation import check_float, check_int

__all__ = ["expected_sd_survival", "gated_blocks_of", "gated_resnet", "set_gate_flops_fractions",
           "stochastic_depth_resnet"]


def gated_blocks_of(model):
    """The `GatedResidualBlock` layers of `model`, in order."""
    return [layer for layer in model.layers if isinstance(layer, GatedResidualBlock)]


def set_gate_flops_fractions(model):
    """Sets each gated block's `flops_fraction` to FLOPs_k / Σ_j FLOPs_j over `model`'s gated blocks.

    With it the blocks' added losses sum to α·C(W, G) of Eq. (1), C being the
    executed fraction of the gateable FLOPs. `gated_resnet` calls it; call it
    yourself on any other built model made of `GatedResidualBlock`s.

    Args:
      model: a built Keras model.

    Returns:
      The list of fractions, in block order.
    """
    blocks = gated_blocks_of(model)
    total = float(sum(b.counted_flops for b in blocks)) or 1.0
    fractions = [b.counted_flops / total for b in blocks]
    for b, fraction in zip(blocks, fractions):
        b.flops_fraction.assign(fraction)
    return fractions


def gated_resnet(depth=20, num_classes=10, input_shape=(32, 32, 3), base_filters=16,
                 mode="gather", flops_weight=0.1, hidden_units=10, projection_dim=10,
                 gate_bias=2.0, weight_decay=0.0, open_steps=0, decision="threshold", name=None):
    """`cifar_resnet` whose identity-shaped blocks are `GatedResidualBlock`s (SLU).

    Every gated block gets the same `RecurrentGate` (named `skip_gate`, owned by
    the first gated block) and the LSTM state is threaded explicitly: each gated
    block returns `[y, h, c]` (`return_state=True`) and the next one is called
    with `state=[h, c]`; the state goes around the blocks that change shape (the
    first block of stages 2 and 3), which always run, as in SkipNet. After
    the model is built each gated block's `flops_fraction` is set to
    FLOPs_k / Σ_j FLOPs_j over the gated blocks, so the added losses sum to
    α·C(W, G) with C the executed fraction of gateable FLOPs (Eq. (1)).

    Args:
      depth, num_classes, input_shape, base_filters, weight_decay, name: as in `cifar_resnet`.
      mode: "gather" or "mask" (see `GatedResidualBlock`).
      flops_weight: α of Eq. (1).
      hidden_units: LSTM size of the shared gate.
      projection_dim: per-block projection size.
      gate_bias: initial bias of the gate output (positive: gates start open).
      open_steps: training steps during which every gate is forced open and not
        trained (SkipNet's recipe: train the ResNet first, then the gates; see
        `GatedResidualBlock`). Combine with `keras_efficient.training.skip_budget`
        to end at a target skip ratio.
      decision: "threshold" or "rank" (per-sample routing in training; see
        `GatedResidualBlock`).

    Returns:
      The functional `keras.Model`.
    """
    check_float("flops_weight", flops_weight, low=0.0)
    check_int("hidden_units", hidden_units, low=1)
    check_int("open_steps", open_steps, low=0)
    gate = RecurrentGate(hidden_units, bias_initializer_value=gate_bias, name="skip_gate")

    def wrap(block, index, is_identity):
        if not is_identity:
            return block
        # The first block constructed with `gate` owns it; the others share it.
        return GatedResidualBlock(block, gate=gate, projection_dim=projection_dim, mode=mode,
                                  flops_weight=flops_weight, open_steps=open_steps,
                                  decision=decision, return_state=True, name="gated_" + block.name)

    model = cifar_resnet(depth=depth, num_classes=num_classes, input_shape=input_shape,
                         base_filters=base_filters, block_wrapper=wrap, weight_decay=weight_decay,
                         name=name or "gated_resnet{}".format(depth))
    set_gate_flops_fractions(model)
    return model


def stochastic_depth_resnet(depth=20, num_classes=10, input_shape=(32, 32, 3), base_filters=16,
                            final_survival=0.5, weight_decay=0.0, seed=None, name=None):
    """`cifar_resnet` with stochastic depth (Huang et al., 2016) on identity-shaped blocks.

    Linear decay rule: block l of L (counting every block from 1) survives with
    p_l = 1 − (l / L)·(1 − p_L), p_L = `final_survival`. The first block of stages 2
    and 3 (shape-changing) always runs.

    Args:
      depth, num_classes, input_shape, base_filters, weight_decay, name: as in `cifar_resnet`.
      final_survival: p_L in (0, 1].
      seed: optional base seed of the per-batch draws.

    Returns:
      The functional `keras.Model`.
    """
    final_survival = check_float("final_survival", final_survival, low=0.0, high=1.0,
                                 low_inclusive=False)
    n_blocks = 3 * ((depth - 2) // 6)

    def wrap(block, index, is_identity):
        if not is_identity:
            return block
        survival = 1.0 - (index + 1) / float(n_blocks) * (1.0 - final_survival)
        return StochasticDepth(block, survival_probability=survival,
                               seed=None if seed is None else seed + index,
                               name="sd_" + block.name)

    return cifar_resnet(depth=depth, num_classes=num_classes, input_shape=input_shape,
                        base_filters=base_filters, block_wrapper=wrap, weight_decay=weight_decay,
                        name=name or "sd_resnet{}".format(depth))


def expected_sd_survival(model):
    """Mean survival probability of a stochastic-depth model's wrapped blocks."""
    probs = [layer.survival_probability for layer in model.layers
             if isinstance(layer, StochasticDepth)]
    return sum(probs) / len(probs) if probs else 1.0

