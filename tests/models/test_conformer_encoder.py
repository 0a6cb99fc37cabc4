import re

import numpy as np
import pytest

from keras_efficient.backend import keras
from keras_efficient.data import make_ctc_sequences
from keras_efficient.layers import ConformerBlock
from keras_efficient.models import ConformerEncoder, CTCLoss, ctc_greedy_decode, token_error_rate


def test_ctc_loss_matches_exhaustive_path_sum(ctc_brute_force):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 3)).astype(np.float32)
    labels = np.array([[1, 2, 0], [2, 2, 0], [1, 0, 0]], np.int32)
    loss = CTCLoss(reduction="none")(labels, logits).numpy()
    expected = [ctc_brute_force(logits[i], [t for t in labels[i] if t]) for i in range(3)]
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_greedy_decode_and_token_error_rate():
    onehot = np.eye(4)[[1, 1, 0, 2, 2, 0, 2, 3]][None] * 5.0
    assert ctc_greedy_decode(onehot) == [[1, 2, 2, 3]]
    # Reference [1, 2, 3]: one insertion -> 1 error over 3 tokens.
    assert token_error_rate(np.array([[1, 2, 3, 0]]), onehot) == pytest.approx(1 / 3)


def test_encoder_structure_and_shapes():
    model = ConformerEncoder((32, 8), vocab_size=5, num_blocks=2, model_dim=16, num_heads=2,
                             ffn_dim=24, kernel_size=3)
    assert model.output_shape == (None, 8, 6)
    blocks = [layer for layer in model.layers if isinstance(layer, ConformerBlock)]
    assert [b.name for b in blocks] == ["conformer_block_0", "conformer_block_1"]
    assert len(model.losses) == 10  # five ADL sites per block


def test_encoder_learns_the_synthetic_ctc_task():
    train = make_ctc_sequences(256, vocab_size=5, max_label_length=4, feature_dim=8,
                               num_frames=32, seed=0)
    keras.utils.set_random_seed(0)
    model = ConformerEncoder((32, 8), vocab_size=5, num_blocks=1, model_dim=32, num_heads=2,
                             ffn_dim=64, kernel_size=5, dropout_rate=0.0, adaptive=False)
    model.compile(keras.optimizers.Adam(3e-3), CTCLoss())
    before = model.evaluate(train["features"], train["labels"], verbose=0)
    model.fit(train["features"], train["labels"], batch_size=32, epochs=4, verbose=0)
    after = model.evaluate(train["features"], train["labels"], verbose=0)
    assert after < 0.5 * before


@pytest.mark.parametrize("kwargs,name", [
    (dict(input_shape=(32,)), "input_shape"),
    (dict(input_shape=(2, 8)), "input_shape[0]"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(num_blocks=-1), "num_blocks"),
    (dict(dropout_rate=1.5), "dropout_rate"),
])
def test_invalid_encoder_arguments(kwargs, name):
    args = dict(input_shape=(32, 8), vocab_size=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match="`{}`".format(re.escape(name))):
        ConformerEncoder(**args)
