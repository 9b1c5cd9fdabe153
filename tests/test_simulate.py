"""Tests of the simulated survey: determinism, vote bookkeeping, and that the truth is visible."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image
from scipy.stats import spearmanr

from zoobot.data import simulate
from zoobot.core.schema import load_schema
from zoobot.data.simulate import SimulateConfig, SimulationResult, simulate_survey

SIZE = 32


def _run(directory: Path, **overrides) -> SimulationResult:
    settings = dict(output_dir=str(directory), n_galaxies=16, image_size=SIZE, seed=1, workers=1)
    settings.update(overrides)
    return simulate_survey(SimulateConfig(**settings))


@pytest.fixture(scope="module")
def decals(tmp_path_factory) -> SimulationResult:
    # Big enough for correlations, small enough to render in about a second.
    return _run(tmp_path_factory.mktemp("decals"), n_galaxies=64)


@pytest.fixture(scope="module")
def gz2_fits(tmp_path_factory) -> SimulationResult:
    return _run(tmp_path_factory.mktemp("gz2"), n_galaxies=24, schema="gz2", image_format="fits")


def _image_bytes(result: SimulationResult) -> list[bytes]:
    root = result.catalog_path.parent
    return [(root / f).read_bytes() for f in result.catalog["file_loc"]]


# -- config --------------------------------------------------------------------------------------


def test_every_config_field_has_a_default_and_help():
    # The CLI builds its options from these fields.
    for f in dataclasses.fields(SimulateConfig):
        assert f.default is not dataclasses.MISSING, f.name
        assert f.metadata.get("help"), f.name
    assert SimulateConfig() == SimulateConfig(
        output_dir="data/simulated", n_galaxies=200, image_size=64, seed=1, schema="decals",
        image_format="png", mean_volunteers=40.0, workers=0, overwrite=False,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_galaxies": 0}, r"n_galaxies must be >= 1; found 0"),
        ({"n_galaxies": 2.5}, r"n_galaxies must be an integer; found 2.5"),
        ({"n_galaxies": True}, r"n_galaxies must be an integer"),
        ({"image_size": 8}, r"image_size must be between 16 and 1024; found 8"),
        ({"seed": -1}, r"seed must be >= 0"),
        ({"workers": -2}, r"workers must be >= 0.*0 for all cores"),
        ({"schema": "sdss"}, r"schema must be one of \['decals', 'gz2'\].*'sdss'"),
        ({"image_format": "jpg"}, r"image_format must be one of \['png', 'fits'\]; found 'jpg'"),
        ({"mean_volunteers": 0.0}, r"mean_volunteers must be a finite number >= 1.*found 0.0"),
        ({"mean_volunteers": float("nan")}, r"mean_volunteers must be a finite number"),
        ({"output_dir": " "}, r"output_dir must be a non-empty path"),
        ({"overwrite": "yes"}, r"overwrite must be True or False; found 'yes'"),
    ],
)
def test_invalid_config_says_what_was_expected_and_found(overrides, message):
    with pytest.raises(ValueError, match=message):
        SimulateConfig(**overrides)


# -- output files --------------------------------------------------------------------------------


def test_catalog_columns_and_ids(decals):
    cat, schema = decals.catalog, load_schema("decals")
    assert decals.catalog_path.name == "catalog.csv"
    assert list(cat.columns[:4]) == ["iauname", "ra", "dec", "file_loc"]
    expected = (
        list(schema.label_cols)
        + [f"{q.name}_total-votes" for q in schema.questions]
        + [f"{c}_fraction" for c in schema.label_cols]
        + [f"true_{c}" for c in schema.label_cols]
    )
    assert set(expected) <= set(cat.columns)
    for name in ["sim_bulge_fraction", "sim_arm_strength", "sim_arm_count", "sim_pitch_angle", "sim_bar_strength",
                 "sim_inclination", "sim_axis_ratio", "sim_companion", "sim_mag_r", "sim_snr"]:
        assert name in cat.columns
    assert cat["iauname"].is_unique
    assert all(re.fullmatch(r"J\d{6}\.\d{2}[+-]\d{6}\.\d", name) for name in cat["iauname"])
    # The file on disk round-trips to the returned table.
    reread = pd.read_csv(decals.catalog_path)
    pd.testing.assert_frame_equal(reread, cat, check_dtype=False)


def test_the_package_still_exports_what_the_single_module_did():
    from zoobot.data.simulate import morphology, render, survey, volunteers

    assert simulate.SimulateConfig is survey.SimulateConfig
    assert simulate.simulate_survey is survey.simulate_survey
    assert simulate.sample_galaxy is morphology.sample_galaxy
    assert simulate.render_galaxy is render.render_galaxy
    assert simulate.draw_votes is volunteers.draw_votes
    assert simulate.ENDS_CLASSIFICATION is volunteers.ENDS_CLASSIFICATION
    assert all(hasattr(simulate, name) for name in simulate.__all__)


def test_iau_name_truncates_coordinates():
    assert simulate.iau_name(0.099, 1.2055) == "J000023.76+011219.8"
    assert simulate.iau_name(359.99999, -0.5) == "J235959.99-003000.0"


def test_png_images_exist_are_relative_and_readable(decals):
    root = decals.catalog_path.parent
    for file_loc in decals.catalog["file_loc"]:
        assert not Path(file_loc).is_absolute() and file_loc.startswith("images/")
        with Image.open(root / file_loc) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    assert not list(root.glob(".*tmp")), "temporary catalog left behind"


def test_fits_images_are_grz_cubes(gz2_fits):
    cat = gz2_fits.catalog
    assert cat["dr7objid"].dtype == np.int64 and cat["dr7objid"].is_unique
    with fits.open(gz2_fits.catalog_path.parent / cat["file_loc"].iloc[0]) as hdul:
        data, header = hdul[0].data, hdul[0].header
    assert data.shape == (3, SIZE, SIZE) and data.dtype.kind == "f"
    assert header["BANDS"] == "grz" and [header[f"BAND{i}"] for i in range(3)] == ["g", "r", "z"]
    assert np.isfinite(data).all() and data.sum() > 0


def test_existing_catalog_is_not_overwritten_unless_asked(tmp_path):
    first = _run(tmp_path, n_galaxies=2)
    with pytest.raises(FileExistsError, match=r"already holds the output of `simulate`.*overwrite=true.*another output_dir"):
        _run(tmp_path, n_galaxies=2, seed=2)
    assert first.catalog_path.read_bytes() == _run(tmp_path, n_galaxies=2, overwrite=True).catalog_path.read_bytes()


def test_failed_overwrite_leaves_the_earlier_survey_whole(tmp_path, monkeypatch):
    first = _run(tmp_path, n_galaxies=2)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def broken_write(*args):
        raise OSError("disk full")

    # Patched where the worker looks it up (workers=1 runs it in this process).
    monkeypatch.setattr(simulate.survey, "write_image", broken_write)
    with pytest.raises(OSError, match="disk full"):
        _run(tmp_path, n_galaxies=2, seed=5, overwrite=True)
    # Everything was staged: the earlier survey is exactly as it was, and no staging folder is left.
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert first.catalog_path.is_file()


def test_overwrite_never_replaces_a_catalog_that_simulate_did_not_write(tmp_path):
    mine = tmp_path / "catalog.csv"
    mine.write_text("iauname,file_loc\nJ1,my_image.png\n")
    (tmp_path / "my_image.png").write_bytes(b"not a simulation")
    with pytest.raises(ValueError, match=r"would replace 1 files .* that it did not write: \['catalog.csv'\]"):
        _run(tmp_path, n_galaxies=2, overwrite=True)
    assert mine.read_text() == "iauname,file_loc\nJ1,my_image.png\n"
    assert (tmp_path / "my_image.png").read_bytes() == b"not a simulation"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.csv", "my_image.png"]


def test_overwrite_replaces_only_the_earlier_simulation_files(tmp_path):
    _run(tmp_path, n_galaxies=3)
    (tmp_path / "notes.txt").write_text("keep me")
    second = _run(tmp_path, n_galaxies=2, seed=9, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    images = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "images").rglob("*") if p.is_file())
    assert images == sorted(second.catalog["file_loc"])  # the first survey's other images are gone
    assert json.loads((tmp_path / "simulation.json").read_text())["files"] == ["catalog.csv", *second.catalog["file_loc"]]


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    simulate_survey(SimulateConfig(output_dir=str(tmp_path), n_galaxies=2, image_size=16, workers=1), progress=True)
    captured = capsys.readouterr()
    assert "Simulating galaxies" in captured.err and captured.out == ""


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_survey_with_any_number_of_workers(decals, tmp_path):
    again = _run(tmp_path / "again", n_galaxies=24)
    pooled = _run(tmp_path / "pooled", n_galaxies=24, workers=2)
    assert again.catalog_path.read_bytes() == pooled.catalog_path.read_bytes()
    assert _image_bytes(again) == _image_bytes(pooled)
    # Galaxy i depends only on (seed, i): the first 24 of a 64-galaxy survey are these 24.
    pd.testing.assert_frame_equal(again.catalog, decals.catalog.iloc[:24])
    assert _image_bytes(again) == _image_bytes(decals)[:24]


def test_different_seed_different_survey(tmp_path):
    one, two = _run(tmp_path / "one", seed=1), _run(tmp_path / "two", seed=2)
    assert not one.catalog["iauname"].isin(two.catalog["iauname"]).any()
    assert not np.allclose(one.catalog["sim_bulge_fraction"], two.catalog["sim_bulge_fraction"])
    assert _image_bytes(one) != _image_bytes(two)


def test_image_size_changes_pixels_not_votes(tmp_path):
    small, large = _run(tmp_path / "small", image_size=16), _run(tmp_path / "large", image_size=24)
    votes = [c for c in small.catalog.columns if c != "file_loc"]
    pd.testing.assert_frame_equal(small.catalog[votes], large.catalog[votes])


# -- votes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["decals", "gz2_fits"])
def test_votes_follow_the_decision_tree(fixture, request):
    result = request.getfixturevalue(fixture)
    cat = result.catalog
    schema = load_schema("decals" if fixture == "decals" else "gz2")
    root = schema.questions[0]
    artifact = simulate.ENDS_CLASSIFICATION[schema.name]
    for column in schema.label_cols:
        assert cat[column].dtype.kind == "i" and (cat[column] >= 0).all(), column
    for question in schema.questions:
        total = cat[list(question.columns)].sum(axis=1)
        assert (cat[f"{question.name}_total-votes"] == total).all()
        if question.follows is not None:
            assert (total <= cat[question.follows]).all(), question.name
        elif question is not root:
            assert (total == cat[f"{root.name}_total-votes"] - cat[artifact]).all(), question.name
        fractions = cat[[f"{c}_fraction" for c in question.columns]]
        answered = total > 0
        np.testing.assert_allclose(fractions[answered].sum(axis=1), 1.0)
        assert fractions[~answered].isna().all().all()
        truth = cat[[f"true_{c}" for c in question.columns]]
        np.testing.assert_allclose(truth.sum(axis=1), 1.0)
        assert (truth.to_numpy() > 0).all()
    # The deeper questions are actually reached by someone.
    assert (cat[f"{schema.questions[-2].name}_total-votes"] > 0).any()


def test_volunteer_numbers(decals):
    first = decals.catalog["smooth-or-featured_total-votes"]
    assert abs(first.mean() - 40) < 3
    assert first.min() >= simulate.MIN_VOLUNTEERS


def test_draw_votes_walks_the_tree_from_fixed_truth():
    schema = load_schema("decals")
    truth = {q.name: np.full(len(q.answers), 1 / len(q.answers)) for q in schema.questions}
    rng = np.random.default_rng(0)
    for _ in range(50):
        votes = simulate.draw_votes(truth, schema, 20.0, rng)
        assert votes["disk-edge-on_yes"] + votes["disk-edge-on_no"] == votes["smooth-or-featured_featured-or-disk"]
        assert sum(votes[c] for c in schema.question("bar").columns) == votes["disk-edge-on_no"]
        merging = sum(votes[c] for c in schema.question("merging").columns)
        root = sum(votes[c] for c in schema.question("smooth-or-featured").columns)
        assert merging == root - votes["smooth-or-featured_artifact"]


@pytest.mark.parametrize("schema_name", ["decals", "gz2"])
def test_truth_covers_every_question_of_the_tree(schema_name):
    schema = load_schema(schema_name)
    for index in range(30):
        galaxy = simulate.sample_galaxy(np.random.default_rng(index))
        truth = simulate.true_probabilities(galaxy, schema)
        assert set(truth) == set(schema.question_names)
        for question in schema.questions:
            assert truth[question.name].shape == (len(question.answers),)
            assert truth[question.name].sum() == pytest.approx(1.0)


# -- the truth is visible ------------------------------------------------------------------------


def _image_moments(path: Path) -> tuple[float, float]:
    """(blueness of the bright pixels, axis ratio from second moments) of a PNG."""
    rgb = np.asarray(Image.open(path)).astype(float)
    lum = rgb.mean(axis=2)
    bright = lum > np.percentile(lum, 75)
    blueness = (rgb[..., 2] - rgb[..., 0])[bright].mean() / (lum[bright].mean() + 1)
    weight = np.clip(lum - np.median(lum), 0, None) * bright
    y, x = np.indices(lum.shape)
    cx, cy = (weight * x).sum() / weight.sum(), (weight * y).sum() / weight.sum()
    cov = np.cov(np.stack([(x - cx).ravel(), (y - cy).ravel()]), aweights=weight.ravel())
    low, high = np.linalg.eigvalsh(cov)
    return blueness, float(np.sqrt(low / high))


def test_featured_truth_follows_morphology_and_pixels(decals):
    cat = decals.catalog
    featured = cat["true_smooth-or-featured_featured-or-disk"]
    assert spearmanr(featured, cat["sim_arm_strength"]).statistic > 0.6
    assert featured[cat["sim_is_disc"] == 0].max() < 0.2  # ellipticals look smooth
    # Discs and arms are blue, bulges red: a model has something to learn from.
    blueness = [_image_moments(decals.catalog_path.parent / f)[0] for f in cat["file_loc"]]
    assert spearmanr(blueness, featured).statistic > 0.6


def test_edge_on_truth_follows_inclination_and_shape(decals):
    cat = decals.catalog
    discs = cat[cat["sim_is_disc"] == 1]
    edge_on = discs["true_disk-edge-on_yes"]
    assert spearmanr(edge_on, discs["sim_inclination"]).statistic > 0.6
    axis_ratio = [_image_moments(decals.catalog_path.parent / f)[1] for f in discs["file_loc"]]
    assert spearmanr(edge_on, axis_ratio).statistic < -0.4


def test_fainter_galaxies_show_fewer_features(tmp_path):
    # The same morphology seen at lower signal to noise: volunteers see fewer features.
    galaxy = simulate.sample_galaxy(np.random.default_rng(3))
    galaxy = dataclasses.replace(galaxy, is_disc=True, bulge_fraction=0.2, arm_strength=0.8, disc_axis_ratio=0.9,
                                 artifact=0, mag_r=15.0)
    faint = dataclasses.replace(galaxy, mag_r=20.5)
    schema = load_schema("decals")
    bright_p = simulate.true_probabilities(galaxy, schema)["smooth-or-featured"][1]
    faint_p = simulate.true_probabilities(faint, schema)["smooth-or-featured"][1]
    assert galaxy.snr > faint.snr
    assert bright_p > 0.8 and faint_p < bright_p - 0.3


def test_votes_are_informative_but_over_dispersed(decals):
    cat = decals.catalog
    truth = cat["true_smooth-or-featured_featured-or-disk"]
    observed = cat["smooth-or-featured_featured-or-disk_fraction"]
    assert np.corrcoef(truth, observed)[0, 1] > 0.8
    # Scatter around the truth beyond a multinomial's: Dirichlet draws first, as real votes show.
    n = cat["smooth-or-featured_total-votes"]
    k = cat["smooth-or-featured_featured-or-disk"]
    binomial_var = n * truth * (1 - truth)
    assert ((k - n * truth) ** 2 / binomial_var).mean() > 1.3
