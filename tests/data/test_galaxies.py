"""GalSim galaxies: shapes vs drawn shear (independent NumPy moments), flux, noise, cache."""

import sys

import numpy as np
import pytest

pytest.importorskip("galsim", reason="GalSim is not installed (pip install 'keras_efficient[data]')")

from keras_efficient.data import galaxies  # noqa: E402
from keras_efficient.data.galaxies import (  # noqa: E402
    BANDS,
    draw_galaxy_parameters,
    make_galaxies,
    render_galaxy,
)


def _adaptive_moments(image, iterations=100):
    """Elliptical-Gaussian-weighted adaptive second moments (NumPy only).

    At convergence the weight matches the image's isophotes, so for an elliptical
    profile the moment ellipticity equals the isophote ellipticity whatever the
    radial profile (and truncation by the stamp does not matter).
    """
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    m = np.array([[25.0, 0.0], [0.0, 25.0]])
    for _ in range(iterations):
        inv = np.linalg.inv(m)
        dx, dy = x - cx, y - cy
        w = np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy))
        iw = image * w
        s = iw.sum()
        cx, cy = (iw * x).sum() / s, (iw * y).sum() / s
        dx, dy = x - cx, y - cy
        q = np.array([[(iw * dx * dx).sum(), (iw * dx * dy).sum()],
                      [(iw * dx * dy).sum(), (iw * dy * dy).sum()]]) / s
        new = 2.0 * q
        if np.allclose(new, m, rtol=1e-7, atol=1e-9):
            break
        m = new
    return m


def _isophote_moments(image, num_pixels=3000):
    """Second moments of the region inside one isophote (the `num_pixels` brightest pixels).

    The region of an elliptical profile above a threshold is an ellipse with the
    profile's shape, whatever the radial profile, so its (uniformly weighted)
    moments give the ellipticity exactly up to the pixelisation of its edge.
    """
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    threshold = np.sort(image.ravel())[-num_pixels]
    inside = image >= threshold
    xs, ys = x[inside], y[inside]
    dx, dy = xs - xs.mean(), ys - ys.mean()
    return np.array([[np.mean(dx * dx), np.mean(dx * dy)], [np.mean(dx * dy), np.mean(dy * dy)]])


def _reduced_shear(m):
    """(g1, g2) from a second-moment matrix: chi = (Q11-Q22, 2Q12)/(Q11+Q22), g = chi/(1+sqrt(1-|chi|^2))."""
    chi = np.array([m[0, 0] - m[1, 1], 2 * m[0, 1]]) / (m[0, 0] + m[1, 1])
    return chi / (1.0 + np.sqrt(1.0 - np.dot(chi, chi)))


@pytest.mark.parametrize("profile", ["bulge+disk", "sersic"])
def test_noiseless_shapes_match_the_drawn_shear(profile):
    """Tolerance: |g_measured - g_drawn| < 0.005 per component (0.002 measured).

    Pre-PSF profiles sampled at the centres of 0.05" pixels (256x256, the same 12.8"
    field): on the 0.2" survey pixels the sampling of the cuspy centres alone shifts
    the smallest galaxies by up to 0.03, which would hide errors in the targets.
    """
    params = draw_galaxy_parameters(12, profile=profile, seed=3)
    for i in range(12):
        image = render_galaxy(params, i, psf=False, pixel_scale=0.05, image_size=256)
        g = _reduced_shear(_isophote_moments(image))
        np.testing.assert_allclose(g, [params["g1"][i], params["g2"][i]], atol=0.005)


def test_psf_convolved_shapes_keep_the_direction_and_are_rounder():
    """With the PSF the measured ellipticity is diluted but keeps the orientation.

    Tolerance: position angle within 2 degrees for |g| > 0.1.
    """
    params = draw_galaxy_parameters(12, seed=4)
    checked = 0
    for i in range(12):
        g_true = np.array([params["g1"][i], params["g2"][i]])
        if np.hypot(*g_true) < 0.1:
            continue
        g = _reduced_shear(_adaptive_moments(render_galaxy(params, i, psf=True)))
        angle = np.degrees(0.5 * (np.arctan2(g[1], g[0]) - np.arctan2(g_true[1], g_true[0])))
        angle = (angle + 90) % 180 - 90
        assert abs(angle) < 2.0
        assert np.hypot(*g) < np.hypot(*g_true)
        checked += 1
    assert checked >= 5


def test_fluxes_targets_and_noise():
    data = make_galaxies(6, seed=1, noise=False, progress=False)
    assert data["images"].shape == (6, 64, 64, 6) and data["images"].dtype == np.float32
    assert tuple(data["bands"]) == BANDS
    np.testing.assert_array_equal(data["targets"], np.stack([data["g1"], data["g2"]], 1).astype(np.float32))
    # Noiseless stamps hold the drawn flux up to the light outside the 12.8" stamp.
    ratio = data["images"].sum(axis=(1, 2)) / data["flux"]
    assert np.all(ratio > 0.95) and np.all(ratio < 1.0 + 1e-4)
    # Flux ratios between bands follow the drawn magnitudes (AB: 10^(-0.4 dm) x zero points).
    zp = np.array([galaxies.LSST_BANDS[b][0] * galaxies.LSST_BANDS[b][1] for b in BANDS])
    expected = zp * 10 ** (-0.4 * (data["magnitude"] - 24.0))
    np.testing.assert_allclose(data["flux"], expected, rtol=1e-10)

    noisy = make_galaxies(6, seed=1, noise=True, progress=False)
    residual = noisy["images"].astype(np.float64) - data["images"]
    sky = np.array([galaxies.sky_per_pixel(b) for b in BANDS])
    # Poisson: variance = sky + signal; in the four 12x12 stamp corners the signal is
    # negligible. 3456 values per band: the variance estimate has a 2.4 % standard
    # error; tolerance 10 % (4 standard errors).
    corner = np.concatenate([residual[:, :12, :12], residual[:, :12, -12:],
                             residual[:, -12:, :12], residual[:, -12:, -12:]]).reshape(-1, 6)
    np.testing.assert_allclose(corner.var(axis=0), sky, rtol=0.10)
    assert np.all(np.abs(corner.mean(axis=0)) < 5 * np.sqrt(sky / corner.shape[0]))


def test_cache_and_progress(tmp_path, capsys, monkeypatch):
    first = make_galaxies(5, seed=2, batch_size=2, cache_dir=str(tmp_path), progress=True)
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("galaxies:")]
    assert len(lines) == 3 and "5/5" in lines[-1]
    # The second call must not render: make GalSim unavailable.
    monkeypatch.setitem(sys.modules, "galsim", None)
    second = make_galaxies(5, seed=2, cache_dir=str(tmp_path), progress=False)
    np.testing.assert_array_equal(first["images"], second["images"])
    np.testing.assert_array_equal(first["targets"], second["targets"])
    with pytest.raises(ImportError, match="pip install"):
        make_galaxies(5, seed=3, cache_dir=str(tmp_path), progress=False)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_galaxies": 0}, ValueError, "num_galaxies"),
    ({"num_galaxies": 2.0}, TypeError, "num_galaxies"),
    ({"num_galaxies": 2, "profile": "spiral"}, ValueError, "profile"),
    ({"num_galaxies": 2, "pixel_scale": 0}, ValueError, "pixel_scale"),
    ({"num_galaxies": 2, "psf_fwhm": -1.0}, ValueError, "psf_fwhm"),
    ({"num_galaxies": 2, "noise": "yes"}, TypeError, "noise"),
    ({"num_galaxies": 2, "seed": -1}, ValueError, "seed"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_galaxies(progress=False, **kwargs)
