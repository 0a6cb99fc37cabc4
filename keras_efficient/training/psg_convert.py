"""Swap a model's Dense / Conv2D layers for their PSG versions (E²-Train's algorithm level)."""

from keras_efficient.backend import keras, register_serializable
from keras_efficient.layers.residual_block import ResidualBlock
from keras_efficient.training.psg import validate_psg_config
from keras_efficient.training.psg_layers import PSGConv2D, PSGDense

__all__ = ["PSGResidualBlock", "convert_to_psg", "psg_layers_of"]


@register_serializable
class PSGResidualBlock(ResidualBlock):
    """`ResidualBlock` whose convolutions are `PSGConv2D` (shortcut included).

    Args:
      filters, strides, weight_decay: as in `ResidualBlock`.
      input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta: as in `PSGConv2D`.

    Call arguments:
      inputs: `[batch, height, width, channels]`; training: BN mode and PSG metrics.

    Input shape: `[batch, height, width, channels]`.
    Output shape: `[batch, height / strides, width / strides, filters]`.
    """

    def __init__(self, filters, strides=1, weight_decay=0.0, input_bits=8, weight_bits=8,
                 grad_bits=16, input_msb_bits=4, grad_msb_bits=10, beta=0.05, **kwargs):
        super().__init__(filters, strides=strides, weight_decay=weight_decay, **kwargs)
        self.psg_config = validate_psg_config(input_bits, weight_bits, grad_bits,
                                              input_msb_bits, grad_msb_bits, beta)

    def _conv(self, kernel_size, strides, name):
        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        return PSGConv2D(self.filters, kernel_size, strides=strides, padding="same",
                         use_bias=False, kernel_initializer="he_normal",
                         kernel_regularizer=regularizer, name=name, **self.psg_config)

    def get_config(self):
        config = super().get_config()
        config.update(self.psg_config)
        return config


def _is_fraction(weight):
    return "predicted_fraction" in weight.name


def convert_to_psg(model, input_bits=8, weight_bits=8, grad_bits=16, input_msb_bits=4,
                   grad_msb_bits=10, beta=0.05, include=None):
    """Returns a copy of a functional or Sequential `model` trained with PSG.

    `keras.layers.Dense` → `PSGDense`, `keras.layers.Conv2D` → `PSGConv2D` (only
    the exact classes; stride/padding kept, dilated or grouped convolutions are
    rejected by `PSGConv2D`), `ResidualBlock` → `PSGResidualBlock`, also inside a
    `GatedResidualBlock` or `StochasticDepth`; every other layer is rebuilt from
    its config. Weights are copied; the model is not compiled.

    Args:
      model: a functional or Sequential Keras model.
      input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits, beta: the PSG
        configuration, see `PSGDense`.
      include: optional callable `layer -> bool`; only layers for which it returns
        True are converted (for example to keep the classifier in float32).

    Returns:
      The converted `keras.Model`.
    """
    # Imported here: the gated layers import this package's FLOP counter.
    from keras_efficient.layers.gated_residual import GatedResidualBlock
    from keras_efficient.layers.stochastic_depth import StochasticDepth

    psg = validate_psg_config(input_bits, weight_bits, grad_bits, input_msb_bits, grad_msb_bits,
                              beta)

    def clone(layer):
        config = layer.get_config()
        wanted = include is None or include(layer)
        if wanted and type(layer) is keras.layers.Dense:
            return PSGDense(**config, **psg)
        if wanted and type(layer) is keras.layers.Conv2D:
            return PSGConv2D(**config, **psg)
        if wanted and type(layer) is ResidualBlock:
            return PSGResidualBlock(**config, **psg)
        if wanted and isinstance(layer, (GatedResidualBlock, StochasticDepth)) and \
                type(layer.block) is ResidualBlock:
            config["block"] = keras.layers.serialize(
                PSGResidualBlock(**layer.block.get_config(), **psg))
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    for old_layer in model.layers:
        new_layer = new.get_layer(old_layer.name)
        targets = [w for w in new_layer.weights if not _is_fraction(w)]
        sources = old_layer.weights
        if len(targets) != len(sources):
            raise ValueError("Layer `{}`: {} weights in the original, {} after conversion".format(
                old_layer.name, len(sources), len(targets)))
        for t, s in zip(targets, sources):
            t.assign(s)
    return new


def psg_layers_of(model):
    """All `PSGDense` / `PSGConv2D` layers in `model`, nested ones included."""
    seen, out = set(), []
    for module in model.submodules:
        if isinstance(module, (PSGDense, PSGConv2D)) and id(module) not in seen:
            seen.add(id(module))
            out.append(module)
    return out

