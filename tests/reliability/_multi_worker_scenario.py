"""One worker of a two-worker MultiWorkerMirroredStrategy job, run by test_multi_worker_resume.py.

    TF_CONFIG=... python _multi_worker_scenario.py MODE WORKDIR

MODE is `reference` (uninterrupted), `killed` (worker 1 kills itself with SIGKILL
after batch 1 of epoch 2) or `restarted` (a new job resuming with
`keras.callbacks.BackupAndRestore` from WORKDIR/backup). Each worker writes its
final weights to WORKDIR/MODE_w<index>.npz and prints one RESULT line.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_efficient.backend import keras, tf  # noqa: E402
from keras_efficient.distribute import parse_tf_config  # noqa: E402
from keras_efficient.layers import AdaptiveDropout  # noqa: E402
from keras_efficient.schedules import RetentionTargetSchedule  # noqa: E402

EPOCHS, STEPS, GLOBAL_BATCH, KILL_EPOCH, KILL_BATCH = 4, 4, 16, 2, 1


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)
        self.epoch = epoch


class _KillSelf(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_train_batch_end(self, batch, logs=None):
        if self.epochs.epoch == KILL_EPOCH and batch >= KILL_BATCH:
            os.kill(os.getpid(), signal.SIGKILL)


def main(mode, workdir):
    tf.config.experimental.enable_op_determinism()
    index = parse_tf_config()["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inp = keras.Input((8,))
        h = keras.layers.Dense(16, name="d1")(inp)
        h = AdaptiveDropout(RetentionTargetSchedule(1.0, -1.0, 40), alpha=1e-3, gamma=1e-2,
                            seed=3, name="adl")(h)
        model = keras.Model(inp, keras.layers.Dense(1, name="d2")(h))
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 8)).astype(np.float32)
    y = (x[:, :2].sum(axis=1, keepdims=True) + 0.1 * rng.normal(size=(len(x), 1))).astype(
        np.float32)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)
    data = data.with_options(options)
    epochs = _Epochs()
    callbacks = [epochs]
    if mode != "reference":
        callbacks.insert(0, keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")))
    if mode == "killed" and index == 1:
        callbacks.append(_KillSelf(epochs))
    model.fit(data, epochs=EPOCHS, verbose=0, callbacks=callbacks)
    np.savez(os.path.join(workdir, "{}_w{}.npz".format(mode, index)),
             *[w.numpy() for w in model.weights])
    print("RESULT " + json.dumps({
        "epochs": epochs.seen, "iterations": int(model.optimizer.iterations.numpy()),
        "step": int(model.get_layer("adl").step), "replicas": strategy.num_replicas_in_sync}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
