"""GalSim-rendered LSST-like isolated galaxies for galaxy shape estimation.

Section 3.1 of the IPU/GPU cosmology paper: isolated galaxies in the six LSST
filters (ugrizy), 64x64 pixels of 0.2 arcsec, convolved with a fixed PSF, with
Poisson noise; the network input is the image and the target the ellipticity
(e1, e2). The paper draws parametric fits to HST COSMOS galaxies; this module
draws the parameters from simple distributions instead (no catalogue download):

* profile "bulge+disk": exponential disk + de Vaucouleurs bulge with bulge flux
  fraction ~ U(0, 1) and bulge half-light radius 0.6 x the disk's; or "sersic":
  one Sersic profile with n ~ U(0.5, 4);
* half-light radius ~ log-uniform in [0.3, 1.2] arcsec;
* i-band magnitude ~ U(20, 24.5), other bands from fixed mean colours
  (u-i 1.5, g-i 0.8, r-i 0.3, z-i -0.1, y-i -0.2) plus N(0, 0.2) scatter;
* ellipticity: the profile is sheared by the reduced shear (g1, g2), each
  component ~ N(0, 0.2) truncated to |g| < 0.7; the targets are (e1, e2) = (g1, g2)
  (|e| = (a - b) / (a + b) for elliptical isophotes with axis ratio b/a);
* a fixed Moffat PSF (beta = 3, FWHM 0.7 arcsec), the same in all bands;
* fluxes and sky from approximate LSST 10-year values (zero points in e-/s at
  magnitude 24, total exposure per band, sky brightness per band, as used by the
  WeakLensingDeblending package); Poisson noise on galaxy + sky, sky subtracted.

The galaxy shape is achromatic (colours only scale the flux), so each galaxy is
rendered once and scaled per band. Images are float32 [N, 64, 64, 6] (bands last,
channels-last for Keras; the paper feeds [N, 6, 64, 64]) in electrons.
"""

import hashlib
import json
import os
import sys
import time

import numpy as np

from keras_efficient.utils.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
)

__all__ = ["BANDS", "LSST_BANDS", "make_galaxies", "draw_galaxy_parameters", "render_galaxy"]

BANDS = ("u", "g", "r", "i", "z", "y")

#: band -> (zero point [e-/s at mag 24], exposure [s], sky brightness [mag/arcsec^2])
LSST_BANDS = {
    "u": (9.16, 1680.0, 22.99),
    "g": (50.70, 2400.0, 22.26),
    "r": (43.70, 5520.0, 21.20),
    "i": (32.36, 5520.0, 20.48),
    "z": (22.68, 4800.0, 19.60),
    "y": (10.56, 4800.0, 18.61),
}

_COLOURS_MINUS_I = np.array([1.5, 0.8, 0.3, 0.0, -0.1, -0.2])
_FORMAT_VERSION = 1
_INSTALL = ("Rendering galaxies needs GalSim. Install it with `pip install 'keras_efficient[data]'` "
            "(or `pip install galsim`; on conda: `conda install -c conda-forge galsim`).")


def _galsim():
    try:
        import galsim
    except ImportError:
        raise ImportError(_INSTALL) from None
    return galsim


def band_flux(magnitude, band):
    """Total electrons of a source of AB magnitude `magnitude` in `band`."""
    zero_point, exposure, _ = LSST_BANDS[band]
    return exposure * zero_point * 10.0 ** (-0.4 * (np.asarray(magnitude) - 24.0))


def sky_per_pixel(band, pixel_scale=0.2):
    """Sky electrons per pixel in `band`."""
    _, _, sky_mag = LSST_BANDS[band]
    return float(band_flux(sky_mag, band) * pixel_scale ** 2)


def draw_galaxy_parameters(num_galaxies, profile="bulge+disk", seed=0):
    """Draws the parameters of `num_galaxies` galaxies (see the module docstring).

    Returns:
      dict of float64 arrays: `g1`, `g2`, `half_light_radius` [arcsec],
      `bulge_fraction` (bulge+disk) or `sersic_n` (sersic), `magnitude` [N, 6]
      (ugrizy) and `flux` [N, 6] in electrons.
    """
    num_galaxies = check_int("num_galaxies", num_galaxies, low=1)
    check_choice("profile", profile, ("bulge+disk", "sersic"))
    rng = np.random.default_rng(seed)
    g = rng.normal(0.0, 0.2, (num_galaxies, 2))
    bad = np.hypot(g[:, 0], g[:, 1]) >= 0.7
    while np.any(bad):
        g[bad] = rng.normal(0.0, 0.2, (int(bad.sum()), 2))
        bad = np.hypot(g[:, 0], g[:, 1]) >= 0.7
    params = {
        "g1": g[:, 0],
        "g2": g[:, 1],
        "half_light_radius": np.exp(rng.uniform(np.log(0.3), np.log(1.2), num_galaxies)),
    }
    if profile == "bulge+disk":
        params["bulge_fraction"] = rng.uniform(0.0, 1.0, num_galaxies)
    else:
        params["sersic_n"] = np.round(rng.uniform(0.5, 4.0, num_galaxies), 1)
    mag_i = rng.uniform(20.0, 24.5, num_galaxies)
    mags = mag_i[:, None] + _COLOURS_MINUS_I[None, :] + rng.normal(0.0, 0.2, (num_galaxies, 6))
    mags[:, 3] = mag_i
    params["magnitude"] = mags
    params["flux"] = np.stack([band_flux(mags[:, b], band) for b, band in enumerate(BANDS)], axis=1)
    return params


def _profile(galsim, params, index):
    hlr = float(params["half_light_radius"][index])
    if "bulge_fraction" in params:
        bf = float(params["bulge_fraction"][index])
        gal = galsim.Exponential(half_light_radius=hlr, flux=1.0 - bf)
        if bf > 0:
            gal = gal + galsim.DeVaucouleurs(half_light_radius=0.6 * hlr, flux=bf)
    else:
        gal = galsim.Sersic(n=float(params["sersic_n"][index]), half_light_radius=hlr, flux=1.0)
    return gal.shear(g1=float(params["g1"][index]), g2=float(params["g2"][index]))


def render_galaxy(params, index, image_size=64, pixel_scale=0.2, psf_fwhm=0.7, psf=True):
    """Noiseless unit-flux image [image_size, image_size] (float64) of galaxy `index`.

    With `psf=False` the bare profile is sampled at the pixel centres (no PSF, no
    pixel response, hence no FFT): the galaxy's intrinsic shape, e.g. to check the
    targets.
    """
    galsim = _galsim()
    gal = _profile(galsim, params, index)
    method = "auto"
    if psf:
        gal = galsim.Convolve(gal, galsim.Moffat(beta=3.0, fwhm=psf_fwhm))
    else:
        method = "no_pixel"
    image = gal.drawImage(nx=image_size, ny=image_size, scale=pixel_scale, method=method)
    return image.array.astype(np.float64)


def _cache_path(cache_dir, key):
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "galaxies_{}.npz".format(digest))


def make_galaxies(num_galaxies, profile="bulge+disk", seed=0, noise=True, image_size=64,
                  pixel_scale=0.2, psf_fwhm=0.7, batch_size=256, cache_dir=None, progress=True):
    """Renders LSST-like isolated galaxies in ugrizy with GalSim.

    Args:
      num_galaxies: N.
      profile: "bulge+disk" or "sersic".
      seed: seed of the parameters and of the noise.
      noise: add Poisson noise (galaxy + sky, sky subtracted).
      image_size: stamp size in pixels (64 in the paper).
      pixel_scale: arcsec per pixel (0.2 in the paper).
      psf_fwhm: FWHM of the fixed Moffat PSF in arcsec.
      batch_size: galaxies rendered between progress lines.
      cache_dir: if given, the result is stored there (keyed by all arguments
        except `batch_size` / `progress`) and loaded on the next call.
      progress: print one line per batch to stderr.

    Returns:
      dict: `images` float32 [N, size, size, 6], `targets` float32 [N, 2] (e1, e2),
      `bands` ("u", ..., "y"), and every drawn parameter (see
      `draw_galaxy_parameters`) as arrays.

    Raises:
      ImportError: when GalSim is not installed (with the install command).
    """
    num_galaxies = check_int("num_galaxies", num_galaxies, low=1)
    check_choice("profile", profile, ("bulge+disk", "sersic"))
    seed = check_int("seed", seed, low=0)
    check_bool("noise", noise)
    image_size = check_int("image_size", image_size, low=8)
    pixel_scale = check_float("pixel_scale", pixel_scale, low=0.0, low_inclusive=False)
    psf_fwhm = check_float("psf_fwhm", psf_fwhm, low=0.0, low_inclusive=False)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("progress", progress)
    key = dict(num_galaxies=num_galaxies, profile=profile, seed=seed, noise=noise,
               image_size=image_size, pixel_scale=pixel_scale, psf_fwhm=psf_fwhm,
               version=_FORMAT_VERSION)
    path = _cache_path(cache_dir, key) if cache_dir else None
    if path and os.path.exists(path):
        with np.load(path) as cached:
            out = {k: cached[k] for k in cached.files}
        out["bands"] = BANDS
        return out
    _galsim()  # fail early with the install message
    params = draw_galaxy_parameters(num_galaxies, profile, seed)
    noise_rng = np.random.default_rng([seed, 1])
    sky = np.array([sky_per_pixel(b, pixel_scale) for b in BANDS])
    images = np.empty((num_galaxies, image_size, image_size, len(BANDS)), np.float32)
    start = time.time()
    for first in range(0, num_galaxies, batch_size):
        last = min(first + batch_size, num_galaxies)
        for i in range(first, last):
            unit = render_galaxy(params, i, image_size, pixel_scale, psf_fwhm)
            clean = unit[:, :, None] * params["flux"][i][None, None, :]
            if noise:
                counts = noise_rng.poisson(np.maximum(clean, 0.0) + sky[None, None, :])
                images[i] = counts - sky[None, None, :]
            else:
                images[i] = clean
        if progress:
            sys.stderr.write("galaxies: rendered {}/{} ({:.1f} s)\n".format(
                last, num_galaxies, time.time() - start))
            sys.stderr.flush()
    out = dict(params)
    out["images"] = images
    out["targets"] = np.stack([params["g1"], params["g2"]], axis=1).astype(np.float32)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **out)
        os.replace(tmp, path)
    out["bands"] = BANDS
    return out
