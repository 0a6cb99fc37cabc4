"""CIFAR-style ResNet-(6n+2) (He et al., 2016), with a hook for gated or stochastic blocks."""

from keras_efficient.backend import keras
from keras_efficient.layers.residual_block import ResidualBlock
from keras_efficient.utils.validation import check_float, check_int, invalid_argument

__all__ = ["cifar_resnet"]


def cifar_resnet(depth=20, num_classes=10, input_shape=(32, 32, 3), base_filters=16,
                 block_wrapper=None, weight_decay=0.0, bn_momentum=0.9, name=None):
    """Builds a functional CIFAR ResNet of `depth` = 6n + 2 layers.

    Stem: 3×3 conv (`stem_conv`) → BN (`stem_bn`) → ReLU (`stem_relu`). Then three
    stages of n `ResidualBlock`s with base_filters × (1, 2, 4) channels, named
    `stage{s}_block{b}` (s = 1..3, b = 0..n−1); the first block of stages 2 and 3
    has stride 2. Head: global average pooling (`pool`) → Dense logits (`logits`,
    no softmax). ResNet-20: n = 3, ResNet-74: n = 12, ResNet-110: n = 18.

    Args:
      depth: 6n + 2 with n >= 1.
      num_classes: number of logits.
      input_shape: image shape without the batch dimension.
      base_filters: channels of the first stage.
      block_wrapper: optional `fn(block, index, is_identity) -> layer`, called for
        every block in order (index counts from 0 over the whole network);
        `is_identity` tells whether the block keeps its input shape. The returned
        layer replaces the block (gates, stochastic depth); return `block` to keep it.
        A returned layer with `return_state=True` (a `GatedResidualBlock`) carries a
        recurrent state: it is called as `layer(x, state=state)` with the state the
        previous such layer returned (without `state` for the first one), returns
        `[x, *state]`, and the state goes around the blocks in between.
      weight_decay: L2 factor on the convolution kernels.
      bn_momentum: BatchNormalization momentum (see `ResidualBlock`).
      name: model name (default `resnet{depth}`).

    Returns:
      A `keras.Model` mapping images to logits.
    """
    depth = check_int("depth", depth, low=8)
    if (depth - 2) % 6:
        raise invalid_argument("depth", "6n + 2 (8, 14, 20, 32, 44, 56, 74, 110, ...)", depth)
    num_classes = check_int("num_classes", num_classes, low=1)
    base_filters = check_int("base_filters", base_filters, low=1)
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    bn_momentum = check_float("bn_momentum", bn_momentum, low=0.0, high=1.0, high_inclusive=False)
    if block_wrapper is not None and not callable(block_wrapper):
        raise invalid_argument("block_wrapper", "a callable or None", block_wrapper, TypeError)
    n = (depth - 2) // 6
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(base_filters, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", kernel_regularizer=regularizer,
                            name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    index = 0
    channels = base_filters
    state = None
    for stage in range(3):
        filters = base_filters * 2 ** stage
        for b in range(n):
            strides = 2 if stage > 0 and b == 0 else 1
            block = ResidualBlock(filters, strides=strides, weight_decay=weight_decay,
                                  bn_momentum=bn_momentum, name="stage{}_block{}".format(stage + 1, b))
            is_identity = strides == 1 and channels == filters
            if block_wrapper is not None:
                block = block_wrapper(block, index, is_identity)
            if getattr(block, "return_state", False):
                outputs = block(x) if state is None else block(x, state=state)
                x, state = outputs[0], list(outputs[1:])
            else:
                x = block(x)
            channels = filters
            index += 1
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "resnet{}".format(depth))
