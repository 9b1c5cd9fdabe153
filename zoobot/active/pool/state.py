"""`PoolState`, an open campaign: opening and creating it, transactions, the stage order, and changes.

Every public method of a campaign is defined here, so this file is the one to read for what a
campaign can do and which rules a change must pass (current iteration, stage not yet done). The
SQL behind the longer methods lives in modules of plain functions that take the connection:
`queries` (reads), `changes` (writes), `create` (a new file), `audit` and `report`. Each of those
says in its signature exactly what it needs, and none of them opens a transaction; that stays
here. Mixins would have split one object's attributes across five files, leaving a reader to
hunt for where `self._connection` comes from.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.active.pool import audit, changes, create, queries, report
from zoobot.active.pool.changes import IngestReport
from zoobot.active.pool.checks import (InvariantError, PoolError, as_ids, as_iteration, check_stage_name, now,
                                       to_json)
from zoobot.active.pool.queries import AWAITING, IN_THE_POOL, LABELLED, PoolCounts
from zoobot.active.pool.schema import FORMAT, FORMAT_VERSION, STAGES, TABLE_NAMES, connect
from zoobot.core.schema import Schema
from zoobot.data.manifest import Manifest


class PoolState:
    """An open campaign. Create with `PoolState.create`/`from_manifest`, reopen with `PoolState.open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        # Use the classmethods; this only wraps an already-checked connection.
        self.path = path
        self._connection = connection
        self._savepoints = 0
        self._meta = _read_meta(connection, path)
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
        create.write_campaign(path, schema, galaxies, labelled, meta or {})
        return cls.open(path)

    @classmethod
    def from_manifest(cls, path: str | Path, manifest: Manifest, labelled: pd.DataFrame,
                      meta: dict | None = None) -> PoolState:
        """A campaign over a converted shard set (`zoobot.data.manifest.Manifest.read(folder)`).

        The galaxies are the 'train' split (initially labelled) and the 'pool' split, with ids,
        image paths and coordinates from the conversion's `galaxies.csv`; `location` is the image
        path. The 'train' labels live inside the TFRecords, which this package does not read (no
        TensorFlow here): pass them as `labelled` (id_str + label columns), e.g. the catalog rows
        of the train ids, or the records read back with `zoobot.data.shards`. The pool's labels stay in
        the manifest's oracle file (see `zoobot.active.oracle.SimulatedOracle.from_manifest`).
        """
        index = create.manifest_galaxies(manifest, labelled)
        meta = {"shards": str(manifest.root), "manifest_created": manifest.created, **(meta or {})}
        return cls.create(path, manifest.schema_obj, index, labelled, meta)

    @classmethod
    def open(cls, path: str | Path) -> PoolState:
        """Reopen a campaign (e.g. after a crash: it resumes at `current_iteration()`)."""
        path = Path(path)
        if not path.is_file():
            raise PoolError(f"No campaign at '{path}'. Create one with PoolState.create or PoolState.from_manifest, "
                            "or check the path.")
        connection = connect(path)
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
        iteration = as_iteration(iteration)
        with self.transaction():
            self._check_can_mark(iteration, stage)
            info: dict = {}
            yield info
            self.mark_done(iteration, stage, info)

    # -- queries --------------------------------------------------------------------------------------

    def labelled_ids(self) -> list[str]:
        """Every labelled galaxy (initial set and ingested), in creation order."""
        return queries.ids(self._connection, LABELLED)

    def pool_ids(self) -> list[str]:
        """Galaxies that can be acquired: not labelled and not awaiting labels."""
        return queries.ids(self._connection, IN_THE_POOL)

    def awaiting_ids(self, iteration: int | None = None) -> list[str]:
        """Acquired galaxies whose labels are not ingested yet (acquired at `iteration`, if given)."""
        if iteration is None:
            return queries.ids(self._connection, AWAITING)
        return queries.ids(self._connection, f"{AWAITING} AND acquired_iteration = ?", (int(iteration),))

    def acquired_ids(self, iteration: int) -> list[str]:
        """Galaxies acquired at `iteration`, labelled since or not."""
        return queries.ids(self._connection, "acquired_iteration = ?", (int(iteration),))

    def n_labelled(self) -> int:
        return queries.n_labelled(self._connection)

    def counts(self) -> PoolCounts:
        return queries.counts(self._connection)

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        """Vote counts of labelled galaxies, shape (len(ids), n_answers), int64, in the order given."""
        return queries.labels(self._connection, as_ids(ids), len(self.label_cols))

    def galaxies(self, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The bookkeeping table (without labels): all galaxies in creation order, or `ids` in their order.

        Columns GALAXY_COLUMNS; `acquired_iteration` is a nullable integer (<NA> until acquired).
        """
        return queries.galaxies(self._connection, None if ids is None else as_ids(ids))

    def scores(self, iteration: int) -> pd.DataFrame:
        """id_str, score, rank (1 = highest) recorded at `iteration`, best first."""
        return queries.scores(self._connection, iteration)

    # -- stages ---------------------------------------------------------------------------------------

    def is_done(self, iteration: int, stage: str) -> bool:
        return queries.is_done(self._connection, iteration, stage)

    def stage_info(self, iteration: int, stage: str) -> dict:
        """The `info` recorded when the stage finished (with `done_at` added)."""
        return queries.stage_info(self._connection, iteration, stage)

    def current_iteration(self) -> int:
        """The first iteration (from 1) whose last stage ('ingest') is not done."""
        return queries.current_iteration(self._connection)

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
        iteration = as_iteration(iteration)
        info_json = to_json(info or {}, f"Info of stage '{stage}'")
        with self.transaction():
            self._check_can_mark(iteration, stage)
            self._connection.execute("INSERT INTO stages (iteration, stage, done_at, info) VALUES (?, ?, ?, ?)",
                                     (iteration, stage, now(), info_json))

    def _check_can_mark(self, iteration: int, stage: str) -> None:
        check_stage_name(stage)
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
        iteration, ids = as_iteration(iteration), as_ids(ids)
        values = changes.score_values(ids, scores)
        with self.transaction():
            self._check_open(iteration, "acquire")
            changes.record_scores(self._connection, iteration, ids, values)
        return len(ids)

    def acquire(self, iteration: int, ids: Sequence[str]) -> list[str]:
        """Mark `ids` as sent to volunteers at `iteration`: all of them, or (on any problem) none.

        Refuses, naming them, ids that are unknown, already labelled or already acquired.
        """
        iteration, ids = as_iteration(iteration), as_ids(ids)
        with self.transaction():
            self._check_open(iteration, "acquire")
            changes.acquire(self._connection, iteration, ids)
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
        iteration = as_iteration(iteration)
        good, rejected = changes.valid_label_rows(labels, self.label_cols, self.schema.name, iteration)
        with self.transaction():
            self._check_open(iteration, "ingest")
            good, rejected = changes.ingest(self._connection, iteration, good, rejected, self.label_cols)
        rejected = rejected.sort_values("row", kind="stable").reset_index(drop=True)
        return IngestReport(iteration, tuple(good["id_str"]), rejected)

    # -- reports and checks ---------------------------------------------------------------------------

    def history(self) -> pd.DataFrame:
        """One row per started iteration: what it scored, acquired and ingested, and the totals after it."""
        with self._snapshot():
            return report.history(self._connection)

    def check_invariants(self) -> PoolCounts:
        """Raise InvariantError listing every broken rule; return the counts if all hold."""
        with self._snapshot():
            problems = audit.problems(self._connection, self._meta, len(self.label_cols))
            counts = self.counts()
        if problems:
            raise InvariantError(f"Campaign '{self.path}' breaks {len(problems)} rules:\n- " + "\n- ".join(problems))
        return counts


def _read_meta(connection: sqlite3.Connection, path: Path) -> dict:
    """The campaign's meta table, after checking that the file is a campaign this Zoobot reads."""
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not set(TABLE_NAMES) <= tables:
        raise PoolError(f"'{path}' is an SQLite database but not a campaign: it has tables {sorted(tables)}, "
                        "expected meta, galaxies, scores, stages.")
    meta = {k: json.loads(v) for k, v in connection.execute("SELECT key, value FROM meta")}
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise PoolError(f"'{path}' has format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                        f"this Zoobot reads {FORMAT!r} version {FORMAT_VERSION}.")
    return meta
