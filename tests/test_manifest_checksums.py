"""Shard checksums are verified whenever shards are opened, once per file thanks to a small cache."""

import json
import os
import time

import pytest
from click.testing import CliRunner

from tests.conftest import TINY_MODEL
from zoobot.data import catalog as catalog_module
from zoobot import cli
from zoobot.data import manifest as manifest_module
from zoobot.data.convert import ConvertConfig, convert
from zoobot.data.manifest import Manifest, ManifestError

HOUR_NS = 3600 * 10**9


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ZOOBOT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def shards(decals_catalog, tmp_path, cache_dir):
    """12 galaxies in 16 px shards of at most 4, converted an hour ago (older than any racy mtime)."""
    folder = tmp_path / "shards"
    convert(ConvertConfig(catalog=str(decals_catalog), output_dir=str(folder), image_size=16, shard_size=4,
                          workers=1))
    for path in shard_paths(folder):
        os.utime(path, ns=(time.time_ns() - HOUR_NS,) * 2)
    return folder


def shard_paths(folder):
    folder = folder.resolve()
    data = json.loads((folder / "manifest.json").read_text())
    return [folder / f["path"] for split in data["splits"].values() for f in split["files"]]


@pytest.fixture
def hashes(monkeypatch):
    """The paths hashed, in order."""
    seen = []
    real = catalog_module.file_sha256

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(catalog_module, "file_sha256", counting)
    return seen


def flip_bytes(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 8])
    path.write_bytes(bytes(data))


def test_a_same_size_corruption_names_the_file_and_the_fix(shards):
    Manifest.read(shards)  # intact: passes, and the cache now knows every file
    victim = shard_paths(shards)[1]
    size = victim.stat().st_size
    flip_bytes(victim)
    assert victim.stat().st_size == size
    with pytest.raises(ManifestError) as error:
        Manifest.read(shards)
    message = str(error.value)
    assert str(victim) in message
    assert "checksum differs from the manifest (the file is corrupt or was changed, or the manifest was edited)" \
        in message
    assert "re-run `zoobot convert` to rebuild the shards" in message
    assert [p for p in shard_paths(shards) if str(p) in message] == [victim]  # only the bad file is named
    Manifest.read(shards, verify=False)  # still possible to read it, deliberately


def test_an_edited_checksum_is_noticed_even_after_a_successful_read(shards, cache_dir):
    Manifest.read(shards)
    assert len(json.loads((cache_dir / "verified-shards.json").read_text())["entries"]) == len(shard_paths(shards))
    path = shards / "manifest.json"
    data = json.loads(path.read_text())
    edited = data["splits"]["train"]["files"][0]
    edited["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="checksum differs from the manifest") as error:
        Manifest.read(shards)
    assert edited["path"] in str(error.value)


def test_a_second_read_of_intact_shards_hashes_nothing(shards, hashes):
    Manifest.read(shards)
    assert sorted(hashes) == sorted(shard_paths(shards))
    hashes.clear()
    Manifest.read(shards)
    Manifest.read(shards).verify(checksums=True)
    assert hashes == []


def test_a_touched_file_is_hashed_again_and_passes(shards, hashes):
    Manifest.read(shards)
    touched = shard_paths(shards)[0]
    os.utime(touched, ns=(time.time_ns() - 2 * HOUR_NS,) * 2)  # same content, another mtime
    hashes.clear()
    Manifest.read(shards)
    assert hashes == [touched]
    hashes.clear()
    Manifest.read(shards)
    assert hashes == []


def test_files_changed_moments_before_hashing_are_not_trusted_from_the_cache(shards, hashes):
    # a second write within the same mtime tick would keep size and mtime: such files are hashed each time
    fresh = shard_paths(shards)[0]
    os.utime(fresh)
    Manifest.read(shards)
    hashes.clear()
    Manifest.read(shards)
    assert hashes == [fresh]


def test_a_broken_or_unwritable_cache_only_costs_time(shards, cache_dir, hashes, monkeypatch):
    n_files = len(shard_paths(shards))
    cache_dir.mkdir()
    (cache_dir / "verified-shards.json").write_text('{"entries": {"/x": "not an entry"')
    Manifest.read(shards)
    assert len(hashes) == n_files
    assert len(json.loads((cache_dir / "verified-shards.json").read_text())["entries"]) == n_files

    blocked = cache_dir / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("ZOOBOT_CACHE_DIR", str(blocked / "cache"))  # cannot be created
    hashes.clear()
    Manifest.read(shards)
    Manifest.read(shards)
    assert len(hashes) == 2 * n_files
    flip_bytes(shard_paths(shards)[0])
    with pytest.raises(ManifestError, match="checksum differs"):
        Manifest.read(shards)


def test_the_cache_keeps_only_the_newest_entries(shards, cache_dir, monkeypatch):
    monkeypatch.setattr(manifest_module, "VERIFIED_MAX_ENTRIES", 2)
    Manifest.read(shards)
    assert len(json.loads((cache_dir / "verified-shards.json").read_text())["entries"]) == 2


def test_training_on_corrupt_shards_exits_with_the_file_named_and_no_traceback(shards, sqlite_tracking, tmp_path):
    victim = shard_paths(shards)[0]
    flip_bytes(victim)
    result = CliRunner().invoke(cli.main, [
        "train", "--shards", str(shards), "--epochs", "1", "--batch-size", "8", "--filters", TINY_MODEL["filters"],
        "--dense-units", str(TINY_MODEL["dense_units"]), "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # handled by click
    assert str(victim) in result.output and "zoobot convert" in result.output
    assert "Traceback" not in result.output and "DataLossError" not in result.output
    assert not (tmp_path / "ckpt").exists()
