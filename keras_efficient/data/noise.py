"""Robust per-band background noise of image stamps, from their borders.

An isolated-galaxy stamp has the source near the centre; the pixels of a border
of width w are (mostly) sky, so their spread is the background noise. The
estimate is the median absolute deviation about the median, scaled to a
standard deviation,

    sigma = 1.4826 * median(|x - median(x)|),      1.4826 = 1 / Phi^-1(3/4),

which is unbiased for Gaussian noise and ignores a minority of outliers (a
galaxy's wings reaching the border, hot pixels, a neighbour): it breaks down only
when half the border pixels are contaminated. Its standard deviation for n
Gaussian pixels is about 1.166 sigma / sqrt(n).

Divide the images by it (`images / estimate_noise(images)`) to put every band in
units of its noise, i.e. order-one pixel values whatever the exposure and sky.
"""

import numpy as np

from keras_efficient.utils.validation import check_bool, check_int

__all__ = ["MAD_TO_SIGMA", "estimate_noise"]

#: 1 / Phi^-1(3/4): the MAD of a Gaussian times this is its standard deviation.
MAD_TO_SIGMA = 1.482602218505602


def _border_mask(height, width, border):
    mask = np.ones((height, width), dtype=bool)
    mask[border:height - border, border:width - border] = False
    return mask


def estimate_noise(images, border=4, per_image=False):
    """Robust per-band noise sigma from the border pixels of image stamps.

    Args:
      images: array [N, height, width, bands] (channels last, as `make_galaxies`
        returns) or one image [height, width, bands].
      border: width w in pixels of the border used (the outer w rows and columns
        of each stamp); 2 w must be smaller than the height and the width.
      per_image: False: one sigma per band, pooled over the borders of all
        images; True: one per image and band.

    Returns:
      float64 array [bands] (or [N, bands] with `per_image=True`) of
      1.4826 * MAD of the border pixels.

    Raises:
      ValueError: for a wrong rank, a border that leaves no interior, non-finite
        pixels, or a border whose pixels are all equal (no noise to measure).
    """
    border = check_int("border", border, low=1)
    check_bool("per_image", per_image)
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
        single = True
    elif x.ndim == 4:
        single = False
    else:
        raise ValueError("`images` must have shape [N, height, width, bands] or [height, width, "
                         "bands]. Received: images.shape={}".format(np.shape(images)))
    n, height, width, bands = x.shape
    if n == 0 or bands == 0:
        raise ValueError("`images` is empty. Received: images.shape={}".format(x.shape))
    if 2 * border >= min(height, width):
        raise ValueError(
            "Invalid value received for argument `border`. Expected a width w with 2 w < "
            "min(height, width) = {}. Received: border={}".format(min(height, width), border))
    pixels = x[:, _border_mask(height, width, border), :]  # [N, P, bands]
    if not np.all(np.isfinite(pixels)):
        raise ValueError("The border pixels contain NaN or Inf.")
    if not per_image or single:
        pixels = pixels.reshape(1, -1, bands)
    centre = np.median(pixels, axis=1, keepdims=True)
    sigma = MAD_TO_SIGMA * np.median(np.abs(pixels - centre), axis=1)
    if np.any(sigma <= 0.0):
        raise ValueError("At least one band has a constant border (MAD = 0): no noise to "
                         "measure. Use a wider `border` or check the images.")
    return sigma[0] if (not per_image or single) else sigma
