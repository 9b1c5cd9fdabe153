"""The writes of a campaign: record scores, acquire galaxies, ingest their labels.

Each function runs inside a transaction that `PoolState` opened after checking the stage may
still change, and either writes all of its rows or raises (and the transaction undoes them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from zoobot.active.pool.checks import PoolError, listed, show, to_json, when_labelled
from zoobot.active.pool.queries import lookup
from zoobot.active.pool.schema import IN_POOL
from zoobot.core.votes import rejected_rows, validate_votes


@dataclass(frozen=True, eq=False)
class IngestReport:
    iteration: int
    ingested: tuple[str, ...]  # ids whose labels were stored, in input order
    rejected: pd.DataFrame = field(repr=False)  # row, id_str, reason (row: input `row` column or 1-based position)

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


# -- scores ---------------------------------------------------------------------------------------------

def score_values(ids: Sequence[str], scores) -> np.ndarray:
    """One finite float per id; raises PoolError naming the ids whose score is not."""
    values = np.asarray(scores, dtype=float)
    if values.shape != (len(ids),):
        raise PoolError(f"Expected one score per id ({len(ids)},); found scores of shape {values.shape}.")
    not_finite = [i for i, v in zip(ids, values) if not np.isfinite(v)]
    if not_finite:
        raise PoolError(f"Scores must be finite; {len(not_finite)} are NaN or infinite, for {show(not_finite)}. "
                        "Check the predictions of those galaxies.")
    return values


def record_scores(connection: sqlite3.Connection, iteration: int, ids: list[str], values: np.ndarray) -> None:
    """Replace the iteration's scores by these, ranked 1 = highest (ties keep the input order)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(1, len(ids) + 1)
    found = lookup(connection, ids, "labelled_iteration, acquired_iteration")
    unknown = [i for i in ids if i not in found]
    not_pool = [i for i in ids if i in found and (found[i][0] != IN_POOL or found[i][1] is not None)]
    problems = listed((unknown, "are not in this campaign"), (not_pool, "are labelled or awaiting labels"))
    if problems:
        raise PoolError(f"Scores are for pool galaxies only: {problems}. Score pool_ids(); nothing was recorded.")
    connection.execute("DELETE FROM scores WHERE iteration = ?", (iteration,))
    connection.executemany(
        "INSERT INTO scores (iteration, id_str, score, rank) VALUES (?, ?, ?, ?)",
        [(iteration, i, float(v), int(r)) for i, v, r in zip(ids, values, ranks)])


# -- acquiring ------------------------------------------------------------------------------------------

def acquire(connection: sqlite3.Connection, iteration: int, ids: list[str]) -> None:
    """Mark every one of `ids` acquired at `iteration`, or raise naming those that cannot be."""
    found = lookup(connection, ids, "labelled_iteration, acquired_iteration")
    unknown = [i for i in ids if i not in found]
    labelled = [f"{i} ({when_labelled(found[i][0])})" for i in ids if i in found and found[i][0] != IN_POOL]
    acquired = [f"{i} (at iteration {found[i][1]})" for i in ids
                if i in found and found[i][0] == IN_POOL and found[i][1] is not None]
    problems = listed((unknown, "are not in this campaign"), (labelled, "are already labelled"),
                      (acquired, "are already acquired and awaiting labels"))
    if problems:
        raise PoolError(f"Cannot acquire {len(ids)} galaxies at iteration {iteration}: {problems}. Nothing "
                        "was acquired; acquire only ids from pool_ids().")
    before = connection.total_changes
    connection.executemany(
        "UPDATE galaxies SET acquired_iteration = ? WHERE id_str = ? AND acquired_iteration IS NULL "
        f"AND labelled_iteration = {IN_POOL}", [(iteration, i) for i in ids])
    if connection.total_changes - before != len(ids):
        raise PoolError("The pool changed while acquiring (another writer?); nothing was acquired. Retry.")


# -- ingesting labels -----------------------------------------------------------------------------------

def valid_label_rows(labels: pd.DataFrame, label_cols: tuple[str, ...], schema_name: str,
                     iteration: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(good rows, rejected rows) judged on their own, before the campaign is consulted."""
    if not isinstance(labels, pd.DataFrame):
        raise PoolError(f"Expected labels as a DataFrame (id_str + label columns); found {type(labels).__name__}.")
    missing = [c for c in ("id_str", *label_cols) if c not in labels.columns]
    if missing:
        raise PoolError(
            f"Labels for iteration {iteration} are missing columns {missing} required by schema "
            f"'{schema_name}'; they have {list(labels.columns)[:40]}. Pass id_str plus the schema's label "
            "columns (read_reduced_votes and SimulatedOracle.reveal return that shape).")
    rows = labels["row"].to_numpy() if "row" in labels.columns else None
    return validate_votes(labels, label_cols, "id_str", rows)


def ingest(connection: sqlite3.Connection, iteration: int, good: pd.DataFrame, rejected: pd.DataFrame,
           label_cols: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Store the labels of the rows whose galaxy awaits labels; return (stored rows, all rejected rows)."""
    found = lookup(connection, good["id_str"].tolist(), "labelled_iteration, acquired_iteration")
    reasons = [_why_not_labellable(found.get(i)) for i in good["id_str"]]
    bad = np.array([bool(r) for r in reasons], dtype=bool)
    if bad.any():
        late = rejected_rows(good["row"].to_numpy()[bad], good["id_str"].to_numpy()[bad], [r for r in reasons if r])
        rejected = pd.concat([rejected, late], ignore_index=True) if len(rejected) else late
        good = good[~bad]
    updates = [(iteration, to_json([int(v) for v in counts], "labels"), i)
               for i, counts in zip(good["id_str"], good[list(label_cols)].to_numpy())]
    before = connection.total_changes
    connection.executemany(
        "UPDATE galaxies SET labelled_iteration = ?, labels = ? WHERE id_str = ? "
        f"AND labelled_iteration = {IN_POOL} AND acquired_iteration IS NOT NULL", updates)
    if connection.total_changes - before != len(updates):
        raise PoolError("The pool changed while ingesting (another writer?); nothing was ingested. Retry.")
    return good, rejected


def _why_not_labellable(found: tuple | None) -> str:
    """'' for a galaxy that awaits labels, else the reason its row is set aside."""
    if found is None:
        return "unknown id: not a galaxy of this campaign"
    labelled_iteration, acquired_iteration = found
    if labelled_iteration != IN_POOL:
        return f"already labelled ({when_labelled(labelled_iteration)}); a galaxy is never labelled twice"
    if acquired_iteration is None:
        return "not acquired: the galaxy is still in the pool; only acquired galaxies are labelled"
    return ""
