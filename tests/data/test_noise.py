"""estimate_noise: known Gaussian noise plus a bright central source and border outliers."""

import numpy as np
import pytest

from keras_efficient.data.noise import MAD_TO_SIGMA, estimate_noise

SIGMAS = np.array([1.0, 5.0, 20.0, 0.3])


def _stamps(n=20, size=64, seed=0, source_flux=1e4, outliers=0.0):
    """Gaussian noise of SIGMAS per band + a bright extended source at the centre (its
    wings reach the border) + optional hot pixels in a fraction `outliers` of pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    r2 = xx ** 2 + yy ** 2
    # Moffat-like wings: the source adds ~0.3 sigma at the corners of the first band.
    profile = 1.0 / (1.0 + r2 / 9.0) ** 1.5
    images = np.empty((n, size, size, len(SIGMAS)))
    for b, sigma in enumerate(SIGMAS):
        images[..., b] = (source_flux * sigma / 100.0) * profile + rng.normal(0.0, sigma,
                                                                             (n, size, size))
    if outliers:
        hot = rng.random(images.shape) < outliers
        images[hot] += 1e3 * SIGMAS[np.nonzero(hot)[-1]]
    return images.astype(np.float32)


def _border_count(n, size, border):
    return n * (size * size - (size - 2 * border) ** 2)


def test_mad_constant():
    from scipy import stats

    assert MAD_TO_SIGMA == pytest.approx(1.0 / stats.norm.ppf(0.75), rel=1e-12)


def test_recovers_known_noise_despite_source_and_hot_pixels():
    """Tolerance: 5 sd of the MAD estimate, sd = 1.166 sigma / sqrt(n) for n Gaussian border
    pixels, plus 2% for the bias of 1% hot pixels (a fraction e of one-sided outliers moves
    the median and the MAD by about e; measured 0.5-1.2% more than without them here)."""
    n, size, border = 20, 64, 4
    images = _stamps(n, size, outliers=0.01)
    got = estimate_noise(images, border=border)
    assert got.shape == (4,) and got.dtype == np.float64
    sd = 1.166 * SIGMAS / np.sqrt(_border_count(n, size, border))
    np.testing.assert_array_less(np.abs(got - SIGMAS), 5 * sd + 0.02 * SIGMAS)
    # The plain standard deviation of the same border pixels is ruined by the hot pixels.
    mask = np.ones((size, size), bool)
    mask[border:-border, border:-border] = False
    assert np.all(images[:, mask, :].std(axis=(0, 1)) > 10 * SIGMAS)
    # Without the contamination: within 5 sd.
    clean = estimate_noise(_stamps(n, size, source_flux=0.0), border=border)
    np.testing.assert_array_less(np.abs(clean - SIGMAS), 5 * sd)


def test_per_image_single_image_and_border_width():
    images = _stamps(6, 48, seed=1)
    per_image = estimate_noise(images, border=6, per_image=True)
    assert per_image.shape == (6, 4)
    sd = 1.166 * SIGMAS / np.sqrt(_border_count(1, 48, 6))
    np.testing.assert_array_less(np.abs(per_image - SIGMAS),
                                  np.broadcast_to(5 * sd + 0.03 * SIGMAS, per_image.shape))
    np.testing.assert_array_equal(estimate_noise(images[2], border=6), per_image[2])
    np.testing.assert_array_equal(estimate_noise(images[2], border=6, per_image=True),
                                  per_image[2])
    # The border really is the outer w pixels: changing the interior changes nothing.
    edited = images.copy()
    edited[:, 6:-6, 6:-6, :] = 1e9
    np.testing.assert_array_equal(estimate_noise(edited, border=6),
                                  estimate_noise(images, border=6))


def test_scaling_by_the_estimate_gives_unit_noise():
    images = _stamps(10, 64, seed=2, source_flux=0.0)
    scaled = images / estimate_noise(images)
    np.testing.assert_allclose(scaled[:, :4].std(axis=(0, 1, 2)), 1.0, rtol=0.05)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"border": 0}, ValueError, "border"),
    ({"border": 32}, ValueError, "border"),
    ({"border": 2.0}, TypeError, "border"),
    ({"border": None}, TypeError, "border"),
    ({"per_image": 1}, TypeError, "per_image"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        estimate_noise(_stamps(2, 64), **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="shape"):
        estimate_noise(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="empty"):
        estimate_noise(np.zeros((0, 64, 64, 3)))
    nan = _stamps(2, 64)
    nan[0, 0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_noise(nan)
    with pytest.raises(ValueError, match="constant border"):
        estimate_noise(np.ones((2, 16, 16, 3)))
