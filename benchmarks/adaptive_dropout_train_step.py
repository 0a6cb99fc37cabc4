"""Training-step cost of AdaptiveDropout against keras Dropout.

Two comparisons, side by side in one run:

1. layer: one `fit` step of Input -> Dense -> {AdaptiveDropout | keras Dropout} -> Dense;
2. block: one `fit` step of a `ConformerBlock` with its five ADL sites against the
   same block with `adaptive=False` plus a keras Dropout at each of the five sites
   (`_DropoutSitesBlock`), so both sample the same number of masks.

The block's size is a preset: `small` (D = 144, 4 heads, FFN 576, kernel 15, the
Conformer-S width; batch 16 × 64 frames) or `conformer_l` (the ConformerL block of the
paper's Table 1: D = 512, 8 heads, FFN 2048; kernel 31, since the depthwise convolution
takes odd sizes and Conformer-L's is 32; batch 8 × 256 frames, about 10 s of speech after
4× subsampling at 10 ms hops).

Prints the median step time and the ratio ADL / Dropout and writes a JSON.
Usage: python benchmarks/adaptive_dropout_train_step.py [--out FILE] [--repeats N]
                                                         [--preset small|conformer_l]
"""

import argparse
import json

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.layers import AdaptiveDropout, ConformerBlock
from keras_efficient.layers.conformer_ffn import ConformerFeedForward

from _timing import interleaved_medians, machine_info  # beside this script


PRESETS = {
    "small": (dict(model_dim=144, num_heads=4, ffn_dim=576, kernel_size=15), (16, 64)),
    "conformer_l": (dict(model_dim=512, num_heads=8, ffn_dim=2048, kernel_size=31), (8, 256)),
}


class _DropoutFFN(ConformerFeedForward):
    def call(self, inputs, training=None):
        h = self.dense1(self.norm(inputs))
        h = self._site(h, training=training)
        return self.dropout(self.dense2(h), training=training)


def _dropout_sites_block(model_dim, num_heads, ffn_dim, kernel_size, rate):
    """A dense ConformerBlock with keras Dropout at the five ADL sites."""
    block = ConformerBlock(model_dim, num_heads, ffn_dim, kernel_size, rate, adaptive=False)
    for module in (block.ffn1, block.ffn2):
        module._site = keras.layers.Dropout(rate)
        module.call = _DropoutFFN.call.__get__(module)
    att = block.attention
    att._q_site, att._v_site = keras.layers.Dropout(rate), keras.layers.Dropout(rate)

    def att_call(inputs, training=None, mask=None):
        x = att.norm(inputs)
        q = att._q_site(att.query(x), training=training)
        k = att.key(x)
        v = att._v_site(att.value(x), training=training)
        scores = tf.einsum("bthk,bshk->bhts", q, k) * (1.0 / np.sqrt(att.head_dim))
        key_mask = None if mask is None else mask[:, None, None, :]
        weights = att.softmax(scores, mask=key_mask)
        return att.dropout(att.output_dense(tf.einsum("bhts,bshk->bthk", weights, v)),
                           training=training)
    att.call = att_call
    conv = block.conv
    conv._site = keras.layers.Dropout(rate)

    def conv_call(inputs, training=None, mask=None):
        h = conv.pointwise_in(conv.norm(inputs))
        a, g = tf.split(h, 2, axis=-1)
        z = conv._site(a * tf.sigmoid(g), training=training)
        if mask is not None:
            z *= tf.cast(mask, z.dtype)[..., None]
        z = tf.nn.silu(conv.batch_norm(conv.depthwise(z), training=training, mask=mask))
        return conv.dropout(conv.pointwise_out(z), training=training)
    conv.call = conv_call
    return block


def _step_fn(model, x, y):
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    step = model.make_train_function()
    data = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    for _ in range(3):
        step(data)
    return lambda: float(step(data)["loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="adaptive_dropout_train_step.json")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small",
                        help="ConformerBlock size and input shape (see the module docstring)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = machine_info()

    x = rng.standard_normal((256, 512)).astype(np.float32)
    y = rng.standard_normal((256, 64)).astype(np.float32)
    fns = {}
    for label, make in (("adaptive_dropout", lambda: AdaptiveDropout(seed=0)),
                        ("keras_dropout", lambda: keras.layers.Dropout(0.1))):
        inp = keras.Input((512,))
        h = keras.layers.Dense(1024, activation="relu")(inp)
        out = keras.layers.Dense(64)(make()(h))
        fns[label] = _step_fn(keras.Model(inp, out), x, y)
    layer_times = interleaved_medians(fns, args.repeats)
    results["layer"] = dict(layer_times, ratio=layer_times["adaptive_dropout"] /
                            layer_times["keras_dropout"])

    dims, (batch, frames) = PRESETS[args.preset]
    results["preset"] = dict(dims, batch=batch, frames=frames)
    xb = rng.standard_normal((batch, frames, dims["model_dim"])).astype(np.float32)
    fns = {}
    for label, make in (
            ("adaptive_dropout", lambda: ConformerBlock(dropout_rate=0.1, seed=0, **dims)),
            ("keras_dropout", lambda: _dropout_sites_block(rate=0.1, **dims)),
            ("no_site_dropout", lambda: ConformerBlock(dropout_rate=0.1, adaptive=False,
                                                       **dims))):
        inp = keras.Input(xb.shape[1:])
        fns[label] = _step_fn(keras.Model(inp, make()(inp)), xb, xb)
    block_times = interleaved_medians(fns, args.repeats)
    results["conformer_block"] = dict(block_times, ratio=block_times["adaptive_dropout"] /
                                      block_times["keras_dropout"])
    for name in ("layer", "conformer_block"):
        r = results[name]
        print("{:16s} ADL {:.2f} ms  Dropout {:.2f} ms  ratio {:.3f}".format(
            name, 1e3 * r["adaptive_dropout"], 1e3 * r["keras_dropout"], r["ratio"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
