"""The audit of a campaign file: every rule its own code keeps, checked again from the outside.

The CHECK constraints and triggers of `schema.py` stop most mistakes as they happen; this finds
what they cannot: a file edited by hand or by another program (triggers dropped, checks switched
off), damaged pages, labels that are not vote counts, stages finished out of order. It reads only,
and names every broken rule at once rather than stopping at the first.
"""

from __future__ import annotations

import json
import sqlite3

from zoobot.active.pool.checks import show
from zoobot.active.pool.queries import current_iteration
from zoobot.active.pool.schema import IN_POOL, INITIAL, STAGES, TRIGGERS


def problems(connection: sqlite3.Connection, meta: dict, n_answers: int) -> list[str]:
    """Every broken rule, in words; empty when the campaign is consistent. Run it inside one snapshot."""
    found: list[str] = []
    found += _database_problems(connection, meta)
    found += _row_problems(connection)
    found += _label_problems(connection, n_answers)
    found += _stage_problems(connection)
    return found


def _database_problems(connection: sqlite3.Connection, meta: dict) -> list[str]:
    q = connection.execute
    found = []
    check = q("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        found.append(f"SQLite integrity check failed: {check}")
    if q("PRAGMA foreign_key_check").fetchall():
        found.append("scores refer to galaxies that do not exist")
    triggers = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    missing = sorted(set(TRIGGERS) - triggers)
    if missing:
        found.append(f"guard triggers {missing} are missing, so double labelling would go unnoticed")
    total, initial = q("SELECT count(*), coalesce(sum(split = 'train'), 0) FROM galaxies").fetchone()
    if total != meta["n_galaxies"]:
        found.append(f"the campaign was created with {meta['n_galaxies']} galaxies but has {total}: "
                     "galaxies were lost or added")
    if initial != meta["n_initial"]:
        found.append(f"the campaign was created with {meta['n_initial']} initially labelled galaxies "
                     f"but has {initial}")
    return found


def _row_rules(current: int) -> dict[str, str]:
    """Rule, in words -> SQL condition on a galaxy row that breaks it ('?' is the current iteration)."""
    return {
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


def _row_problems(connection: sqlite3.Connection) -> list[str]:
    current = current_iteration(connection)
    found = []
    for rule, where in _row_rules(current).items():
        args = (current, current) if "?" in where else ()
        ids = [r[0] for r in connection.execute(f"SELECT id_str FROM galaxies WHERE {where} LIMIT 11", args)]
        if ids:
            found.append(f"{rule}: {show(ids)}")
    bad_scores = connection.execute(
        "SELECT iteration FROM scores GROUP BY iteration HAVING max(rank) != count(*) OR min(rank) != 1").fetchall()
    if bad_scores:
        found.append(f"score ranks are not 1..n in iterations {[r[0] for r in bad_scores]}")
    return found


def _label_problems(connection: sqlite3.Connection, n_answers: int) -> list[str]:
    bad = [id_str for id_str, text in connection.execute("SELECT id_str, labels FROM galaxies WHERE labels IS NOT NULL")
           if not _are_vote_counts(text, n_answers)]
    return [f"labels are not {n_answers} non-negative whole vote counts for {show(bad)}"] if bad else []


def _are_vote_counts(text: str, n_answers: int) -> bool:
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return False
    return (isinstance(values, list) and len(values) == n_answers
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values))


def _stage_problems(connection: sqlite3.Connection) -> list[str]:
    current = current_iteration(connection)
    done: dict[int, set[str]] = {}
    for iteration, stage in connection.execute("SELECT iteration, stage FROM stages"):
        done.setdefault(iteration, set()).add(stage)
    found = []
    for iteration, stages in sorted(done.items()):
        if iteration > current:
            found.append(f"iteration {iteration} has finished stages {sorted(stages)} but iteration {current} "
                         "is not finished")
            continue
        prefix = [s for s in STAGES if s in stages]
        if prefix != list(STAGES[:len(prefix)]):
            found.append(f"iteration {iteration} finished stages {prefix} out of order {list(STAGES)}")
    return found
