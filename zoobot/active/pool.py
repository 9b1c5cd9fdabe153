"""The durable state of an active-learning campaign: one SQLite file.

One table holds every galaxy of the campaign with the iteration at which it was labelled, as baal's
`ActiveLearningDataset` keeps its `labelled_map`:

    labelled_iteration = -1  (INITIAL)  labelled before the campaign started (the 'train' split)
                          0  (IN_POOL)  not labelled yet
                          k >= 1        labels ingested at iteration k

plus `acquired_iteration`, the iteration at which a pool galaxy was sent to volunteers (NULL until
then). A galaxy is therefore in exactly one of three states: labelled, awaiting labels (acquired,
not yet labelled) or in the pool (neither).

Each iteration runs the stages of `STAGES` in order: train on the labelled set, predict the pool,
score and acquire the most informative galaxies, request their labels, ingest the labels. A stage
is finished when its row is in the `stages` table. Every change is one SQLite transaction, so a
process killed at any moment (even SIGKILL) leaves either all of a change or none of it. To make a
stage's writes and its "done" mark one change, do them inside `stage()`:

    with state.stage(iteration, "acquire") as info:
        state.acquire(iteration, ids)
        info["n_acquired"] = len(ids)

A restart then runs, in `current_iteration()`, every stage for which `is_done` is False. Slow work
(training, predicting) belongs outside the transaction; only its result is written inside.

Rules the database itself enforces (CHECK constraints and triggers), so no code path can break
them: a galaxy is never deleted, never labelled twice, never acquired twice; labels are present
exactly when labelled_iteration != 0; a labelled pool galaxy was acquired at or before the
iteration that labelled it. `check_invariants()` re-checks all of it, plus what SQL cannot express.

No TensorFlow, Keras or MLflow here: standard library sqlite3, numpy and pandas only.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.data.manifest import Manifest
from zoobot.core.schema import Schema
from zoobot.core.votes import id_text, rejected_rows, validate_votes

INITIAL = -1  # labelled_iteration of the galaxies labelled before the campaign began
IN_POOL = 0  # labelled_iteration of a galaxy without labels
STAGES = ("train", "predict", "acquire", "request", "ingest")  # the order they run in, each iteration
LAST_STAGE = STAGES[-1]
FORMAT = "zoobot-pool"
FORMAT_VERSION = 1
BUSY_TIMEOUT_S = 30.0
RESERVED_META = ("format", "format_version", "schema", "label_cols", "created", "n_galaxies", "n_initial")
GALAXY_COLUMNS = ("id_str", "split", "location", "image_path", "ra", "dec", "labelled_iteration",
                  "acquired_iteration")
_CHUNK = 500  # ids per `IN (...)` lookup, well below SQLite's variable limit
_SHOW = 10  # ids quoted in an error message

_TABLES = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL  -- JSON
);
CREATE TABLE galaxies (
    id_str TEXT PRIMARY KEY NOT NULL CHECK (length(id_str) > 0),
    split TEXT NOT NULL CHECK (split IN ('train', 'pool')),
    location TEXT,
    image_path TEXT,
    ra REAL,
    dec REAL,
    labelled_iteration INTEGER NOT NULL DEFAULT {IN_POOL} CHECK (labelled_iteration >= {INITIAL}),
    acquired_iteration INTEGER CHECK (acquired_iteration >= 1),
    labels TEXT,  -- JSON array of vote counts in the schema's label-column order
    CHECK ((labelled_iteration = {IN_POOL}) = (labels IS NULL)),
    CHECK ((split = 'train') = (labelled_iteration = {INITIAL})),
    CHECK (split = 'pool' OR acquired_iteration IS NULL),
    CHECK (labelled_iteration < 1 OR (acquired_iteration IS NOT NULL AND acquired_iteration <= labelled_iteration))
);
CREATE INDEX galaxies_by_state ON galaxies (labelled_iteration, acquired_iteration);
CREATE TABLE scores (
    iteration INTEGER NOT NULL CHECK (iteration >= 1),
    id_str TEXT NOT NULL REFERENCES galaxies (id_str),
    score REAL NOT NULL,
    rank INTEGER NOT NULL CHECK (rank >= 1),  -- 1 = highest score
    PRIMARY KEY (iteration, id_str),
    UNIQUE (iteration, rank)
);
CREATE TABLE stages (
    iteration INTEGER NOT NULL CHECK (iteration >= 1),
    stage TEXT NOT NULL CHECK (stage IN ({", ".join(f"'{s}'" for s in STAGES)})),
    done_at TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{{}}',  -- JSON object
    PRIMARY KEY (iteration, stage)
);
"""

_TRIGGERS = {
    "galaxies_never_deleted": """
        CREATE TRIGGER galaxies_never_deleted BEFORE DELETE ON galaxies
        BEGIN SELECT RAISE(ABORT, 'galaxies are never deleted from a campaign'); END;""",
    "galaxies_labelled_once": f"""
        CREATE TRIGGER galaxies_labelled_once BEFORE UPDATE OF labelled_iteration, labels ON galaxies
        WHEN OLD.labelled_iteration != {IN_POOL}
        BEGIN SELECT RAISE(ABORT, 'galaxy is already labelled: a galaxy is never labelled twice'); END;""",
    "galaxies_acquired_once": """
        CREATE TRIGGER galaxies_acquired_once BEFORE UPDATE OF acquired_iteration ON galaxies
        WHEN OLD.acquired_iteration IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'galaxy is already acquired: a galaxy is never acquired twice'); END;""",
    "galaxies_identity_fixed": """
        CREATE TRIGGER galaxies_identity_fixed BEFORE UPDATE OF id_str, split ON galaxies
        BEGIN SELECT RAISE(ABORT, 'a galaxy''s id and split are fixed when the campaign is created'); END;""",
    "stages_never_undone": """
        CREATE TRIGGER stages_never_undone BEFORE DELETE ON stages
        BEGIN SELECT RAISE(ABORT, 'finished stages are never undone'); END;""",
    "stages_fixed": """
        CREATE TRIGGER stages_fixed BEFORE UPDATE ON stages
        BEGIN SELECT RAISE(ABORT, 'finished stages are never changed'); END;""",
}


class PoolError(ValueError):
    """A request the campaign cannot carry out; the message says why and how to fix it."""


class InvariantError(RuntimeError):
    """The campaign database breaks a rule that its own code never breaks: it was edited by hand,
    by another program, or is damaged."""


@dataclass(frozen=True)
class PoolCounts:
    total: int
    initial: int  # labelled before the campaign (included in `labelled`)
    labelled: int
    awaiting: int  # acquired, labels not ingested yet
    pool: int  # neither labelled nor acquired

    def __post_init__(self):
        if self.labelled + self.awaiting + self.pool != self.total:
            raise InvariantError(f"Galaxy counts do not add up: {self}.")


@dataclass(frozen=True, eq=False)
class IngestReport:
    iteration: int
    ingested: tuple[str, ...]  # ids whose labels were stored, in input order
    rejected: pd.DataFrame = field(repr=False)  # row, id_str, reason (row: the input's `row` column or 1-based position)

    @property
    def n_ingested(self) -> int:
        return len(self.ingested)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    def summary(self) -> str:
        text = f"Iteration {self.iteration}: ingested labels of {self.n_ingested} galaxies"
        if self.n_rejected:
            text += f"; set aside {self.n_rejected} rows, e.g. " + "; ".join(
                f"row {r.row} ({r.id_str}): {r.reason}" for r in self.rejected.head(3).itertuples())
        return text + "."


def _show(ids: Sequence[str]) -> str:
    ids = list(ids)
    more = f" ... and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return f"{ids[:_SHOW]}{more}"


def _listed(*groups: tuple[Sequence[str], str]) -> str:
    """'2 are not in this campaign ['a', 'b']; 1 are ...' for the non-empty groups."""
    return "; ".join(f"{len(ids)} {what} {_show(ids)}" for ids, what in groups if ids)


def _when_labelled(labelled_iteration: int) -> str:
    return "initial labelled set" if labelled_iteration == INITIAL else f"at iteration {labelled_iteration}"


def as_ids(ids, what: str = "ids") -> list[str]:
    """Ids as a list of distinct strings; refuses a bare string, floats and duplicates."""
    if isinstance(ids, (str, bytes)):
        raise PoolError(f"Expected a sequence of {what}, found a single string {ids!r}; wrap it in a list.")
    out = []
    for value in ids:
        if isinstance(value, (str, np.str_)):
            out.append(str(value))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            out.append(str(int(value)))  # e.g. SDSS dr7objid; stored as exact text
        else:
            raise PoolError(f"Expected {what} as strings, found {value!r} ({type(value).__name__}). Ids are stored as "
                            "text; read them with dtype=str so large integers keep every digit.")
    duplicates = sorted(i for i, n in Counter(out).items() if n > 1)
    if duplicates:
        raise PoolError(f"These {what} appear more than once: {_show(duplicates)}; pass each galaxy once.")
    return out


def _json(value, what: str) -> str:
    try:
        # Key order is kept: a schema's answers mapping is ordered (it is the label-column order).
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise PoolError(f"{what} must be JSON-serialisable (str, int, float, bool, None, lists, dicts); {e}.") from e


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions begin only where this module says so (BEGIN IMMEDIATE).
    connection = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


# -- the campaign -------------------------------------------------------------------------------------

class PoolState:
    """An open campaign. Create with `PoolState.create`/`from_manifest`, reopen with `PoolState.open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        # Use the classmethods; this only wraps an already-checked connection.
        self.path = path
        self._connection = connection
        self._savepoints = 0
        self._meta = self._read_meta()
        self.schema = Schema.from_dict(self._meta["schema"], source=str(path))
        self.label_cols: tuple[str, ...] = tuple(self._meta["label_cols"])
        if self.label_cols != self.schema.label_cols:
            raise PoolError(f"'{path}' records label columns {list(self.label_cols)} but its schema gives "
                            f"{list(self.schema.label_cols)}; the file was edited by hand or is damaged.")

    # -- lifecycle ------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, schema: Schema, galaxies: pd.DataFrame, labelled: pd.DataFrame,
               meta: dict | None = None) -> PoolState:
        """Start a campaign in a new database file at `path`.

        `galaxies`: one row per galaxy of the campaign (initially labelled and pool): `id_str`, and
        optionally `location` (where its record lives: shard file or image), `image_path`, `ra`,
        `dec`, `split` ('train' or 'pool'; if given it must agree with `labelled`).
        `labelled`: `id_str` plus the schema's label columns for the initially labelled galaxies
        (labelled_iteration INITIAL = -1); every other galaxy starts in the pool.
        `meta`: JSON-serialisable facts about the campaign (seed, arm, shards path...).

        The file appears complete or not at all: it is built under a temporary name and linked into
        place, which also refuses to replace an existing file.
        """
        path = Path(path)
        if path.exists():
            raise PoolError(f"'{path}' already exists; a campaign is never overwritten. Open it with "
                            "PoolState.open to resume that campaign, or choose a new path.")
        if not path.parent.is_dir():
            raise PoolError(f"Folder '{path.parent}' does not exist; create it first.")
        rows = _galaxy_rows(schema, galaxies, labelled)
        meta_rows = _meta_rows(schema, meta or {}, n_galaxies=len(rows),
                               n_initial=sum(r[6] == INITIAL for r in rows))
        tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            connection = _connect(tmp)
            try:
                with connection:
                    connection.execute("BEGIN IMMEDIATE")
                    for statement in _statements(_TABLES):
                        connection.execute(statement)
                    for statement in _TRIGGERS.values():
                        connection.execute(statement)
                    connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta_rows)
                    connection.executemany(
                        "INSERT INTO galaxies (id_str, split, location, image_path, ra, dec, labelled_iteration, "
                        "labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            finally:
                connection.close()
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
        return cls.open(path)

    @classmethod
    def from_manifest(cls, path: str | Path, manifest: Manifest, labelled: pd.DataFrame,
                      meta: dict | None = None) -> PoolState:
        """A campaign over a converted shard set (`zoobot.data.manifest.Manifest.read(folder)`).

        The galaxies are the 'train' split (initially labelled) and the 'pool' split, with ids,
        image paths and coordinates from the conversion's `galaxies.csv`; `location` is the image
        path. The 'train' labels live inside the TFRecords, which this module does not read (no
        TensorFlow here): pass them as `labelled` (id_str + label columns), e.g. the catalog rows
        of the train ids, or the records read back with `zoobot.data.shards`. The pool's labels stay in
        the manifest's oracle file (see `zoobot.active.oracle.SimulatedOracle.from_manifest`).
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
                                "Convert with labelled_size > 0 to hold galaxies back as the pool.")
            if found != expected:
                raise PoolError(f"'{index_path}' lists {found} '{split}' galaxies but the manifest says {expected}; "
                                "the folder was changed after conversion. Re-run `convert`.")
        index = index[index["split"].isin(["train", "pool"])].copy()
        index["location"] = index["image_path"]
        train_ids = set(index.loc[index["split"] == "train", "id_str"])
        if "id_str" not in labelled.columns:
            raise PoolError(f"`labelled` needs an 'id_str' column; it has {list(labelled.columns)}.")
        given = set(labelled["id_str"].astype(str))
        missing, extra = sorted(train_ids - given), sorted(given - train_ids)
        if missing or extra:
            raise PoolError(
                f"`labelled` must hold exactly the {len(train_ids)} 'train' galaxies of '{manifest.root}': "
                f"{len(missing)} are missing {_show(missing)}, {len(extra)} are not train galaxies {_show(extra)}.")
        meta = {"shards": str(manifest.root), "manifest_created": manifest.created, **(meta or {})}
        return cls.create(path, manifest.schema_obj, index, labelled, meta)

    @classmethod
    def open(cls, path: str | Path) -> PoolState:
        """Reopen a campaign (e.g. after a crash: it resumes at `current_iteration()`)."""
        path = Path(path)
        if not path.is_file():
            raise PoolError(f"No campaign at '{path}'. Create one with PoolState.create or PoolState.from_manifest, "
                            "or check the path.")
        connection = _connect(path)
        try:
            state = cls(path, connection)  # checks it is a campaign before changing anything
            connection.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            connection.execute("PRAGMA synchronous = FULL")  # a committed change survives power loss too
            return state
        except sqlite3.DatabaseError as e:
            connection.close()
            raise PoolError(f"'{path}' is not a campaign database ({e}). Pass the .db file that "
                            "PoolState.create wrote.") from e
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PoolState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PoolState('{self.path}', iteration={self.current_iteration()}, {self.counts()})"

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def _read_meta(self) -> dict:
        tables = {r[0] for r in self._connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "galaxies", "scores", "stages"} <= tables:
            raise PoolError(f"'{self.path}' is an SQLite database but not a campaign: it has tables {sorted(tables)}, "
                            "expected meta, galaxies, scores, stages.")
        meta = {k: json.loads(v) for k, v in self._connection.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise PoolError(f"'{self.path}' has format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                            f"this Zoobot reads {FORMAT!r} version {FORMAT_VERSION}.")
        return meta

    # -- transactions ---------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group changes into one transaction: all of them are kept, or (on any exception) none.

        Nested use is a savepoint inside the outer transaction, so a method that fails inside
        someone's transaction undoes only its own writes.
        """
        if self._connection.in_transaction:
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self._connection.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self._connection.execute(f"ROLLBACK TO {name}")
                self._connection.execute(f"RELEASE {name}")
                raise
            else:
                self._connection.execute(f"RELEASE {name}")
            return
        with self._connection:  # COMMIT on success, ROLLBACK on any exception
            # IMMEDIATE: take the write lock now, so validation reads and writes see one state.
            self._connection.execute("BEGIN IMMEDIATE")
            yield

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one committed state."""
        if self._connection.in_transaction:
            yield
            return
        with self._connection:
            self._connection.execute("BEGIN")
            yield

    @contextmanager
    def stage(self, iteration: int, stage: str) -> Iterator[dict]:
        """Run a stage's writes and mark it done in one transaction; yields the `info` dict to fill.

        Refuses a stage that is already done, or whose earlier stages are not (see `mark_done`).
        """
        iteration = _iteration(iteration)
        with self.transaction():
            self._check_can_mark(iteration, stage)
            info: dict = {}
            yield info
            self.mark_done(iteration, stage, info)

    # -- queries --------------------------------------------------------------------------------------

    def _ids(self, where: str, args: tuple = ()) -> list[str]:
        return [r[0] for r in self._connection.execute(f"SELECT id_str FROM galaxies WHERE {where} ORDER BY rowid", args)]

    def labelled_ids(self) -> list[str]:
        """Every labelled galaxy (initial set and ingested), in creation order."""
        return self._ids(f"labelled_iteration != {IN_POOL}")

    def pool_ids(self) -> list[str]:
        """Galaxies that can be acquired: not labelled and not awaiting labels."""
        return self._ids(f"labelled_iteration = {IN_POOL} AND acquired_iteration IS NULL")

    def awaiting_ids(self, iteration: int | None = None) -> list[str]:
        """Acquired galaxies whose labels are not ingested yet (acquired at `iteration`, if given)."""
        if iteration is None:
            return self._ids(f"labelled_iteration = {IN_POOL} AND acquired_iteration IS NOT NULL")
        return self._ids(f"labelled_iteration = {IN_POOL} AND acquired_iteration = ?", (int(iteration),))

    def acquired_ids(self, iteration: int) -> list[str]:
        """Galaxies acquired at `iteration`, labelled since or not."""
        return self._ids("acquired_iteration = ?", (int(iteration),))

    def n_labelled(self) -> int:
        return self._connection.execute(
            f"SELECT count(*) FROM galaxies WHERE labelled_iteration != {IN_POOL}").fetchone()[0]

    def counts(self) -> PoolCounts:
        row = self._connection.execute(f"""
            SELECT count(*),
                   coalesce(sum(labelled_iteration = {INITIAL}), 0),
                   coalesce(sum(labelled_iteration != {IN_POOL}), 0),
                   coalesce(sum(labelled_iteration = {IN_POOL} AND acquired_iteration IS NOT NULL), 0),
                   coalesce(sum(labelled_iteration = {IN_POOL} AND acquired_iteration IS NULL), 0)
            FROM galaxies""").fetchone()
        return PoolCounts(*row)

    def _lookup(self, ids: Sequence[str], columns: str) -> dict[str, tuple]:
        """id -> (columns...) for the ids that exist."""
        found: dict[str, tuple] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in self._connection.execute(
                    f"SELECT id_str, {columns} FROM galaxies WHERE id_str IN ({marks})", chunk):
                found[row[0]] = row[1:]
        return found

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        """Vote counts of labelled galaxies, shape (len(ids), n_answers), int64, in the order given."""
        ids = as_ids(ids)
        found = self._lookup(ids, "labels")
        unknown = [i for i in ids if i not in found]
        unlabelled = [i for i in ids if i in found and found[i][0] is None]
        problems = _listed((unknown, "are not in this campaign"), (unlabelled, "are not labelled yet"))
        if problems:
            raise PoolError(f"Cannot return labels: {problems}. Ask for labelled_ids().")
        out = np.zeros((len(ids), len(self.label_cols)), dtype=np.int64)
        for k, i in enumerate(ids):
            out[k] = json.loads(found[i][0])
        return out

    def galaxies(self, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The bookkeeping table (without labels): all galaxies in creation order, or `ids` in their order.

        Columns GALAXY_COLUMNS; `acquired_iteration` is a nullable integer (<NA> until acquired).
        """
        columns = ", ".join(GALAXY_COLUMNS)
        if ids is None:
            rows = self._connection.execute(f"SELECT {columns} FROM galaxies ORDER BY rowid").fetchall()
        else:
            ids = as_ids(ids)
            found = self._lookup(ids, ", ".join(GALAXY_COLUMNS[1:]))
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise PoolError(f"{len(unknown)} ids are not in this campaign: {_show(unknown)}.")
            rows = [(i, *found[i]) for i in ids]
        table = pd.DataFrame(rows, columns=list(GALAXY_COLUMNS))
        table["ra"] = table["ra"].astype(float)
        table["dec"] = table["dec"].astype(float)
        table["labelled_iteration"] = table["labelled_iteration"].astype(np.int64)
        table["acquired_iteration"] = table["acquired_iteration"].astype("Int64")  # <NA>: not acquired
        return table

    def scores(self, iteration: int) -> pd.DataFrame:
        """id_str, score, rank (1 = highest) recorded at `iteration`, best first."""
        rows = self._connection.execute(
            "SELECT id_str, score, rank FROM scores WHERE iteration = ? ORDER BY rank", (int(iteration),)).fetchall()
        return pd.DataFrame(rows, columns=["id_str", "score", "rank"])

    # -- stages ---------------------------------------------------------------------------------------

    def is_done(self, iteration: int, stage: str) -> bool:
        _check_stage_name(stage)
        return self._connection.execute(
            "SELECT 1 FROM stages WHERE iteration = ? AND stage = ?", (int(iteration), stage)).fetchone() is not None

    def stage_info(self, iteration: int, stage: str) -> dict:
        """The `info` recorded when the stage finished (with `done_at` added)."""
        _check_stage_name(stage)
        row = self._connection.execute(
            "SELECT info, done_at FROM stages WHERE iteration = ? AND stage = ?", (int(iteration), stage)).fetchone()
        if row is None:
            raise PoolError(f"Stage '{stage}' of iteration {iteration} is not done, so it has no info; check "
                            "is_done() first.")
        return {**json.loads(row[0]), "done_at": row[1]}

    def current_iteration(self) -> int:
        """The first iteration (from 1) whose last stage ('ingest') is not done."""
        done = {r[0] for r in self._connection.execute("SELECT iteration FROM stages WHERE stage = ?", (LAST_STAGE,))}
        iteration = 1
        while iteration in done:
            iteration += 1
        return iteration

    def next_stage(self) -> tuple[int, str]:
        """(iteration, stage) to run next: where a resumed campaign picks up."""
        with self._snapshot():
            iteration = self.current_iteration()
            # The current iteration's last stage is not done, so some stage is always found.
            return iteration, next(s for s in STAGES if not self.is_done(iteration, s))

    def mark_done(self, iteration: int, stage: str, info: dict | None = None) -> None:
        """Record that `stage` of `iteration` finished, with JSON-serialisable `info`.

        Stages finish in order: `iteration` must be the current one, the stages before `stage`
        in STAGES must be done and `stage` must not be. Marking the last stage starts the next
        iteration.
        """
        iteration = _iteration(iteration)
        info_json = _json(info or {}, f"Info of stage '{stage}'")
        with self.transaction():
            self._check_can_mark(iteration, stage)
            self._connection.execute("INSERT INTO stages (iteration, stage, done_at, info) VALUES (?, ?, ?, ?)",
                                     (iteration, stage, _now(), info_json))

    def _check_can_mark(self, iteration: int, stage: str) -> None:
        _check_stage_name(stage)
        self._check_open(iteration, stage)
        missing = [s for s in STAGES[:STAGES.index(stage)] if not self.is_done(iteration, s)]
        if missing:
            raise PoolError(f"Cannot finish stage '{stage}' of iteration {iteration}: earlier stages {missing} are not "
                            f"done. Stages run in the order {list(STAGES)}.")

    def _check_open(self, iteration, stage: str) -> None:
        """`iteration` is the current one and its `stage` is not finished yet: its data may change."""
        current = self.current_iteration()
        if iteration != current:
            state = "finished" if iteration < current else "not started (earlier iterations are unfinished)"
            raise PoolError(f"Iteration {iteration} is {state}; the campaign is at iteration {current}. Only the "
                            "current iteration can change.")
        if self.is_done(iteration, stage):
            raise PoolError(f"Stage '{stage}' of iteration {iteration} is already done "
                            f"({self.stage_info(iteration, stage)['done_at']}); its results are final.")

    # -- changes --------------------------------------------------------------------------------------

    def record_scores(self, iteration: int, ids: Sequence[str], scores) -> int:
        """Store the acquisition score of each pool galaxy at `iteration` (rank 1 = highest score).

        Idempotent: recording again for the same iteration replaces its scores, in one
        transaction. Refused once the iteration's 'acquire' stage is done (the scores it used are
        final). Returns the number of scores stored.
        """
        iteration, ids = _iteration(iteration), as_ids(ids)
        values = np.asarray(scores, dtype=float)
        if values.shape != (len(ids),):
            raise PoolError(f"Expected one score per id ({len(ids)},); found scores of shape {values.shape}.")
        not_finite = [i for i, v in zip(ids, values) if not np.isfinite(v)]
        if not_finite:
            raise PoolError(f"Scores must be finite; {len(not_finite)} are NaN or infinite, for {_show(not_finite)}. "
                            "Check the predictions of those galaxies.")
        order = np.argsort(-values, kind="stable")
        ranks = np.empty(len(ids), dtype=np.int64)
        ranks[order] = np.arange(1, len(ids) + 1)
        with self.transaction():
            self._check_open(iteration, "acquire")
            found = self._lookup(ids, "labelled_iteration, acquired_iteration")
            unknown = [i for i in ids if i not in found]
            not_pool = [i for i in ids if i in found and (found[i][0] != IN_POOL or found[i][1] is not None)]
            problems = _listed((unknown, "are not in this campaign"), (not_pool, "are labelled or awaiting labels"))
            if problems:
                raise PoolError(f"Scores are for pool galaxies only: {problems}. Score pool_ids(); nothing was "
                                "recorded.")
            self._connection.execute("DELETE FROM scores WHERE iteration = ?", (iteration,))
            self._connection.executemany(
                "INSERT INTO scores (iteration, id_str, score, rank) VALUES (?, ?, ?, ?)",
                [(iteration, i, float(v), int(r)) for i, v, r in zip(ids, values, ranks)])
        return len(ids)

    def acquire(self, iteration: int, ids: Sequence[str]) -> list[str]:
        """Mark `ids` as sent to volunteers at `iteration`: all of them, or (on any problem) none.

        Refuses, naming them, ids that are unknown, already labelled or already acquired.
        """
        iteration, ids = _iteration(iteration), as_ids(ids)
        with self.transaction():
            self._check_open(iteration, "acquire")
            found = self._lookup(ids, "labelled_iteration, acquired_iteration")
            unknown = [i for i in ids if i not in found]
            labelled = [f"{i} ({_when_labelled(found[i][0])})" for i in ids if i in found and found[i][0] != IN_POOL]
            acquired = [f"{i} (at iteration {found[i][1]})" for i in ids
                        if i in found and found[i][0] == IN_POOL and found[i][1] is not None]
            problems = _listed((unknown, "are not in this campaign"), (labelled, "are already labelled"),
                               (acquired, "are already acquired and awaiting labels"))
            if problems:
                raise PoolError(f"Cannot acquire {len(ids)} galaxies at iteration {iteration}: {problems}. Nothing "
                                "was acquired; acquire only ids from pool_ids().")
            before = self._connection.total_changes
            self._connection.executemany(
                "UPDATE galaxies SET acquired_iteration = ? WHERE id_str = ? AND acquired_iteration IS NULL "
                f"AND labelled_iteration = {IN_POOL}", [(iteration, i) for i in ids])
            if self._connection.total_changes - before != len(ids):
                raise PoolError("The pool changed while acquiring (another writer?); nothing was acquired. Retry.")
        return ids

    def ingest_labels(self, iteration: int, labels: pd.DataFrame) -> IngestReport:
        """Store volunteers' vote counts for acquired galaxies, labelled at `iteration`.

        `labels`: `id_str` plus the schema's label columns (extra columns are ignored; a `row`
        column, as `read_reduced_votes` returns, numbers the rows in the report). A missing column
        is an error for the whole table. Row problems set the row aside with a reason, and the good
        rows are stored, all in one transaction: unknown id, not acquired (still in the pool),
        already labelled, duplicate id, or a count that is missing, not a number, negative or
        fractional. Galaxies acquired in any iteration up to this one may be labelled.
        """
        iteration = _iteration(iteration)
        if not isinstance(labels, pd.DataFrame):
            raise PoolError(f"Expected labels as a DataFrame (id_str + label columns); found {type(labels).__name__}.")
        missing = [c for c in ("id_str", *self.label_cols) if c not in labels.columns]
        if missing:
            raise PoolError(
                f"Labels for iteration {iteration} are missing columns {missing} required by schema "
                f"'{self.schema.name}'; they have {list(labels.columns)[:40]}. Pass id_str plus the schema's label "
                "columns (read_reduced_votes and SimulatedOracle.reveal return that shape).")
        rows = labels["row"].to_numpy() if "row" in labels.columns else None
        good, rejected = validate_votes(labels, self.label_cols, "id_str", rows)
        with self.transaction():
            self._check_open(iteration, "ingest")
            ids = good["id_str"].tolist()
            found = self._lookup(ids, "labelled_iteration, acquired_iteration")
            reasons = []
            for i in ids:
                if i not in found:
                    reasons.append("unknown id: not a galaxy of this campaign")
                elif found[i][0] != IN_POOL:
                    reasons.append(f"already labelled ({_when_labelled(found[i][0])}); a galaxy is never labelled twice")
                elif found[i][1] is None:
                    reasons.append("not acquired: the galaxy is still in the pool; only acquired galaxies are labelled")
                else:
                    reasons.append("")
            bad = np.array([bool(r) for r in reasons], dtype=bool)
            if bad.any():
                late = rejected_rows(good["row"].to_numpy()[bad], good["id_str"].to_numpy()[bad],
                                     [r for r in reasons if r])
                rejected = pd.concat([rejected, late], ignore_index=True) if len(rejected) else late
                good = good[~bad]
            updates = [(iteration, _json([int(v) for v in counts], "labels"), i)
                       for i, counts in zip(good["id_str"], good[list(self.label_cols)].to_numpy())]
            before = self._connection.total_changes
            self._connection.executemany(
                "UPDATE galaxies SET labelled_iteration = ?, labels = ? WHERE id_str = ? "
                f"AND labelled_iteration = {IN_POOL} AND acquired_iteration IS NOT NULL", updates)
            if self._connection.total_changes - before != len(updates):
                raise PoolError("The pool changed while ingesting (another writer?); nothing was ingested. Retry.")
        rejected = rejected.sort_values("row", kind="stable").reset_index(drop=True)
        return IngestReport(iteration, tuple(good["id_str"]), rejected)

    # -- reports and checks ---------------------------------------------------------------------------

    def history(self) -> pd.DataFrame:
        """One row per started iteration: what it scored, acquired and ingested, and the totals after it."""
        with self._snapshot():
            current = self.current_iteration()
            counts = self.counts()
            acquired = dict(self._connection.execute(
                "SELECT acquired_iteration, count(*) FROM galaxies WHERE acquired_iteration IS NOT NULL "
                "GROUP BY acquired_iteration").fetchall())
            ingested = dict(self._connection.execute(
                "SELECT labelled_iteration, count(*) FROM galaxies WHERE labelled_iteration >= 1 "
                "GROUP BY labelled_iteration").fetchall())
            scored = dict(self._connection.execute("SELECT iteration, count(*) FROM scores GROUP BY iteration"))
            stages: dict[int, dict[str, str]] = {}
            for iteration, stage, done_at in self._connection.execute("SELECT iteration, stage, done_at FROM stages"):
                stages.setdefault(iteration, {})[stage] = done_at
        records = []
        n_labelled, n_awaiting = counts.initial, 0
        for iteration in range(1, current + 1):
            done = stages.get(iteration, {})
            n_before = n_labelled
            n_labelled += ingested.get(iteration, 0)
            n_awaiting += acquired.get(iteration, 0) - ingested.get(iteration, 0)
            records.append({
                "iteration": iteration,
                "stages_done": ",".join(s for s in STAGES if s in done),
                "complete": LAST_STAGE in done,
                "n_labelled_before": n_before,
                "n_scored": scored.get(iteration, 0),
                "n_acquired": acquired.get(iteration, 0),
                "n_ingested": ingested.get(iteration, 0),
                "n_labelled": n_labelled,
                "n_awaiting": n_awaiting,
                "n_pool": counts.total - n_labelled - n_awaiting,
                "finished_at": done.get(LAST_STAGE),
            })
        return pd.DataFrame.from_records(records, columns=[
            "iteration", "stages_done", "complete", "n_labelled_before", "n_scored", "n_acquired", "n_ingested",
            "n_labelled", "n_awaiting", "n_pool", "finished_at"])

    def check_invariants(self) -> PoolCounts:
        """Raise InvariantError listing every broken rule; return the counts if all hold."""
        problems: list[str] = []
        with self._snapshot():
            self._check_database(problems)
            self._check_rows(problems)
            self._check_labels(problems)
            self._check_stages(problems)
            counts = self.counts()
        if problems:
            raise InvariantError(f"Campaign '{self.path}' breaks {len(problems)} rules:\n- " + "\n- ".join(problems))
        return counts

    def _check_database(self, problems: list[str]) -> None:
        q = self._connection.execute
        check = q("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            problems.append(f"SQLite integrity check failed: {check}")
        if q("PRAGMA foreign_key_check").fetchall():
            problems.append("scores refer to galaxies that do not exist")
        triggers = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        missing = sorted(set(_TRIGGERS) - triggers)
        if missing:
            problems.append(f"guard triggers {missing} are missing, so double labelling would go unnoticed")
        total, initial = q("SELECT count(*), coalesce(sum(split = 'train'), 0) FROM galaxies").fetchone()
        if total != self._meta["n_galaxies"]:
            problems.append(f"the campaign was created with {self._meta['n_galaxies']} galaxies but has {total}: "
                            "galaxies were lost or added")
        if initial != self._meta["n_initial"]:
            problems.append(f"the campaign was created with {self._meta['n_initial']} initially labelled galaxies "
                            f"but has {initial}")

    def _check_rows(self, problems: list[str]) -> None:
        current = self.current_iteration()
        rules = {
            "labels present without labelled_iteration, or labelled_iteration without labels":
                f"(labelled_iteration = {IN_POOL}) != (labels IS NULL)",
            f"labelled_iteration is not {INITIAL}, {IN_POOL} or an iteration >= 1": f"labelled_iteration < {INITIAL}",
            f"'train' galaxies must have labelled_iteration {INITIAL} and pool galaxies must not":
                f"(split = 'train') != (labelled_iteration = {INITIAL})",
            "initially labelled galaxies cannot be acquired": "split = 'train' AND acquired_iteration IS NOT NULL",
            "labelled at an iteration without being acquired at or before it":
                "labelled_iteration >= 1 AND (acquired_iteration IS NULL OR acquired_iteration > labelled_iteration)",
            "acquired_iteration is not an iteration >= 1": "acquired_iteration < 1",
            f"labelled or acquired in an iteration after the current one ({current})":
                "labelled_iteration > ? OR acquired_iteration > ?",
        }
        for rule, where in rules.items():
            args = (current, current) if "?" in where else ()
            ids = [r[0] for r in self._connection.execute(f"SELECT id_str FROM galaxies WHERE {where} LIMIT 11", args)]
            if ids:
                problems.append(f"{rule}: {_show(ids)}")
        bad_scores = self._connection.execute(
            "SELECT iteration FROM scores GROUP BY iteration HAVING max(rank) != count(*) OR min(rank) != 1").fetchall()
        if bad_scores:
            problems.append(f"score ranks are not 1..n in iterations {[r[0] for r in bad_scores]}")

    def _check_labels(self, problems: list[str]) -> None:
        n = len(self.label_cols)
        bad = []
        for id_str, text in self._connection.execute("SELECT id_str, labels FROM galaxies WHERE labels IS NOT NULL"):
            try:
                values = json.loads(text)
                ok = (isinstance(values, list) and len(values) == n
                      and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad.append(id_str)
        if bad:
            problems.append(f"labels are not {n} non-negative whole vote counts for {_show(bad)}")

    def _check_stages(self, problems: list[str]) -> None:
        current = self.current_iteration()
        done: dict[int, set[str]] = {}
        for iteration, stage in self._connection.execute("SELECT iteration, stage FROM stages"):
            done.setdefault(iteration, set()).add(stage)
        for iteration, stages in sorted(done.items()):
            if iteration > current:
                problems.append(f"iteration {iteration} has finished stages {sorted(stages)} but iteration {current} "
                                "is not finished")
                continue
            prefix = [s for s in STAGES if s in stages]
            if prefix != list(STAGES[:len(prefix)]):
                problems.append(f"iteration {iteration} finished stages {prefix} out of order {list(STAGES)}")


def _iteration(value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PoolError(f"Iterations are whole numbers from 1; found {value!r}.")
    return int(value)  # sqlite3 cannot bind numpy integers


def _check_stage_name(stage: str) -> None:
    if stage not in STAGES:
        raise PoolError(f"Unknown stage {stage!r}; the stages of an iteration are {list(STAGES)}.")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _galaxy_rows(schema: Schema, galaxies: pd.DataFrame, labelled: pd.DataFrame) -> list[tuple]:
    """Validated rows for the galaxies table; raises PoolError listing every problem."""
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
    problems = []
    ids = [id_text(v) for v in galaxies["id_str"].tolist()]
    if any(i is None for i in ids):
        problems.append(f"{sum(i is None for i in ids)} galaxies have no id_str")
    duplicated = sorted(i for i, n in Counter(ids).items() if i is not None and n > 1)
    if duplicated:
        problems.append(f"ids appear more than once in `galaxies`: {_show(duplicated)}")
    good, rejected = validate_votes(labelled, schema.label_cols)
    if len(rejected):
        problems.append("bad initial labels: " + "; ".join(
            f"row {r.row} ({r.id_str}): {r.reason}" for r in rejected.head(_SHOW).itertuples()))
    labels = {i: counts for i, counts in zip(good["id_str"], good[list(schema.label_cols)].to_numpy())}
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        problems.append(f"labelled ids are not in `galaxies`: {_show(unknown)}")
    if "split" in galaxies.columns:
        splits = galaxies["split"].astype(str).tolist()
        other = sorted({s for s in splits if s not in ("train", "pool")})
        if other:
            problems.append(f"`galaxies` has splits {other}; a campaign holds only 'train' (labelled) and 'pool'")
        disagree = [i for i, s in zip(ids, splits) if (s == "train") != (i in labels)]
        if disagree:
            problems.append(f"'train' galaxies must be exactly the labelled ones; these disagree: {_show(disagree)}")
    if problems:
        raise PoolError("Cannot create the campaign: " + "; ".join(problems) + ".")

    def column(name: str, numeric: bool) -> list:
        if name not in galaxies.columns:
            return [None] * len(galaxies)
        values = pd.to_numeric(galaxies[name], errors="raise") if numeric else galaxies[name]
        return [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else (float(v) if numeric else str(v))
                for v in values.tolist()]

    try:
        ra, dec = column("ra", True), column("dec", True)
    except (ValueError, TypeError) as e:
        raise PoolError(f"Cannot create the campaign: ra/dec must be numbers ({e}).") from e
    location, image_path = column("location", False), column("image_path", False)
    rows = []
    for k, i in enumerate(ids):
        if i in labels:
            rows.append((i, "train", location[k], image_path[k], ra[k], dec[k], INITIAL,
                         json.dumps([int(v) for v in labels[i]])))
        else:
            rows.append((i, "pool", location[k], image_path[k], ra[k], dec[k], IN_POOL, None))
    return rows


def _meta_rows(schema: Schema, meta: dict, n_galaxies: int, n_initial: int) -> list[tuple[str, str]]:
    if not isinstance(meta, dict):
        raise PoolError(f"`meta` must be a dict; found {type(meta).__name__}.")
    clash = sorted(set(meta) & set(RESERVED_META))
    if clash:
        raise PoolError(f"`meta` keys {clash} are reserved (the campaign sets {list(RESERVED_META)}); rename them.")
    values = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "schema": schema.to_dict(),
        "label_cols": list(schema.label_cols), "created": _now(), "n_galaxies": n_galaxies, "n_initial": n_initial,
        **meta,
    }
    return [(str(k), _json(v, f"meta[{k!r}]")) for k, v in values.items()]

