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

The modules, in the order a campaign meets them:

    schema   the on-disk format: tables, guard triggers, format constants, opening a connection
    checks   the errors, and the validation of what callers pass in
    create   a new campaign file, validated and written at once
    state    PoolState: open, transactions, the stage order, and every public method
    queries  reads (functions of the connection)
    changes  writes: record scores, acquire, ingest labels
    report   the per-iteration history
    audit    check_invariants: every rule re-checked from outside

No TensorFlow, Keras or MLflow here: standard library sqlite3, numpy and pandas only.
"""

from zoobot.active.pool.changes import IngestReport
from zoobot.active.pool.checks import InvariantError, PoolError, as_ids
from zoobot.active.pool.queries import PoolCounts
from zoobot.active.pool.schema import (BUSY_TIMEOUT_S, FORMAT, FORMAT_VERSION, GALAXY_COLUMNS, IN_POOL, INITIAL,
                                       LAST_STAGE, RESERVED_META, STAGES)
from zoobot.active.pool.state import PoolState
from zoobot.core.votes import validate_votes  # one vote validator for the whole project (see zoobot.core.votes)

__all__ = [
    "BUSY_TIMEOUT_S", "FORMAT", "FORMAT_VERSION", "GALAXY_COLUMNS", "INITIAL", "IN_POOL", "LAST_STAGE",
    "RESERVED_META", "STAGES", "IngestReport", "InvariantError", "PoolCounts", "PoolError", "PoolState", "as_ids",
    "validate_votes",
]
