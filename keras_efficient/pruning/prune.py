"""Physical removal of the units that adaptive dropout switched off."""

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.pruning.plan import model_plans, site_roles
from keras_efficient.pruning.pruned_layers import (
    ConstantOutput,
    PrunedConformerBlock,
)
from keras_efficient.utils.graph import FunctionalGraph

__all__ = ["prune"]


def prune(model, name=None):
    """Returns a new model with the pruned units physically removed and no ADLs.

    A unit is pruned when its retention logit beta is below the layer's
    threshold (the hard inference mask). Supported sites:

    - `ConformerBlock` layers with `adaptive=True` become `PrunedConformerBlock`s:
      FFN W1 columns, b1 and W2 rows; per-head W_Q/b_Q/W_K/b_K rows and
      W_V/b_V rows with W_O columns (heads keep different query and value sizes,
      see `PrunedSelfAttention`); LConv W_I/W_G rows, depthwise kernels,
      BatchNorm entries and W_O columns, the constant output of a pruned channel
      folded into the LConv output bias. A module with no surviving unit becomes
      a constant (`ConstantOutput`).
    - A top-level `AdaptiveDropout` between two Dense or Conv2D layers
      (Dense/Conv2D -> [Dropout or Activation]* -> AdaptiveDropout -> [Dropout or
      SubsampledTimeMask]* -> [Reshape flattening the last two axes] ->
      Dense/Conv2D): the first layer keeps only the surviving output units
      (Dense columns, Conv2D filters), the second the matching kernel rows (Dense
      rows, f·C + c rows behind a flattening Reshape, Conv2D input channels). With
      no survivor between two Dense layers the first is removed and the second
      becomes a `ConstantOutput` (its activation applied to its bias); where a
      Conv2D or a Reshape is involved, one unit is kept with zero weights in the
      second layer (exact; see `plan.SitePlan`). A layer may sit between two sites
      (rows pruned by one, columns by the other).
    - A nested functional or Sequential model holding such sites (used once) is
      replaced by its own `prune` result, recursively.

    Every other layer is rebuilt from its config with its weights. The result's
    inference output equals the original's with `inference="hard"` (up to float
    rounding), and `count_params()` equals `count_parameters(model)["effective"]`.

    Args:
      model: a functional or Sequential `keras.Model`.
      name: name of the new model (default "<name>_pruned").

    Returns:
      A functional `keras.Model` with the same inputs and outputs.
    """
    blocks, sites, nested = model_plans(model)
    roles = site_roles(sites)
    reshapes = {plan.flatten: plan.flatten_shape() for plan in sites.values() if plan.flatten}
    new_layers = {}

    def replacement(layer):
        key = id(layer)
        if key in new_layers:
            return new_layers[key][0]
        if layer in blocks:
            plan = blocks[layer]
            new = PrunedConformerBlock(
                layer.model_dim, layer.num_heads, layer.model_dim // layer.num_heads,
                len(plan.ffn1), len(plan.ffn2), [len(q) for q in plan.query],
                [len(v) for v in plan.value], len(plan.conv), layer.kernel_size,
                layer.dropout_rate, name=layer.name)
            loader = lambda n, o=layer, p=plan: _load_block(n, o, p)  # noqa: E731
        elif layer in nested:
            new = prune(layer, name=layer.name)
            loader = lambda n: None  # noqa: E731  (prune() loaded its weights)
        elif layer in roles:
            rows, cols, zero_rows = roles[layer]
            if cols is not None and len(cols) == 0:
                new_layers[key] = (None, None)  # no surviving output: the layer goes
                return None
            config = layer.get_config()
            units_key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
            units = config[units_key] if cols is None else int(len(cols))
            if rows is not None and len(rows) == 0:
                new = ConstantOutput(units, activation=config["activation"], name=layer.name)
            else:
                config[units_key] = units
                new = layer.__class__.from_config(config)
            loader = lambda n, o=layer, r=rows, c=cols, z=zero_rows: _load_units(  # noqa: E731
                n, o, r, c, z)
        elif layer in reshapes:
            config = layer.get_config()
            config["target_shape"] = reshapes[layer]
            new = layer.__class__.from_config(config)
            loader = lambda n: None  # noqa: E731
        else:
            new = layer.__class__.from_config(layer.get_config())
            loader = lambda n, o=layer: n.set_weights(o.get_weights())  # noqa: E731
        new_layers[key] = (new, loader)
        return new

    graph = FunctionalGraph(model)
    new_inputs = [keras.Input(shape=x.shape[1:], batch_size=x.shape[0], dtype=x.dtype,
                              name=ref.layer) for x, ref in zip(model.inputs, graph.input_refs)]
    # An AdaptiveDropout (and a producer with no surviving unit) is replaced by None:
    # the replay passes its input through.
    tensors = graph.replay(
        dict(zip(graph.input_refs, new_inputs)),
        lambda layer: None if isinstance(layer, AdaptiveDropout) else replacement(layer))
    outputs = [tensors[ref] for ref in graph.output_refs]
    pruned = keras.Model(
        tf.nest.pack_sequence_as(model.input, new_inputs)
        if isinstance(model.input, (list, tuple, dict)) else new_inputs[0],
        tf.nest.pack_sequence_as(model.output, outputs),
        name=name or model.name + "_pruned")
    for new, loader in new_layers.values():
        if new is not None:
            loader(new)
    return pruned


def _load_units(new, old, rows, cols, zero_rows):
    """Loads a Dense or Conv2D keeping kernel input `rows` and output `cols` (None = all);
    `zero_rows`: the kept rows belong to a dead site and get zero weights."""
    kernel = old.kernel.numpy()
    n_out = kernel.shape[-1]
    bias = old.bias.numpy() if old.use_bias else np.zeros(n_out, np.float32)
    if cols is not None:
        kernel, bias = kernel[..., cols], bias[cols]
    if isinstance(new, ConstantOutput):
        new.bias.assign(bias)
        return
    if rows is not None:
        kernel = np.take(kernel, rows, axis=-2)
        if zero_rows:
            kernel = np.zeros_like(kernel)
    new.kernel.assign(kernel)
    if old.use_bias:
        new.bias.assign(bias)


def _load_ffn(new, old, keep):
    if isinstance(new, ConstantOutput):
        new.bias.assign(old.dense2.bias.numpy())
        return
    new.norm.set_weights(old.norm.get_weights())
    new.dense1.kernel.assign(old.dense1.kernel.numpy()[:, keep])
    new.dense1.bias.assign(old.dense1.bias.numpy()[keep])
    new.dense2.kernel.assign(old.dense2.kernel.numpy()[keep, :])
    new.dense2.bias.assign(old.dense2.bias.numpy())


def _load_attention(new, old, query, value):
    if isinstance(new, ConstantOutput):
        new.bias.assign(old.output_dense.bias.numpy())
        return
    new.norm.set_weights(old.norm.get_weights())
    heads = range(old.num_heads)

    def take(dense, index):
        kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
        return (np.concatenate([kernel[:, h, index[h]] for h in heads], axis=1),
                np.concatenate([bias[h, index[h]] for h in heads], axis=0))

    if sum(len(q) for q in query):
        for kernel_var, bias_var, dense in ((new.query_kernel, new.query_bias, old.query),
                                            (new.key_kernel, new.key_bias, old.key)):
            kernel, bias = take(dense, query)
            kernel_var.assign(kernel)
            bias_var.assign(bias)
    kernel, bias = take(old.value, value)
    new.value_kernel.assign(kernel)
    new.value_bias.assign(bias)
    out = old.output_dense.kernel.numpy()
    new.output_kernel.assign(np.concatenate([out[h, value[h], :] for h in heads], axis=0))
    new.output_bias.assign(old.output_dense.bias.numpy())


def _load_conv(new, old, keep):
    channels = old.channels
    pruned = np.setdiff1d(np.arange(channels), keep)
    bn = old.batch_norm
    gamma, beta = bn.gamma.numpy().astype(np.float64), bn.beta.numpy().astype(np.float64)
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    # A pruned channel is constant zero before the BatchNorm: its contribution to
    # the output is swish(BN(0)) W_O[d], a constant folded into the output bias.
    at_zero = beta - mean * gamma / np.sqrt(var + bn.epsilon)
    swish = at_zero / (1.0 + np.exp(-at_zero))
    w_out = old.pointwise_out.kernel.numpy().astype(np.float64)
    bias = old.pointwise_out.bias.numpy().astype(np.float64) + swish[pruned] @ w_out[pruned, :]
    if isinstance(new, ConstantOutput):
        new.bias.assign(bias.astype(np.float32))
        return
    new.norm.set_weights(old.norm.get_weights())
    columns = np.concatenate([keep, channels + keep])
    new.pointwise_in.kernel.assign(old.pointwise_in.kernel.numpy()[:, columns])
    new.pointwise_in.bias.assign(old.pointwise_in.bias.numpy()[columns])
    new.depthwise.depthwise_kernel.assign(old.depthwise.depthwise_kernel.numpy()[:, keep, :])
    new.batch_norm.set_weights([w[keep] for w in bn.get_weights()])
    new.pointwise_out.kernel.assign(old.pointwise_out.kernel.numpy()[keep, :])
    new.pointwise_out.bias.assign(bias.astype(np.float32))


def _load_block(new, old, plan):
    _load_ffn(new.ffn1, old.ffn1, plan.ffn1)
    _load_attention(new.attention, old.attention, plan.query, plan.value)
    _load_conv(new.conv, old.conv, plan.conv)
    _load_ffn(new.ffn2, old.ffn2, plan.ffn2)
    new.final_norm.set_weights(old.final_norm.get_weights())
