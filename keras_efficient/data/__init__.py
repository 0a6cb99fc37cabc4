"""Built-in and generated data sets, and data-pipeline transforms."""

from keras_efficient.data.minibatch_dropping import (
    DropCounter,
    drop_minibatches,
    smd_steps_per_epoch,
)
from keras_efficient.data.galaxies import make_galaxies
from keras_efficient.data.images import DATASETS, load_digits32, load_images
from keras_efficient.data.noise import estimate_noise
from keras_efficient.data.shapes import SHAPE_NAMES, load_shapes32, make_shapes32
from keras_efficient.data.sequences import make_ctc_sequences, make_speech_sequences

__all__ = [
    "DATASETS",
    "DropCounter",
    "SHAPE_NAMES",
    "drop_minibatches",
    "estimate_noise",
    "smd_steps_per_epoch",
    "load_digits32",
    "load_images",
    "load_shapes32",
    "make_ctc_sequences",
    "make_galaxies",
    "make_shapes32",
    "make_speech_sequences",
]
