"""Jointly trained early classifier: γ·L_C must shape z even when v is large (Eq. 1, 5).

A synthetic task where the label lives in the image but not in the teacher tensor
v: channel 0 is noise that a frozen 3×3 convolution with 64 filters maps to v
(8×8×64 = 4,096 values), channel 1 carries the label (which 4×4 quadrant is
brighter) and is invisible to the teacher. Head₁ has a single latent channel, so
z must share it between mimicking v and the label. With Eq. (1) summed over the
4,096 elements of v, L_M is ~10³ times γ·L_C, Head₁ spends z on v alone and the
linear early classifier stays at chance (0.25); with the per-element mean (the
default) it learns the quadrant.
"""

import numpy as np

from keras_efficient.backend import keras
from keras_efficient.models.rebel import ReBEL


def _quadrant_task(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = np.zeros((n, 8, 8, 2), "float32")
    x[..., 0] = rng.normal(0.0, 1.0, (n, 8, 8))
    x[..., 1] = rng.normal(0.0, 0.5, (n, 8, 8))
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * q:4 * q + 4, 1] += 1.0
    return x, y


def _label_blind_teacher():
    """Head H: a 3×3 convolution with 64 filters that reads channel 0 only; tail T."""
    images = keras.Input((8, 8, 2))
    conv = keras.layers.Conv2D(64, 3, padding="same")
    head = keras.Model(images, conv(images))
    kernel, bias = conv.get_weights()
    kernel[:, :, 1, :] = 0.0
    conv.set_weights([kernel, bias])
    v = keras.Input(head.output_shape[1:])
    tail = keras.Model(v, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(v)))
    return head, tail


def test_linear_early_classifier_learns_next_to_a_large_mimic_loss():
    x, y = _quadrant_task(1024, 0)
    x_test, y_test = _quadrant_task(512, 1)
    keras.utils.set_random_seed(0)
    head, tail = _label_blind_teacher()
    keras.utils.set_random_seed(1)
    model = ReBEL(head, tail, 4, head_filters=(8, 8), head_strides=(1, 1), latent_channels=1,
                  decoder_filters=(8,), classifier="linear", beta=0.0)   # α = 1, γ = 0.1
    model.compile(keras.optimizers.Adam(5e-3))
    model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    local = model.predict(x_test, batch_size=256, verbose=0)["log_probs"].argmax(-1)
    # Chance is 0.25; with mimic_reduction="sum" this ends at 0.25-0.35.
    assert np.mean(local == y_test) > 0.9
