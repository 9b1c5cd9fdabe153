"""Starting a campaign: validate the galaxies and initial labels, then write the new file at once.

`PoolState.create` and `PoolState.from_manifest` call these; every problem with their input is
found before a byte is written, and the file appears complete or not at all.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from zoobot.active.pool.checks import SHOW, PoolError, now, show, to_json
from zoobot.active.pool.schema import FORMAT, FORMAT_VERSION, IN_POOL, INITIAL, RESERVED_META, connect, create_tables
from zoobot.core.schema import Schema
from zoobot.core.votes import id_text, validate_votes
from zoobot.data.manifest import Manifest


def write_campaign(path: Path, schema: Schema, galaxies: pd.DataFrame, labelled: pd.DataFrame, meta: dict) -> None:
    """Validate, then build the file under a temporary name and link it into place.

    Linking also refuses to replace a file that appeared at `path` meanwhile.
    """
    if path.exists():
        raise PoolError(f"'{path}' already exists; a campaign is never overwritten. Open it with "
                        "PoolState.open to resume that campaign, or choose a new path.")
    if not path.parent.is_dir():
        raise PoolError(f"Folder '{path.parent}' does not exist; create it first.")
    rows = galaxy_rows(schema, galaxies, labelled)
    meta = meta_rows(schema, meta, n_galaxies=len(rows), n_initial=sum(r[6] == INITIAL for r in rows))
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        _fill(tmp, rows, meta)
        try:
            os.link(tmp, path)  # fails if `path` appeared meanwhile: never overwrite
        except FileExistsError:
            raise PoolError(f"'{path}' appeared while the campaign was being created; it was left as it is. "
                            "Choose a new path.") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise PoolError(f"'{path}' already exists; a campaign is never overwritten.") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fill(path: Path, rows: list[tuple], meta: list[tuple[str, str]]) -> None:
    connection = connect(path)
    try:
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            create_tables(connection)
            connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
            connection.executemany(
                "INSERT INTO galaxies (id_str, split, location, image_path, ra, dec, labelled_iteration, "
                "labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        connection.close()


def galaxy_rows(schema: Schema, galaxies: pd.DataFrame, labelled: pd.DataFrame) -> list[tuple]:
    """Validated rows for the galaxies table; raises PoolError listing every problem."""
    _check_frames(schema, galaxies, labelled)
    ids = [id_text(v) for v in galaxies["id_str"].tolist()]
    good, rejected = validate_votes(labelled, schema.label_cols)
    labels = {i: counts for i, counts in zip(good["id_str"], good[list(schema.label_cols)].to_numpy())}
    problems = _id_problems(ids) + _label_problems(ids, labels, rejected) + _split_problems(galaxies, ids, labels)
    if problems:
        raise PoolError("Cannot create the campaign: " + "; ".join(problems) + ".")
    try:
        ra, dec = _column(galaxies, "ra", True), _column(galaxies, "dec", True)
    except (ValueError, TypeError) as e:
        raise PoolError(f"Cannot create the campaign: ra/dec must be numbers ({e}).") from e
    location, image_path = _column(galaxies, "location", False), _column(galaxies, "image_path", False)
    rows = []
    for k, i in enumerate(ids):
        if i in labels:
            rows.append((i, "train", location[k], image_path[k], ra[k], dec[k], INITIAL,
                         json.dumps([int(v) for v in labels[i]])))
        else:
            rows.append((i, "pool", location[k], image_path[k], ra[k], dec[k], IN_POOL, None))
    return rows


def _check_frames(schema: Schema, galaxies: pd.DataFrame, labelled: pd.DataFrame) -> None:
    """Problems with the tables as a whole, before their rows are read."""
    for name, frame in (("galaxies", galaxies), ("labelled", labelled)):
        if not isinstance(frame, pd.DataFrame):
            raise PoolError(f"`{name}` must be a DataFrame; found {type(frame).__name__}.")
    if "id_str" not in galaxies.columns:
        raise PoolError(f"`galaxies` needs an 'id_str' column; it has {list(galaxies.columns)}.")
    if galaxies.empty:
        raise PoolError("`galaxies` has no rows; a campaign needs galaxies.")
    missing = [c for c in ("id_str", *schema.label_cols) if c not in labelled.columns]
    if missing:
        raise PoolError(f"`labelled` is missing columns {missing} required by schema '{schema.name}'; it has "
                        f"{list(labelled.columns)[:40]}.")


def _id_problems(ids: list[str | None]) -> list[str]:
    problems = []
    if any(i is None for i in ids):
        problems.append(f"{sum(i is None for i in ids)} galaxies have no id_str")
    duplicated = sorted(i for i, n in Counter(ids).items() if i is not None and n > 1)
    if duplicated:
        problems.append(f"ids appear more than once in `galaxies`: {show(duplicated)}")
    return problems


def _label_problems(ids: list[str | None], labels: dict, rejected: pd.DataFrame) -> list[str]:
    problems = []
    if len(rejected):
        problems.append("bad initial labels: " + "; ".join(
            f"row {r.row} ({r.id_str}): {r.reason}" for r in rejected.head(SHOW).itertuples()))
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        problems.append(f"labelled ids are not in `galaxies`: {show(unknown)}")
    return problems


def _split_problems(galaxies: pd.DataFrame, ids: list[str | None], labels: dict) -> list[str]:
    if "split" not in galaxies.columns:
        return []
    problems = []
    splits = galaxies["split"].astype(str).tolist()
    other = sorted({s for s in splits if s not in ("train", "pool")})
    if other:
        problems.append(f"`galaxies` has splits {other}; a campaign holds only 'train' (labelled) and 'pool'")
    disagree = [i for i, s in zip(ids, splits) if (s == "train") != (i in labels)]
    if disagree:
        problems.append(f"'train' galaxies must be exactly the labelled ones; these disagree: {show(disagree)}")
    return problems


def _column(galaxies: pd.DataFrame, name: str, numeric: bool) -> list:
    """The column as Python values (None where empty, or where the column is absent)."""
    if name not in galaxies.columns:
        return [None] * len(galaxies)
    values = pd.to_numeric(galaxies[name], errors="raise") if numeric else galaxies[name]
    return [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else (float(v) if numeric else str(v))
            for v in values.tolist()]


def meta_rows(schema: Schema, meta: dict, n_galaxies: int, n_initial: int) -> list[tuple[str, str]]:
    if not isinstance(meta, dict):
        raise PoolError(f"`meta` must be a dict; found {type(meta).__name__}.")
    clash = sorted(set(meta) & set(RESERVED_META))
    if clash:
        raise PoolError(f"`meta` keys {clash} are reserved (the campaign sets {list(RESERVED_META)}); rename them.")
    values = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "schema": schema.to_dict(),
        "label_cols": list(schema.label_cols), "created": now(), "n_galaxies": n_galaxies, "n_initial": n_initial,
        **meta,
    }
    return [(str(k), to_json(v, f"meta[{k!r}]")) for k, v in values.items()]


def manifest_galaxies(manifest: Manifest, labelled: pd.DataFrame) -> pd.DataFrame:
    """The 'train' and 'pool' galaxies of a converted shard set, checked against the manifest and `labelled`.

    `location` is the image path (the conversion's `galaxies.csv` gives no other).
    """
    if manifest.root is None:
        raise PoolError("The manifest was not read from a folder; use Manifest.read(folder).")
    index_path = Path(manifest.root) / "galaxies.csv"
    if not index_path.is_file():
        raise PoolError(f"Shards in '{manifest.root}' have no galaxies.csv (written by `convert`); re-run "
                        "`zoobot convert` to rebuild the folder.")
    index = pd.read_csv(index_path, dtype={"id_str": str, "image_path": str})
    for split in ("train", "pool"):
        expected = manifest.splits[split].count if split in manifest.splits else 0
        found = int((index["split"] == split).sum())
        if split == "pool" and found == 0:
            raise PoolError(f"Shards in '{manifest.root}' have no 'pool' split, so there is nothing to acquire. "
                            "Convert with --pool-catalog (galaxies nobody has classified yet, for volunteers) or "
                            "with labelled_size > 0 (labelled galaxies held back, for a simulated campaign).")
        if found != expected:
            raise PoolError(f"'{index_path}' lists {found} '{split}' galaxies but the manifest says {expected}; "
                            "the folder was changed after conversion. Re-run `convert`.")
    index = index[index["split"].isin(["train", "pool"])].copy()
    index["location"] = index["image_path"]
    _check_train_labelled(manifest, set(index.loc[index["split"] == "train", "id_str"]), labelled)
    return index


def _check_train_labelled(manifest: Manifest, train_ids: set[str], labelled: pd.DataFrame) -> None:
    if "id_str" not in labelled.columns:
        raise PoolError(f"`labelled` needs an 'id_str' column; it has {list(labelled.columns)}.")
    given = set(labelled["id_str"].astype(str))
    missing, extra = sorted(train_ids - given), sorted(given - train_ids)
    if missing or extra:
        raise PoolError(
            f"`labelled` must hold exactly the {len(train_ids)} 'train' galaxies of '{manifest.root}': "
            f"{len(missing)} are missing {show(missing)}, {len(extra)} are not train galaxies {show(extra)}.")
