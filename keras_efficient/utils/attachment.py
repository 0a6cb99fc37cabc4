"""Attaching a loss-owning object (a budget) to a built Keras model, once, in one place."""

__all__ = ["attach_to_model"]


def attach_to_model(model, obj, name, attribute):
    """Makes `obj` part of `model`'s training without making it a layer of its graph.

    `obj` (a Keras layer with `budget_loss` and `budget_metrics`) becomes a checkpoint
    dependency of `model` called `name` (so `save_weights`, `tf.train.Checkpoint` and
    `BackupAndRestore` carry its state), is stored untracked as `model.<attribute>`,
    adds its metrics and its loss, and the compiled functions are dropped so the next
    `fit` / `evaluate` / `predict` traces with it. Relies on three private attributes of
    Keras 2 models (`_track_trackable`, `_self_setattr_tracking`, `_metrics`).
    """
    model._track_trackable(obj, name=name)
    model._self_setattr_tracking = False
    try:
        setattr(model, attribute, obj)
    finally:
        model._self_setattr_tracking = True
    model._metrics.extend(obj.budget_metrics)
    model.add_loss(obj.budget_loss)
    model.train_function = None
    model.test_function = None
    model.predict_function = None
