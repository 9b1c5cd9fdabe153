"""The on-disk format of a campaign: its tables, the triggers that guard them, and how to open one.

A campaign file written by any earlier Zoobot with the same FORMAT_VERSION must keep opening, so the
SQL text here is part of the format: change it only together with FORMAT_VERSION (and a migration).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
TABLE_NAMES = ("meta", "galaxies", "scores", "stages")

TABLES = f"""
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

TRIGGERS = {
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


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions begin only where this package says so (BEGIN IMMEDIATE).
    connection = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def create_tables(connection: sqlite3.Connection) -> None:
    """The empty tables and their guard triggers, inside the caller's transaction."""
    for statement in _statements(TABLES):
        connection.execute(statement)
    for statement in TRIGGERS.values():
        connection.execute(statement)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
