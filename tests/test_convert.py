import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoobot.data import convert as convert_module
from zoobot.data.catalog import load_catalog
from zoobot.data.convert import ConvertConfig, assign_splits, convert
from zoobot.data.images import ImageSpec, read_image
from zoobot.data.manifest import Manifest, ManifestError
from zoobot.core.schema import GZ_DECALS
from zoobot.data.shards import make_dataset, read_split
from tests.conftest import write_pngs


def config_for(catalog, out, **kw):
    return ConvertConfig(**{"catalog": str(catalog), "output_dir": str(out), "image_size": 16, "shard_size": 4,
                            "workers": 1, **kw})


def test_shards_read_back_exactly_what_went_in(decals_catalog, tmp_path):
    result = convert(config_for(decals_catalog, tmp_path / "shards"))
    manifest = Manifest.read(tmp_path / "shards")
    assert manifest.image_shape == (16, 16, 3)
    assert manifest.label_cols == GZ_DECALS.label_cols
    assert sum(manifest.counts.values()) == 12
    assert manifest.catalog["sha256"] == result.catalog.sha256
    assert set(manifest.counts) == {"train", "validation", "test"}

    catalog = load_catalog(decals_catalog, "decals")
    by_id = catalog.galaxies.set_index("id_str")
    seen = []
    for split in manifest.splits:
        records = read_split(manifest, split)
        for id_str, image, labels in zip(records["id_str"], records["image"], records["labels"]):
            row = by_id.loc[id_str]
            np.testing.assert_array_equal(labels, row[list(GZ_DECALS.label_cols)].to_numpy(np.int64))
            np.testing.assert_array_equal(image, read_image(row["image_path"], ImageSpec(16, 3)))
            seen.append(id_str)
    assert sorted(seen) == sorted(catalog.galaxies["id_str"])
    # shard files hold at most shard_size records and the manifest's counts are right
    for split in manifest.splits.values():
        assert all(f.count <= 4 for f in split.files)
        assert sum(f.count for f in split.files) == split.count
    manifest.verify(checksums=True)


def test_splits_are_seeded_and_pool_labels_go_to_the_oracle(decals_catalog, tmp_path):
    result = convert(config_for(decals_catalog, tmp_path / "al", labelled_size=3, test_fraction=0.25,
                                val_fraction=0.0))
    manifest = result.manifest
    assert manifest.counts == {"train": 3, "test": 3, "pool": 6}
    assert not manifest.split("pool").labelled and manifest.split("train").labelled
    pool = read_split(manifest, "pool")
    assert "labels" not in pool
    oracle = pd.read_csv(manifest.oracle_path(), dtype={"id_str": str})
    assert sorted(oracle["id_str"]) == sorted(pool["id_str"])
    assert list(oracle.columns) == ["id_str", *GZ_DECALS.label_cols]
    index = pd.read_csv(tmp_path / "al" / "galaxies.csv")
    assert set(index["split"]) == {"train", "test", "pool"} and "smooth-or-featured_smooth" not in index

    config = config_for(decals_catalog, tmp_path / "x", seed=7)
    np.testing.assert_array_equal(assign_splits(50, config), assign_splits(50, config))
    assert not np.array_equal(assign_splits(50, config), assign_splits(50, config_for("c", "o", seed=8)))


def test_unreadable_images_are_set_aside_and_the_rest_written(decals_catalog, tmp_path):
    frame = pd.read_csv(decals_catalog)
    (decals_catalog.parent / frame.loc[2, "file_loc"]).write_bytes(b"not a png at all")
    frame.loc[5, "bar_no"] = -1
    frame.to_csv(decals_catalog, index=False)
    result = convert(config_for(decals_catalog, tmp_path / "shards"))
    assert sum(result.manifest.counts.values()) == 10
    rejected = pd.read_csv(tmp_path / "shards" / "rejected.csv")
    reasons = dict(zip(rejected["row"], rejected["reason"]))
    assert reasons[3].startswith("unreadable image") and frame.loc[2, "file_loc"].split("/")[-1] in reasons[3]
    assert "negative" in reasons[6]
    assert result.manifest.catalog["rejected"] == 2


def test_a_failed_conversion_leaves_nothing_behind(decals_catalog, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = convert_module.encode_galaxy

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # as if the user pressed ctrl-C halfway
        return real(*args)

    monkeypatch.setattr(convert_module, "encode_galaxy", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(config_for(decals_catalog, tmp_path / "shards"))
    assert not (tmp_path / "shards").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    with pytest.raises(ManifestError, match="not the output of a finished `convert`"):
        Manifest.read(tmp_path / "shards")


def test_existing_output_needs_overwrite(decals_catalog, tmp_path):
    convert(config_for(decals_catalog, tmp_path / "shards"))
    with pytest.raises(FileExistsError, match="overwrite=true"):
        convert(config_for(decals_catalog, tmp_path / "shards"))
    result = convert(config_for(decals_catalog, tmp_path / "shards", overwrite=True, image_encoding="png"))
    assert result.manifest.image_encoding == "png"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_png_encoding_and_greyscale_read_back(decals_catalog, tmp_path):
    result = convert(config_for(decals_catalog, tmp_path / "s", image_encoding="png", channels=1))
    records = read_split(result.manifest, "train")
    first = load_catalog(decals_catalog, "decals").galaxies.set_index("id_str").loc[records["id_str"][0]]
    np.testing.assert_array_equal(records["image"][0], read_image(first["image_path"], ImageSpec(16, 1)))


def test_two_workers_write_the_same_shards_as_one(decals_catalog, tmp_path):
    # 40 galaxies so the process pool is used
    frame = pd.read_csv(decals_catalog)
    big = pd.concat([frame.assign(iauname=frame["iauname"] + f"_{k}") for k in range(4)], ignore_index=True)
    big.to_csv(decals_catalog, index=False)
    one = convert(config_for(decals_catalog, tmp_path / "one"))
    two = convert(ConvertConfig(catalog=str(decals_catalog), output_dir=str(tmp_path / "two"), image_size=16,
                                shard_size=4, workers=2))
    assert [f.sha256 for s in one.manifest.splits.values() for f in s.files] == \
        [f.sha256 for s in two.manifest.splits.values() for f in s.files]


def test_dataset_shuffles_and_repeats_for_training(decals_catalog, tmp_path):
    result = convert(config_for(decals_catalog, tmp_path / "s", test_fraction=0.0, val_fraction=0.0))
    batches = make_dataset(result.manifest, "train", batch_size=5, shuffle=True, seed=1, repeat=True).take(5)
    ids = np.concatenate([b["id_str"] for b in batches.as_numpy_iterator()])
    assert len(ids) == 25 and len(set(ids)) == 12


def test_manifest_detects_tampered_shards(decals_catalog, tmp_path):
    convert(config_for(decals_catalog, tmp_path / "s"))
    data = json.loads((tmp_path / "s" / "manifest.json").read_text())
    victim = tmp_path / "s" / data["splits"]["train"]["files"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(ManifestError, match="do not match their manifest"):
        Manifest.read(tmp_path / "s")


@pytest.mark.parametrize("kw, message", [
    ({"image_encoding": "jpeg"}, "image_encoding must be 'raw' or 'png'"),
    ({"val_fraction": 0.5, "test_fraction": 0.6}, "leave some galaxies for training"),
    ({"shard_size": 0}, "shard_size must be >= 1"),
])
def test_bad_settings_say_what_to_change(kw, message):
    with pytest.raises(ValueError, match=message):
        ConvertConfig(catalog="c.csv", **kw)


def test_labelled_size_larger_than_train_is_explained(decals_catalog, tmp_path):
    with pytest.raises(ValueError, match="leaves no galaxies for the pool"):
        convert(config_for(decals_catalog, tmp_path / "s", labelled_size=50))


# -- issue 11: nothing a user gives convert may destroy data or corrupt labels ------------------------


def test_overwrite_into_the_surveys_own_folder_keeps_the_catalog_and_images(decals_catalog):
    survey = decals_catalog.parent
    before = {p: p.read_bytes() for p in survey.rglob("*") if p.is_file()}
    first = convert(config_for(decals_catalog, survey, overwrite=True))
    second = convert(config_for(decals_catalog, survey, overwrite=True, shard_size=100))
    # the user's files are untouched; the first conversion's extra shards are gone, the second's are there
    assert {p: p.read_bytes() for p in before} == before
    shards = sorted(p.name for p in survey.glob("*.tfrecord"))
    assert shards == sorted(f.path for s in second.manifest.splits.values() for f in s.files)
    assert len(shards) < sum(len(s.files) for s in first.manifest.splits.values())
    assert [p.name for p in survey.iterdir() if p.name.startswith(".")] == []
    Manifest.read(survey)


def test_overwrite_refuses_to_replace_files_no_conversion_wrote(decals_catalog, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "galaxies.csv").write_text("my own table")
    with pytest.raises(ValueError, match=r"would replace 1 files .* did not write: \['galaxies.csv'\].*Nothing was changed"):
        convert(config_for(decals_catalog, out, overwrite=True))
    assert (out / "galaxies.csv").read_text() == "my own table"
    assert sorted(p.name for p in out.iterdir()) == ["galaxies.csv"]


@pytest.mark.parametrize("cell", ["1e20", "9223372036854775807", "99999999999999999999999", "2000000"])
def test_an_implausibly_large_vote_count_is_a_rejected_row(decals_catalog, tmp_path, cell):
    text = decals_catalog.read_text().splitlines()
    header = text[0].split(",")
    column = header.index("bar_no")
    row = text[4].split(",")
    row[column] = cell
    text[4] = ",".join(row)
    decals_catalog.write_text("\n".join(text) + "\n")
    result = convert(config_for(decals_catalog, tmp_path / "shards"))
    assert sum(result.manifest.counts.values()) == 11
    rejected = pd.read_csv(tmp_path / "shards" / "rejected.csv")
    assert rejected["row"].tolist() == [4]
    assert "'bar_no' is" in rejected["reason"][0] and "not a plausible vote count" in rejected["reason"][0]
    labels = np.concatenate([read_split(result.manifest, s)["labels"] for s in result.manifest.splits])
    assert labels.min() >= 0 and labels.max() <= 1_000_000


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_infinity_in_one_vote_cell_is_one_rejected_row(decals_catalog, tmp_path, cell):
    frame = pd.read_csv(decals_catalog)
    frame["bar_no"] = frame["bar_no"].astype(object)
    frame.loc[6, "bar_no"] = cell
    frame.to_csv(decals_catalog, index=False)
    result = convert(config_for(decals_catalog, tmp_path / "shards"))
    assert sum(result.manifest.counts.values()) == 11
    rejected = pd.read_csv(tmp_path / "shards" / "rejected.csv")
    assert rejected["row"].tolist() == [7]
    assert rejected["reason"][0].startswith("'bar_no' is not finite")


def test_rejected_rows_are_numbered_as_whole_numbers(decals_catalog, tmp_path):
    frame = pd.read_csv(decals_catalog)
    frame.loc[0, "bar_no"] = -1
    frame.to_csv(decals_catalog, index=False)
    convert(config_for(decals_catalog, tmp_path / "shards"))
    lines = (tmp_path / "shards" / "rejected.csv").read_text().splitlines()
    assert lines[0] == "row,id_str,reason" and lines[1].startswith("1,")


def test_one_vote_validator_for_catalog_pool_and_reduced_votes(tmp_path):
    from zoobot.data import catalog
    from zoobot.active import oracle
    from zoobot.active import pool
    from zoobot.core import votes

    assert pool.validate_votes is votes.validate_votes and oracle.validate_votes is votes.validate_votes
    assert catalog.count_problems is votes.count_problems
    frame = pd.DataFrame({"id_str": ["a", "b", "c", "d", "a"], "n": ["1", "inf", "1e20", "2.5", "3"]})
    good, rejected = votes.validate_votes(frame, ["n"])
    assert good.empty
    assert rejected["reason"].tolist() == [
        "duplicate id 'a' (rows 1, 5); keep one row per galaxy", "'n' is not finite (inf); expected vote counts",
        "'n' is 1e+20, more than 1,000,000 votes for one answer: not a plausible vote count (a unit or parsing mistake?)",
        "'n' is not a whole number (2.5); expected vote counts", "duplicate id 'a' (rows 1, 5); keep one row per galaxy"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop root's override")
def test_a_writable_output_folder_inside_a_read_only_parent_is_enough(decals_catalog, tmp_path):
    """Staging goes inside the output folder, so its parent need not be writable. Root ignores file
    modes, so the conversion runs as root without CAP_DAC_OVERRIDE, as an ordinary user would."""
    parent = tmp_path / "readonly"
    out = parent / "shards"
    out.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    parent.chmod(0o555)
    try:
        ok = _convert_without_override(decals_catalog, out, tmp_path)
        assert ok.returncode == 0, ok.stderr[-3000:]
        Manifest.read(out)
        blocked = _convert_without_override(decals_catalog, parent / "new", tmp_path)
        nested = _convert_without_override(decals_catalog, parent / "new" / "deeper", tmp_path)
    finally:
        parent.chmod(0o755)
    for result, path in ((blocked, parent / "new"), (nested, parent / "new" / "deeper")):
        assert result.returncode == 1
        assert f"Cannot write to output_dir '{path}': '{parent}' is not writable" in result.stderr
        assert "Traceback" not in result.stderr and ".zoobot-staging" not in result.stderr
    assert not elsewhere.exists() and sorted(p.name for p in parent.iterdir()) == ["shards"]


def _convert_without_override(catalog, out, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = ["setpriv", "--bounding-set=-dac_override,-fowner", str(Path(sys.executable).parent / "zoobot"),
               "convert", "--catalog", str(catalog), "--output-dir", str(out), "--image-size", "16",
               "--workers", "1", "--log-shards", "false"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def pool_catalog_for(tmp_path, n=6, **columns) -> Path:
    """n unclassified galaxies (ids, images, no votes) beside the labelled catalog's folder."""
    names = [f"J20{k:02d}00.00+100000.0" for k in range(n)]
    write_pngs(tmp_path / "unclassified", names, seed=5)
    frame = pd.DataFrame({"iauname": names, "ra": np.arange(n) * 1.0, "dec": np.arange(n) * 2.0,
                          "file_loc": [f"unclassified/{name}.png" for name in names], **columns})
    path = tmp_path / "unclassified.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_pool_catalog_becomes_an_unlabelled_pool_without_an_oracle(decals_catalog, tmp_path):
    pool = pool_catalog_for(tmp_path)
    result = convert(config_for(decals_catalog, tmp_path / "real", pool_catalog=str(pool), val_fraction=0.0,
                                test_fraction=0.25))
    manifest = result.manifest
    assert manifest.counts == {"train": 9, "test": 3, "pool": 6}  # every labelled galaxy stays labelled
    assert not manifest.split("pool").labelled and manifest.oracle is None
    assert not (tmp_path / "real" / "oracle.csv").exists()
    assert manifest.catalog["pool"]["rows"] == 6 and manifest.catalog["pool"]["sha256"]
    records = read_split(manifest, "pool")
    assert sorted(records["id_str"]) == sorted(pd.read_csv(pool)["iauname"]) and "labels" not in records
    index = pd.read_csv(tmp_path / "real" / "galaxies.csv")
    assert (index["split"] == "pool").sum() == 6 and index["image_path"].map(lambda p: Path(p).is_file()).all()


def test_pool_rows_with_votes_or_labelled_ids_are_set_aside_and_reported(decals_catalog, tmp_path):
    labelled = pd.read_csv(decals_catalog)
    pool = pool_catalog_for(tmp_path, n=5)
    frame = pd.read_csv(pool)
    frame.loc[1, "iauname"] = labelled.loc[0, "iauname"]  # already labelled
    frame["smooth-or-featured_smooth"] = [np.nan, np.nan, 3, 0, np.nan]  # row 3 has votes; 0 = none
    frame.loc[4, "file_loc"] = "unclassified/missing.png"
    frame.to_csv(pool, index=False)
    result = convert(config_for(decals_catalog, tmp_path / "real", pool_catalog=str(pool)))
    assert result.manifest.counts["pool"] == 2
    rejected = pd.read_csv(tmp_path / "real" / "rejected.csv")
    reasons = dict(zip(rejected["row"], rejected["reason"]))
    assert set(reasons) == {2, 3, 5} and all(r.startswith("pool catalog 'unclassified.csv'") for r in reasons.values())
    assert "labelled catalog (row 1)" in reasons[2] and "has votes" in reasons[3] and "image not found" in reasons[5]


def test_pool_catalog_and_labelled_size_are_one_or_the_other(decals_catalog, tmp_path):
    with pytest.raises(ValueError, match="use one"):
        config_for(decals_catalog, tmp_path / "x", pool_catalog="p.csv", labelled_size=3)
