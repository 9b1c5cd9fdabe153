"""The history of a campaign: one row per started iteration, rebuilt from the galaxies table.

Nothing is stored for it: each galaxy's labelled and acquired iterations already say what every
iteration did, so the history cannot disagree with the bookkeeping.
"""

from __future__ import annotations

import sqlite3

import pandas as pd

from zoobot.active.pool.queries import counts, current_iteration
from zoobot.active.pool.schema import LAST_STAGE, STAGES

HISTORY_COLUMNS = ["iteration", "stages_done", "complete", "n_labelled_before", "n_scored", "n_acquired",
                   "n_ingested", "n_labelled", "n_awaiting", "n_pool", "finished_at"]


def history(connection: sqlite3.Connection) -> pd.DataFrame:
    """What each iteration scored, acquired and ingested, and the totals after it. Run it inside one snapshot."""
    current = current_iteration(connection)
    totals = counts(connection)
    acquired = _per_iteration(connection, "SELECT acquired_iteration, count(*) FROM galaxies "
                                          "WHERE acquired_iteration IS NOT NULL GROUP BY acquired_iteration")
    ingested = _per_iteration(connection, "SELECT labelled_iteration, count(*) FROM galaxies "
                                          "WHERE labelled_iteration >= 1 GROUP BY labelled_iteration")
    scored = _per_iteration(connection, "SELECT iteration, count(*) FROM scores GROUP BY iteration")
    stages: dict[int, dict[str, str]] = {}
    for iteration, stage, done_at in connection.execute("SELECT iteration, stage, done_at FROM stages"):
        stages.setdefault(iteration, {})[stage] = done_at
    records = []
    n_labelled, n_awaiting = totals.initial, 0
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
            "n_pool": totals.total - n_labelled - n_awaiting,
            "finished_at": done.get(LAST_STAGE),
        })
    return pd.DataFrame.from_records(records, columns=HISTORY_COLUMNS)


def _per_iteration(connection: sqlite3.Connection, query: str) -> dict[int, int]:
    return dict(connection.execute(query).fetchall())
