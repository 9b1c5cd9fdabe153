"""The manifest: the contract between `convert` and every step after it.

`manifest.json` sits beside the shard files and says what they hold: the schema, the label columns,
the image shape and encoding, each split's files with their record counts and checksums, and which
catalog they came from. It is written last, so a folder with a manifest is a finished conversion.

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoobot.schema import Schema

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Feature keys of every tf.train.Example record.
FEATURE_ID = "id_str"
FEATURE_IMAGE = "image"
FEATURE_LABELS = "labels"


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


@dataclass(frozen=True)
class Manifest:
    schema: dict  # Schema.to_dict(): the tree travels with the shards
    image_shape: tuple[int, int, int]  # height, width, channels
    image_encoding: str  # "raw" uint8 bytes or "png"
    splits: dict[str, Split]
    catalog: dict  # path, sha256, rows, rejected
    config: dict  # the conversion's resolved config
    oracle: str | None = None  # labels of the pool, relative path (CSV: id_str + label columns)
    created: str = ""
    zoobot_version: str = ""
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
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))
        os.replace(tmp, target)
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
        """Read FOLDER/manifest.json; with `verify`, check every listed shard is there, whole."""
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

    def verify(self, checksums: bool = False) -> None:
        """Every shard present with the size (and, if asked, the checksum) the manifest recorded."""
        from zoobot.catalog import file_sha256

        problems = []
        for split in self.splits.values():
            for shard in split.files:
                path = self._root() / shard.path
                if not path.is_file():
                    problems.append(f"{shard.path}: missing")
                elif path.stat().st_size != shard.size_bytes:
                    problems.append(f"{shard.path}: {path.stat().st_size} bytes, manifest says {shard.size_bytes}")
                elif checksums and file_sha256(path) != shard.sha256:
                    problems.append(f"{shard.path}: checksum differs from the manifest")
        if problems:
            raise ManifestError(
                f"Shards in '{self._root()}' do not match their manifest: {problems[:10]}. "
                "The folder was changed after conversion; re-run `convert`."
            )
