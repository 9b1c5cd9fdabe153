"""zoobot.data.images: PNG/JPEG/FITS -> square uint8 display images.

The real cutouts in tests/data/real are DECaLS DR5 (see tests/data/real/README.md); everything
else is synthetic and written into tmp_path.
"""

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from zoobot.data.images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    ImageSpec,
    fits_to_rgb,
    read_fits_array,
    read_image,
)

REAL = Path(__file__).parent / "data" / "real"
REAL_FITS = REAL / "example_b.fits"
REAL_PNG = REAL / "example_b.png"


def centre_and_edge_means(image: np.ndarray) -> tuple[float, float]:
    size = image.shape[0]
    c = size // 8
    centre = image[size // 2 - c:size // 2 + c, size // 2 - c:size // 2 + c]
    border = np.concatenate([image[:c].ravel(), image[-c:].ravel(), image[:, :c].ravel(), image[:, -c:].ravel()])
    return float(centre.mean()), float(border.mean())


def blob(shape=(40, 40), centre=(20, 20), sigma=3.0, amplitude=1.0) -> np.ndarray:
    y, x = np.indices(shape)
    return (amplitude * np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2))).astype(np.float32)


def write_fits(path: Path, data, **header) -> Path:
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def real_cube():
    return read_fits_array(REAL_FITS)


# ---------------------------------------------------------------- ImageSpec


def test_spec_defaults_are_valid():
    spec = ImageSpec()
    assert (spec.size, spec.channels, spec.fits_q, spec.fits_percentile) == (64, 3, 8.0, 99.5)


@pytest.mark.parametrize("kwargs, field", [
    ({"size": 4}, "size"),
    ({"size": 64.0}, "size"),
    ({"size": True}, "size"),
    ({"channels": 2}, "channels"),
    ({"fits_q": 0}, "fits_q"),
    ({"fits_q": float("nan")}, "fits_q"),
    ({"fits_percentile": 30}, "fits_percentile"),
    ({"fits_percentile": 100.5}, "fits_percentile"),
])
def test_spec_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"{field} .*must be .*got {kwargs[field]!r}"):
        ImageSpec(**kwargs)


def test_suffixes_are_lower_case_and_cover_fits_and_volunteer_formats():
    assert {".png", ".jpg", ".jpeg", ".fits", ".fit", ".fits.gz", ".fit.gz", ".fz"} == set(IMAGE_SUFFIXES)


# ---------------------------------------------------------------- real DECaLS cutout


def test_real_fits_cube_and_band_names(real_cube):
    cube, bands = real_cube
    assert cube.shape == (3, 162, 162) and cube.dtype == np.float32
    assert bands == ("g", "r", "z")
    assert cube.dtype.isnative  # FITS is big-endian on disk


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_real_fits_is_a_sensible_galaxy_image(size, channels):
    image = read_image(REAL_FITS, ImageSpec(size=size, channels=channels))
    assert image.shape == (size, size, channels) and image.dtype == np.uint8
    assert 3 < image.mean() < 100, "black or washed out"
    assert (image == 255).mean() < 0.03, "too many saturated pixels"
    assert image.max() > 150, "the galaxy core should be bright"
    centre, edge = centre_and_edge_means(image.astype(float))
    assert centre > 3 * edge


def test_real_fits_has_colour():
    image = read_image(REAL_FITS, ImageSpec(size=64)).astype(float)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    assert np.abs(r - b).mean() > 1 and np.abs(r - g).mean() > 0.5
    assert (r - b).std() > 1, "colour should vary across the field, not be a global tint"


def test_stretch_is_asinh_with_the_percentile_at_eighty_percent():
    # 1600 pixels, nearly all at 1.0, so the 99.5th percentile is exactly 1.0.
    band = np.ones((40, 40), np.float32)
    band[0, :3] = [0.1, 0.03, 3.0]
    grey = fits_to_rgb(band[None], (), ImageSpec(fits_q=8))[::-1, :, 0]
    asinh_q = np.arcsinh(8.0)
    assert grey[5, 5] == round(0.8 * 255)
    assert grey[0, 0] == round(0.8 * 255 * np.arcsinh(0.8) / asinh_q)  # 54; a linear stretch gives 20
    assert grey[0, 1] == round(0.8 * 255 * np.arcsinh(0.24) / asinh_q)
    assert grey[0, 2] == 255  # saturates above ~2x the percentile


def test_real_fits_brightness_does_not_depend_on_flux_units(real_cube):
    cube, bands = real_cube
    spec = ImageSpec()
    nanomaggies = fits_to_rgb(cube, bands, spec).astype(int)
    other_units = fits_to_rgb(cube * 1000.0, bands, spec).astype(int)
    assert np.abs(nanomaggies - other_units).max() <= 1


def test_real_fits_resembles_volunteer_png():
    # example_b.png does not look like the same field as example_b.fits (its galaxy is more
    # elongated and has no close companion), so this only checks what both must share: a bright
    # galaxy in the centre on dark sky.
    spec = ImageSpec(size=64, channels=1)
    from_fits = read_image(REAL_FITS, spec)[..., 0].astype(float)
    volunteer = read_image(REAL_PNG, spec)[..., 0].astype(float)
    assert np.corrcoef(from_fits.ravel(), volunteer.ravel())[0, 1] > 0.4


def test_real_volunteer_png():
    image = read_image(REAL_PNG, ImageSpec(size=64))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    centre, edge = centre_and_edge_means(image.astype(float))
    assert centre > 2 * edge and 5 < image.mean() < 100


# ---------------------------------------------------------------- FITS layouts and bands


def test_single_band_fits_is_grey(tmp_path):
    path = write_fits(tmp_path / "r.fits", blob() + 0.001)
    colour = read_image(path, ImageSpec(size=32, channels=3))
    grey = read_image(path, ImageSpec(size=32, channels=1))
    assert colour.shape == (32, 32, 3) and grey.shape == (32, 32, 1)
    assert np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])
    assert np.abs(grey[..., 0].astype(int) - colour[..., 0]).max() <= 1
    centre, edge = centre_and_edge_means(grey.astype(float))
    assert centre > 100 and edge < 20


def test_fits_rows_are_flipped_so_north_is_up(tmp_path):
    # FITS row 0 is the bottom of the sky image.
    path = write_fits(tmp_path / "low.fits", blob(centre=(5, 20)))
    image = read_image(path, ImageSpec(size=40, channels=1))[..., 0]
    assert image[-10:].mean() > 10 * image[:10].mean()


def test_hwc_fits_gives_the_same_image_as_chw(tmp_path, real_cube):
    cube, _ = real_cube
    path = write_fits(tmp_path / "hwc.fits", np.moveaxis(cube, 0, -1), BANDS="grz")
    assert read_fits_array(path)[1] == ("g", "r", "z")
    assert np.array_equal(read_image(path, ImageSpec()), read_image(REAL_FITS, ImageSpec()))


def test_gzipped_and_tile_compressed_fits(tmp_path, real_cube):
    cube, _ = real_cube
    expected = read_image(REAL_FITS, ImageSpec()).astype(int)
    gz = tmp_path / "cutout.fits.gz"
    gz.write_bytes(gzip.compress(REAL_FITS.read_bytes()))
    assert np.array_equal(read_image(gz, ImageSpec()), expected)

    fz = tmp_path / "cutout.fits.fz"
    compressed = fits.CompImageHDU(cube, compression_type="GZIP_2", quantize_level=0.0)  # lossless
    for i, band in enumerate("grz"):
        compressed.header[f"BAND{i}"] = band
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(fz)
    assert read_fits_array(fz)[1] == ("g", "r", "z")
    assert np.array_equal(read_image(fz, ImageSpec()), expected)


def test_image_in_an_extension_and_extra_length_one_axes(tmp_path, real_cube):
    cube, _ = real_cube
    path = tmp_path / "ext.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), table, fits.ImageHDU(cube[None])]).writeto(path)
    found, bands = read_fits_array(path)
    assert found.shape == (3, 162, 162) and bands == ()


def test_band_names_from_bands_header_only_when_the_count_matches(tmp_path):
    cube = np.stack([blob()] * 3)
    assert read_fits_array(write_fits(tmp_path / "a.fits", cube, BANDS="g,r,z"))[1] == ("g", "r", "z")
    assert read_fits_array(write_fits(tmp_path / "b.fits", cube, BANDS="gr"))[1] == ()


@pytest.mark.filterwarnings("error")  # e.g. "invalid value encountered in cast" from NaN reaching uint8
def test_nan_and_inf_pixels_are_black_and_do_not_break_the_stretch(tmp_path, real_cube):
    cube, _ = real_cube
    damaged = cube.copy()
    damaged[:, :40, :40] = np.nan  # a chip gap at the bottom-left of the sky image
    damaged[1, 100, 100] = np.inf
    path = write_fits(tmp_path / "gap.fits", damaged, BANDS="grz")
    image = read_image(path, ImageSpec(size=162))
    clean = read_image(REAL_FITS, ImageSpec(size=162))
    assert (image[-40:, :40] == 0).all()
    assert 3 < image.mean() < 100
    assert np.abs(image[:100, 50:].astype(int) - clean[:100, 50:]).mean() < 2


def test_bands_map_to_rgb_by_wavelength():
    spec = ImageSpec()
    only_g = np.stack([blob(), np.zeros((40, 40)), np.zeros((40, 40))]) + 0.0
    rgb = fits_to_rgb(only_g, ("g", "r", "z"), spec)
    assert rgb[..., 2].max() > 200 and rgb[..., 0].max() == 0 and rgb[..., 1].max() == 0
    # The same cube labelled in another order is sorted by wavelength: band 0 is now z -> red.
    rgb = fits_to_rgb(only_g, ("z", "g", "r"), spec)
    assert rgb[..., 0].max() > 200 and rgb[..., 2].max() == 0


def test_unknown_bands_are_taken_as_blue_to_red_and_more_than_three_keep_the_reddest():
    spec = ImageSpec()
    spots = [blob(centre=(10, 10)), blob(centre=(10, 30)), blob(centre=(30, 10)), blob(centre=(30, 30))]
    rgb = fits_to_rgb(np.stack(spots), ("a", "b", "c", "d"), spec)[::-1]  # undo the display flip
    assert rgb[30, 30, 0] > 200  # last band -> red
    assert rgb[30, 10, 1] > 200  # third band -> green
    assert rgb[10, 30, 2] > 200  # second band -> blue
    assert rgb[10, 10].max() == 0  # first band dropped


def test_two_bands_synthesise_green_as_their_mean():
    spec = ImageSpec()
    rgb = fits_to_rgb(np.stack([blob(), blob()]), (), spec).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 1
    assert rgb.max() > 200


def test_fits_to_rgb_rejects_bad_input():
    with pytest.raises(ValueError, match=r"expected a \(bands, H, W\) cube, got shape \(40, 40\)"):
        fits_to_rgb(blob(), (), ImageSpec())
    with pytest.raises(ValueError, match="2 band names .* for 3 bands"):
        fits_to_rgb(np.stack([blob()] * 3), ("g", "r"), ImageSpec())
    with pytest.raises(ValueError, match="band names must be strings"):
        fits_to_rgb(np.stack([blob()] * 3), (0, 1, 2), ImageSpec())


# ---------------------------------------------------------------- PNG and JPEG


def test_png_colour_and_greyscale(tmp_path):
    red = np.zeros((100, 100, 3), np.uint8)
    red[..., 0] = 200
    path = write_png(tmp_path / "red.png", red)
    colour = read_image(path, ImageSpec(size=32))
    grey = read_image(path, ImageSpec(size=32, channels=1))
    assert colour.shape == (32, 32, 3) and colour.dtype == np.uint8
    assert (colour == [200, 0, 0]).all()
    assert grey.shape == (32, 32, 1) and abs(int(grey.mean()) - round(200 * 0.299)) <= 1  # luminance


def test_greyscale_png_gives_three_equal_channels(tmp_path):
    path = write_png(tmp_path / "grey.png", np.tile(np.arange(0, 250, 5, dtype=np.uint8), (50, 1)))
    image = read_image(path, ImageSpec(size=16))
    assert image.shape == (16, 16, 3) and image[..., 0].std() > 10
    assert np.array_equal(image[..., 0], image[..., 2])


def test_non_square_image_is_centre_cropped(tmp_path):
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, :50] = [255, 0, 0]
    wide[:, 50:150] = [0, 255, 0]
    wide[:, 150:] = [0, 0, 255]
    image = read_image(write_png(tmp_path / "wide.png", wide), ImageSpec(size=20))
    assert (image == [0, 255, 0]).all()


def test_downsampling_does_not_alias(tmp_path):
    stripes = np.zeros((424, 424), np.uint8)
    stripes[:, ::2] = 255
    image = read_image(write_png(tmp_path / "stripes.png", stripes), ImageSpec(size=64, channels=1))
    assert abs(image.mean() - 127.5) < 3 and image.std() < 5


def test_jpeg_matches_the_png_it_was_made_from(tmp_path):
    smooth = (np.stack([blob((120, 120), (60, 60), 20)] * 3, axis=-1) * np.array([250, 200, 150])).astype(np.uint8)
    png = write_png(tmp_path / "galaxy.png", smooth)
    jpeg = tmp_path / "galaxy.JPG"
    Image.open(png).save(jpeg, quality=90)
    from_png = read_image(png, ImageSpec()).astype(int)
    from_jpeg = read_image(jpeg, ImageSpec()).astype(int)
    assert np.abs(from_png - from_jpeg).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_png_with_alpha_or_palette(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.new("RGB", (50, 50), (10, 120, 230)).convert(mode).save(path)
    image = read_image(path, ImageSpec(size=8))
    assert image.shape == (8, 8, 3) and np.abs(image.astype(int) - [10, 120, 230]).max() <= 20


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 40), 32896, np.uint16)).save(path)  # half of the 16-bit range
    assert abs(int(read_image(path, ImageSpec(size=8, channels=1)).mean()) - 128) <= 1


# ---------------------------------------------------------------- errors name the file and the problem


@pytest.mark.parametrize("name", ["gone.png", "gone.fits.gz"])
def test_missing_file(tmp_path, name):
    with pytest.raises(ImageReadError, match=rf"{name}' does not exist.*Check the catalog"):
        read_image(tmp_path / name, ImageSpec())


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "galaxy.tif"
    path.write_bytes(b"not read")
    with pytest.raises(ImageReadError, match=r"galaxy.tif' has unsupported suffix '.tif'.*'.fits'.*'.png'"):
        read_image(path, ImageSpec())


@pytest.mark.parametrize("name, content", [
    ("junk.png", b"this is not an image" * 10),
    ("empty.jpg", b""),
    ("half.png", REAL_PNG.read_bytes()[:20000]),
])
def test_corrupt_or_truncated_png_jpeg(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=rf"{name}' could not be decoded .*corrupt, truncated"):
        read_image(path, ImageSpec())


def test_truncated_jpeg(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    full = tmp_path / "full.jpg"
    Image.fromarray(noisy).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:5000])
    with pytest.raises(ImageReadError, match=r"cut.jpg' could not be decoded"):
        read_image(cut, ImageSpec())


@pytest.mark.filterwarnings("ignore:File may have been truncated", "ignore:Error validating header")
@pytest.mark.parametrize("name, content", [
    ("junk.fits", b"hello world" * 500),
    ("half.fits", REAL_FITS.read_bytes()[:160000]),
    ("header_only.fit", REAL_FITS.read_bytes()[:1000]),
])
def test_corrupt_or_truncated_fits(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=rf"{name}' is corrupt or truncated.*Re-download"):
        read_image(path, ImageSpec())


def test_fits_without_image_data(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="ra", format="E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(ImageReadError, match=r"table.fits' has no HDU with image data.*BinTableHDU.*not a catalog"):
        read_image(path, ImageSpec())


@pytest.mark.parametrize("shape", [(10,), (10, 10, 10), (6, 8, 10), (2, 3, 10, 10)])
def test_fits_with_wrong_dimensions(tmp_path, shape):
    path = write_fits(tmp_path / "odd.fits", np.ones(shape))
    expected = rf"odd.fits' has image data of shape {re.escape(str(shape))}; expected \(H, W\)"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path, ImageSpec())


def test_fits_with_no_positive_flux(tmp_path):
    path = write_fits(tmp_path / "blank.fits", np.full((3, 20, 20), np.nan))
    with pytest.raises(ImageReadError, match=r"blank.fits' cannot be displayed: no pixel has positive flux"):
        read_image(path, ImageSpec())
