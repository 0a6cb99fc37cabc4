"""A CIFAR-style ResNet trained on the built-in 32×32 digits: the reference point.

The plain Keras pipeline every other experiment is compared with: a ResNet-(6n+2)
from `keras_efficient.models.cifar_resnet`, SGD with momentum and a cosine
learning rate, on `keras_efficient.data.load_digits32`. Reports test accuracy,
parameters, training time and the learning curves.
"""

import time

import numpy as np

from keras_efficient.backend import keras, tf
from keras_efficient.data import DATASETS, load_images
from keras_efficient.experiments.context import Option, choice, integer, resnet_depth
from keras_efficient.models import cifar_resnet

DESCRIPTION = "CIFAR-style ResNet on the built-in 32x32 digits: the plain Keras reference run."

OPTIONS = {
    "dataset": Option(choice(*DATASETS), default="digits",
                      help="image data set; cifar10/cifar100 are downloaded on first use"),
    "depth": Option(resnet_depth(), default=20, quick=8, help="depth of the CIFAR ResNet"),
    "base_filters": Option(integer(low=1), default=16,
                           help="filters of the first stage (doubled at each later stage)"),
    "epochs": Option(integer(low=1), default=20, quick=6, help="training epochs"),
    "batch_size": Option(integer(low=1), default=64, help="training batch size"),
    "train_size": Option(integer(low=1), default=None,
                         help="train on the first N training images only (unset: all)"),
    "test_size": Option(integer(low=1), default=None,
                        help="evaluate on the first N test images only (unset: all)"),
}


def run(ctx):
    dataset = ctx.option("dataset")
    depth = ctx.option("depth")
    epochs = ctx.option("epochs")
    batch_size = ctx.option("batch_size")
    (x_train, y_train), (x_test, y_test) = load_images(dataset)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    x_train, y_train = x_train[:ctx.option("train_size")], y_train[:ctx.option("train_size")]
    x_test, y_test = x_test[:ctx.option("test_size")], y_test[:ctx.option("test_size")]
    ctx.log("data {}: {} train / {} test images, {} classes".format(
        dataset, len(x_train), len(x_test), num_classes))

    model = cifar_resnet(depth, num_classes=num_classes, weight_decay=1e-4,
                         base_filters=ctx.option("base_filters"))
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(0.1, steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=ctx.seed).batch(batch_size))
    start = time.time()
    history = model.fit(train, epochs=epochs, validation_data=(x_test, y_test),
                        verbose=0, callbacks=[ctx.progress("resnet{}".format(depth))])
    train_time = time.time() - start
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    ctx.log("test accuracy {:.4f}".format(test_acc))

    ctx.report.add_text(__doc__)
    ctx.report.add_table("Result", ["model", "parameters", "epochs", "train time (s)",
                                    "test loss", "test accuracy"],
                         [["ResNet-{}".format(depth), model.count_params(), epochs, train_time,
                           test_loss, test_acc]])
    ctx.report.add_metrics({"depth": depth, "dataset": dataset, "parameters": model.count_params(),
                            "epochs": epochs, "train_time_s": train_time, "test_loss": test_loss,
                            "test_accuracy": test_acc, "history": history.history})

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs_axis = np.arange(1, epochs + 1)
    ax1.plot(epochs_axis, history.history["loss"], label="train")
    ax1.plot(epochs_axis, history.history["val_loss"], label="test")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("cross-entropy"), ax1.legend()
    ax2.plot(epochs_axis, history.history["accuracy"], label="train")
    ax2.plot(epochs_axis, history.history["val_accuracy"], label="test")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy"), ax2.legend()
    fig.suptitle("ResNet-{} on {}".format(depth, dataset))
    ctx.report.add_figure("learning_curves", fig, "Learning curves")
