"""Shapes32: a rendered 10-class image task, harder than the digits and with no download.

Each 32×32 RGB image shows one large *target* shape whose kind is the label:

  0 disk, 1 square, 2 triangle, 3 cross, 4 ring, 5 star, 6 ellipse,
  7 crescent, 8 L, 9 square frame

drawn on top of a cluttered scene. The kind is all that carries the label;
everything else is drawn from the same distributions for every class:

* pose: centre within ±5 px of the image centre, radius 6.5–11 px, any rotation,
  aspect ratio exp(U(−0.2, 0.2)) (so disk/ellipse, ring/frame, square/frame and
  L/cross/square differ in outline details, not in size or colour);
* colour: the target's colour differs from the background's mean colour by
  0.3–0.5 in each channel (brighter or darker, whichever fits in [0, 1]); its
  texture varies that colour by at most ±0.15;
* texture: stripes, checkerboard, dots or low-frequency noise, with random
  frequency (period 4–13 px), orientation and phase, on the target, on the
  background (two colours up to ±0.4 apart per channel) and on each distractor;
* clutter: up to three distractor shapes of random kinds and random colours at
  30–55 % of the target's radius (often cut by the border or hidden under the
  target), and up to two straight lines of random colour drawn over the scene,
  one in three of them through the target's centre region;
* photometric nuisance: per-channel gain U(0.75, 1.25) and offset U(−0.1, 0.1),
  Gaussian blur (σ = 0.3–0.9 px), Gaussian pixel noise (σ = 0.01–0.06).

Shapes are drawn with anti-aliased edges from signed distance functions.
Rendering is vectorised NumPy over blocks of 500 images, each block from its own
random stream (`SeedSequence([seed, split, block])`), so a given seed always
yields the same images, the training and test sets come from disjoint streams,
and the first n images of a larger set equal a smaller set of size n
(`make_shapes32(10000)` is a prefix of `make_shapes32(40000)`). Every run of ten
consecutive images holds each class once, so any prefix is balanced to within
one image per class. The default 50,000 images take about 15 s on one idle core.

Measured difficulty (seed 0, test images 0..1999 or 0..4999; CPU, TF 2.21):
nearest class mean on the pixels 9.7 %, logistic regression on 8×8 grey
thumbnails 10.9 %, 5-nearest neighbours on the pixels (5,000 training images)
16.3 %; `cifar_resnet(14, base_filters=8)`, SGD with momentum 0.9, cosine
learning rate from 0.1, batch 64, weight decay 1e-4, no augmentation: 79.2 %
after 8 epochs on the first 10,000 training images, 95.4 % after 10 epochs on all
40,000 (first 5,000 test images). ResNets reach about 99 % on the digits. A
ResNet stays near chance for its first 400-600 steps here, so small subsets need
more epochs; docs/data_and_cli.md lists more runs.
"""

import numpy as np

from keras_efficient.utils.validation import check_int

__all__ = ["NUM_TEST", "NUM_TRAIN", "SHAPE_NAMES", "make_shapes32", "load_shapes32"]

#: default sizes of the training and test splits
NUM_TRAIN, NUM_TEST = 40000, 10000

SHAPE_NAMES = ("disk", "square", "triangle", "cross", "ring", "star", "ellipse", "crescent",
               "L", "frame")

_SIZE = 32
_BLOCK = 500          # images per random stream; a multiple of the number of classes
_TRAIN, _TEST = 0, 1  # stream identifiers of the two splits
# Difficulty knobs (see the module docstring).
_TARGET_CONTRAST = (0.3, 0.5)    # per-channel |target colour - background mean colour|
_TARGET_TEXTURE = 0.15           # per-channel spread of the target's two texture colours
_BACKGROUND_TEXTURE = 0.4        # per-channel spread of the background's texture colours
_DISTRACTORS, _DISTRACTOR_RATE, _DISTRACTOR_SCALE = 3, 0.5, (0.3, 0.55)
_LINES = 2                       # each drawn with probability 1/2
_BLUR = (0.3, 0.9)               # Gaussian blur sigma, pixels
_NOISE = (0.01, 0.06)            # Gaussian noise sigma
_PIX = np.arange(_SIZE, dtype=np.float32) + 0.5
_X = np.broadcast_to(_PIX[None, :], (_SIZE, _SIZE))   # column coordinate
_Y = np.broadcast_to(_PIX[:, None], (_SIZE, _SIZE))   # row coordinate


def _box(u, v, half_u, half_v):
    """Signed distance (approximately) to an axis-aligned box centred at (0, 0)."""
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _sdf(kind, u, v):
    """Signed distance to the outline of shape `kind` in local units (radius about 1)."""
    if kind == 0:    # disk
        return np.hypot(u, v) - 1.0
    if kind == 1:    # square
        return _box(u, v, 0.82, 0.82)
    if kind == 2:    # equilateral triangle, vertex up, circumradius 1.1
        d = np.maximum(-v - 0.55, 0.866 * u + 0.5 * v - 0.55)
        return np.maximum(d, -0.866 * u + 0.5 * v - 0.55)
    if kind == 3:    # cross (plus sign)
        return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
    if kind == 4:    # ring
        return np.abs(np.hypot(u, v) - 0.75) - 0.25
    if kind == 5:    # five-pointed star (radius varies with the polar angle)
        r = np.hypot(u, v)
        return (r - 0.62 - 0.38 * np.cos(5.0 * np.arctan2(v, u))) * 0.7
    if kind == 6:    # ellipse, axis ratio 0.5
        return (np.hypot(u, v / 0.5) - 1.0) * 0.5
    if kind == 7:    # crescent: a disk minus an offset disk
        return np.maximum(np.hypot(u, v) - 1.0, 0.8 - np.hypot(u - 0.5, v))
    if kind == 8:    # L
        return np.minimum(_box(u + 0.55, v, 0.3, 0.95), _box(u, v - 0.65, 0.85, 0.3))
    # square frame
    return np.maximum(_box(u, v, 0.85, 0.85), -_box(u, v, 0.45, 0.45))


def _alpha(kinds, cx, cy, radius, angle, aspect):
    """Anti-aliased coverage [n, 32, 32] of shapes of the given kinds and poses."""
    cx, cy, radius, angle, aspect = (np.asarray(p, np.float32)[:, None, None]
                                     for p in (cx, cy, radius, angle, aspect))
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = _X - cx, _Y - cy
    r, a = radius, aspect
    u = (c * dx + s * dy) / (r * a)
    v = (c * dy - s * dx) * a / r
    out = np.empty(u.shape, np.float32)
    for kind in np.unique(kinds):
        idx = kinds == kind
        # Distance in pixels (local distance × radius); half a pixel of ramp on each side.
        out[idx] = np.clip(0.5 - _sdf(kind, u[idx], v[idx]) * r[idx], 0.0, 1.0)
    return out


def _upsample_matrix(low):
    """[32, low] bilinear interpolation weights (align corners)."""
    pos = np.linspace(0.0, low - 1.0, _SIZE)
    left = np.minimum(np.floor(pos).astype(int), low - 2)
    frac = pos - left
    m = np.zeros((_SIZE, low), np.float32)
    m[np.arange(_SIZE), left] = 1.0 - frac
    m[np.arange(_SIZE), left + 1] = frac
    return m


_UP6 = _upsample_matrix(6)


def _texture(rng, n, keep):
    """Values [k, 32, 32] in [0, 1] for the k rows in `keep`: stripes, checkerboard, dots
    or low-frequency noise. Parameters are drawn for all `n` rows (a fixed random stream)."""
    kind = rng.integers(0, 4, n)[keep]
    freq = rng.uniform(0.5, 1.6, n).astype(np.float32)[keep, None, None]
    theta = rng.uniform(0.0, np.pi, n)[keep]
    phase = rng.uniform(0.0, 2 * np.pi, (n, 2)).astype(np.float32)[keep]
    low = rng.uniform(0.0, 1.0, (n, 6, 6)).astype(np.float32)[keep]
    c = (np.cos(theta)[:, None, None] * freq).astype(np.float32)
    s = (np.sin(theta)[:, None, None] * freq).astype(np.float32)
    out = np.empty((len(kind), _SIZE, _SIZE), np.float32)
    for k in range(4):
        idx = kind == k
        if not idx.any():
            continue
        if k == 3:      # smooth noise
            t = np.einsum("ij,njk,lk->nil", _UP6, low[idx], _UP6)
            t -= 0.5
            t *= 4.0
        else:
            ck, sk, ph = c[idx], s[idx], phase[idx]
            t = np.sin(ck * _X + sk * _Y + ph[:, :1, None])
            if k == 0:      # stripes
                t *= 3.0
            else:
                t *= np.sin(ck * _Y - sk * _X + ph[:, 1:, None])
                if k == 1:  # checkerboard
                    t *= 4.0
                else:       # dots
                    t -= 0.45
                    t *= 5.0
        t *= 0.5
        t += 0.5
        out[idx] = np.clip(t, 0.0, 1.0, out=t)
    return out


def _random_colours(rng, n):
    return rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)


def _paint(canvas, alpha, rng, n, c1, c2, keep=None):
    """Composites a texture blending colours `c1` and `c2` [n, 1, 1, 3] onto the rows
    `keep` of `canvas` [n, 32, 32, 3] (in place); with `canvas=None` returns the layer."""
    keep = np.ones(n, bool) if keep is None else keep
    t = _texture(rng, n, keep)[..., None]
    c1, c2 = c1[keep], c2[keep]
    t = t * (c2 - c1)
    t += c1
    if canvas is None:
        return t
    sub = canvas[keep]
    t -= sub
    t *= alpha[..., None]
    sub += t
    canvas[keep] = sub
    return canvas


def _line_alpha(rng, n, cx, cy, radius, keep):
    """Lines 1–2 px wide at random angles, for the rows in `keep`; one in three passes
    through the target's centre region."""
    through = rng.uniform(size=n) < 1.0 / 3.0
    px = np.where(through, cx + rng.uniform(-0.5, 0.5, n) * radius, rng.uniform(0, _SIZE, n))
    py = np.where(through, cy + rng.uniform(-0.5, 0.5, n) * radius, rng.uniform(0, _SIZE, n))
    theta = rng.uniform(0.0, np.pi, n)
    width = rng.uniform(0.5, 1.0, n)
    px, py, theta, width = (a[keep].astype(np.float32)[:, None, None]
                            for a in (px, py, theta, width))
    dist = np.abs(np.cos(theta) * (_Y - py) - np.sin(theta) * (_X - px))
    return np.clip(width + 0.5 - dist, 0.0, 1.0)


def _blur(images, sigma):
    """Separable Gaussian blur (5 taps, per-image sigma, edge padding)."""
    taps = np.arange(-2, 3, dtype=np.float32)
    w = np.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (2, 2)
        padded = np.pad(images, pad, mode="edge")
        out = np.zeros_like(images)
        for k in range(5):
            sl = [slice(None)] * 4
            sl[axis] = slice(k, k + _SIZE)
            out += w[:, k, None, None, None] * padded[tuple(sl)]
        images = out
    return images


def _render_block(seed, split, block, count):
    """The first `count` images of one block of `_BLOCK` images and their labels."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, block]))
    n = _BLOCK
    labels = np.concatenate([rng.permutation(len(SHAPE_NAMES))
                             for _ in range(n // len(SHAPE_NAMES))])
    # Every parameter of the block is drawn in a fixed order, whatever `count` is.
    cx = 16.0 + rng.uniform(-5.0, 5.0, n)
    cy = 16.0 + rng.uniform(-5.0, 5.0, n)
    radius = rng.uniform(6.5, 11.0, n)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    aspect = np.exp(rng.uniform(-0.2, 0.2, n))
    bg1 = _random_colours(rng, n)
    bg2 = np.clip(bg1 + rng.uniform(-_BACKGROUND_TEXTURE, _BACKGROUND_TEXTURE, (n, 1, 1, 3)),
                  0.0, 1.0).astype(np.float32)
    canvas = _paint(None, None, rng, n, bg1, bg2)
    for _ in range(_DISTRACTORS):
        present = rng.uniform(size=n) < _DISTRACTOR_RATE
        kinds = rng.integers(0, len(SHAPE_NAMES), n)
        pose = (rng.uniform(-2.0, _SIZE + 2.0, n), rng.uniform(-2.0, _SIZE + 2.0, n),
                radius * rng.uniform(*_DISTRACTOR_SCALE, n), rng.uniform(0, 2 * np.pi, n),
                np.exp(rng.uniform(-0.2, 0.2, n)))
        alpha = _alpha(kinds[present], *(p[present] for p in pose))
        canvas = _paint(canvas, alpha, rng, n, _random_colours(rng, n), _random_colours(rng, n),
                        present)
    # The target's colour differs from the background's mean by a random amount per
    # channel, towards the side with more room; its texture only varies it slightly.
    bg = 0.5 * (bg1 + bg2)
    delta = rng.uniform(*_TARGET_CONTRAST, (n, 1, 1, 3)).astype(np.float32)
    c1 = np.where(bg > 0.5, bg - delta, bg + delta)
    c2 = np.clip(c1 + rng.uniform(-_TARGET_TEXTURE, _TARGET_TEXTURE, (n, 1, 1, 3)), 0.0, 1.0)
    canvas = _paint(canvas, _alpha(labels, cx, cy, radius, angle, aspect), rng, n, c1,
                    c2.astype(np.float32))
    for _ in range(_LINES):   # lines, drawn over the target
        present = rng.uniform(size=n) < 0.5
        colour = _random_colours(rng, n)
        a = _line_alpha(rng, n, cx, cy, radius, present)[..., None]
        sub = canvas[present]
        sub += (colour[present] - sub) * a
        canvas[present] = sub
    gain = rng.uniform(0.75, 1.25, (n, 1, 1, 3)).astype(np.float32)
    offset = rng.uniform(-0.1, 0.1, (n, 1, 1, 3)).astype(np.float32)
    canvas = _blur(canvas * gain + offset, rng.uniform(*_BLUR, n))
    noise = rng.standard_normal((n, _SIZE, _SIZE, 3), dtype=np.float32)
    canvas += noise * rng.uniform(*_NOISE, (n, 1, 1, 1)).astype(np.float32)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return canvas[:count], labels[:count].astype(np.int64)


def _render(num, seed, split):
    x = np.empty((num, _SIZE, _SIZE, 3), np.float32)
    y = np.empty((num,), np.int64)
    for block, start in enumerate(range(0, num, _BLOCK)):
        count = min(_BLOCK, num - start)
        x[start:start + count], y[start:start + count] = _render_block(seed, split, block, count)
    return x, y


def make_shapes32(num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0):
    """Renders the Shapes32 task: `((x_train, y_train), (x_test, y_test))`.

    Args:
      num_train: number of training images (>= 0).
      num_test: number of test images (>= 0).
      seed: non-negative integer; the same seed gives the same images.

    Returns:
      x: float32 [N, 32, 32, 3] in [0, 1]; y: int64 labels 0..9 (see `SHAPE_NAMES`),
      each class once in every run of ten images.
    """
    num_train = check_int("num_train", num_train, low=0)
    num_test = check_int("num_test", num_test, low=0)
    seed = check_int("seed", seed, low=0)
    return _render(num_train, seed, _TRAIN), _render(num_test, seed, _TEST)


def load_shapes32():
    """The default Shapes32 split: 40,000 training and 10,000 test images, seed 0."""
    return make_shapes32()
