"""The `validate_args` convention on every layer: value checks only when asked, rank always.

For each layer: with `validate_args=True` a NaN input and an empty batch fail with
an error naming the layer, in eager mode and inside `tf.function`; with the default
the traced graph holds no assertion op (no `Assert`, no `CheckNumerics`), so the
layer does not pay for the checks; a wrong rank and an integer dtype always fail.
"""

import numpy as np
import pytest

from keras_efficient.backend import tf
from keras_efficient.layers import (
    AdaptiveDropout,
    BottleneckDecoder,
    ConformerBlock,
    ConformerConvolution,
    ConformerFeedForward,
    ConformerSelfAttention,
    CTCBlankPadding,
    FlipoutConv2D,
    FlipoutDense,
    GaussianMixtureClassifier,
    MultivariateNormalHead,
    ReparameterizationConv2D,
    ReparameterizationDense,
    ResidualBlock,
    SubsampledTimeMask,
    VariationalHead,
)
from keras_efficient.schedules import RetentionTargetSchedule
from keras_efficient.training.psg_layers import PSGConv2D, PSGDense

_CHECK_OPS = {"Assert", "CheckNumerics", "CheckNumericsV2"}


def _adl(v):
    return AdaptiveDropout(RetentionTargetSchedule(3.0, -1.0, 10), seed=1, validate_args=v,
                           name="probe")


# (id, factory(validate_args) -> layer named "probe", input shape, a shape of the wrong rank)
CASES = [
    ("AdaptiveDropout", _adl, (4, 6), (6,)),
    ("ConformerFeedForward", lambda v: ConformerFeedForward(8, 12, seed=1, validate_args=v,
                                                            name="probe"), (2, 5, 8), (2, 8)),
    ("ConformerSelfAttention", lambda v: ConformerSelfAttention(8, 2, seed=1, validate_args=v,
                                                                name="probe"), (2, 5, 8), (2, 8)),
    ("ConformerConvolution", lambda v: ConformerConvolution(8, 3, seed=1, validate_args=v,
                                                            name="probe"), (2, 5, 8), (2, 8)),
    ("ConformerBlock", lambda v: ConformerBlock(8, 2, 12, 3, seed=1, validate_args=v,
                                                name="probe"), (2, 5, 8), (2, 5, 8, 1)),
    ("CTCBlankPadding", lambda v: CTCBlankPadding(validate_args=v, name="probe"),
     (2, 5, 4), (2, 4)),
    ("ResidualBlock", lambda v: ResidualBlock(4, validate_args=v, name="probe"),
     (2, 6, 6, 4), (2, 6, 4)),
    ("PSGDense", lambda v: PSGDense(3, validate_args=v, name="probe"), (4, 5), (5,)),
    ("PSGConv2D", lambda v: PSGConv2D(2, 3, validate_args=v, name="probe"),
     (2, 6, 6, 3), (2, 6, 3)),
    ("MultivariateNormalHead", lambda v: MultivariateNormalHead(
        2, validate_args=v, check_finite=False, name="probe"), (4, 5), (5,)),
    ("GaussianMixtureClassifier", lambda v: GaussianMixtureClassifier(
        3, 2, validate_args=v, name="probe"), (4, 5), (4, 5, 2)),
    ("VariationalHead", lambda v: VariationalHead(
        filters=(4,), latent_channels=2, strides=(1,), validate_args=v, name="probe"),
     (2, 6, 6, 3), (2, 6, 3)),
    ("BottleneckDecoder", lambda v: BottleneckDecoder(
        (4, 4, 5), filters=(6,), validate_args=v, name="probe"), (2, 4, 4, 2), (2, 4, 2)),
    ("FlipoutDense", lambda v: FlipoutDense(3, seed=1, validate_args=v, name="probe"),
     (4, 5), (5,)),
    ("ReparameterizationDense", lambda v: ReparameterizationDense(
        3, seed=1, validate_args=v, name="probe"), (4, 5), (5,)),
    ("FlipoutConv2D", lambda v: FlipoutConv2D(2, 3, seed=1, validate_args=v, name="probe"),
     (2, 6, 6, 3), (2, 6, 3)),
    ("ReparameterizationConv2D", lambda v: ReparameterizationConv2D(
        2, 3, seed=1, validate_args=v, name="probe"), (2, 6, 6, 3), (2, 6, 3)),
]
IDS = [c[0] for c in CASES]


def _tensors(y):
    """Layer outputs (a tensor, a tuple, a distribution) as a flat list of tensors."""
    return [tf.convert_to_tensor(t) for t in tf.nest.flatten(y)]


def _call(layer, x, training):
    return _tensors(layer(x, training=training))


def _nan_input(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    x.reshape(-1)[1] = np.nan
    return x


def _check_op_types(concrete):
    """The assertion op types in a traced function, nested functions (cond branches) included."""
    graph_def = concrete.graph.as_graph_def()
    types = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        types |= {n.op for n in fn.node_def}
    return types & _CHECK_OPS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_checks_only_when_asked(case):
    _, make, shape, _ = case
    x, nan = np.ones(shape, np.float32), _nan_input(shape)
    empty = np.zeros((0,) + shape[1:], np.float32)
    spec = tf.TensorSpec((None,) + shape[1:], tf.float32)

    def traced(layer, training=False):
        return tf.function(lambda t: _call(layer, t, training), autograph=False,
                           input_signature=[spec])

    # On: eager mode (a batch known to be empty fails at once, with ValueError) ...
    layer = make(True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
        _call(layer, nan, False)
    with pytest.raises(ValueError, match="`probe` received an empty batch"):
        _call(layer, empty, False)
    # ... and inside a graph, where the batch size is known only at run time.
    fn = traced(layer)
    assert {"Assert", "CheckNumerics"} <= _check_op_types(fn.get_concrete_function())
    _call(layer, x, False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
        fn(tf.constant(nan))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received an empty batch"):
        fn(tf.constant(empty))
    # Off (the default): no assertion op in inference or training graphs; NaN passes.
    layer = make(False)
    for training in (False, True):
        assert _check_op_types(traced(layer, training).get_concrete_function()) == set()
    assert any(np.isnan(t.numpy()).any() for t in _call(layer, nan, False))


# The checks sit at the layer input, before the training/inference split; the layers
# whose training call takes another path (noise draws) run in the default test set.
_TRAINING_FAST = ("AdaptiveDropout", "FlipoutDense", "ReparameterizationDense", "VariationalHead")


@pytest.mark.parametrize("case", [
    c if c[0] in _TRAINING_FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES],
    ids=IDS)
def test_value_checks_in_training_mode(case):
    _, make, shape, _ = case
    layer = make(True)
    fn = tf.function(lambda t: _call(layer, t, True), autograph=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
        fn(tf.constant(_nan_input(shape)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rank_dtype_and_config_always(case):
    _, make, shape, wrong = case
    for validate in (False, True):
        with pytest.raises(ValueError, match="probe"):
            make(validate)(np.ones(wrong, np.float32))
        config = make(validate).get_config()
        assert config["validate_args"] is validate
        assert type(make(validate)).from_config(config).validate_args is validate
    with pytest.raises(TypeError, match="`probe` expects a floating-point input"):
        make(False)(np.ones(shape, np.int32))
    with pytest.raises(TypeError, match="validate_args"):
        make(1)


# ----------------------------------------------------------------------------- two inputs


def test_subsampled_time_mask():
    features = np.ones((2, 8, 3), np.float32)
    x = np.ones((2, 4, 5), np.float32)
    bad = features.copy()
    bad[1, 2, 0] = np.inf
    for name, args in (("features", [x, bad]), ("x", [bad[:, :4], features])):
        layer = SubsampledTimeMask((2,), validate_args=True, name="probe")
        with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
            layer(args)
        fn = tf.function(lambda a, b: layer([a, b]), autograph=False)
        with pytest.raises(tf.errors.InvalidArgumentError, match="`probe` received non-finite"):
            fn(*[tf.constant(a) for a in args])
    with pytest.raises(ValueError, match="`probe` received an empty batch"):
        SubsampledTimeMask((2,), validate_args=True, name="probe")([x[:0], features[:0]])
    assert SubsampledTimeMask((2,), name="probe")([x, bad]).shape == (2, 4, 5)  # off: no check
    specs = [tf.TensorSpec((None, 4, 5)), tf.TensorSpec((None, 8, 3))]
    for validate, expected in ((False, set()), (True, {"Assert", "CheckNumerics"})):
        layer = SubsampledTimeMask((2,), validate_args=validate, name="probe")
        concrete = tf.function(lambda a, b: layer([a, b]), autograph=False).get_concrete_function(
            *specs)
        assert _check_op_types(concrete) >= expected and (validate or not _check_op_types(
            concrete))
        assert layer.get_config()["validate_args"] is validate
    for validate in (False, True):
        with pytest.raises(ValueError, match="probe"):
            SubsampledTimeMask((2,), validate_args=validate, name="probe")([x, features[0]])
