"""The manifest: the contract between `convert` and every step after it.

`manifest.json` sits beside the shard files and says what they hold: the schema, the label columns,
the image shape and encoding, each split's files with their record counts and checksums, and which
catalog they came from. It is written last, so a folder with a manifest is a finished conversion.

Reading a manifest checks the shards against it, checksums included, so a corrupt or changed file is
named before training rather than surfacing as TensorFlow's DataLossError halfway through a fit. A
small cache of files already hashed (by path, size, mtime and expected checksum) keeps that to one
hash per file, not one per run.

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoobot.core.schema import Schema
from zoobot.core.staging import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Feature keys of every tf.train.Example record.
FEATURE_ID = "id_str"
FEATURE_IMAGE = "image"
FEATURE_LABELS = "labels"

CACHE_DIR_ENV = "ZOOBOT_CACHE_DIR"
VERIFIED_NAME = "verified-shards.json"
VERIFIED_MAX_ENTRIES = 20_000  # newest kept; about 200 bytes each
# A file written again within one timestamp tick of being hashed keeps its size and mtime: trust
# the cache only for files last changed well before they were hashed (1-2 s mtimes on ext3, FAT,
# SMB; a coarse kernel clock elsewhere). Fresh files are simply hashed again next time.
RECENT_NS = 3_000_000_000


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _zoobot_version() -> str:
    import zoobot

    return zoobot.__version__


class ManifestError(ValueError):
    """A shard folder that is not a finished, intact conversion."""


@dataclass(frozen=True)
class ShardFile:
    path: str  # relative to the manifest's folder
    count: int
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Split:
    name: str
    labelled: bool  # pool records carry no labels; theirs stay in the oracle file
    count: int
    files: tuple[ShardFile, ...]

    @classmethod
    def of_files(cls, name: str, labelled: bool, files) -> Split:
        """A split of the shard files a ShardWriter wrote, counted."""
        files = tuple(files)
        return cls(name, labelled, sum(f.count for f in files), files)


@dataclass(frozen=True)
class Manifest:
    schema: dict  # Schema.to_dict(): the tree travels with the shards
    image_shape: tuple[int, int, int]  # height, width, channels
    image_encoding: str  # "raw" uint8 bytes or "png"
    splits: dict[str, Split]
    catalog: dict  # path, sha256, rows, rejected
    config: dict  # the conversion's resolved config
    oracle: str | None = None  # labels of the pool, relative path (CSV: id_str + label columns)
    created: str = field(default_factory=_now)
    zoobot_version: str = field(default_factory=_zoobot_version)
    format_version: int = FORMAT_VERSION
    root: Path | None = field(default=None, compare=False)  # folder it was read from; not serialised

    @property
    def label_cols(self) -> tuple[str, ...]:
        return self.schema_obj.label_cols

    @property
    def schema_obj(self) -> Schema:
        return Schema.from_dict(self.schema, source=MANIFEST_NAME)

    @property
    def counts(self) -> dict[str, int]:
        return {name: split.count for name, split in self.splits.items()}

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ManifestError(
                f"Shards in '{self.root}' have no split '{name}'; they have {sorted(self.splits)}."
            )
        return self.splits[name]

    def files(self, split: str) -> list[Path]:
        return [self._root() / f.path for f in self.split(split).files]

    def oracle_path(self) -> Path | None:
        return None if self.oracle is None else self._root() / self.oracle

    def _root(self) -> Path:
        if self.root is None:
            raise ManifestError("This manifest was not read from a folder; use Manifest.read(folder).")
        return self.root

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("root")
        out["image_shape"] = list(self.image_shape)
        return out

    def write(self, folder: Path) -> Path:
        """Write atomically: a reader sees the old manifest or the new one, never half of one."""
        target = Path(folder) / MANIFEST_NAME
        atomic_write_text(target, json.dumps(self.to_dict(), indent=2, sort_keys=False))
        return target

    @classmethod
    def from_dict(cls, data: dict, root: Path | None = None) -> Manifest:
        splits = {
            name: Split(
                name=name,
                labelled=bool(s["labelled"]),
                count=int(s["count"]),
                files=tuple(ShardFile(**f) for f in s["files"]),
            )
            for name, s in data["splits"].items()
        }
        return cls(
            schema=data["schema"],
            image_shape=tuple(int(v) for v in data["image_shape"]),
            image_encoding=data["image_encoding"],
            splits=splits,
            catalog=data["catalog"],
            config=data.get("config", {}),
            oracle=data.get("oracle"),
            created=data.get("created", ""),
            zoobot_version=data.get("zoobot_version", ""),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
            root=root,
        )

    @classmethod
    def read(cls, folder: str | Path, verify: bool = True) -> Manifest:
        """Read FOLDER/manifest.json; with `verify`, check every listed shard is there, whole, with the
        checksum the manifest recorded (each file hashed once, then remembered by size and mtime)."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"'{folder}' has no {MANIFEST_NAME}: it is not the output of a finished `convert` "
                "(a conversion that did not finish leaves none). Run `zoobot convert` or point at its output_dir."
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"'{path}' is not valid JSON ({e}); re-run `convert` to rebuild it.") from e
        if int(data.get("format_version", -1)) != FORMAT_VERSION:
            raise ManifestError(
                f"'{path}' has format_version {data.get('format_version')!r}; this Zoobot reads version "
                f"{FORMAT_VERSION}. Re-run `convert` with this version."
            )
        manifest = cls.from_dict(data, root=folder.resolve())
        if verify:
            manifest.verify()
        return manifest

    def verify(self, checksums: bool = True) -> None:
        """Every shard present with the size and (unless `checksums=False`) the sha256 the manifest
        recorded. A file hashed before with the same size, mtime and expected checksum is not hashed
        again (see `VerifiedShards`)."""
        problems, to_hash = [], []
        for split in self.splits.values():
            for shard in split.files:
                path = self._root() / shard.path
                if not path.is_file():
                    problems.append(f"{path}: missing")
                    continue
                stat = path.stat()
                if stat.st_size != shard.size_bytes:
                    problems.append(f"{path}: {stat.st_size} bytes, the manifest says {shard.size_bytes} "
                                    "(the file is truncated or was changed)")
                elif checksums:
                    to_hash.append((path, stat, shard.sha256))
        if to_hash:
            problems += _check_sha256(to_hash)
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
            raise ManifestError(
                f"Shards in '{self._root()}' do not match their {MANIFEST_NAME}:\n  " + "\n  ".join(shown)
                + "\nThe folder was changed after conversion: re-run `zoobot convert` to rebuild the shards "
                "(with --overwrite true it replaces the files this manifest lists)."
            )


def _check_sha256(files: list[tuple[Path, os.stat_result, str]]) -> list[str]:
    """Problems with the files whose content does not hash to the checksum the manifest expects."""
    from zoobot.data.catalog import file_sha256

    cache = VerifiedShards.open()
    problems = []
    for path, stat, expected in files:
        if cache.knows(path, stat, expected):
            continue
        started = time.time_ns()
        try:
            actual = file_sha256(path)
        except OSError as e:
            problems.append(f"{path}: cannot be read ({e.strerror or e})")
            continue
        if actual == expected:
            cache.remember(path, stat, expected, started)
        else:
            problems.append(f"{path}: checksum differs from the manifest (the file is corrupt or was "
                            "changed, or the manifest was edited)")
    cache.save()
    return problems


def cache_dir() -> Path | None:
    """$ZOOBOT_CACHE_DIR, else $XDG_CACHE_HOME/zoobot, else ~/.cache/zoobot: outside the shard
    folder, so that verification is remembered for read-only shards too."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "zoobot"
    try:
        return Path.home() / ".cache" / "zoobot"
    except RuntimeError:  # no home directory to be found: go without a cache
        return None


class VerifiedShards:
    """The shard files whose checksums were verified, by absolute path, with the size, mtime and
    expected sha256 they had then: any of those changing (an edited file, a touched one, an edited
    manifest) means hashing again. Only ever a speed-up: a missing, corrupt or unwritable cache file
    means the shards are hashed, never that verification fails or is skipped."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries = self._load()
        self.added: dict[str, dict] = {}

    @classmethod
    def open(cls) -> VerifiedShards:
        folder = cache_dir()
        return cls(None if folder is None else folder / VERIFIED_NAME)

    def knows(self, path: Path, stat: os.stat_result, sha256: str) -> bool:
        entry = self.entries.get(str(path))
        return entry is not None and (entry["size"], entry["mtime_ns"], entry["sha256"]) == (
            stat.st_size, stat.st_mtime_ns, sha256)

    def remember(self, path: Path, stat: os.stat_result, sha256: str, hashed_at_ns: int) -> None:
        """`stat` is from before hashing, so a change made while hashing shows as a new mtime."""
        if stat.st_mtime_ns < hashed_at_ns - RECENT_NS:
            self.added[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256,
                                     "verified": time.time()}

    def save(self) -> None:
        """Merge into what is on disk now (other processes verify too) and replace it atomically."""
        if self.path is None or not self.added:
            return
        entries = {**self._load(), **self.added}
        newest = sorted(entries.items(), key=lambda item: item[1]["verified"], reverse=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"entries": dict(newest[:VERIFIED_MAX_ENTRIES])}))
            os.replace(tmp, self.path)
        except OSError:  # read-only or full cache folder: the next run hashes again, nothing worse
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass

    def _load(self) -> dict[str, dict]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # missing, unreadable or corrupt: start afresh
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            return {}
        return {path: entry for path, entry in entries.items() if _is_entry(entry)}


def _is_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("size"), int)
            and isinstance(entry.get("mtime_ns"), int) and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("verified"), (int, float)))
