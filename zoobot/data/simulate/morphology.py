"""A simulated galaxy's latent truth: its morphology and how it was observed.

`sample_galaxy` draws a `Galaxy` from one random stream. The photometric constants live here
because a galaxy's signal to noise (and so what volunteers can see) depends on them; the renderer
uses the same ones, so the image and the votes agree.

Lengths are fractions of the image width, so the same galaxy looks the same at any image_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

# Photometry. Fluxes are in nanomaggies (zero point 22.5). Sky levels are per pixel of a 64-pixel
# image; a smaller image has bigger pixels and more sky per pixel, so depth is the same at any size.
ZERO_POINT = 22.5
GAIN = 300.0  # counts per nanomaggy
REFERENCE_SIZE = 64
SKY_COUNTS = np.array([25.0, 60.0, 150.0])  # g, r, z: z sky is brightest, as in DECaLS


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


# The draws below happen in a fixed order: changing it changes every galaxy of every seed.


def sample_galaxy(rng: np.random.Generator) -> Galaxy:
    """Draw one galaxy's morphology and observing conditions."""
    is_disc = rng.random() < 0.55
    position_angle = rng.uniform(0, np.pi)
    structure = _sample_disc(rng) if is_disc else _sample_elliptical(rng)
    mag_r = 14.5 + 4.3 * rng.beta(2.0, 1.6)  # more faint galaxies than bright ones
    merger_state = int(rng.choice(4, p=[0.8, 0.1, 0.06, 0.04]))
    companion = _sample_companion(rng, merger_state, max(structure["bulge_r_eff"], structure["disc_r_eff"]))
    artifact = int(rng.choice(3, p=[0.96, 0.025, 0.015]))
    if artifact:
        mag_r += 1.0  # an image dominated by an artifact usually shows a faint galaxy
    field_star = _sample_field_star(rng)
    return Galaxy(
        is_disc=bool(is_disc),
        **structure,
        arm_phase=float(rng.uniform(0, 2 * np.pi)),
        bar_angle=float(rng.uniform(0, np.pi)),
        bar_length=float(structure["disc_r_eff"] * rng.uniform(0.45, 0.75)),
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


def _sample_disc(rng: np.random.Generator) -> dict:
    """Bulge, disc, arms and bar of a disc galaxy, as `Galaxy` fields."""
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
    return dict(
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
        bar_strength=bar_strength,
    )


def _sample_elliptical(rng: np.random.Generator) -> dict:
    """An elliptical: all bulge, no disc, arms or bar."""
    bulge_axis_ratio = float(1 - 0.75 * rng.beta(1.3, 2.8))
    bulge_r_eff = rng.uniform(0.07, 0.17)
    bulge_n = rng.uniform(2.5, 5.0)
    return dict(
        bulge_fraction=1.0,
        bulge_r_eff=float(bulge_r_eff),
        bulge_n=float(bulge_n),
        bulge_axis_ratio=float(bulge_axis_ratio),
        bulge_boxiness=0.0,
        disc_r_eff=0.0,
        disc_axis_ratio=1.0,
        inclination_deg=0.0,
        arm_strength=0.0,
        arm_count=0,
        pitch_angle_deg=0.0,
        bar_strength=0.0,
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


def _sample_field_star(rng: np.random.Generator) -> tuple[float, float, float] | None:
    if rng.random() >= 0.15:
        return None
    radius, angle = rng.uniform(0.25, 0.42), rng.uniform(0, 2 * np.pi)
    return (radius * math.cos(angle), radius * math.sin(angle), float(rng.uniform(0.02, 0.25)))
