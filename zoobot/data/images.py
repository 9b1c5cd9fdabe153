"""One galaxy image from disk -> a square uint8 display image for the CNN.

PNG and JPEG are read as the volunteers saw them. FITS holds raw survey fluxes (e.g. DECaLS
g, r, z in nanomaggies): those get an asinh colour stretch whose brightness is set per image, so
cutouts from any survey, at any flux scale, come out as a viewable picture.

Every output goes through the same last step: centre-crop to a square, resize with an
antialiasing filter, convert to the requested number of channels.

No TensorFlow or MLflow here: this module runs inside image-decoding worker processes.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.visualization import AsinhStretch
from PIL import Image

PIL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
FITS_SUFFIXES = frozenset({".fits", ".fit", ".fits.gz", ".fit.gz", ".fz"})
IMAGE_SUFFIXES = PIL_SUFFIXES | FITS_SUFFIXES

# A FITS axis this short or shorter is taken to be the band axis; image axes are longer.
MAX_BANDS = 5

# Approximate effective wavelengths (nm) of common optical/NIR filters. Used to order bands from
# blue to red, and to balance colour (see _colour_weights).
BAND_WAVELENGTH_NM = {
    "u": 360.0, "g": 475.0, "r": 630.0, "i": 770.0, "z": 915.0, "y": 990.0, "Y": 1020.0,
    "J": 1250.0, "H": 1650.0, "K": 2200.0, "Ks": 2150.0,
}

# The chosen percentile of intensity is drawn at this fraction of full scale rather than at full
# scale, so galaxy cores up to ~2x brighter (for the default fits_q) still show structure instead of
# a flat saturated disc.
PERCENTILE_LEVEL = 0.8


@dataclass(frozen=True)
class ImageSpec:
    """What read_image returns: a (size, size, channels) uint8 array.

    size: output is size x size pixels (>= 8).
    channels: 1 = greyscale (luminance), 3 = RGB.
    fits_q: asinh softening for FITS (Lupton et al. 2004's Q). Intensity x, in units of the
        fits_percentile brightness, is drawn as asinh(Q x) / asinh(Q): linear for x << 1/Q,
        logarithmic above. Larger Q lifts faint outskirts and noise; smaller Q is closer to linear.
    fits_percentile: percentile of the positive pixel intensities of each FITS image that is drawn
        at PERCENTILE_LEVEL (80%) of full scale; it sets the brightness of every FITS image on its
        own, whatever the survey's flux units. Higher -> darker image and fewer saturated pixels.
        Only ~(100 - fits_percentile)% of the positive pixels can reach full scale.
    """

    size: int = 64
    channels: int = 3
    fits_q: float = 8.0
    fits_percentile: float = 99.5

    def __post_init__(self):
        problems = []
        if not _is_int(self.size) or self.size < 8:
            problems.append(f"size must be an integer >= 8 (output is size x size), got {self.size!r}")
        if not _is_int(self.channels) or self.channels not in (1, 3):
            problems.append(f"channels must be 1 (greyscale) or 3 (RGB), got {self.channels!r}")
        if not _is_real(self.fits_q) or not (math.isfinite(self.fits_q) and self.fits_q > 0):
            problems.append(f"fits_q (asinh softening) must be a finite number > 0, e.g. 8, got {self.fits_q!r}")
        if not _is_real(self.fits_percentile) or not (50 <= self.fits_percentile <= 100):
            problems.append(
                f"fits_percentile must be in [50, 100] (e.g. 99.5; lower values saturate most of the image), "
                f"got {self.fits_percentile!r}")
        if problems:
            raise ValueError("Invalid ImageSpec: " + "; ".join(problems) + ".")


class ImageReadError(Exception):
    """An image file that cannot be turned into a display image; the message names the file and why."""


def read_image(path, spec: ImageSpec) -> np.ndarray:
    """The image at `path` as a (spec.size, spec.size, spec.channels) uint8 array.

    PNG/JPEG are used as stored (converted to RGB or greyscale). FITS goes through read_fits_array
    and fits_to_rgb. Non-square images are centre-cropped to a square (the shorter side) before
    resizing, so nothing is stretched; resizing uses a Lanczos filter, which antialiases when
    downsampling (e.g. 424 -> 64 px).

    Raises ImageReadError for a missing file, an unsupported suffix, a corrupt or truncated file, a
    FITS file without image data or with unusable dimensions, or a FITS image with no positive flux.
    """
    if not isinstance(spec, ImageSpec):
        raise TypeError(f"spec must be an ImageSpec, got {type(spec).__name__}")
    path = Path(path)
    suffix = image_suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(
            f"Image '{path}' has unsupported suffix '{suffix or path.suffix}'; expected one of "
            f"{sorted(IMAGE_SUFFIXES)}. Convert it to PNG or FITS, or fix the path in the catalog.")
    if suffix in FITS_SUFFIXES:
        cube, bands = read_fits_array(path)
        try:
            rgb = fits_to_rgb(cube, bands, spec)
        except ValueError as err:
            raise ImageReadError(f"FITS image '{path}' cannot be displayed: {err}") from err
        image = Image.fromarray(rgb if cube.shape[0] > 1 else rgb[..., 0])
    else:
        image = _open_with_pillow(path)
    return _to_spec(image, spec)


def image_suffix(path) -> str:
    """The lower-case suffix read_image dispatches on, e.g. '.fits.gz'; '' if none is supported."""
    name = Path(path).name.lower()
    # Longest first, so 'x.fits.gz' is '.fits.gz' and not some shorter match.
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def read_fits_array(path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Raw float32 data of the first FITS HDU holding an image, as (bands, H, W), plus band names.

    Data is returned as stored: row 0 is the bottom of the sky image (FITS convention) and NaN/inf
    pixels are kept. Accepted layouts: (H, W) -> one band; (C, H, W) or (H, W, C) with
    C <= MAX_BANDS; extra length-1 axes (e.g. (1, C, H, W)) are dropped. Works for plain, gzipped
    and tile-compressed (.fz) files.

    Band names come from the header (the image HDU's, else the primary's): BAND0, BAND1, ...
    or BANDS ('grz', or 'g,r,z' for multi-letter names). They are () when absent or when their
    count does not match the number of bands.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(_missing_message(path))
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.size > 0), None)
            if hdu is None:
                kinds = ", ".join(f"{i}: {type(h).__name__}" for i, h in enumerate(hdul))
                raise ImageReadError(
                    f"FITS file '{path}' has no HDU with image data (HDUs {kinds}); expected an image "
                    "(primary or extension) with 2 or 3 axes. Check that this is an image cutout, not a "
                    "catalog table.")
            data = np.asarray(hdu.data, dtype=np.float32)
            headers = [hdu.header, hdul[0].header]
    except (OSError, ValueError, TypeError, EOFError) as err:
        # astropy reports a truncated data block as a reshape ValueError and a bad header as OSError.
        raise ImageReadError(
            f"FITS file '{path}' is corrupt or truncated ({type(err).__name__}: {err}). "
            "Re-download or re-create the cutout.") from err
    cube = _as_band_cube(data, path)
    return cube, _band_names(headers, cube.shape[0])


def fits_to_rgb(cube, bands, spec: ImageSpec) -> np.ndarray:
    """A (bands, H, W) flux cube as an (H, W, 3) uint8 display image.

    Rows are flipped (FITS row 0 is the bottom), so survey cutouts with north along +y, such as
    DECaLS, come out north up, east left. The WCS is not read.

    Bands are ordered blue -> red: by wavelength when every name is in BAND_WAVELENGTH_NM, else
    assumed to be given blue -> red already. The reddest three become R, G, B (so g, r, z gives
    z -> R, r -> G, g -> B); with two bands, G is their mean; one band gives grey (R = G = B).
    Known bands are weighted by 1/wavelength for colour balance (see _colour_weights).

    Stretch (Lupton et al. 2004 style, colour preserving): intensity I = mean of R, G, B; each
    channel is scaled by f(I) / I with f(I) = PERCENTILE_LEVEL * asinh(Q x) / asinh(Q),
    x = I / (spec.fits_percentile percentile of the positive I). Pixels pushed past full scale are
    scaled down as a whole, keeping their hue. NaN/inf count as 0 (black); negative noise is black.

    Raises ValueError for a cube that is not 3-D, names that do not match the bands, or a cube
    with no positive flux (e.g. an all-NaN cutout off the survey footprint).
    """
    cube = np.asarray(cube, dtype=np.float32)
    bands = tuple(bands)
    if cube.ndim != 3 or min(cube.shape) < 1:
        raise ValueError(f"expected a (bands, H, W) cube, got shape {cube.shape}")
    if not all(isinstance(b, str) for b in bands):
        raise ValueError(f"band names must be strings such as 'g', got {bands!r}")
    if bands and len(bands) != cube.shape[0]:
        raise ValueError(
            f"{len(bands)} band names {bands} for {cube.shape[0]} bands; pass one name per band or ()")
    cube = np.where(np.isfinite(cube), cube, 0.0)

    order, weights = _band_order_and_weights(bands, cube.shape[0])
    planes = [cube[i] * weights[i] for i in order[-3:]][::-1]  # red first
    if len(planes) == 2:
        planes.insert(1, (planes[0] + planes[1]) / 2)
    rgb = np.stack(planes * 3 if len(planes) == 1 else planes, axis=-1)

    intensity = rgb.mean(axis=-1)
    positive = intensity[intensity > 0]
    if positive.size == 0:
        raise ValueError("no pixel has positive flux (all zero, negative or NaN); expected a sky image")
    top = np.percentile(positive, spec.fits_percentile)
    stretched = PERCENTILE_LEVEL * AsinhStretch(a=1.0 / spec.fits_q)(intensity / top, clip=False)
    gain = np.divide(stretched, intensity, out=np.zeros_like(intensity), where=intensity > 0)
    rgb = np.clip(rgb * gain[..., None], 0.0, None)
    # Dividing the whole pixel by its brightest channel keeps the hue of saturated cores.
    rgb /= np.maximum(rgb.max(axis=-1, keepdims=True), 1.0)
    # FITS row 0 is the bottom of the sky image; display images start at the top.
    return np.round(rgb[::-1] * 255).astype(np.uint8)


def _band_order_and_weights(bands: tuple[str, ...], n_bands: int) -> tuple[list[int], list[float]]:
    """Band indices ordered blue -> red, and each band's colour weight (indexed like the cube)."""
    wavelengths = [BAND_WAVELENGTH_NM.get(b.strip()) for b in bands]
    if not bands or None in wavelengths:
        return list(range(n_bands)), [1.0] * n_bands
    order = sorted(range(n_bands), key=lambda i: wavelengths[i])
    return order, _colour_weights(wavelengths)


def _colour_weights(wavelengths: list[float]) -> list[float]:
    # Survey fluxes (nanomaggies, AB) make a typical galaxy several times brighter in z than in g,
    # so unweighted it renders orange-red. Weighting by 1/wavelength gives warm white cores like the
    # Galaxy Zoo volunteer images, while still letting a redder galaxy look redder. Tuned by eye on
    # DECaLS cutouts; the overall scale does not matter (brightness is set by the percentile).
    return [630.0 / w for w in wavelengths]


def _as_band_cube(data: np.ndarray, path: Path) -> np.ndarray:
    shape = data.shape
    if data.ndim > 3:
        data = data.reshape([n for n in shape if n != 1])
    if data.ndim == 2:
        data = data[None]
    elif data.ndim == 3 and data.shape[0] > MAX_BANDS and data.shape[2] <= MAX_BANDS:
        data = np.moveaxis(data, -1, 0)
    if data.ndim != 3 or data.shape[0] > MAX_BANDS or min(data.shape[1:]) < 2:
        raise ImageReadError(
            f"FITS file '{path}' has image data of shape {shape}; expected (H, W), (bands, H, W) or "
            f"(H, W, bands) with at most {MAX_BANDS} bands and H, W >= 2. Save one cutout per file with "
            "the bands on the first axis.")
    return np.ascontiguousarray(data)


def _band_names(headers, n_bands: int) -> tuple[str, ...]:
    for header in headers:
        numbered = [header.get(f"BAND{i}") for i in range(n_bands)]
        if all(isinstance(b, str) and b.strip() for b in numbered) and f"BAND{n_bands}" not in header:
            return tuple(b.strip() for b in numbered)
        joined = header.get("BANDS")
        if isinstance(joined, str) and joined.strip():
            text = joined.strip()
            names = text.replace(",", " ").split() if ("," in text or " " in text) else list(text)
            if len(names) == n_bands:
                return tuple(names)
    return ()


def _open_with_pillow(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageReadError(_missing_message(path))
    try:
        with Image.open(path) as image:
            image.load()  # Image.open is lazy; truncation only shows up on load
            if image.mode.startswith("I"):
                # 16-bit greyscale PNG: Pillow's convert("L") clips at 255 (nearly all white); rescale.
                return Image.fromarray(np.round(np.asarray(image) / 257).clip(0, 255).astype(np.uint8))
            # Alpha and palettes are dropped: volunteers saw these images on an opaque page.
            return image.convert("L" if image.mode in ("L", "LA", "1") else "RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageReadError(
            f"Image '{path}' could not be decoded as {path.suffix.lstrip('.').upper()} "
            f"({type(err).__name__}: {err}); the file is corrupt, truncated or not an image. "
            "Re-download or re-create it.") from err


def _to_spec(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((spec.size, spec.size), Image.Resampling.LANCZOS)
    image = image.convert("L" if spec.channels == 1 else "RGB")  # L = ITU-R 601 luminance
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if spec.channels == 1 else array


def _missing_message(path: Path) -> str:
    return (f"Image file '{path}' does not exist (resolved to '{path.resolve()}'). Check the catalog's "
            "image paths and the image root directory.")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
