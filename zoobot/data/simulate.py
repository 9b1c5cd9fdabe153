"""A simulated Galaxy Zoo survey: images and volunteer votes from known morphology.

Every galaxy starts as a latent description (`Galaxy`: bulge fraction, arm strength, arm count and
pitch, bar strength, inclination, companions, brightness, observing depth). The same description
is used twice:

1. rendered into a g, r, z image with astropy.modeling (Sersic bulge and disc, a log-spiral
   modulation of the disc for arms, an elongated Sersic bar, companions and tidal tails, rare
   bright stars and satellite trails), convolved with a Gaussian PSF, with sky and Poisson noise;
2. turned into the probability of each answer of the decision tree, from what a volunteer could
   see (faint galaxies hide their features), from which the votes are drawn question by question.

So the votes are learnable from the images, and the truth behind them is in the catalog
(`true_*` answer probabilities, `sim_*` morphology) for tests and for checking calibration.

Sizes are fractions of the image width, so the same seed gives the same galaxies and the same
votes at any image_size: only the pixel sampling changes. Each galaxy draws from its own random
streams, derived from (seed, galaxy index), so the output does not depend on the number of worker
processes. No TensorFlow or MLflow here.

`sim_artifact` codes: 0 none, 1 bright star, 2 satellite trail. `sim_merger_state` codes:
0 none, 1 minor companion, 2 major interaction (companion and one tidal tail), 3 merger
(overlapping nuclei and two tails).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import click
import numpy as np
import pandas as pd
from scipy.special import erf, expit

from zoobot.core import staging
from zoobot.core.schema import Schema, load_schema

BANDS = ("g", "r", "z")
CATALOG = "catalog.csv"
RECORD = "simulation.json"  # written last: lists every file of the survey
SCHEMAS = ("decals", "gz2")
IMAGE_FORMATS = ("png", "fits")
MIN_VOLUNTEERS = 3  # real subjects are retired only after several classifications
CONCENTRATION = 30.0  # Dirichlet concentration: lower = more over-dispersed votes
PROBABILITY_FLOOR = 0.002  # every answer keeps a little probability: volunteers make mistakes

# Photometry. Fluxes are in nanomaggies (zero point 22.5). Sky levels are per pixel of a 64-pixel
# image; a smaller image has bigger pixels and more sky per pixel, so depth is the same at any size.
ZERO_POINT = 22.5
GAIN = 300.0  # counts per nanomaggy
REFERENCE_SIZE = 64
SKY_COUNTS = np.array([25.0, 60.0, 150.0])  # g, r, z: z sky is brightest, as in DECaLS
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

# Which root answer ends a classification, so later questions with follows=None are not asked.
ENDS_CLASSIFICATION = {
    "decals": "smooth-or-featured_artifact",
    "gz2": "t01_smooth_or_features_a03_star_or_artifact_count",
}

# Streams of each galaxy's SeedSequence(seed, spawn_key=(index, stream)).
_POSITION, _MORPHOLOGY, _VOTES, _NOISE = 0, 1, 2, 3


@dataclass(frozen=True)
class SimulateConfig:
    output_dir: str = field(
        default="data/simulated", metadata={"help": "Folder for catalog.csv and images/."}
    )
    n_galaxies: int = field(default=200, metadata={"help": "Number of galaxies to simulate."})
    image_size: int = field(default=64, metadata={"help": "Image width and height in pixels (16-1024)."})
    seed: int = field(default=1, metadata={"help": "Random seed; the same seed gives the same survey."})
    schema: str = field(default="decals", metadata={"help": "Decision tree of the votes: 'decals' or 'gz2'."})
    image_format: str = field(
        default="png",
        metadata={"help": "'png' (asinh-stretched RGB, like volunteer images) or 'fits' (g,r,z cube)."},
    )
    mean_volunteers: float = field(
        default=40.0, metadata={"help": "Mean number of volunteers answering the first question."}
    )
    workers: int = field(
        default=0, metadata={"help": "Processes rendering images; 0 = all cores, 1 = no pool."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a catalog already in output_dir."})

    def __post_init__(self):
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir).strip():
            raise ValueError(f"output_dir must be a non-empty path; found {self.output_dir!r}.")
        _check_int("n_galaxies", self.n_galaxies, minimum=1, hint="Ask for at least one galaxy.")
        _check_int("image_size", self.image_size, minimum=16, maximum=1024,
                   hint="Galaxies need at least 16 pixels to show any structure.")
        _check_int("seed", self.seed, minimum=0, hint="numpy seeds must be non-negative integers.")
        _check_int("workers", self.workers, minimum=0, hint="Use 0 for all cores or 1 to run in-process.")
        if self.schema not in SCHEMAS:
            raise ValueError(
                f"schema must be one of {list(SCHEMAS)} (the trees this simulator knows how to answer); "
                f"found {self.schema!r}."
            )
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"image_format must be one of {list(IMAGE_FORMATS)}; found {self.image_format!r}."
            )
        if (
            isinstance(self.mean_volunteers, bool)
            or not isinstance(self.mean_volunteers, (int, float))
            or not math.isfinite(self.mean_volunteers)
            or self.mean_volunteers < 1
        ):
            raise ValueError(
                f"mean_volunteers must be a finite number >= 1 (Galaxy Zoo used about 40); "
                f"found {self.mean_volunteers!r}."
            )
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite must be True or False; found {self.overwrite!r}.")


def _check_int(name: str, value, minimum: int, hint: str, maximum: int | None = None) -> None:
    # bool is an int subclass; True galaxies is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; found {value!r} ({type(value).__name__}).")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}; found {value}. {hint}")


@dataclass(frozen=True)
class SimulationResult:
    catalog_path: Path
    catalog: pd.DataFrame


@dataclass(frozen=True)
class Companion:
    flux_ratio: float  # companion flux / main galaxy flux
    separation: float  # fraction of image width
    angle: float  # radians, direction from the main galaxy
    r_eff: float
    sersic_n: float
    axis_ratio: float
    position_angle: float
    red: bool


@dataclass(frozen=True)
class Galaxy:
    """The latent truth of one simulated galaxy and how it was observed. Lengths are fractions of
    the image width, angles radians unless named _deg."""

    is_disc: bool
    bulge_fraction: float  # bulge / total light; 1 for ellipticals
    bulge_r_eff: float
    bulge_n: float
    bulge_axis_ratio: float  # projected
    bulge_boxiness: float  # GeneralSersic2D c: > 0 boxy (an edge-on bar), 0 elliptical
    disc_r_eff: float
    disc_axis_ratio: float  # projected; from inclination and intrinsic thickness
    inclination_deg: float  # 0 face-on, 90 edge-on
    arm_strength: float  # 0-1, share of disc light in arms is 0.85 x this
    arm_count: int
    pitch_angle_deg: float
    arm_phase: float
    bar_strength: float  # 0-1
    bar_angle: float  # in the disc plane
    bar_length: float
    position_angle: float
    x_offset: float
    y_offset: float
    mag_r: float
    colour_jitter: tuple[float, float, float]
    psf_fwhm: float
    depth: float  # sky level multiplier: > 1 is a shallower exposure
    merger_state: int  # 0 none, 1 minor, 2 major, 3 merger
    companion: Companion | None
    tail_flux_ratio: float
    tail_angle: float
    artifact: int  # 0 none, 1 bright star, 2 satellite trail
    artifact_strength: float
    artifact_angle: float
    artifact_offset: tuple[float, float]
    artifact_band: int
    field_star: tuple[float, float, float] | None  # (x, y, flux ratio) of an unrelated faint star

    @property
    def flux(self) -> float:
        return 10 ** (-0.4 * (self.mag_r - ZERO_POINT))

    @property
    def axis_ratio(self) -> float:
        """Projected axis ratio of the component that dominates the shape."""
        return self.disc_axis_ratio if self.is_disc and self.bulge_fraction < 0.6 else self.bulge_axis_ratio

    @property
    def half_light_radius(self) -> float:
        if not self.is_disc:
            return self.bulge_r_eff
        return self.bulge_fraction * self.bulge_r_eff + (1 - self.bulge_fraction) * self.disc_r_eff

    @property
    def snr(self) -> float:
        """r-band signal to noise inside 1.5 half-light radii (with the PSF added in quadrature)."""
        counts = self.flux * GAIN
        radius = math.hypot(1.5 * self.half_light_radius, self.psf_fwhm) * REFERENCE_SIZE
        sky = SKY_COUNTS[1] * self.depth * math.pi * radius**2
        return counts / math.sqrt(counts + sky)

    @property
    def visibility(self) -> float:
        """0-1: how well a volunteer could see faint structure; 0.5 at SNR 25."""
        return float(expit(3.0 * (math.log(self.snr) - math.log(25.0))))


# -- latent morphology ---------------------------------------------------------------------------


def sample_galaxy(rng: np.random.Generator) -> Galaxy:
    """Draw one galaxy's morphology and observing conditions."""
    is_disc = rng.random() < 0.55
    position_angle = rng.uniform(0, np.pi)
    if is_disc:
        bulge_fraction = float(rng.beta(1.6, 3.2))
        cos_i = rng.random()  # isotropic orientations
        inclination = math.degrees(math.acos(cos_i))
        thickness = rng.uniform(0.1, 0.15)
        disc_axis_ratio = math.sqrt(cos_i**2 * (1 - thickness**2) + thickness**2)
        # Bulges are oblate: round face-on, flattened edge-on.
        bulge_flattening = rng.uniform(0.55, 0.9)
        bulge_axis_ratio = math.sqrt(cos_i**2 + bulge_flattening**2 * (1 - cos_i**2))
        disc_r_eff = rng.uniform(0.12, 0.24)
        bulge_r_eff = disc_r_eff * rng.uniform(0.15, 0.35)
        bulge_n = rng.uniform(1.5, 4.0)
        armless = rng.random() < 0.2  # lenticulars
        # Big bulges go with weaker, tighter arms (the Hubble sequence).
        arm_strength = 0.0 if armless else float(rng.beta(2.5, 1.5) * (1 - 0.5 * bulge_fraction))
        arm_count = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.06, 0.55, 0.2, 0.1, 0.05, 0.04]))
        pitch = float(np.clip(rng.normal(28 - 18 * bulge_fraction, 7), 6, 45))
        bar_strength = float(rng.uniform(0.2, 1.0)) if rng.random() < 0.35 else 0.0
        edge_on = expit((inclination - 70) / 4)
        bulge_boxiness = 1.2 * bar_strength * edge_on
    else:
        bulge_fraction = 1.0
        inclination = 0.0
        disc_axis_ratio = 1.0
        bulge_axis_ratio = float(1 - 0.75 * rng.beta(1.3, 2.8))
        disc_r_eff = 0.0
        bulge_r_eff = rng.uniform(0.07, 0.17)
        bulge_n = rng.uniform(2.5, 5.0)
        arm_strength, arm_count, pitch, bar_strength, bulge_boxiness = 0.0, 0, 0.0, 0.0, 0.0
    mag_r = 14.5 + 4.3 * rng.beta(2.0, 1.6)  # more faint galaxies than bright ones
    merger_state = int(rng.choice(4, p=[0.8, 0.1, 0.06, 0.04]))
    companion = _sample_companion(rng, merger_state, max(bulge_r_eff, disc_r_eff))
    artifact = int(rng.choice(3, p=[0.96, 0.025, 0.015]))
    if artifact:
        mag_r += 1.0  # an image dominated by an artifact usually shows a faint galaxy
    field_star = None
    if rng.random() < 0.15:
        radius, angle = rng.uniform(0.25, 0.42), rng.uniform(0, 2 * np.pi)
        field_star = (radius * math.cos(angle), radius * math.sin(angle), float(rng.uniform(0.02, 0.25)))
    return Galaxy(
        is_disc=bool(is_disc),
        bulge_fraction=bulge_fraction,
        bulge_r_eff=float(bulge_r_eff),
        bulge_n=float(bulge_n),
        bulge_axis_ratio=float(bulge_axis_ratio),
        bulge_boxiness=float(bulge_boxiness),
        disc_r_eff=float(disc_r_eff),
        disc_axis_ratio=float(disc_axis_ratio),
        inclination_deg=float(inclination),
        arm_strength=arm_strength,
        arm_count=arm_count,
        pitch_angle_deg=pitch,
        arm_phase=float(rng.uniform(0, 2 * np.pi)),
        bar_strength=bar_strength,
        bar_angle=float(rng.uniform(0, np.pi)),
        bar_length=float(disc_r_eff * rng.uniform(0.45, 0.75)),
        position_angle=float(position_angle),
        x_offset=float(rng.normal(0, 0.012)),
        y_offset=float(rng.normal(0, 0.012)),
        mag_r=float(mag_r),
        colour_jitter=tuple(float(c) for c in np.exp(rng.normal(0, 0.05, size=3))),
        psf_fwhm=float(rng.uniform(0.03, 0.05)),
        depth=float(rng.uniform(0.7, 1.5)),
        merger_state=merger_state,
        companion=companion,
        tail_flux_ratio=float(rng.uniform(0.2, 0.35)) if merger_state >= 2 else 0.0,
        tail_angle=float(rng.uniform(0, 2 * np.pi)),
        artifact=artifact,
        artifact_strength=float(rng.uniform(0, 1)) if artifact else 0.0,
        artifact_angle=float(rng.uniform(0, np.pi)),
        artifact_offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        artifact_band=int(rng.integers(3)),
        field_star=field_star,
    )


def _sample_companion(rng: np.random.Generator, merger_state: int, main_size: float) -> Companion | None:
    if merger_state == 0:
        return None
    flux_ratio, separation = {
        1: (rng.uniform(0.06, 0.25), rng.uniform(0.2, 0.34)),
        2: (rng.uniform(0.3, 0.9), rng.uniform(0.17, 0.3)),
        3: (rng.uniform(0.4, 1.0), rng.uniform(0.07, 0.12)),
    }[merger_state]
    return Companion(
        flux_ratio=float(flux_ratio),
        separation=float(separation),
        angle=float(rng.uniform(0, 2 * np.pi)),
        r_eff=float(main_size * rng.uniform(0.35, 0.7)),
        sersic_n=float(rng.uniform(1.0, 4.0)),
        axis_ratio=float(rng.uniform(0.45, 1.0)),
        position_angle=float(rng.uniform(0, np.pi)),
        red=bool(rng.random() < 0.5),
    )


# -- images --------------------------------------------------------------------------------------


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


def _write_image(cube: np.ndarray, path: Path, image_format: str) -> None:
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


# -- truth and votes -----------------------------------------------------------------------------


def _ordinal(x: float, cuts: list[float], sharpness: float) -> np.ndarray:
    """Probabilities of ordered categories (lowest first) for a latent value x, by ordered logit."""
    at_least = expit(sharpness * (x - np.asarray(cuts, dtype=float)))
    return np.concatenate([[1.0], at_least]) - np.concatenate([at_least, [0.0]])


def _perceived(g: Galaxy) -> dict[str, np.ndarray]:
    """What volunteers would answer, as probabilities per answer, independent of the tree's names.

    Each is a smooth function of what the image shows, so a model can learn it from the pixels:
    features need light in a disc, a face-on view and enough signal to noise (`visibility`).
    """
    vis = g.visibility
    q = g.axis_ratio
    disc_light = 1 - g.bulge_fraction
    thin = float(expit((0.3 - q) / 0.04))  # a thin streak: edge-on disc (or a very flat elliptical)
    p_edge_on = 0.02 + (0.96 if g.is_disc else 0.3) * thin
    # Arms and bars get harder to see as the disc tilts; an edge-on disc is obviously a disc.
    face_on = math.sqrt(g.disc_axis_ratio)
    arm_signal = g.arm_strength * math.sqrt(disc_light) * vis * face_on
    featured_signal = 0.0
    if g.is_disc:
        shape = max(g.arm_strength * face_on, 0.9 * g.bar_strength * face_on, 0.8 * p_edge_on, 0.1)
        featured_signal = disc_light**0.75 * shape * (0.3 + 0.7 * vis)
    p_featured = 0.03 + 0.94 * float(expit(9 * (featured_signal - 0.28)))
    p_artifact = 0.01 + (0.5 + 0.45 * g.artifact_strength) * (g.artifact > 0)

    # Arm count: a bump around the true count; "can't tell" when the arms are hard to see.
    counts = np.arange(1, 6)  # 5 stands for more than four
    near = np.exp(-((counts - min(g.arm_count, 5)) ** 2) / (2 * 0.6**2)) if g.arm_count else np.ones(5)
    cant_tell = 0.05 + 0.7 * float(expit(-8 * (arm_signal - 0.25)))
    arm_count = np.concatenate([(1 - cant_tell) * near / near.sum(), [cant_tell]])

    no_bulge = float(expit(12 * (0.1 - g.bulge_fraction)))
    boxy = (1 - no_bulge) * (0.08 + 0.7 * g.bar_strength)  # edge-on bars look like boxy bulges
    interaction = g.merger_state * (0.5 + 0.5 * vis)  # faint tails and companions get missed
    return {
        "first": np.array([(1 - p_artifact) * (1 - p_featured), (1 - p_artifact) * p_featured, p_artifact]),
        "edge_on": _yes_no(p_edge_on),
        "spiral": _yes_no(0.04 + 0.92 * float(expit(10 * (arm_signal - 0.3)))),
        "bar": _ordinal(g.bar_strength * vis * face_on, [0.2, 0.5], 10.0),  # no, weak, strong
        "bulge_fraction": g.bulge_fraction,
        "rounded": _ordinal(1 - q, [0.25, 0.6], 10.0),  # round, in-between, cigar
        "edge_bulge": np.array([boxy, no_bulge, 1 - no_bulge - boxy]),  # boxy, none, rounded
        "winding": _ordinal(g.pitch_angle_deg, [16.0, 26.0], 0.35),  # tight, medium, loose
        "arm_count": arm_count,  # 1, 2, 3, 4, more than 4, can't tell
        "merging": _ordinal(interaction, [0.5, 1.5, 2.5], 4.0),  # none, minor, major, merger
    }


def _yes_no(p_yes: float) -> np.ndarray:
    return np.array([p_yes, 1 - p_yes])


def _decals_truth(seen: dict) -> dict[str, np.ndarray]:
    return {
        "smooth-or-featured": seen["first"],
        "disk-edge-on": seen["edge_on"],
        "has-spiral-arms": seen["spiral"],
        "bar": seen["bar"][::-1],  # strong, weak, no
        # dominant, large, moderate, small, none
        "bulge-size": _ordinal(seen["bulge_fraction"], [0.08, 0.25, 0.45, 0.7], 14.0)[::-1],
        "how-rounded": seen["rounded"],
        "edge-on-bulge": seen["edge_bulge"],
        "spiral-winding": seen["winding"],
        "spiral-arm-count": seen["arm_count"],
        "merging": seen["merging"],
    }


def _gz2_truth(seen: dict) -> dict[str, np.ndarray]:
    bar = seen["bar"]
    none, minor, major, merger = seen["merging"]
    p_odd = 0.06 + 0.85 * (1 - none)
    odd_feature = np.array([
        0.12,  # ring
        0.06,  # lens or arc
        0.08 + 2 * minor + major,  # disturbed
        0.08 + major,  # irregular
        0.2,  # other
        0.04 + 3 * merger,  # merger
        0.04 + 0.6 * seen["edge_on"][0],  # dust lane
    ])
    boxy, no_bulge, rounded = seen["edge_bulge"]
    return {
        "t01_smooth_or_features": seen["first"],
        "t02_edgeon": seen["edge_on"],
        "t03_bar": _yes_no(bar[2] + 0.6 * bar[1]),
        "t04_spiral": seen["spiral"],
        # no bulge, just noticeable, obvious, dominant
        "t05_bulge_prominence": _ordinal(seen["bulge_fraction"], [0.1, 0.3, 0.6], 12.0),
        "t06_odd": _yes_no(p_odd),
        "t07_rounded": seen["rounded"],
        "t08_odd_feature": odd_feature / odd_feature.sum(),
        "t09_bulge_shape": np.array([rounded, boxy, no_bulge]),
        "t10_arms_winding": seen["winding"],
        "t11_arms_number": seen["arm_count"],
    }


_TRUTH_BY_SCHEMA = {"decals": _decals_truth, "gz2": _gz2_truth}


def true_probabilities(galaxy: Galaxy, schema: Schema) -> dict[str, np.ndarray]:
    """Probability of each answer of each question (in the schema's answer order), summing to 1."""
    if schema.name not in _TRUTH_BY_SCHEMA:
        raise ValueError(
            f"The simulator knows how volunteers answer the trees {sorted(_TRUTH_BY_SCHEMA)}; "
            f"schema '{schema.name}' is not one of them."
        )
    truth = _TRUTH_BY_SCHEMA[schema.name](_perceived(galaxy))
    out = {}
    for question in schema.questions:
        p = np.maximum(np.asarray(truth[question.name], dtype=float), PROBABILITY_FLOOR)
        out[question.name] = p / p.sum()
    return out


def draw_votes(
    truth: dict[str, np.ndarray], schema: Schema, mean_volunteers: float, rng: np.random.Generator
) -> dict[str, int]:
    """Vote counts per answer column, walking the tree from the root.

    A question is answered by the volunteers who gave the answer it follows; a question asked of
    everyone (follows=None) is answered by all who did not end the classification at the root.
    Each galaxy and question gets its own Dirichlet draw around the truth before the multinomial,
    so counts scatter more than a multinomial alone, as real votes do.
    """
    root = schema.questions[0]
    counts: dict[str, int] = {}
    n_root = max(MIN_VOLUNTEERS, int(rng.poisson(mean_volunteers)))
    for question in _parents_first(schema):
        if question is root:
            n = n_root
        elif question.follows is None:
            n = n_root - counts[ENDS_CLASSIFICATION[schema.name]]
        else:
            n = counts[question.follows]
        p = rng.dirichlet(CONCENTRATION * truth[question.name])
        votes = rng.multinomial(n, p / p.sum())
        counts.update({column: int(k) for column, k in zip(question.columns, votes)})
    return {column: counts[column] for column in schema.label_cols}


def _parents_first(schema: Schema) -> list:
    ordered, done = [], set()
    pending = list(schema.questions)
    while pending:
        ready = [
            q for q in pending
            if q.follows is None or schema.question_of(q.follows).name in done
        ]
        for q in ready:
            ordered.append(q)
            done.add(q.name)
        pending = [q for q in pending if q.name not in done]
    return ordered


# -- one galaxy end to end -----------------------------------------------------------------------


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))


def _latent_columns(g: Galaxy) -> dict[str, float | int]:
    c = g.companion
    return {
        "sim_is_disc": int(g.is_disc),
        "sim_bulge_fraction": g.bulge_fraction,
        "sim_disc_strength": 1 - g.bulge_fraction if g.is_disc else 0.0,
        "sim_arm_strength": g.arm_strength,
        "sim_arm_count": g.arm_count,
        "sim_pitch_angle": g.pitch_angle_deg,
        "sim_bar_strength": g.bar_strength,
        "sim_inclination": g.inclination_deg,
        "sim_axis_ratio": g.axis_ratio,
        "sim_disc_axis_ratio": g.disc_axis_ratio,
        "sim_bulge_boxiness": g.bulge_boxiness,
        "sim_sersic_n": g.bulge_n,
        "sim_half_light_radius": g.half_light_radius,
        "sim_position_angle": math.degrees(g.position_angle),
        "sim_merger_state": g.merger_state,
        "sim_companion": int(c is not None),
        "sim_companion_flux_ratio": c.flux_ratio if c is not None else 0.0,
        "sim_artifact": g.artifact,
        "sim_mag_r": g.mag_r,
        "sim_snr": g.snr,
        "sim_visibility": g.visibility,
        "sim_psf_fwhm": g.psf_fwhm,
    }


def _simulate_galaxies(config: SimulateConfig, tasks: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    """Render, write and vote on a chunk of galaxies. Runs in a worker process."""
    schema = load_schema(config.schema)
    rows = []
    for index, image_path in tasks:
        galaxy = sample_galaxy(_rng(config.seed, index, _MORPHOLOGY))
        cube = render_galaxy(galaxy, config.image_size, _rng(config.seed, index, _NOISE))
        _write_image(cube, Path(image_path), config.image_format)
        truth = true_probabilities(galaxy, schema)
        row: dict = dict(draw_votes(truth, schema, config.mean_volunteers, _rng(config.seed, index, _VOTES)))
        for question in schema.questions:
            row.update({f"true_{col}": float(p) for col, p in zip(question.columns, truth[question.name])})
        row.update(_latent_columns(galaxy))
        rows.append((index, row))
    return rows


# -- the survey ----------------------------------------------------------------------------------


def simulate_survey(config: SimulateConfig, progress: bool = False) -> SimulationResult:
    """Simulate a survey: images under OUTPUT_DIR/images/, then OUTPUT_DIR/catalog.csv and, last,
    OUTPUT_DIR/simulation.json, the record of what was written (`zoobot.core.staging`).

    Everything is written into a staging folder first, so an interrupted run never leaves a
    catalog naming images that do not exist, and `overwrite` replaces only an earlier simulation's
    files: a catalog that `simulate` did not write is never replaced.
    """
    if not isinstance(config, SimulateConfig):
        raise TypeError(f"simulate_survey expects a SimulateConfig; found {type(config).__name__}.")
    schema = load_schema(config.schema)
    output_dir = Path(config.output_dir).resolve()
    owned = staging.owned_files(output_dir, RECORD, lambda record: record["files"])
    staging.check_output_folder(output_dir, RECORD, owned, config.overwrite, "simulate")

    ids, ra, dec = _sky_positions(config)
    file_locs = _file_locations(ids, config.image_format)
    with staging.staged_output(output_dir, RECORD, owned, config.overwrite, "simulate",
                               planned=[CATALOG, *file_locs]) as folder:
        for subfolder in sorted({str(PurePosixPath(f).parent) for f in file_locs}):
            (folder / subfolder).mkdir(parents=True, exist_ok=True)
        tasks = [(i, str(folder / f)) for i, f in enumerate(file_locs)]
        rows = _run_tasks(config, tasks, progress)
        catalog = _assemble_catalog(schema, config, ids, ra, dec, file_locs, rows)
        catalog.to_csv(folder / CATALOG, index=False)
        record = {"step": "simulate", "config": asdict(config), "files": [CATALOG, *file_locs]}
        (folder / RECORD).write_text(json.dumps(record, indent=1))
    return SimulationResult(catalog_path=output_dir / CATALOG, catalog=catalog)


def _sky_positions(config: SimulateConfig) -> tuple[list, np.ndarray, np.ndarray]:
    """Unique ids and (ra, dec) in degrees, inside a DECaLS- or SDSS-like declination band."""
    dec_range = (-20.0, 35.0) if config.schema == "decals" else (-10.0, 70.0)
    sin_lo, sin_hi = (math.sin(math.radians(d)) for d in dec_range)
    ids, ras, decs, seen = [], [], [], set()
    for index in range(config.n_galaxies):
        rng = _rng(config.seed, index, _POSITION)
        while True:  # IAU names are truncated coordinates; redraw the rare collision
            ra = float(rng.uniform(0, 360))
            dec = math.degrees(math.asin(rng.uniform(sin_lo, sin_hi)))
            if config.schema == "decals":
                name = iau_name(ra, dec)
            else:
                # dr7objid-like 18-digit integers, unique by construction.
                name = 587722981736000000 + index * 4096 + int(rng.integers(4096))
            if name not in seen:
                break
        seen.add(name)
        ids.append(name)
        ras.append(ra)
        decs.append(dec)
    return ids, np.array(ras), np.array(decs)


def iau_name(ra: float, dec: float) -> str:
    """IAU-style name JHHMMSS.ss+DDMMSS.s, truncated (not rounded) as the IAU convention asks."""
    centiseconds = int(ra / 15 * 3600 * 100)
    hours, rem = divmod(centiseconds, 3600 * 100)
    minutes, rem = divmod(rem, 60 * 100)
    deciarcsec = int(abs(dec) * 3600 * 10)
    degrees, drem = divmod(deciarcsec, 3600 * 10)
    arcmin, drem = divmod(drem, 60 * 10)
    sign = "-" if dec < 0 else "+"
    return (
        f"J{hours:02d}{minutes:02d}{rem // 100:02d}.{rem % 100:02d}"
        f"{sign}{degrees:02d}{arcmin:02d}{drem // 10:02d}.{drem % 10:d}"
    )


def _file_locations(ids: list, image_format: str) -> list[str]:
    # At most 1000 images per folder: file systems and file browsers slow down past that.
    width = max(3, len(str((len(ids) - 1) // 1000)))
    return [f"images/{i // 1000:0{width}d}/{galaxy_id}.{image_format}" for i, galaxy_id in enumerate(ids)]


def _n_workers(requested: int) -> int:
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_tasks(config: SimulateConfig, tasks: list[tuple[int, str]], progress: bool) -> dict[int, dict]:
    workers = min(_n_workers(config.workers), len(tasks))
    # Chunks amortise the cost of sending work to a process; several per worker balance the load.
    chunk = max(1, min(100, math.ceil(len(tasks) / (workers * 4))))
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    bar = (
        click.progressbar(length=len(tasks), label="Simulating galaxies", file=sys.stderr)
        if progress
        else contextlib.nullcontext()
    )
    rows: dict[int, dict] = {}
    with bar:
        if workers <= 1:
            for part in chunks:
                rows.update(_simulate_galaxies(config, part))
                if progress:
                    bar.update(len(part))
        else:
            # 'spawn', never fork: the parent may have TensorFlow loaded, which is not fork-safe.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_simulate_galaxies, config, part) for part in chunks]
                try:
                    for future in as_completed(futures):
                        done = future.result()
                        rows.update(done)
                        if progress:
                            bar.update(len(done))
                except BaseException:
                    # Fail fast: do not render the rest of the survey after one chunk failed.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return rows


def _assemble_catalog(
    schema: Schema, config: SimulateConfig, ids: list, ra: np.ndarray, dec: np.ndarray,
    file_locs: list[str], rows: dict[int, dict],
) -> pd.DataFrame:
    table = pd.DataFrame([rows[i] for i in range(len(ids))])
    counts = table[list(schema.label_cols)].to_numpy(dtype=np.int64)
    totals = schema.question_totals(counts).astype(np.int64)
    fractions = schema.vote_fractions(counts)
    id_values = pd.Series(ids, dtype="int64" if config.schema == "gz2" else "str")
    columns: dict[str, object] = {schema.id_column: id_values, "ra": ra, "dec": dec, "file_loc": file_locs}
    columns.update({col: counts[:, i] for i, col in enumerate(schema.label_cols)})
    columns.update({f"{q.name}_total-votes": totals[:, i] for i, q in enumerate(schema.questions)})
    if config.schema == "gz2":
        # Hart et al. 2016 also give these: every classification, and every vote on every question.
        columns["total_classifications"] = totals[:, 0]
        columns["total_votes"] = totals.sum(axis=1)
    columns.update({f"{col}_fraction": fractions[:, i] for i, col in enumerate(schema.label_cols)})
    columns.update({f"true_{col}": table[f"true_{col}"].to_numpy() for col in schema.label_cols})
    columns.update({col: table[col].to_numpy() for col in table.columns if col.startswith("sim_")})
    return pd.DataFrame(columns)


__all__ = [
    "SimulateConfig",
    "SimulationResult",
    "simulate_survey",
    "Galaxy",
    "sample_galaxy",
    "render_galaxy",
    "flux_to_rgb",
    "true_probabilities",
    "draw_votes",
    "iau_name",
]
