import json

import numpy as np
import pandas as pd
import pytest

from zoobot import convert as convert_module
from zoobot.catalog import load_catalog
from zoobot.convert import ConvertConfig, assign_splits, convert
from zoobot.images import ImageSpec, read_image
from zoobot.manifest import Manifest, ManifestError
from zoobot.schema import GZ_DECALS
from zoobot.shards import make_dataset, read_split


def config_for(catalog, out, **kw):
    return ConvertConfig(catalog=str(catalog), output_dir=str(out), image_size=16, shard_size=4, workers=1, **kw)


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
