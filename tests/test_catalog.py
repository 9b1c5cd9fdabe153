import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from tests.conftest import decals_frame, write_pngs
from zoobot.data.catalog import CatalogError, load_catalog
from zoobot.core.schema import GZ2, GZ_DECALS, load_schema


def test_reads_a_decals_catalog_with_relative_image_paths(decals_catalog):
    catalog = load_catalog(decals_catalog, "decals")
    assert len(catalog.galaxies) == 12 and catalog.rejected.empty
    assert catalog.labels.shape == (12, GZ_DECALS.n_answers)
    assert catalog.labels.dtype == np.int64
    first = catalog.galaxies.iloc[0]
    assert first["image_path"] == str(decals_catalog.parent / "images" / f"{first['id_str']}.png")
    assert len(catalog.sha256) == 64


def test_reads_the_hart16_gz2_columns_as_csv_and_as_fits(hart16_catalog):
    from_csv = load_catalog(hart16_catalog, "gz2")
    fits_path = hart16_catalog.with_suffix(".fits")
    Table.from_pandas(pd.read_csv(hart16_catalog)).write(fits_path)
    from_fits = load_catalog(fits_path, "gz2")
    assert len(from_csv.galaxies) == len(from_fits.galaxies) == 8
    # 64-bit SDSS ids survive exactly in both formats
    assert list(from_csv.galaxies["id_str"]) == list(from_fits.galaxies["id_str"])
    assert from_csv.galaxies["id_str"].iloc[0] == "587722981741363294"
    np.testing.assert_array_equal(from_csv.labels, from_fits.labels)
    assert from_csv.labels.shape[1] == GZ2.n_answers


def test_reads_parquet(decals_catalog):
    parquet = decals_catalog.with_suffix(".parquet")
    pd.read_csv(decals_catalog).to_parquet(parquet)
    assert len(load_catalog(parquet, "decals").galaxies) == 12


def test_missing_columns_name_the_file_the_schema_and_what_it_has(decals_catalog):
    frame = pd.read_csv(decals_catalog).drop(columns=["bar_no"])
    frame.to_csv(decals_catalog, index=False)
    with pytest.raises(CatalogError) as error:
        load_catalog(decals_catalog, "decals")
    text = str(error.value)
    assert "gz_decals_volunteers.csv" in text and "['bar_no']" in text and "schema 'decals'" in text
    assert "bar_strong" in text  # what it has


def test_wrong_schema_suggests_the_matching_one(hart16_catalog):
    with pytest.raises(CatalogError, match="try --schema gz2"):
        load_catalog(hart16_catalog, "decals", id_column="dr7objid")


def test_missing_id_column_explains_the_option(decals_catalog):
    with pytest.raises(CatalogError, match="--id-column"):
        load_catalog(decals_catalog, "decals", id_column="objid")


def test_bad_rows_are_set_aside_with_reasons_and_good_rows_kept(decals_catalog):
    frame = pd.read_csv(decals_catalog)
    frame[["bar_no", "bar_weak", "bar_strong"]] = frame[["bar_no", "bar_weak", "bar_strong"]].astype(float)
    frame.loc[0, "bar_no"] = -3
    frame.loc[1, "bar_weak"] = np.nan
    frame.loc[2, "bar_strong"] = 2.5
    frame.loc[3, "file_loc"] = "images/not_there.png"
    frame.loc[4, "iauname"] = frame.loc[5, "iauname"]
    frame.loc[6, "file_loc"] = np.nan
    frame["bar_no"] = frame["bar_no"].astype(object)
    frame.loc[7, "bar_no"] = "many"
    frame.to_csv(decals_catalog, index=False)

    catalog = load_catalog(decals_catalog, "decals")
    reasons = dict(zip(catalog.rejected["row"], catalog.rejected["reason"]))
    assert "'bar_no' is negative (-3)" in reasons[1]
    assert "'bar_weak' is missing (NaN)" in reasons[2]
    assert "'bar_strong' is not a whole number (2.5)" in reasons[3]
    assert "image not found" in reasons[4] and "not_there.png" in reasons[4]
    assert "duplicate id" in reasons[5] and "duplicate id" in reasons[6]
    assert "missing image path" in reasons[7]
    assert "'bar_no' is not a number: 'many'" in reasons[8]
    assert len(catalog.galaxies) == 12 - 8
    assert set(catalog.galaxies["catalog_row"]) == {9, 10, 11, 12}
    assert not catalog.galaxies[list(GZ_DECALS.label_cols)].isna().any().any()


def test_image_root_overrides_the_catalog_folder(tmp_path, decals_catalog):
    elsewhere = tmp_path / "elsewhere"
    write_pngs(elsewhere / "images", list(pd.read_csv(decals_catalog)["iauname"]))
    catalog = load_catalog(decals_catalog, "decals", image_root=elsewhere)
    assert catalog.galaxies["image_path"].str.startswith(str(elsewhere)).all()


def test_prediction_catalog_needs_no_vote_columns(tmp_path):
    write_pngs(tmp_path / "img", ["a", "b"])
    pd.DataFrame({"iauname": ["a", "b"], "file_loc": ["img/a.png", "img/b.png"]}).to_csv(tmp_path / "c.csv")
    catalog = load_catalog(tmp_path / "c.csv", "decals", require_labels=False)
    assert list(catalog.galaxies["id_str"]) == ["a", "b"] and not catalog.has_labels


def test_binary_question_from_a_zero_one_column(tmp_path):
    (tmp_path / "lens.yaml").write_text("name: lenses\nid_column: objid\nquestions:\n"
                                        "  - name: lens\n    binary_column: is_lens\n")
    write_pngs(tmp_path / "img", ["a", "b", "c"])
    pd.DataFrame({"objid": ["a", "b", "c"], "is_lens": [1, 0, 7],
                  "file_loc": ["img/a.png", "img/b.png", "img/c.png"]}).to_csv(tmp_path / "c.csv", index=False)
    catalog = load_catalog(tmp_path / "c.csv", load_schema(tmp_path / "lens.yaml"))
    np.testing.assert_array_equal(catalog.labels, [[1, 0], [0, 1]])
    assert "must be 0 or 1, found 7" in catalog.rejected["reason"].iloc[0]


@pytest.mark.parametrize("name, content, message", [
    ("votes.txt", "a,b\n1,2\n", "unsupported file type"),
    ("votes.csv", "iauname,file_loc\n", "has no rows"),
    ("votes.parquet", "not parquet", "could not be read"),
])
def test_unreadable_catalog_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path / name, "decals")


def test_missing_catalog_file(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.csv", "decals")


def test_decals_fixture_has_the_release_column_layout():
    frame = decals_frame(3)
    for column in ("iauname", "ra", "dec", "smooth-or-featured_total-votes", "smooth-or-featured_smooth",
                   "smooth-or-featured_smooth_fraction", "bar_weak_debiased"):
        assert column in frame.columns
