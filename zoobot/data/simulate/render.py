"""Images of a simulated galaxy: what the survey's camera would have recorded.

A `Galaxy` becomes a g, r, z image with astropy.modeling: a Sersic bulge and disc, a log-spiral
modulation of the disc for arms, an elongated Sersic bar, companions and tidal tails, rare bright
stars and satellite trails; convolved with a Gaussian PSF, with sky and Poisson noise. Written as
an asinh-stretched RGB PNG (what volunteers see) or a g, r, z FITS cube.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.special import erf

from zoobot.data.simulate.morphology import GAIN, REFERENCE_SIZE, SKY_COUNTS, ZERO_POINT, Galaxy

BANDS = ("g", "r", "z")
PSF_BAND_SCALE = np.array([1.1, 1.0, 0.92])  # seeing is worse in the blue

# Colours as g, r, z flux relative to r: bulges and bars are old and red, discs bluer, arms blue.
COLOUR_BULGE = np.array([0.42, 1.0, 1.6])
COLOUR_DISC = np.array([0.8, 1.0, 1.1])
COLOUR_ARMS = np.array([1.15, 1.0, 0.8])
COLOUR_STAR = np.array([0.8, 1.0, 1.1])

# PNG display: DECaLS-like channel weights (z -> red, r -> green, g -> blue) and asinh stretch.
RGB_WEIGHTS = np.array([0.6, 0.8, 1.05])  # applied to z, r, g
LUPTON_STRETCH = 0.3
LUPTON_Q = 8.0
LUPTON_MINIMUM = 0.0


def render_galaxy(galaxy: Galaxy, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Sky-subtracted g, r, z image in nanomaggies per pixel, shape (3, image_size, image_size)."""
    from astropy.convolution import convolve

    model = _noiseless_model(galaxy, image_size)
    sky = SKY_COUNTS * galaxy.depth * (REFERENCE_SIZE / image_size) ** 2
    out = np.empty_like(model)
    for band in range(3):
        sigma = galaxy.psf_fwhm * PSF_BAND_SCALE[band] * image_size / 2.355
        blurred = convolve(model[band], _gaussian_kernel(sigma))
        counts = rng.poisson(np.clip(blurred, 0, None) * GAIN + sky[band])
        out[band] = (counts - sky[band]) / GAIN
    return out.astype(np.float32)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """A Gaussian PSF integrated over each pixel, so it stays right when sigma is under a pixel.

    (astropy's Gaussian2DKernel(mode='oversample') agrees, at about ten times the cost; building
    the kernel was most of the rendering time.)"""
    half = max(1, math.ceil(4 * sigma))
    edges = np.arange(-half - 0.5, half + 1.0) / (math.sqrt(2) * sigma)
    profile = np.diff(erf(edges))
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()


def _sersic(x, y, r_eff, n, ellip=0.0, theta=0.0, c=0.0, x_0=0.0, y_0=0.0) -> np.ndarray:
    """Sersic surface brightness (1 at r_eff) from astropy's GeneralSersic2D.

    Calls the model's evaluate directly: building a model instance per component copies its
    parameters and cost more than evaluating it on a 64x64 grid.
    c > 0 gives boxy isophotes (an edge-on bar looks like a box/peanut bulge)."""
    from astropy.modeling.models import GeneralSersic2D

    return GeneralSersic2D.evaluate(x, y, 1.0, r_eff, n, x_0, y_0, ellip, theta, c)


def _noiseless_model(g: Galaxy, image_size: int) -> np.ndarray:
    """Unconvolved flux per pixel (3, S, S); each component is normalised to its total flux."""
    pixel = (np.arange(image_size) + 0.5) / image_size - 0.5
    x_img, y_img = np.meshgrid(pixel, pixel)  # rows are y
    x, y = x_img - g.x_offset, y_img - g.y_offset
    flux = g.flux
    colour_jitter = np.asarray(g.colour_jitter)
    image = np.zeros((3, image_size, image_size))

    def add(profile: np.ndarray, total: float, colour: np.ndarray):
        norm = profile.sum()
        if total > 0 and norm > 0:
            image[:] += (total * colour * colour_jitter)[:, None, None] * (profile / norm)[None]

    bulge = _sersic(
        x, y, g.bulge_r_eff, g.bulge_n,
        ellip=1 - g.bulge_axis_ratio, theta=g.position_angle, c=g.bulge_boxiness,
    )
    add(bulge, flux * g.bulge_fraction, COLOUR_BULGE)

    if g.is_disc:
        # Work in the plane of the disc: arms and bar are drawn face-on there, and projecting the
        # coordinates back foreshortens them with the disc.
        u, v = _disc_plane(x, y, g.position_angle, g.disc_axis_ratio)
        disc = _sersic(u, v, g.disc_r_eff, n=1.0)
        disc_flux = flux * (1 - g.bulge_fraction)
        bar_flux = disc_flux * 0.4 * g.bar_strength
        arm_flux = (disc_flux - bar_flux) * 0.85 * g.arm_strength
        add(disc, disc_flux - bar_flux - arm_flux, COLOUR_DISC)
        if arm_flux > 0:
            add(disc * _spiral_pattern(u, v, g), arm_flux, COLOUR_ARMS)
        if bar_flux > 0:
            bar = _sersic(u, v, g.bar_length, n=0.4, ellip=0.78, theta=g.bar_angle)
            add(bar, bar_flux, COLOUR_BULGE)

    if g.companion is not None:
        c = g.companion
        cx, cy = c.separation * math.cos(c.angle), c.separation * math.sin(c.angle)
        companion = _sersic(
            x, y, c.r_eff, c.sersic_n, ellip=1 - c.axis_ratio, theta=c.position_angle, x_0=cx, y_0=cy
        )
        add(companion, flux * c.flux_ratio, COLOUR_BULGE if c.red else COLOUR_DISC)
    if g.merger_state >= 2:
        add(_tidal_tails(x, y, g), flux * g.tail_flux_ratio, COLOUR_DISC)

    if g.field_star is not None:
        sx, sy, ratio = g.field_star
        add(_point(x_img, y_img, sx, sy), flux * ratio, COLOUR_STAR)
    if g.artifact == 1:
        _add_bright_star(image, x_img, y_img, g)
    elif g.artifact == 2:
        _add_trail(image, x_img, y_img, g)
    return image


def _disc_plane(x: np.ndarray, y: np.ndarray, position_angle: float, axis_ratio: float):
    cos_pa, sin_pa = math.cos(position_angle), math.sin(position_angle)
    u = x * cos_pa + y * sin_pa
    v = (-x * sin_pa + y * cos_pa) / axis_ratio
    return u, v


def _spiral_pattern(u: np.ndarray, v: np.ndarray, g: Galaxy) -> np.ndarray:
    """Log-spiral arms: brightness peaks where m * (phi - ln r / tan(pitch)) is a multiple of 2 pi."""
    r = np.hypot(u, v) + 1e-6
    phi = np.arctan2(v, u)
    winding = np.log(r / g.disc_r_eff) / math.tan(math.radians(g.pitch_angle_deg))
    phase = g.arm_count * (phi - winding) + g.arm_phase
    arms = ((1 + np.cos(phase)) / 2) ** 4  # the power makes arms narrower than the gaps
    # Arms start outside the bulge, or at the ends of the bar, as in real spirals.
    start = max(0.45 * g.disc_r_eff, 1.2 * g.bar_length if g.bar_strength > 0 else 0.0)
    inner = 1 - np.exp(-((r / start) ** 2))
    return arms * inner


def _tidal_tails(x: np.ndarray, y: np.ndarray, g: Galaxy) -> np.ndarray:
    """One (major interaction) or two (merger) long, open arcs reaching beyond the galaxy."""
    size = max(g.bulge_r_eff, g.disc_r_eff)
    r = np.hypot(x, y) + 1e-6
    phi = np.arctan2(y, x)
    n_tails = 1 if g.merger_state == 2 else 2
    phase = n_tails * (phi - np.log(r / size) / math.tan(math.radians(35))) + g.tail_angle
    # A very open, narrow spiral; the envelope fades it out after about one turn.
    arc = ((1 + np.cos(phase)) / 2) ** 8
    envelope = _sersic(x, y, 3 * size, n=0.7)
    beyond_galaxy = 1 - np.exp(-((r / (1.5 * size)) ** 4))
    return arc * envelope * beyond_galaxy


def _point(x: np.ndarray, y: np.ndarray, px: float, py: float) -> np.ndarray:
    """A delta function at the nearest pixel; the PSF turns it into a star."""
    profile = np.zeros_like(x)
    row = int(np.clip(np.searchsorted(y[:, 0], py), 0, x.shape[0] - 1))
    col = int(np.clip(np.searchsorted(x[0], px), 0, x.shape[1] - 1))
    profile[row, col] = 1.0
    return profile


def _add_bright_star(image: np.ndarray, x: np.ndarray, y: np.ndarray, g: Galaxy) -> None:
    from astropy.modeling.models import Moffat2D

    sx, sy = g.artifact_offset
    star_flux = g.flux * (5 + 20 * g.artifact_strength)
    size = image.shape[-1]
    pixel = 1 / size
    # Core, wide halo and diffraction spikes along the pixel axes.
    core = _point(x, y, sx, sy)
    halo = Moffat2D(amplitude=1, x_0=sx, y_0=sy, gamma=0.05, alpha=2.0)(x, y)
    dx, dy = np.abs(x - sx), np.abs(y - sy)
    spikes = np.exp(-dx / 0.06 - (dy / pixel) ** 2) + np.exp(-dy / 0.06 - (dx / pixel) ** 2)
    for profile, share in ((core, 0.7), (halo, 0.2), (spikes, 0.1)):
        image[:] += (star_flux * share * COLOUR_STAR)[:, None, None] * (profile / profile.sum())[None]


def _add_trail(image: np.ndarray, x: np.ndarray, y: np.ndarray, g: Galaxy) -> None:
    """A satellite trail crosses one exposure, so it shows in one band only."""
    from astropy.modeling.models import Gaussian1D

    ox, oy = g.artifact_offset
    distance = -(x - ox) * math.sin(g.artifact_angle) + (y - oy) * math.cos(g.artifact_angle)
    width = 0.6 / REFERENCE_SIZE
    # Surface brightness, not total flux: the trail is as bright per pixel at any image size.
    peak = (1.5 + 4 * g.artifact_strength) * (REFERENCE_SIZE / image.shape[-1]) ** 2
    image[g.artifact_band] += Gaussian1D(amplitude=peak, mean=0, stddev=width)(distance)


def flux_to_rgb(cube: np.ndarray) -> np.ndarray:
    """g, r, z flux (nanomaggies per pixel) to an asinh-stretched uint8 RGB image (S, S, 3)."""
    from astropy.visualization import make_lupton_rgb

    # Scale to surface brightness per 64-pixel-image pixel, so the stretch looks the same at any size.
    sb = cube * (cube.shape[-1] / REFERENCE_SIZE) ** 2
    g, r, z = sb
    return make_lupton_rgb(
        z * RGB_WEIGHTS[0], r * RGB_WEIGHTS[1], g * RGB_WEIGHTS[2],
        minimum=LUPTON_MINIMUM, stretch=LUPTON_STRETCH, Q=LUPTON_Q,
    )


def write_image(cube: np.ndarray, path: Path, image_format: str) -> None:
    """A g, r, z cube as an RGB PNG, or as a FITS cube that names its bands and flux unit."""
    if image_format == "png":
        from PIL import Image

        Image.fromarray(flux_to_rgb(cube), mode="RGB").save(path)
    else:
        from astropy.io import fits

        hdu = fits.PrimaryHDU(cube)
        hdu.header["BANDS"] = ("".join(BANDS), "bands of the first axis")
        for i, band in enumerate(BANDS):
            hdu.header[f"BAND{i}"] = band
        hdu.header["BUNIT"] = "nanomaggy"
        hdu.header["ZP"] = (ZERO_POINT, "AB zero point of the flux unit")
        hdu.writeto(path, overwrite=True)
