"""Reads of a campaign: which galaxies are where, their labels and scores, and which stages are done.

Functions of an open connection, so the state object, the audit and the history all ask the same
question the same way. None of them writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from zoobot.active.pool.checks import InvariantError, PoolError, check_stage_name, listed, show
from zoobot.active.pool.schema import GALAXY_COLUMNS, IN_POOL, INITIAL, LAST_STAGE

_CHUNK = 500  # ids per `IN (...)` lookup, well below SQLite's variable limit

LABELLED = f"labelled_iteration != {IN_POOL}"
IN_THE_POOL = f"labelled_iteration = {IN_POOL} AND acquired_iteration IS NULL"
AWAITING = f"labelled_iteration = {IN_POOL} AND acquired_iteration IS NOT NULL"


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


def ids(connection: sqlite3.Connection, where: str, args: tuple = ()) -> list[str]:
    """Ids of the galaxies matching the SQL condition `where`, in creation order."""
    return [r[0] for r in connection.execute(f"SELECT id_str FROM galaxies WHERE {where} ORDER BY rowid", args)]


def n_labelled(connection: sqlite3.Connection) -> int:
    return connection.execute(f"SELECT count(*) FROM galaxies WHERE {LABELLED}").fetchone()[0]


def counts(connection: sqlite3.Connection) -> PoolCounts:
    row = connection.execute(f"""
        SELECT count(*),
               coalesce(sum(labelled_iteration = {INITIAL}), 0),
               coalesce(sum({LABELLED}), 0),
               coalesce(sum({AWAITING}), 0),
               coalesce(sum({IN_THE_POOL}), 0)
        FROM galaxies""").fetchone()
    return PoolCounts(*row)


def lookup(connection: sqlite3.Connection, ids: Sequence[str], columns: str) -> dict[str, tuple]:
    """id -> (columns...) for the ids that exist."""
    found: dict[str, tuple] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for row in connection.execute(f"SELECT id_str, {columns} FROM galaxies WHERE id_str IN ({marks})", chunk):
            found[row[0]] = row[1:]
    return found


def labels(connection: sqlite3.Connection, ids: list[str], n_answers: int) -> np.ndarray:
    """Vote counts of labelled galaxies, shape (len(ids), n_answers), int64, in the order given."""
    found = lookup(connection, ids, "labels")
    unknown = [i for i in ids if i not in found]
    unlabelled = [i for i in ids if i in found and found[i][0] is None]
    problems = listed((unknown, "are not in this campaign"), (unlabelled, "are not labelled yet"))
    if problems:
        raise PoolError(f"Cannot return labels: {problems}. Ask for labelled_ids().")
    out = np.zeros((len(ids), n_answers), dtype=np.int64)
    for k, i in enumerate(ids):
        out[k] = json.loads(found[i][0])
    return out


def galaxies(connection: sqlite3.Connection, ids: list[str] | None) -> pd.DataFrame:
    """The bookkeeping table (columns GALAXY_COLUMNS): all galaxies in creation order, or `ids` in their order."""
    if ids is None:
        rows = connection.execute(f"SELECT {', '.join(GALAXY_COLUMNS)} FROM galaxies ORDER BY rowid").fetchall()
    else:
        found = lookup(connection, ids, ", ".join(GALAXY_COLUMNS[1:]))
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise PoolError(f"{len(unknown)} ids are not in this campaign: {show(unknown)}.")
        rows = [(i, *found[i]) for i in ids]
    table = pd.DataFrame(rows, columns=list(GALAXY_COLUMNS))
    table["ra"] = table["ra"].astype(float)
    table["dec"] = table["dec"].astype(float)
    table["labelled_iteration"] = table["labelled_iteration"].astype(np.int64)
    table["acquired_iteration"] = table["acquired_iteration"].astype("Int64")  # <NA>: not acquired
    return table


def scores(connection: sqlite3.Connection, iteration: int) -> pd.DataFrame:
    rows = connection.execute(
        "SELECT id_str, score, rank FROM scores WHERE iteration = ? ORDER BY rank", (int(iteration),)).fetchall()
    return pd.DataFrame(rows, columns=["id_str", "score", "rank"])


def is_done(connection: sqlite3.Connection, iteration: int, stage: str) -> bool:
    check_stage_name(stage)
    return connection.execute(
        "SELECT 1 FROM stages WHERE iteration = ? AND stage = ?", (int(iteration), stage)).fetchone() is not None


def stage_info(connection: sqlite3.Connection, iteration: int, stage: str) -> dict:
    check_stage_name(stage)
    row = connection.execute(
        "SELECT info, done_at FROM stages WHERE iteration = ? AND stage = ?", (int(iteration), stage)).fetchone()
    if row is None:
        raise PoolError(f"Stage '{stage}' of iteration {iteration} is not done, so it has no info; check "
                        "is_done() first.")
    return {**json.loads(row[0]), "done_at": row[1]}


def current_iteration(connection: sqlite3.Connection) -> int:
    """The first iteration (from 1) whose last stage is not done."""
    done = {r[0] for r in connection.execute("SELECT iteration FROM stages WHERE stage = ?", (LAST_STAGE,))}
    iteration = 1
    while iteration in done:
        iteration += 1
    return iteration
