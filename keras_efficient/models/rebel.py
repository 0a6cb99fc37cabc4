"""ReBEL: regularised bottleneck with early labeling (Castellano et al., 2022, Sec. III-IV)."""

from keras_efficient.backend import keras, register_serializable, tf
from keras_efficient.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_efficient.layers.random_projection import RandomProjection
from keras_efficient.layers.variational_head import BottleneckDecoder, VariationalHead
from keras_efficient.losses.early_classification import early_classification_nll
from keras_efficient.losses.mimic import ELEMENT_REDUCTIONS, mimic_error
from keras_efficient.losses.mixture_kl import check_labels, mixture_kl_divergence
from keras_efficient.utils.graph import FunctionalGraph, TensorRef, is_functional
from keras_efficient.utils.validation import check_choice, check_float, check_int, invalid_argument

__all__ = ["ReBEL", "split_functional_model"]


def split_functional_model(model, split_layer):
    """Splits a functional model after layer `split_layer` into (head H, tail T).

    H maps the model inputs to the output of `split_layer`; T is rebuilt on a
    fresh `keras.Input` of that shape by replaying every later layer (the layers,
    and so the weights, are shared with `model`). T ∘ H computes `model`.
    Requires that no layer after the split reads a tensor from before it. The
    graph is read from the model's public config (`keras_efficient.utils.graph`),
    so every layer must implement `get_config`.
    """
    if not is_functional(model):
        raise invalid_argument("model", "a functional keras.Model", model, TypeError)
    names = [layer.name for layer in model.layers]
    if split_layer not in names:
        raise invalid_argument("split_layer", "one of the model's layer names ({})".format(
            ", ".join(names)), split_layer)
    graph = FunctionalGraph(model)
    split = model.get_layer(split_layer)
    # `split.output` is the output of the layer's first call anywhere: the layer must
    # have no call outside the model either.
    if graph.call_count(split) != 1 or len(split.inbound_nodes) != 1:
        raise invalid_argument("split_layer", "a layer called once in the model", split_layer)
    split_out = split.output
    head = keras.Model(model.inputs, split_out, name=model.name + "_head")
    tail_in = keras.Input(shape=split_out.shape[1:], dtype=split_out.dtype, name="bottleneck")
    start = TensorRef(split.name, 0, 0)
    after = graph.downstream([start])
    replayed = {(call.layer.name, call.index) for call in after}
    for call in after:
        if any(ref != start and (ref.layer, ref.call) not in replayed for ref in call.refs):
            raise ValueError("Layer `{}` after the split reads a tensor from before `{}`; "
                             "the model cannot be split there.".format(call.layer.name,
                                                                       split_layer))
    tensors = graph.replay({start: tail_in})
    if any(ref not in tensors for ref in graph.output_refs):
        raise ValueError("The model's outputs do not depend on `{}` only; cannot split there.".format(
            split_layer))
    outputs = [tensors[ref] for ref in graph.output_refs]
    tail = keras.Model(tail_in, outputs if len(outputs) > 1 else outputs[0],
                       name=model.name + "_tail")
    return head, tail


@register_serializable
class ReBEL(keras.Model):
    """Teacher split into H and T, with Head₁ → z → (Head₂ → T) and an early classifier on z.

    Trains the loss of Eq. (5)

        L = α·L_M + β·L_R + γ·L_C

    L_M: mimic loss ‖Head₂(z) − H(x)‖² (Eq. 1) against the frozen teacher head H,
    divided by the number of elements of H(x) by default (`mimic_reduction`; see
    `keras_efficient.losses.mimic.mimic_error`: with the plain sum, L_M grows with the
    size of the teacher tensor and swamps γ·L_C, so the early classifier does not
    shape z and a linear one does not learn);
    L_R: the mixture KL of Eq. (3) between N(μ(x), diag σ(x)) (projected when a
    random projection is used, footnote 2) and the classifier's components of the
    label; L_C: −log γ_{l(x)}(z) (Eq. 4). Each term is averaged over the global
    batch (Eq. 5 sums; the ratio of the terms is unchanged) and reported as a
    metric (`mimic_loss`, `regularization_loss`, `early_classification_loss`),
    with `local_accuracy` (early classifier) and `remote_accuracy` (Head₂ + T).
    The teacher head and the tail are frozen.

    Two equivalent ways to feed the labels, both with the stock `train_step`:

    * `fit(images, labels)` (Keras >= 2.9): the loss is composed in
      `compute_loss` and the metrics in `compute_metrics`.
    * `fit({"images": images, "labels": labels})` with `compile(optimizer)` and
      no loss, no `y`: `call` adds the same loss through `add_loss` (the batch
      mean per replica, which Keras scales by 1/replicas) and updates the same
      metrics. This is what Keras 2.6's `train_step` (Graphcore's TensorFlow)
      runs: `self(x, training=True)` and `compiled_loss(y, y_pred, ...,
      regularization_losses=self.losses)`, with no `compute_loss` hook.
    The terms are added in exactly one place: `call` adds them only when the
    inputs carry labels, and `compute_loss` then uses Keras's own composition
    (the added losses) instead of composing Eq. (5) again; passing labels both
    in the inputs and as `y` raises.

    Linear classifier: the KL of Eq. (3) uses the Gaussian mixture equivalent to
    the softmax (Sec. VI-A, [42]; `keras_efficient.losses.linear_softmax_prior`):
    one component per class with mean μ_c = w_c (the class's column of the Dense
    kernel) and covariance I, so L_R = ½[−log|S| − d + ‖m − w_c‖² + tr S] with
    m = μ(x), S = diag σ(x), or m = Rμ(x), S = R·diag(σ(x))·Rᵀ after a projection R.

    Second stage (Sec. IV-D): `set_stage("tail")` freezes Head₁, Head₂ and the
    classifier, unfreezes T and trains it with cross-entropy on T's logits; call
    `compile` again after switching stages.

    Args:
      teacher_head: H, a model mapping images to the intermediate tensor v.
      tail: T, a model mapping v to class logits.
      num_classes: C.
      head_filters, latent_channels, head_strides: `VariationalHead` settings.
      decoder_filters: `BottleneckDecoder` (Head₂) hidden channels.
      classifier: "gmc" (GaussianMixtureClassifier) or "linear" (Dense + log-softmax).
      components_per_class, covariance: GMC settings.
      projection_dim: if set, a `RandomProjection` to this size precedes the classifier.
      projection_seed: its seed.
      alpha, beta, gamma: loss weights of Eq. (5) (paper: 1, 0.001, 0.1).
      mimic_reduction: "mean" (default) or "sum" of the squared errors over the
        elements of v in L_M.

    Call arguments:
      inputs: images (batch, H, W, 3), or a dict {"images": images, "labels":
        labels} with integer labels (batch,) (then the Eq. 5 loss is added).
      training: sample z and run in training mode.

    Returns (call):
      dict with `log_probs` (batch, C) of the early classifier, `logits` (batch, C)
      of the server path, `z`, `mean`, `variance` (bottleneck tensors) and
      `reconstruction` (Head₂ output v').
    """

    IMAGES = "images"
    LABELS = "labels"

    def __init__(self, teacher_head, tail, num_classes, head_filters=(64, 64, 64),
                 latent_channels=3, head_strides=None, decoder_filters=(64, 64, 64),
                 classifier="gmc", components_per_class=8, covariance="diag",
                 projection_dim=None, projection_seed=0, alpha=1.0, beta=0.001, gamma=0.1,
                 mimic_reduction="mean", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(teacher_head, keras.Model):
            raise invalid_argument("teacher_head", "a keras.Model", teacher_head, TypeError)
        if not isinstance(tail, keras.Model):
            raise invalid_argument("tail", "a keras.Model", tail, TypeError)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.classifier_type = check_choice("classifier", classifier, ("gmc", "linear"))
        self.components_per_class = check_int("components_per_class", components_per_class, low=1)
        self.covariance = check_choice("covariance", covariance, ("full", "diag"))
        self.projection_dim = check_int("projection_dim", projection_dim, low=1, allow_none=True)
        self.projection_seed = check_int("projection_seed", projection_seed, low=0)
        self.alpha = check_float("alpha", alpha, low=0.0)
        self.beta = check_float("beta", beta, low=0.0)
        self.gamma = check_float("gamma", gamma, low=0.0)
        self.mimic_reduction = check_choice("mimic_reduction", mimic_reduction,
                                            ELEMENT_REDUCTIONS)
        v_shape = teacher_head.output_shape
        if not isinstance(v_shape, tuple) or len(v_shape) != 4:
            raise invalid_argument("teacher_head", "a model with one (batch, H, W, C) output",
                                   teacher_head)
        in_shape = teacher_head.input_shape
        if head_strides is None:
            # Reach the teacher's spatial size at the bottleneck with the first convolution.
            factor = max(1, int(in_shape[1]) // int(v_shape[1]))
            head_strides = (factor,) + (1,) * (len(tuple(head_filters)) - 1)
        self.teacher_head = teacher_head
        self.teacher_head.trainable = False
        self.tail = tail
        self.tail.trainable = False
        self.head1 = VariationalHead(head_filters, latent_channels, strides=head_strides,
                                     name="head1")
        self.head2 = BottleneckDecoder(tuple(int(s) for s in v_shape[1:]), decoder_filters,
                                       name="head2")
        self.flatten = keras.layers.Flatten(name="flatten_z")
        self.projection = (RandomProjection(self.projection_dim, self.projection_seed,
                                            name="projection") if self.projection_dim else None)
        if self.classifier_type == "gmc":
            self.classifier = GaussianMixtureClassifier(
                self.num_classes, self.components_per_class, self.covariance, name="classifier")
        else:
            self.classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                                 name="classifier")
        self._config = {
            "num_classes": num_classes, "head_filters": list(head_filters),
            "latent_channels": latent_channels, "head_strides": list(head_strides),
            "decoder_filters": list(decoder_filters), "classifier": classifier,
            "components_per_class": components_per_class, "covariance": covariance,
            "projection_dim": projection_dim, "projection_seed": projection_seed,
            "alpha": alpha, "beta": beta, "gamma": gamma, "mimic_reduction": mimic_reduction,
        }
        self.stage = "bottleneck"
        self._trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "mimic_loss", "regularization_loss", "early_classification_loss")}
        self._accuracy = {name: keras.metrics.SparseCategoricalAccuracy(name=name)
                          for name in ("local_accuracy", "remote_accuracy")}

    # -- pieces ---------------------------------------------------------------------------

    def early_log_probs(self, z):
        """Early classifier on a spatial bottleneck z: (batch, C) log γ(z)."""
        features = self.flatten(z)
        if self.projection is not None:
            features = self.projection(features)
        out = self.classifier(features)
        if self.classifier_type == "linear":
            out = tf.nn.log_softmax(tf.cast(out, tf.float32))
        return out

    def embed(self, images, project=True):
        """The flattened (and, if configured and `project`, projected) μ(x)."""
        _, mean, _ = self.head1(images, training=False)
        features = self.flatten(mean)
        if project and self.projection is not None:
            features = self.projection(features)
        return features

    def call(self, inputs, training=None):
        images, labels = self._split_inputs(inputs)
        z, mean, variance = self.head1(images, training=training)
        reconstruction = self.head2(z)
        logits = self.tail(reconstruction, training=training)
        outputs = {"log_probs": self.early_log_probs(z), "logits": tf.cast(logits, tf.float32),
                   "z": z, "mean": mean, "variance": variance,
                   "reconstruction": reconstruction}
        if labels is not None:
            # Keras 2.6 path: the loss and metrics live in the forward pass.
            labels = check_labels(labels, self.num_classes)
            total, terms = self._loss_terms(images, labels, outputs)
            self.add_loss(tf.reduce_mean(total))
            self._update_metrics(labels, outputs, total, terms)
        return outputs

    # -- training -------------------------------------------------------------------------

    def _split_inputs(self, inputs):
        """(images, labels or None) from images or {"images": ..., "labels": ...}."""
        if not isinstance(inputs, dict):
            return inputs, None
        unknown = sorted(set(inputs) - {self.IMAGES, self.LABELS})
        if self.IMAGES not in inputs or unknown:
            raise ValueError("ReBEL inputs must be images or a dict with keys 'images' and "
                             "(optionally) 'labels'. Received keys: {}".format(sorted(inputs)))
        return inputs[self.IMAGES], inputs.get(self.LABELS)

    def build(self, input_shape):
        # Keras builds by calling `call` on placeholders outside a call context, where
        # `add_loss` would fail: the weights depend on the images only.
        if isinstance(input_shape, dict):
            input_shape = input_shape[self.IMAGES]
        super().build(input_shape)

    def _labels_in(self, x):
        return isinstance(x, dict) and x.get(self.LABELS) is not None

    def set_stage(self, stage):
        """"bottleneck" (Eq. 5, tail frozen) or "tail" (Sec. IV-D fine-tuning). Recompile after."""
        self.stage = check_choice("stage", stage, ("bottleneck", "tail"))
        tail_stage = self.stage == "tail"
        self.tail.trainable = tail_stage
        for layer in (self.head1, self.head2, self.classifier):
            layer.trainable = not tail_stage

    def _loss_terms(self, images, labels, outputs):
        """Per-sample total loss (batch,) and the per-sample terms of the current stage."""
        if self.stage == "tail":
            total = keras.losses.sparse_categorical_crossentropy(
                labels, outputs["logits"], from_logits=True)
            return total, {}
        teacher = self.teacher_head(images, training=False)
        mimic = mimic_error(teacher, outputs["reconstruction"], self.mimic_reduction)
        nll = early_classification_nll(labels, outputs["log_probs"])
        total = self.alpha * mimic + self.gamma * nll
        terms = {"mimic_loss": mimic, "early_classification_loss": nll}
        if self.beta:
            kl = mixture_kl_divergence(self.flatten(outputs["mean"]),
                                       self.flatten(outputs["variance"]), labels,
                                       self.classifier, projection=self.projection)
            total = total + self.beta * kl
            terms["regularization_loss"] = kl
        return total, terms

    def _update_metrics(self, labels, outputs, total, terms):
        for name, value in terms.items():
            self._trackers[name].update_state(tf.reduce_mean(value))
        self._trackers["loss"].update_state(tf.reduce_mean(total))
        self._accuracy["local_accuracy"].update_state(labels, outputs["log_probs"])
        self._accuracy["remote_accuracy"].update_state(labels, outputs["logits"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        if self._labels_in(x):
            if y is not None:
                raise ValueError("ReBEL received labels both in the inputs and as `y`: use "
                                 "fit(images, labels) or fit({'images': ..., 'labels': ...}), "
                                 "not both.")
            # `call` already added Eq. (5) with add_loss: Keras's own composition.
            return super().compute_loss(x, y, y_pred, sample_weight)
        if y is None:
            raise ValueError("ReBEL needs integer labels: call fit(images, labels) or "
                             "fit({'images': images, 'labels': labels}).")
        labels = check_labels(y, self.num_classes)
        total, terms = self._loss_terms(self._split_inputs(x)[0], labels, y_pred)
        self._update_metrics(labels, y_pred, total, terms)
        loss = tf.nn.compute_average_loss(total)
        if self.losses:
            loss = loss + tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight):
        # Updated with the loss (in `compute_loss`, or in `call` when the labels are inputs).
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return list(self._trackers.values()) + list(self._accuracy.values())

    # -- deployment -----------------------------------------------------------------------

    def device_model(self):
        """Head₁ (z = μ) + projection + classifier: images → {"z", "log_probs"}."""
        images = keras.Input(self.teacher_head.input_shape[1:], name="images")
        _, mean, _ = self.head1(images, training=False)
        return keras.Model(images, {"z": mean, "log_probs": self.early_log_probs(mean)},
                           name="rebel_device")

    def server_model(self):
        """Head₂ + tail: z → {"logits"}."""
        z = keras.Input(self.head1.compute_output_shape(
            (None,) + tuple(self.teacher_head.input_shape[1:]))[0][1:], name="z")
        logits = self.tail(self.head2(z), training=False)
        return keras.Model(z, {"logits": tf.cast(logits, tf.float32)}, name="rebel_server")

    def get_config(self):
        config = dict(self._config)
        config["teacher_head"] = keras.layers.serialize(self.teacher_head)
        config["tail"] = keras.layers.serialize(self.tail)
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher_head"] = keras.layers.deserialize(config["teacher_head"])
        config["tail"] = keras.layers.deserialize(config["tail"])
        return cls(**config)
