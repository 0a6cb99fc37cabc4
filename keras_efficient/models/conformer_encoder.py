"""A Conformer encoder with convolutional subsampling and a CTC head (Kubo et al., Sec. 4).

`ConformerEncoder(...)` builds a functional `keras.Model` (like the
`keras.applications` constructors), so `keras_efficient.pruning.prune` can
rebuild it with smaller blocks. `CTCLoss`, `ctc_greedy_decode` and
`token_error_rate` train and score it; token 0 is the CTC blank and the label
padding value (as in `keras_efficient.data.make_ctc_sequences`).
"""

import numpy as np

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.adaptive_dropout import AdaptiveDropout
from keras_efficient.layers.conformer import ConformerBlock
from keras_efficient.layers.padded_frames import CTCBlankPadding, SubsampledTimeMask
from keras_efficient.utils.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    invalid_argument,
)

__all__ = [
    "ConformerEncoder",
    "CTCLoss",
    "conformer_parameters",
    "ctc_greedy_decode",
    "ctc_labels_from_zero_based",
    "size_conformer",
    "token_error_rate",
]


def ConformerEncoder(input_shape, vocab_size, num_blocks=2, model_dim=64, num_heads=4,
                     ffn_dim=256, kernel_size=15, dropout_rate=0.1, subsampling_filters=None,
                     adaptive=False, schedule=None, alpha=1e-7, gamma=1e-5, threshold=None,
                     inference="hard", seed=None, variable_length=False,
                     adaptive_subsampling=False, name="conformer_encoder"):
    """Builds a Conformer encoder with a CTC output layer as a functional model.

    Front end (4x time subsampling): two 3x3 Conv2D with stride 2 and ReLU over
    (time, feature) (`subsample_conv1`, `subsample_conv2`), flattened per frame
    and projected to `model_dim` (`subsample_proj`), then dropout. A frame count
    that is not a multiple of 4 is padded with zero frames at the end up to the
    next multiple (`subsample_pad`), so the strided windows are aligned the same
    way for every length (output frame t sees input frames 4t..4t+6, as for a
    multiple of 4; without the padding "same" padding would shift the windows of
    an odd length by one frame) and the output has ceil(frames / 4) frames. Then
    `num_blocks` `ConformerBlock`s (`conformer_block_{i}`) and a Dense CTC layer
    of `vocab_size + 1` logits (`ctc_logits`; index 0 is the blank).

    Args:
      input_shape: (frames, features); both static, any frames >= 4 (see above).
      vocab_size: number of tokens V (ids 1..V).
      num_blocks, model_dim, num_heads, ffn_dim, kernel_size, dropout_rate:
        the Conformer size (see `ConformerBlock`).
      subsampling_filters: channels of the subsampling convolutions (default model_dim).
      adaptive: put the paper's AdaptiveDropout sites in every block (see
        `ConformerBlock`). Default False: a dense encoder.
      schedule: the retention target c(t) of the sites, required when `adaptive`
        or `adaptive_subsampling` is True (and refused otherwise, where it would
        have no effect): a `RetentionTargetSchedule` whose `decay_steps` is sized
        to the training run (the paper decays over about 60% of the steps; the
        layer default K = 100000 would leave a short run far from c_inf, most
        units neither kept nor pruned). To end at a parameter count instead,
        build with such a schedule and attach
        `keras_efficient.pruning.parameter_budget(model, target_fraction)`: the
        budget keeps the schedule (its c(t) is the warm-up, its `final_target`
        the end target and its `decay_steps` the default settle step) and adds
        its loss on top. There is no schedule-less budget mode.
      alpha, gamma, threshold, inference, seed: the AdaptiveDropout arguments.
      variable_length: utterances shorter than `frames` are padded with all-zero
        frames at the end. `SubsampledTimeMask` layers derive each utterance's
        length (last non-zero frame), subsample it like the front end (ceil(L/2)
        after each convolution), zero the padded frames between the two
        convolutions and mask the blocks (see `ConformerBlock`); `CTCBlankPadding` makes the
        padded output frames certain blanks, so `CTCLoss` over all frames equals
        the CTC loss over the real ones and greedy decoding ignores the padding.
        The outputs at the ceil(L / 4) real frames equal those of the same
        encoder built for `frames = L` run on the unpadded utterance, for any L.
      adaptive_subsampling: also put an `AdaptiveDropout` on the output channels of
        each subsampling convolution (`subsample_adl1`, `subsample_adl2`; one unit
        per channel, a fresh mask per time-frequency position), so that `prune`
        removes front-end channels too: conv1 filters with the matching conv2
        input channels, conv2 filters with the matching `subsample_proj` rows. Not
        in the paper, whose sites are all inside the blocks; the front end is
        about 10% of the parameters but a quarter or more of the encoder's FLOPs
        (two 3×3 convolutions over the spectrogram), so without it pruning cannot
        shrink latency in proportion to parameters. Uses the blocks' ADL arguments.
      name: model name.

    Returns:
      A `keras.Model` mapping [batch, frames, features] to CTC logits
      [batch, ceil(frames / 4), vocab_size + 1].
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 2:
        raise invalid_argument("input_shape", "a (frames, features) pair", input_shape)
    frames = check_int("input_shape[0]", input_shape[0], low=4)
    features = check_int("input_shape[1]", input_shape[1], low=1)
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    num_blocks = check_int("num_blocks", num_blocks, low=0)
    model_dim = check_int("model_dim", model_dim, low=1)
    dropout_rate = check_float("dropout_rate", dropout_rate, low=0.0, high=1.0,
                               high_inclusive=False)
    filters = check_int("subsampling_filters", subsampling_filters or model_dim, low=1)
    variable_length = check_bool("variable_length", variable_length)
    adaptive_subsampling = check_bool("adaptive_subsampling", adaptive_subsampling)
    adaptive = check_bool("adaptive", adaptive)
    if (adaptive or adaptive_subsampling) and schedule is None:
        raise ValueError(
            "ConformerEncoder(adaptive={}, adaptive_subsampling={}) needs a retention target "
            "schedule sized to the training run: pass schedule=RetentionTargetSchedule("
            "initial_target, final_target, decay_steps) with decay_steps about 60% of the "
            "training steps (keras_efficient.schedules; there is no default, the layers' "
            "decay_steps=100000 suits only very long runs). To train to a parameter count, pass "
            "such a schedule and attach keras_efficient.pruning.parameter_budget(model, "
            "target_fraction) to the built model. Received: schedule=None".format(
                adaptive, adaptive_subsampling))
    if schedule is not None and not (adaptive or adaptive_subsampling):
        raise ValueError(
            "Invalid value received for argument `schedule`. It is only used by adaptive "
            "dropout sites: pass adaptive=True (the default is now False) or "
            "adaptive_subsampling=True, or leave schedule=None for a dense encoder. Received: "
            "schedule={!r}".format(schedule))

    def front_end_site(x, index):
        if not adaptive_subsampling:
            return x
        return AdaptiveDropout(schedule=schedule, alpha=alpha, gamma=gamma, threshold=threshold,
                               inference=inference,
                               seed=None if seed is None else seed + 100 * num_blocks + index,
                               name="subsample_adl{}".format(index))(x)

    inputs = keras.Input((frames, features), name="features")
    x = keras.layers.Reshape((frames, features, 1), name="subsample_expand")(inputs)
    if frames % 4:
        # Zero frames up to a multiple of 4: both strided convolutions then see an even
        # length, so their "same" windows start at frame 0 for every input length.
        x = keras.layers.ZeroPadding2D(((0, -frames % 4), (0, 0)), name="subsample_pad")(x)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                            name="subsample_conv1")(x)
    x = front_end_site(x, 1)
    if variable_length:
        x = SubsampledTimeMask((2,), name="subsample_time_mask")([x, inputs])
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                            name="subsample_conv2")(x)
    x = front_end_site(x, 2)
    x = keras.layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]), name="subsample_flatten")(x)
    x = keras.layers.Dense(model_dim, name="subsample_proj")(x)
    if variable_length:
        x = SubsampledTimeMask((2, 2), name="time_mask")([x, inputs])
    x = keras.layers.Dropout(dropout_rate, name="subsample_dropout")(x)
    for i in range(num_blocks):
        x = ConformerBlock(model_dim, num_heads, ffn_dim, kernel_size, dropout_rate,
                           adaptive=adaptive, schedule=schedule, alpha=alpha, gamma=gamma,
                           threshold=threshold, inference=inference,
                           seed=None if seed is None else seed + 100 * i,
                           name="conformer_block_{}".format(i))(x)
    logits = keras.layers.Dense(vocab_size + 1, name="ctc_logits", dtype="float32")(x)
    if variable_length:
        logits = CTCBlankPadding(name="ctc_blank_padding", dtype="float32")(logits)
    return keras.Model(inputs, logits, name=name)


def conformer_parameters(input_shape, vocab_size, num_blocks=2, model_dim=64, ffn_dim=256,
                         kernel_size=15, subsampling_filters=None, adaptive=False,
                         adaptive_subsampling=False, **unused):
    """The exact `count_params()` of a dense `ConformerEncoder` with these arguments.

    A closed form, for any (frames, features): the front end has
    10 f + 9 f² + f + ceil(features / 4) f D + D parameters (f = filters), each
    block 2 (2D + 2DF + F + D) + (2D + 4D² + 4D) + (2D + 2D² + 2D + kD + 4D + D² + D) + 2D,
    the CTC layer (V + 1)(D + 1). Arguments that do not change the count
    (`num_heads`, `dropout_rate`, `variable_length`, ...) are accepted and
    ignored, so `conformer_parameters(**size_conformer(...))` works. ADL weights
    are not covered: use `keras_efficient.pruning.count_parameters` for an
    adaptive model.
    """
    if adaptive or adaptive_subsampling:
        raise ValueError("`conformer_parameters` counts dense encoders only (adaptive=False, "
                         "adaptive_subsampling=False). Received: adaptive={}, adaptive_subsampling="
                         "{}".format(adaptive, adaptive_subsampling))
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 2:
        raise invalid_argument("input_shape", "a (frames, features) pair", input_shape)
    features = check_int("input_shape[1]", input_shape[1], low=1)
    d, ffn = check_int("model_dim", model_dim, low=1), check_int("ffn_dim", ffn_dim, low=1)
    f = check_int("subsampling_filters", subsampling_filters or d, low=1)
    k = check_int("kernel_size", kernel_size, low=1)
    vocab = check_int("vocab_size", vocab_size, low=1)
    front = (9 * f + f) + (9 * f * f + f) + -(-features // 4) * f * d + d
    block = (2 * (2 * d + 2 * d * ffn + ffn + d) + (2 * d + 4 * d * d + 4 * d)
             + (2 * d + 2 * d * d + 2 * d + k * d + 4 * d + d * d + d) + 2 * d)
    blocks = check_int("num_blocks", num_blocks, low=0)
    return front + blocks * block + (vocab + 1) * (d + 1)


def size_conformer(target_parameters, kind, input_shape, vocab_size, num_blocks=2, model_dim=64,
                   num_heads=4, ffn_dim=256, strict=True, **encoder_kwargs):
    """Shrinks a dense `ConformerEncoder` by one dimension to about `target_parameters`.

    The hand-shrunk baselines of Kubo et al. (Table 1): starting from the given
    (reference) encoder arguments,

    - `kind="shallow"`: fewer blocks, `num_blocks` in 1..num_blocks;
    - `kind="narrow"`: a narrower model, `model_dim` in num_heads, 2 num_heads, ...,
      model_dim, with `ffn_dim` scaled in proportion (and the subsampling
      filters, unless `subsampling_filters` is given);
    - `kind="narrow_ffn"`: narrower FFNs, `ffn_dim` in 8, 16, ..., ffn_dim.

    The candidate whose exact count (`conformer_parameters`, equal to Keras's
    `count_params()` for any input shape) is closest to the target is returned.
    Tolerance: the count differs from the target by at most half the count
    difference between the two neighbouring candidates (one block, `num_heads`
    model units or 8 FFN units). With `strict=True` a target outside
    [smallest candidate's count, reference count] raises `ValueError`; with
    `strict=False` the nearest end of the range is returned.

    Example:

        kwargs = size_conformer(100_000, "narrow", (64, 40), vocab_size=10)
        baseline = ConformerEncoder(**kwargs)   # about 100k parameters

    Returns:
      A dict of `ConformerEncoder` arguments (`adaptive=False`).
    """
    target = check_int("target_parameters", target_parameters, low=1)
    kind = check_choice("kind", kind, ("shallow", "narrow", "narrow_ffn"))
    num_heads = check_int("num_heads", num_heads, low=1)
    ffn_dim = check_int("ffn_dim", ffn_dim, low=1)
    for flag in ("adaptive", "adaptive_subsampling"):
        if encoder_kwargs.get(flag):
            raise invalid_argument(flag, "False (the shrunk baselines are dense)",
                                   encoder_kwargs[flag])
    base = dict(encoder_kwargs, input_shape=input_shape, vocab_size=vocab_size,
                num_blocks=check_int("num_blocks", num_blocks, low=1),
                model_dim=check_int("model_dim", model_dim, low=num_heads), num_heads=num_heads,
                ffn_dim=ffn_dim, adaptive=False)
    if kind == "shallow":
        candidates = [dict(base, num_blocks=b) for b in range(1, num_blocks + 1)]
    elif kind == "narrow":
        candidates = [dict(base, model_dim=d, ffn_dim=max(1, round(ffn_dim * d / model_dim)))
                      for d in range(num_heads, model_dim + 1, num_heads)]
    else:
        candidates = [dict(base, ffn_dim=f) for f in range(8, ffn_dim, 8)]
    if not candidates or candidates[-1] != base:
        candidates.append(base)  # the reference itself (model_dim or ffn_dim off the grid)
    counts = [conformer_parameters(**c) for c in candidates]
    low, high = counts[0], counts[-1]
    if strict and not low <= target <= high:
        raise invalid_argument(
            "target_parameters", "a count from {} (the smallest {} encoder) to {} (the reference "
            "encoder)".format(low, kind, high), target_parameters)
    best = min(range(len(counts)), key=lambda i: (abs(counts[i] - target), -i))
    return candidates[best]


_CONVENTION = (
    "CTC labels use 0 as the blank and as the padding value: tokens are 1..V{}, and zeros may "
    "only appear as trailing padding. For 0-based labels padded with -1, use "
    "`keras_efficient.models.ctc_labels_from_zero_based(labels, padding=-1)`.")


def _vocab_text(vocab_size):
    return "" if vocab_size is None else " (V = {} here: the logits have V + 1 classes)".format(
        vocab_size)


def _label_problem(labels, vocab_size):
    """NumPy check of the label convention: None, or what the first bad example breaks."""
    if labels.ndim != 2:
        return "labels must have rank 2 [batch, max_label_length]; got shape {}".format(
            labels.shape)
    inner_zero = np.zeros(labels.shape, bool)
    inner_zero[:, :-1] = (labels[:, :-1] == 0) & (labels[:, 1:] != 0)
    for name, bad in (("a negative value", labels < 0),
                      ("a 0 before a later token", inner_zero),
                      ("a token above V", labels > vocab_size if vocab_size is not None
                       else np.zeros(labels.shape, bool))):
        rows = np.flatnonzero(bad.any(axis=-1))
        if rows.size:
            return "example {} is {}, which has {}".format(
                rows[0], labels[rows[0]].tolist(), name)
    return None


def _checked_ctc_labels(labels, logits, who):
    """`labels` as int32, checked against the library's CTC label convention.

    Eager values are checked in NumPy and raise `ValueError`; symbolic tensors
    get a `tf.debugging.Assert` (an `InvalidArgumentError` with the same text
    when it fails; a no-op under XLA). `logits` (or None) gives V = classes - 1.
    """
    labels = tf.cast(labels, tf.int32)
    vocab_size = None
    if logits is not None and logits.shape.rank and logits.shape[-1] is not None:
        vocab_size = int(logits.shape[-1]) - 1
    if not tf.is_symbolic_tensor(labels):
        problem = _label_problem(labels.numpy(), vocab_size)
        if problem is not None:
            raise ValueError("`{}` received invalid labels: {}. {}".format(
                who, problem, _CONVENTION.format(_vocab_text(vocab_size))))
        return labels
    top = tf.shape(logits)[-1] - 1 if logits is not None else tf.reduce_max(labels)
    inner_zero = tf.logical_and(tf.equal(labels[:, :-1], 0), tf.not_equal(labels[:, 1:], 0))
    row_ok = tf.logical_and(
        tf.reduce_all(tf.logical_and(labels >= 0, labels <= top), axis=-1),
        tf.logical_not(tf.reduce_any(inner_zero, axis=-1)))
    # Static shapes only (XLA-compatible): the first bad row, or a row of zeros.
    first = tf.argmin(tf.concat([tf.cast(row_ok, tf.int32), [0]], axis=0), output_type=tf.int32)
    row = tf.gather(tf.concat([labels, tf.zeros_like(labels[:1])], axis=0), first)
    check = tf.debugging.Assert(
        tf.reduce_all(row_ok),
        ["`{}` received invalid labels (a negative value, a 0 before a later token or a token "
         "above V). {}".format(who, _CONVENTION.format(_vocab_text(vocab_size))),
         "First invalid example:", first, "labels:", row], summarize=64)
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def ctc_labels_from_zero_based(labels, padding=-1):
    """Converts 0-based labels padded with `padding` to this library's CTC labels.

    The library's CTC labels (`CTCLoss`, `token_error_rate`,
    `keras_efficient.data.make_ctc_sequences`) use 0 for the blank and the
    padding and tokens 1..V. Many pipelines number tokens 0..V-1 and pad with
    -1; this maps token k to k + 1 and `padding` to 0:

        out[b, i] = 0                  where labels[b, i] == padding
        out[b, i] = labels[b, i] + 1   elsewhere

    Example:

    >>> ctc_labels_from_zero_based([[2, 0, 1], [4, -1, -1]])
    array([[3, 1, 2],
           [5, 0, 0]], dtype=int32)
    >>> ctc_labels_from_zero_based([[2, 0], [4]])      # ragged lists are padded
    array([[3, 1],
           [5, 0]], dtype=int32)

    Args:
      labels: int array-like [batch, max_label_length] of 0-based tokens with
        `padding` after the last token of each row, or a list of token lists of
        different lengths. A symbolic tensor (e.g. inside `tf.data.Dataset.map`)
        is converted with TensorFlow ops and checked with a `tf.debugging.Assert`.
      padding: the integer padding value (default -1). It may not be a token.

    Returns:
      int32 labels of the same shape: a NumPy array for array-likes, a tensor
      for tensors.

    Raises:
      ValueError: for a token < 0 or padding before a token (it would become a
        0 inside the sequence).
    """
    padding = check_int("padding", padding)
    if tf.is_tensor(labels) and tf.is_symbolic_tensor(labels):
        labels = tf.cast(labels, tf.int32)
        is_pad = tf.equal(labels, padding)
        ok = tf.logical_and(
            tf.reduce_all(tf.logical_or(labels >= 0, is_pad)),
            tf.logical_not(tf.reduce_any(tf.logical_and(is_pad[:, :-1],
                                                        tf.logical_not(is_pad[:, 1:])))))
        check = tf.debugging.Assert(ok, [
            "`ctc_labels_from_zero_based` received invalid labels: tokens must be >= 0 and "
            "padding={} may only follow the last token.".format(padding), labels])
        with tf.control_dependencies([check]):
            return tf.where(is_pad, 0, labels + 1)
    as_tensor = tf.is_tensor(labels)
    array = np.asarray(labels.numpy() if as_tensor else _pad_ragged(labels, padding))
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError("`ctc_labels_from_zero_based` expects integer labels of rank 2 "
                         "[batch, max_label_length]. Received: labels with shape {} and dtype "
                         "{}".format(array.shape, array.dtype))
    is_pad = array == padding
    for name, bad in (("a negative token", (array < 0) & ~is_pad),
                      ("padding={} before a token".format(padding),
                       is_pad[:, :-1] & ~is_pad[:, 1:])):
        rows = np.flatnonzero(bad.any(axis=-1))
        if rows.size:
            raise ValueError(
                "`ctc_labels_from_zero_based` received invalid labels: example {} is {}, which "
                "has {}. Expected 0-based tokens (>= 0) followed by padding={} only at the "
                "end.".format(rows[0], array[rows[0]].tolist(), name, padding))
    out = np.where(is_pad, 0, array + 1).astype(np.int32)
    return tf.constant(out) if as_tensor else out


def _pad_ragged(labels, padding):
    if isinstance(labels, np.ndarray) or not isinstance(labels, (list, tuple)):
        return labels
    rows = [np.asarray(row).reshape(-1) for row in labels]
    if not rows or len({len(r) for r in rows}) == 1:
        return labels
    width = max(len(r) for r in rows)
    return [list(r) + [padding] * (width - len(r)) for r in rows]


@register_serializable
class CTCLoss(keras.losses.Loss):
    """Connectionist temporal classification loss with blank index 0.

    y_true: int labels [batch, max_label_length] in this library's convention:
    tokens are 1..V, 0 is the CTC blank and the padding value, and zeros may
    only be trailing padding (the label length is the number of non-zero
    entries). Labels that break it — a 0 inside a sequence (read as a blank),
    negative padding such as -1 (counted as tokens) or a token above V
    (`y_pred` has V + 1 classes) — raise a `ValueError` for eager inputs and
    fail a `tf.debugging` assertion (`InvalidArgumentError`, same message)
    inside `tf.function` and `fit`. TensorFlow drops assertions from
    XLA-compiled functions, so under `jit_compile=True` labels are not
    checked. Convert 0-based labels padded with -1 with
    `ctc_labels_from_zero_based`.

    y_pred: logits [batch, frames, V + 1]; every frame is used (padded frames of
    a `variable_length` encoder are certain blanks, which leaves the loss exact).
    Computed in float32 with `tf.nn.ctc_loss`; per example, averaged by the
    reduction.
    """

    def __init__(self, reduction="sum_over_batch_size", name="ctc_loss"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        labels = _checked_ctc_labels(y_true, logits, "CTCLoss")
        label_length = tf.reduce_sum(tf.cast(labels > 0, tf.int32), axis=-1)
        batch = tf.shape(logits)[0]
        logit_length = tf.fill([batch], tf.shape(logits)[1])
        return tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_length,
                              logit_length=logit_length, logits_time_major=False, blank_index=0)


def ctc_greedy_decode(logits):
    """Best-path decoding: argmax per frame, merge repeats, drop blanks (0).

    Returns a list of int lists, one per example (NumPy, for evaluation).
    """
    best = np.argmax(np.asarray(logits), axis=-1)
    out = []
    for row in best:
        tokens, previous = [], -1
        for token in row:
            if token != previous and token != 0:
                tokens.append(int(token))
            previous = token
        out.append(tokens)
    return out


def _edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def token_error_rate(labels, logits):
    """Sum of edit distances of the greedy decodes over the sum of label lengths.

    labels: [batch, max_label_length] in the convention of `CTCLoss` (tokens
    1..V, zeros only as trailing padding; anything else raises `ValueError`).
    logits: [batch, frames, V + 1].
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    vocab_size = int(logits.shape[-1]) - 1 if logits.ndim else None
    problem = _label_problem(labels, vocab_size)
    if problem is not None:
        raise ValueError("`token_error_rate` received invalid labels: {}. {}".format(
            problem, _CONVENTION.format(_vocab_text(vocab_size))))
    hyps = ctc_greedy_decode(logits)
    errors = total = 0
    for label, hyp in zip(labels, hyps):
        ref = [int(t) for t in label if t != 0]
        errors += _edit_distance(ref, hyp)
        total += len(ref)
    return errors / max(total, 1)
