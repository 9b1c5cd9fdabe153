"""Where labels come from: a simulated oracle, or real volunteers on the Zooniverse.

- `SimulatedOracle` reveals the held-out vote counts of requested pool galaxies, as the 2020
  active-learning paper did with past Galaxy Zoo classifications.
- For real volunteers, `export_subjects` writes the acquired galaxies as a Panoptes subject set
  (images + manifest CSV, ready for `panoptes subject-set upload-subjects`), and
  `read_reduced_votes` reads back the reduced vote counts once volunteers have classified them.

Both hand `PoolState.ingest_labels` the same table: id_str + the schema's label columns.

No TensorFlow, Keras or MLflow here.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.active.pool import IN_POOL, INITIAL, PoolError, PoolState, as_ids
from zoobot.core.schema import Schema, load_schema
from zoobot.core.staging import atomic_write_text
from zoobot.core.votes import validate_votes

ID = "id_str"
HIDDEN_ID = "#id_str"  # Zooniverse hides '#'-prefixed metadata from volunteers; reductions carry it back
SUBJECT_COLUMNS = ("image", "#id_str", "#iteration", "#acquisition_score")  # then 'ra', 'dec' when known
PANOPTES_MAX_BYTES = 1024 * 1024  # the Panoptes upload limit per media file


class OracleError(ValueError):
    """Labels that cannot be revealed, exported or read; the message says why and how to fix it."""


@dataclass(frozen=True, eq=False)
class ReducedVotes:
    path: Path
    votes: pd.DataFrame = field(repr=False)  # good rows: id_str, row (1-based data row of the file), label columns (int64)
    rejected: pd.DataFrame = field(repr=False)  # row, id_str, reason

    def __repr__(self) -> str:
        return f"ReducedVotes('{self.path}', {len(self.votes)} rows kept, {len(self.rejected)} set aside)"


class SimulatedOracle:
    """The held-out labels of the pool, revealed on request.

    `oracle_csv`: id_str + `label_cols` (the `oracle.csv` that `convert` writes beside the shards).
    Rows with bad counts or duplicated ids are set aside in `rejected`; asking for them is an error.
    """

    def __init__(self, oracle_csv: str | Path, label_cols: Sequence[str]):
        self.path = Path(oracle_csv)
        self.label_cols = tuple(label_cols)
        frame = _read_csv(self.path, "Oracle file", id_columns=(ID,))
        missing = [c for c in (ID, *self.label_cols) if c not in frame.columns]
        if missing:
            raise OracleError(f"Oracle file '{self.path}' is missing columns {missing}; it has {_columns(frame)}. "
                              "Use the oracle.csv that `convert` wrote for these shards.")
        good, self.rejected = validate_votes(frame, self.label_cols)
        self._labels = good.set_index(ID)[list(self.label_cols)]

    @classmethod
    def from_manifest(cls, manifest) -> SimulatedOracle:
        path = manifest.oracle_path()
        if path is None and manifest.config.get("pool_catalog"):
            raise OracleError(
                f"The pool of the shards in '{manifest.root}' is galaxies nobody has classified (converted with "
                f"--pool-catalog {manifest.config['pool_catalog']}), so there are no labels to simulate. Run the "
                "campaign with --oracle zooniverse: each iteration exports the galaxies to classify, and the next "
                "run's --labels-file brings the volunteers' votes in.")
        if path is None:
            raise OracleError(f"Shards in '{manifest.root}' have no oracle file: they were converted without a pool. "
                              "Convert with labelled_size > 0 to hold galaxies (and their labels) back.")
        return cls(path, manifest.label_cols)

    @property
    def ids(self) -> list[str]:
        return list(self._labels.index)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, id_str: str) -> bool:
        return id_str in self._labels.index

    def reveal(self, ids: Sequence[str]) -> pd.DataFrame:
        """id_str + label columns (int64) of `ids`, in the order asked."""
        try:
            ids = as_ids(ids)
        except PoolError as e:
            raise OracleError(str(e)) from None
        unknown = [i for i in ids if i not in self._labels.index]
        if unknown:
            set_aside = set(self.rejected[ID]) & set(unknown)
            note = f" ({len(set_aside)} of them were set aside as bad rows: see .rejected)" if set_aside else ""
            raise OracleError(f"Oracle '{self.path}' has no labels for {len(unknown)} of the {len(ids)} requested ids: "
                              f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}{note}. It holds the pool of the "
                              "conversion it came from; check that the campaign and the oracle use the same shards.")
        out = self._labels.loc[ids].reset_index()
        out[ID] = out[ID].astype(str)
        return out[[ID, *self.label_cols]]


# -- real volunteers ---------------------------------------------------------------------------------

def export_subjects(state_or_frame: PoolState | pd.DataFrame, ids: Sequence[str], out_dir: str | Path,
                    iteration: int) -> Path:
    """Copy each galaxy's image into `out_dir` and write a Panoptes subject manifest beside them.

    Returns the manifest, `out_dir/subjects_iteration_<iteration>.csv`: one row per subject, in the
    order of `ids`, columns

        image               image file name, relative to the manifest (the Panoptes CLI uploads the
                            files a manifest row names; they must sit beside it)
        #id_str             the galaxy id (hidden from volunteers, carried back by the reductions)
        #iteration          the campaign iteration that acquired it (hidden)
        #acquisition_score  its acquisition score at that iteration, empty if none was recorded (hidden)
        ra, dec             sky position in degrees, shown to volunteers (only if known)

    Upload with `panoptes subject-set upload-subjects SUBJECT_SET_ID <manifest>`.

    From a `PoolState`, `ids` must be galaxies acquired at `iteration` and still awaiting labels;
    from a DataFrame, it needs `id_str` and `image_path` (optionally `ra`, `dec`, and the score as
    `acquisition_score` or `score`). Nothing is written unless every image can be found. Rerunning
    rewrites the same files, so a request stage interrupted half-way can simply run again.
    """
    if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 1:
        raise OracleError(f"Iterations are whole numbers from 1; found {iteration!r}.")
    try:
        ids = as_ids(ids)
    except PoolError as e:
        raise OracleError(str(e)) from None
    if not ids:
        raise OracleError("No ids to export; pass the galaxies acquired at this iteration.")
    rows = _subject_rows(state_or_frame, ids, int(iteration))
    sources = [Path(p) if isinstance(p, str) and p else None for p in rows["image_path"]]
    problems = [f"{i}: no image path recorded" for i, p in zip(ids, sources) if p is None]
    problems += [f"{i}: {p} not found" for i, p in zip(ids, sources) if p is not None and not p.is_file()]
    problems += [f"{i}: {p} is {p.stat().st_size} bytes, over the Panoptes limit of {PANOPTES_MAX_BYTES}"
                 for i, p in zip(ids, sources) if p is not None and p.is_file() and p.stat().st_size > PANOPTES_MAX_BYTES]
    if problems:
        raise OracleError(f"Cannot export {len(problems)} of {len(ids)} subjects: {problems[:10]}"
                          f"{' ...' if len(problems) > 10 else ''}. Nothing was written. Restore or re-make those "
                          "images (or resize them), then export again.")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _file_names(ids, [p.suffix.lower() or ".png" for p in sources])
    for source, name in zip(sources, names):
        shutil.copyfile(source, out_dir / name)
    manifest = pd.DataFrame({
        "image": names,
        "#id_str": ids,
        "#iteration": int(iteration),
        "#acquisition_score": rows["score"].to_numpy(dtype=float),
    })
    for column in ("ra", "dec"):
        if column in rows.columns and rows[column].notna().any():
            manifest[column] = rows[column].to_numpy(dtype=float)
    path = out_dir / f"subjects_iteration_{int(iteration)}.csv"
    atomic_write_text(path, manifest.to_csv(index=False))  # a reader never sees half a manifest
    return path


def _subject_rows(source, ids: list[str], iteration: int) -> pd.DataFrame:
    """id_str, image_path, ra, dec, score of each id, in order."""
    if isinstance(source, PoolState):
        try:
            table = source.galaxies(ids)
        except PoolError as e:
            raise OracleError(f"Cannot export: {e}") from None
        acquired = table["acquired_iteration"].fillna(0).astype(int)
        wrong = table[(acquired != iteration) | (table["labelled_iteration"] != 0)]
        if len(wrong):
            details = [f"{r.id_str} ({_status(r.labelled_iteration, r.acquired_iteration)})"
                       for r in wrong.head(10).itertuples()]
            raise OracleError(f"Only galaxies acquired at iteration {iteration} and awaiting labels are sent to "
                              f"volunteers; {len(wrong)} are not: {details}. Export state.awaiting_ids({iteration}).")
        scores = source.scores(iteration).set_index("id_str")["score"]
        table["score"] = table["id_str"].map(scores).astype(float)
        return table
    if not isinstance(source, pd.DataFrame):
        raise OracleError(f"Expected a PoolState or a DataFrame of galaxies; found {type(source).__name__}.")
    missing = [c for c in (ID, "image_path") if c not in source.columns]
    if missing:
        raise OracleError(f"The galaxies table is missing columns {missing}; it has {_columns(source)}.")
    table = source.assign(**{ID: source[ID].astype(str)}).drop_duplicates(ID).set_index(ID)
    unknown = [i for i in ids if i not in table.index]
    if unknown:
        raise OracleError(f"{len(unknown)} ids are not in the galaxies table: {unknown[:10]}.")
    table = table.loc[ids].reset_index()
    score_column = next((c for c in ("acquisition_score", "score") if c in table.columns), None)
    table["score"] = table[score_column].astype(float) if score_column else np.nan
    return table


def _status(labelled_iteration: int, acquired_iteration) -> str:
    if labelled_iteration == INITIAL:
        return "labelled before the campaign"
    if labelled_iteration != IN_POOL:
        return f"already labelled at iteration {labelled_iteration}"
    if pd.isna(acquired_iteration):
        return "still in the pool: not acquired"
    return f"acquired at iteration {acquired_iteration}"


def _file_names(ids: list[str], suffixes: list[str]) -> list[str]:
    """A file name per id: the id with unsafe characters replaced, made unique if that clashes."""
    safe = [re.sub(r"[^A-Za-z0-9._+-]", "_", i).lstrip(".") or "galaxy" for i in ids]
    clashes = {s for s, n in Counter(safe).items() if n > 1}
    names = []
    for i, s, suffix in zip(ids, safe, suffixes):
        if s in clashes:
            s = f"{s}_{hashlib.sha1(i.encode()).hexdigest()[:8]}"
        names.append(f"{s}{suffix}")
    return names


def read_column_map(spec: str) -> dict[str, str]:
    """{reducer column: schema column} from 'reducer=schema,...' or a YAML/JSON file of that mapping."""
    import yaml

    if not spec:
        return {}
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise OracleError(f"Labels map '{path}' does not exist. Give a YAML or JSON file of {{reducer column: "
                              "schema column}, or the pairs inline: 'reducer=schema,...'.")
        try:
            mapping = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise OracleError(f"Labels map '{path}' is not valid YAML or JSON: {e}") from e
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in mapping.items()):
            raise OracleError(f"Labels map '{path}' must be a mapping of reducer column names to schema column "
                              f"names (text: text); found {type(mapping).__name__}: {str(mapping)[:200]}.")
        return dict(mapping)
    pairs = [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1 or not all(side.strip() for side in p.split("="))]
    if bad:
        raise OracleError(f"Labels map pairs must read 'reducer_column=schema_column'; these do not: {bad[:5]}. "
                          "(Or give a .yaml/.json file.)")
    return {a.strip(): b.strip() for a, b in (p.split("=") for p in pairs)}


def read_reduced_votes(path: str | Path, schema: Schema | str) -> ReducedVotes:
    """Read a CSV of reduced volunteer votes: one row per subject, an id and the schema's count columns.

    The id column is the first of 'id_str', '#id_str' (the hidden metadata that Zooniverse
    reductions carry back) or the schema's id_column that the file has. Answer columns must be
    named as in the schema (rename a reducer's output first). Other columns are ignored.

    A missing column is an error for the whole file. Rows with a missing or duplicated id or a
    count that is unusable (`zoobot.core.votes`) are set aside in `rejected` with a reason; the other
    rows are kept in `votes`.
    """
    schema = load_schema(schema) if isinstance(schema, str) else schema
    table = read_vote_table(path, schema)
    good, rejected = validate_votes(table, schema.label_cols, rows=table["row"].to_numpy())
    return ReducedVotes(Path(path), good, rejected)


def read_vote_table(path: str | Path, schema: Schema, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Every row of a reduced-votes CSV, unjudged: id_str, row (1-based data row) and the label
    columns as given. `PoolState.ingest_labels` takes it as it is and reports each bad row.
    `columns` renames the file's columns first ({reducer column: schema column}, `read_column_map`)."""
    path = Path(path)
    candidates = list(dict.fromkeys((ID, HIDDEN_ID, schema.id_column)))
    columns = columns or {}
    frame = _read_csv(path, "Reduced votes", id_columns=tuple(dict.fromkeys(
        [*candidates, *(k for k, v in columns.items() if v in candidates)])))
    if columns:
        frame = _renamed(frame, columns, schema, candidates, path)
    id_column = next((c for c in candidates if c in frame.columns), None)
    missing = [c for c in schema.label_cols if c not in frame.columns]
    if id_column is None or missing:
        needs = [] if id_column is not None else [f"an id column (one of {candidates})"]
        needs += [f"columns {missing} required by schema '{schema.name}'"] if missing else []
        raise OracleError(f"Reduced votes '{path}' are missing {' and '.join(needs)}; the file has {_columns(frame)}. "
                          "Map the reducer's answer columns to the schema's with --labels-map ('reducer=schema,...' "
                          "or a YAML file) and keep the subjects' '#id_str'.")
    table = frame[list(schema.label_cols)].copy()
    table.insert(0, "row", np.arange(1, len(frame) + 1))
    table.insert(0, ID, frame[id_column].to_numpy())
    return table


def _renamed(frame: pd.DataFrame, columns: dict[str, str], schema: Schema, id_names: list[str],
             path: Path) -> pd.DataFrame:
    problems = []
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        problems.append(f"the map names columns the file does not have: {absent[:10]}")
    allowed = {*schema.label_cols, *id_names}
    unknown = [v for v in columns.values() if v not in allowed]
    if unknown:
        problems.append(f"the map's targets {unknown[:10]} are not columns of schema '{schema.name}' (its answer "
                        f"columns are {list(schema.label_cols)[:12]}{' ...' if len(schema.label_cols) > 12 else ''}, "
                        f"the id is one of {id_names})")
    targets = list(columns.values())
    twice = sorted({v for v in targets if targets.count(v) > 1})
    if twice:
        problems.append(f"several reducer columns map to {twice}")
    if problems:
        raise OracleError(f"Cannot apply the labels map to '{path}': " + "; ".join(problems) + f". The file has "
                          f"{_columns(frame)}.")
    kept = frame.drop(columns=[c for c in frame.columns if c in set(targets) and c not in columns])
    return kept.rename(columns=columns)


def _read_csv(path: Path, what: str, id_columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise OracleError(f"{what} '{path}' does not exist. Check the path (relative paths resolve against "
                          f"{Path.cwd()}).")
    try:
        # Ids as exact text: 64-bit SDSS ids lose digits as floats.
        return pd.read_csv(path, dtype={c: str for c in id_columns})
    except pd.errors.EmptyDataError:
        raise OracleError(f"{what} '{path}' is empty; expected a CSV with a header row.") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise OracleError(f"{what} '{path}' could not be read as CSV: {e}") from e


def _columns(frame: pd.DataFrame) -> str:
    columns = list(frame.columns)
    return f"{columns[:40]}{' ...' if len(columns) > 40 else ''}"
