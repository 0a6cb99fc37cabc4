import re

import numpy as np
import pytest

from keras_efficient.backend import keras, tf
from keras_efficient.data import make_ctc_sequences
from keras_efficient.layers import ConformerBlock
from keras_efficient.pruning import prune
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.models import (
    ConformerEncoder,
    CTCLoss,
    conformer_parameters,
    ctc_greedy_decode,
    ctc_labels_from_zero_based,
    size_conformer,
    token_error_rate,
)


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
                             ffn_dim=24, kernel_size=3, adaptive=True,
                             schedule=RetentionTargetSchedule(1.0, -1.0, 10))
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


BAD_LABELS = [
    (np.array([[1, 0, 2], [3, 0, 0]]), "example 0 is \\[1, 0, 2\\], which has a 0 before a later"),
    (np.array([[1, 2, 3], [3, -1, -1]]), "example 1 is \\[3, -1, -1\\], which has a negative"),
    (np.array([[1, 2, 0], [4, 0, 0]]), "example 1 is \\[4, 0, 0\\], which has a token above V"),
]


@pytest.mark.parametrize("labels,problem", BAD_LABELS)
def test_ctc_loss_and_token_error_rate_reject_labels_outside_the_convention(labels, problem):
    logits = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)  # V = 3
    for who, fn in (("CTCLoss", CTCLoss()), ("token_error_rate", token_error_rate)):
        with pytest.raises(ValueError, match="`{}` received invalid labels: {}".format(who, problem)):
            fn(labels, logits)
        with pytest.raises(ValueError, match="0 as the blank and as the padding value: tokens "
                                             "are 1..V \\(V = 3 here.*ctc_labels_from_zero_based"):
            fn(labels, logits)


@pytest.mark.parametrize("labels,problem", BAD_LABELS)
def test_ctc_loss_asserts_on_graph_labels(labels, problem):
    logits = tf.constant(np.random.default_rng(0).standard_normal((2, 6, 4)), tf.float32)
    loss = tf.function(lambda y, x: CTCLoss()(y, x))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="`CTCLoss` received invalid labels.*0 as the blank"):
        loss(tf.constant(labels), logits)


def test_ctc_label_check_in_fit_and_unchanged_good_labels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 6)).astype(np.float32)
    model = ConformerEncoder((16, 6), vocab_size=3, num_blocks=1, model_dim=8, num_heads=2,
                             ffn_dim=8, kernel_size=3, adaptive=False)
    model.compile(keras.optimizers.Adam(1e-3), CTCLoss())
    with pytest.raises(tf.errors.InvalidArgumentError, match="CTC labels use 0 as the blank"):
        model.fit(x, np.array([[1, 2], [0, 3], [1, 0], [2, 0]]), batch_size=4, verbose=0)
    good = np.array([[1, 2], [3, 0], [1, 1], [2, 0]], np.int32)
    model.fit(x, good, batch_size=4, verbose=0)
    logits = model(x).numpy()
    reference = tf.nn.ctc_loss(good, logits, label_length=[2, 1, 2, 1], logit_length=[4] * 4,
                               logits_time_major=False, blank_index=0).numpy()
    np.testing.assert_allclose(CTCLoss(reduction="none")(good, logits).numpy(), reference,
                               rtol=1e-6)
    graph = tf.function(lambda y, z: CTCLoss(reduction="none")(y, z))
    np.testing.assert_allclose(graph(good, logits).numpy(), reference, rtol=1e-6)
    # Under XLA the assertion is dropped (TensorFlow compiles Assert to a no-op); the check
    # itself compiles, so it never stops a jit-compiled step from building.
    from keras_efficient.models.conformer_encoder import _checked_ctc_labels
    xla = tf.function(lambda y: _checked_ctc_labels(y, tf.constant(logits), "CTCLoss"),
                      jit_compile=True)
    np.testing.assert_array_equal(xla(good).numpy(), good)


def test_ctc_labels_from_zero_based():
    zero_based = np.array([[2, 0, 1], [4, -1, -1], [0, 0, -1]])
    expected = np.array([[3, 1, 2], [5, 0, 0], [1, 1, 0]], np.int32)
    out = ctc_labels_from_zero_based(zero_based)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ctc_labels_from_zero_based([[2, 0, 1], [4], [0, 0]]), expected)
    np.testing.assert_array_equal(
        ctc_labels_from_zero_based(np.where(zero_based < 0, 9, zero_based), padding=9), expected)
    tensor = ctc_labels_from_zero_based(tf.constant(zero_based))
    np.testing.assert_array_equal(tensor.numpy(), expected)
    mapped = tf.data.Dataset.from_tensor_slices(zero_based).batch(3).map(
        ctc_labels_from_zero_based)
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), expected)
    # The library's own labels map back unchanged, and the result passes the CTC check.
    labels = make_ctc_sequences(20, vocab_size=4)["labels"]
    np.testing.assert_array_equal(ctc_labels_from_zero_based(labels - 1), labels)
    CTCLoss()(expected, np.zeros((3, 6, 6), np.float32))


@pytest.mark.parametrize("labels,padding,match", [
    ([[1, -1, 2]], -1, "example 0 is \\[1, -1, 2\\], which has padding=-1 before a token"),
    ([[1, -2, -1]], -1, "which has a negative token"),
    ([[1, 9, 2]], 9, "padding=9 before a token"),
    ([1, 2, 3], -1, "rank 2"),
    ([[0.5, 1.0]], -1, "integer labels"),
    ([[1, 2]], 1.5, "`padding`"),
    ([[1, 2]], None, "`padding`"),
])
def test_ctc_labels_from_zero_based_rejects_bad_input(labels, padding, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ctc_labels_from_zero_based(labels, padding=padding)


def _small_encoder(frames, **kwargs):
    args = dict(vocab_size=4, num_blocks=1, model_dim=8, num_heads=2, ffn_dim=8, kernel_size=3,
                dropout_rate=0.0, adaptive=False)
    args.update(kwargs)
    return ConformerEncoder((frames, 6), **args)


@pytest.mark.parametrize("frames", [29, 30, 31, 33])
def test_frame_count_not_a_multiple_of_4_is_zero_padded(frames):
    rng = np.random.default_rng(frames)
    model = _small_encoder(frames)
    target = -(-frames // 4) * 4
    assert model.get_layer("subsample_pad").output_shape == (None, target, 6, 1)
    assert model.output_shape == (None, target // 4, 5)
    reference = _small_encoder(target)
    reference.set_weights(model.get_weights())
    x = rng.standard_normal((2, frames, 6)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, target - frames), (0, 0)))
    np.testing.assert_allclose(model(x).numpy(), reference(padded).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_variable_length_with_any_frame_count_matches_each_utterance_alone():
    rng = np.random.default_rng(7)
    frames, lengths = 30, [30, 23, 17, 6]
    model = _small_encoder(frames, variable_length=True)
    x = rng.standard_normal((4, frames, 6)).astype(np.float32)
    for i, length in enumerate(lengths):
        x[i, length:] = 0.0
    out = model(x).numpy()
    assert out.shape == (4, 8, 5)
    for i, length in enumerate(lengths):
        real = -(-length // 4)
        alone = _small_encoder(length, variable_length=True)
        alone.set_weights(model.get_weights())
        expected = alone(x[i:i + 1, :length]).numpy()[0]
        assert expected.shape[0] == real
        np.testing.assert_allclose(out[i, :real], expected, rtol=1e-5, atol=1e-5)
        assert (out[i, real:, 0] == 0).all() and (out[i, real:, 1:] <= -1e3).all()
    # The padding layer goes through pruning like any other layer.
    adaptive = _small_encoder(frames, variable_length=True, adaptive=True,
                              adaptive_subsampling=True,
                              schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    for layer in adaptive.layers:
        for adl in getattr(layer, "adaptive_dropout_sites", {}).values():
            adl.retention_raw.assign(rng.choice([-1.0, 1.0], adl.retention_raw.shape) * 0.5)
    pruned = prune(adaptive)
    np.testing.assert_allclose(pruned(x).numpy(), adaptive(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features", [16, 40, 80])
@pytest.mark.parametrize("kwargs", [
    dict(num_blocks=2, model_dim=32, ffn_dim=128, kernel_size=7),
    dict(num_blocks=1, model_dim=24, ffn_dim=60, kernel_size=3, subsampling_filters=8),
])
def test_conformer_parameters_equals_count_params_for_any_feature_size(features, kwargs):
    model = ConformerEncoder((30, features), vocab_size=7, num_heads=4, adaptive=False, **kwargs)
    assert conformer_parameters((30, features), 7, **kwargs) == model.count_params()


@pytest.mark.parametrize("features", [16, 40, 80])
@pytest.mark.parametrize("kind,key,step", [("shallow", "num_blocks", 1),
                                           ("narrow", "model_dim", 4),
                                           ("narrow_ffn", "ffn_dim", 8)])
def test_size_conformer_builds_the_requested_size(features, kind, key, step):
    reference = dict(input_shape=(32, features), vocab_size=10, num_blocks=3, model_dim=32,
                     num_heads=4, ffn_dim=128, kernel_size=7)
    full = ConformerEncoder(adaptive=False, **reference).count_params()
    smallest = conformer_parameters(**dict(reference, **{key: step},
                                           **({"ffn_dim": 16} if kind == "narrow" else {})))
    target = int(smallest + 0.37 * (full - smallest))
    sized = size_conformer(target, kind, **reference)
    assert sized["adaptive"] is False
    assert {k: v for k, v in sized.items() if k not in (key, "ffn_dim", "adaptive")} == {
        k: v for k, v in reference.items() if k not in (key, "ffn_dim")}
    count = ConformerEncoder(**sized).count_params()
    assert count == conformer_parameters(**sized)
    # Documented tolerance: at most half the count step to the neighbouring sizes.
    value = sized[key]
    neighbours = [dict(sized, **{key: v}) for v in (value - step, value + step)]
    if kind == "narrow":
        for n in neighbours:
            n["ffn_dim"] = 4 * n["model_dim"]
    gaps = [abs(conformer_parameters(**n) - count) for n in neighbours if n[key] >= step]
    assert abs(count - target) <= max(gaps) / 2
    if kind != "shallow":  # fine-grained kinds land within 5% of the request
        assert abs(count - target) <= 0.05 * target


@pytest.mark.parametrize("args,name", [
    (dict(target_parameters=0), "target_parameters"),
    (dict(target_parameters=10), "target_parameters"),          # below the smallest size
    (dict(target_parameters=10 ** 9), "target_parameters"),     # above the reference
    (dict(kind="wide"), "kind"),
    (dict(adaptive=True), "adaptive"),
])
def test_size_conformer_invalid_arguments(args, name):
    kwargs = dict(target_parameters=50_000, kind="narrow", input_shape=(32, 16), vocab_size=5)
    kwargs.update(args)
    with pytest.raises(ValueError, match="`?{}".format(name)):
        conformer_parameters(**size_conformer(**kwargs))


def test_size_conformer_not_strict_returns_the_nearest_end():
    reference = dict(input_shape=(32, 16), vocab_size=5, num_blocks=2)
    assert size_conformer(10, "shallow", strict=False, **reference)["num_blocks"] == 1
    assert size_conformer(10 ** 9, "shallow", strict=False, **reference)["num_blocks"] == 2


def test_encoder_is_dense_by_default_and_adaptive_needs_a_schedule():
    args = dict(input_shape=(16, 6), vocab_size=3, num_blocks=1, model_dim=8, num_heads=2,
                ffn_dim=8, kernel_size=3)
    dense = ConformerEncoder(**args)
    assert not dense.get_layer("conformer_block_0").adaptive and not dense.losses
    for flags in (dict(adaptive=True), dict(adaptive_subsampling=True)):
        with pytest.raises(ValueError, match="needs a retention target schedule sized to the "
                                             "training run: pass schedule=RetentionTarget"
                                             "Schedule.*parameter_budget"):
            ConformerEncoder(**args, **flags)
    with pytest.raises(ValueError, match="argument `schedule`.*pass adaptive=True"):
        ConformerEncoder(**args, schedule=RetentionTargetSchedule(1.0, -1.0, 10))
    schedule = RetentionTargetSchedule(10.0, -2.0, 30)
    model = ConformerEncoder(**args, adaptive=True, schedule=schedule)
    sites = model.get_layer("conformer_block_0").adaptive_dropout_sites
    assert len(sites) == 5 and all(adl.schedule.decay_steps == 30 for adl in sites.values())


def test_adaptive_encoder_takes_a_parameter_budget():
    try:
        from keras_efficient.pruning import parameter_budget
    except ImportError:
        pytest.skip("keras_efficient.pruning.parameter_budget is not in this checkout")
    model = ConformerEncoder((16, 6), vocab_size=3, num_blocks=1, model_dim=8, num_heads=2,
                             ffn_dim=8, kernel_size=3, adaptive=True,
                             schedule=RetentionTargetSchedule(10.0, -2.0, 30))
    budget = parameter_budget(model, 0.7)
    assert budget.settle_step == 30  # the schedule's decay_steps
