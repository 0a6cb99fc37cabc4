"""encoder_flops: MACs of dense and pruned Conformer encoders against a hand closed form."""

import math

import numpy as np
import pytest

from keras_efficient.models import ConformerEncoder
from keras_efficient.pruning import prune
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.training.flops import encoder_flops


def _closed_form(frames, features, filters, d, ffn, kernel, vocab, heads, blocks):
    """Per-utterance MACs written out by hand (conventions of `encoder_flops`).

    `blocks` is a list of dicts with ffn1, ffn2, conv (units) and q, v (per-head units).
    """
    padded = 4 * math.ceil(frames / 4)
    t1, f1 = padded // 2, math.ceil(features / 2)
    t, f2 = padded // 4, math.ceil(f1 / 2)
    front = t1 * f1 * 9 * 1 * filters + t * f2 * 9 * filters * filters + t * (f2 * filters) * d
    total_blocks = 0
    for b in blocks:
        macs = t * 2 * d * b["ffn1"] + t * 2 * d * b["ffn2"]          # two FFNs
        macs += t * d * (2 * sum(b["q"]) + sum(b["v"])) + t * sum(b["v"]) * d  # Q, K, V, O
        for q, v in zip(b["q"], b["v"]):
            if q:
                macs += t * t * q + t * t + t * t * v                # scores, softmax, context
            elif v:
                macs += t * v                                         # uniform: time mean
        c = b["conv"]
        if c:
            macs += t * d * 2 * c + t * kernel * c + t * c + t * c * d  # GLU in, dw, BN, out
        total_blocks += macs
    head = t * d * (vocab + 1)
    return front, total_blocks, head


def test_dense_encoder_matches_the_closed_form():
    model = ConformerEncoder((18, 7), vocab_size=5, num_blocks=2, model_dim=8, num_heads=2,
                             ffn_dim=12, kernel_size=3, subsampling_filters=6)
    full = dict(ffn1=12, ffn2=12, conv=8, q=[4, 4], v=[4, 4])
    front, blocks, head = _closed_form(18, 7, 6, 8, 12, 3, 5, 2, [full, full])
    counts = encoder_flops(model)
    assert (counts["front_end"], counts["blocks"], counts["head"]) == (front, blocks, head)
    assert counts["macs"] == front + blocks + head and counts["flops"] == 2 * counts["macs"]
    assert counts["frames"] == 5
    # Another utterance length: the front end and T' follow it, T'^2 for the attention.
    other = encoder_flops(model, frames=40)
    assert (other["front_end"], other["blocks"], other["head"]) == _closed_form(
        40, 7, 6, 8, 12, 3, 5, 2, [full, full])


def test_adaptive_encoder_costs_the_same_as_the_dense_one_until_pruned():
    kwargs = dict(vocab_size=4, num_blocks=1, model_dim=8, num_heads=2, ffn_dim=16,
                  kernel_size=3)
    dense = ConformerEncoder((16, 8), **kwargs)
    adaptive = ConformerEncoder((16, 8), adaptive=True,
                                schedule=RetentionTargetSchedule(1.0, -1.0, 10), **kwargs)
    assert encoder_flops(adaptive) == encoder_flops(dense)


def test_pruned_encoder_matches_the_closed_form_of_its_surviving_units():
    model = ConformerEncoder((16, 8), vocab_size=4, num_blocks=2, model_dim=8, num_heads=2,
                             ffn_dim=16, kernel_size=3, dropout_rate=0.0, adaptive=True,
                             schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    # Keep patterns: block 0 partly pruned with a query-less head; block 1 loses FFN1, LConv
    # and a whole head.
    keep = {
        0: dict(ffn1=np.arange(16) < 5, ffn2=np.arange(16) < 9, conv=np.arange(8) < 3,
                q=np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool),
                v=np.array([[1, 0, 1, 1], [0, 1, 0, 0]], bool)),
        1: dict(ffn1=np.zeros(16, bool), ffn2=np.arange(16) < 16, conv=np.zeros(8, bool),
                q=np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool),
                v=np.array([[1, 1, 0, 1], [0, 0, 0, 0]], bool)),
    }
    names = {"ffn1": "ffn1", "ffn2": "ffn2", "conv": "conv", "q": "attention_query",
             "v": "attention_value"}
    expected_blocks = []
    for b, pattern in keep.items():
        sites = model.get_layer("conformer_block_{}".format(b)).adaptive_dropout_sites
        for key, site in names.items():
            adl = sites[site]
            thr, scale = adl.effective_threshold, np.sqrt(adl.gamma / adl.alpha)
            beta = np.where(pattern[key].reshape(adl.retention_raw.shape), thr + 1.0, thr - 1.0)
            adl.retention_raw.assign(((beta - float(adl.current_target)) / scale)
                                     .astype(np.float32))
        expected_blocks.append(dict(ffn1=int(pattern["ffn1"].sum()),
                                    ffn2=int(pattern["ffn2"].sum()),
                                    conv=int(pattern["conv"].sum()),
                                    q=list(pattern["q"].sum(axis=1)),
                                    v=list(pattern["v"].sum(axis=1))))
    pruned = prune(model)
    front, blocks, head = _closed_form(16, 8, 8, 8, 16, 3, 4, 2, expected_blocks)
    counts = encoder_flops(pruned)
    assert (counts["front_end"], counts["blocks"], counts["head"]) == (front, blocks, head)
    assert counts["macs"] < encoder_flops(model)["macs"]


@pytest.mark.parametrize("frames", [0, -3])
def test_bad_frames(frames):
    model = ConformerEncoder((16, 8), vocab_size=4, num_blocks=1, model_dim=8, num_heads=2,
                             ffn_dim=8, kernel_size=3)
    with pytest.raises(ValueError, match="`frames`"):
        encoder_flops(model, frames=frames)
