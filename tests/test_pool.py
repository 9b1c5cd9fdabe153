"""The campaign database: bookkeeping, transactions, resuming after crashes, invariants."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoobot.data.manifest import Manifest, Split
from zoobot.active.pool import INITIAL, IN_POOL, STAGES, InvariantError, PoolError, PoolState, validate_votes
from zoobot.core.schema import Answer, Question, Schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Schema("tiny", (
    Question("smooth", (Answer("yes", "smooth_yes"), Answer("no", "smooth_no"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="smooth_no"),
))
LABEL_COLS = list(SCHEMA.label_cols)


def make_frames(n_initial: int = 4, n_pool: int = 16, seed: int = 0):
    """(galaxies, initial labels, held-out pool labels) of a small campaign."""
    rng = np.random.default_rng(seed)
    n = n_initial + n_pool
    ids = [f"G{i:03d}" for i in range(n)]
    galaxies = pd.DataFrame({
        "id_str": ids,
        "location": [f"shards/train_{i // 8:05d}.tfrecord" for i in range(n)],
        "image_path": [f"/images/{i}.png" for i in ids],
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-10, 30, n),
    })
    labels = pd.DataFrame(rng.integers(0, 20, (n, len(LABEL_COLS))), columns=LABEL_COLS)
    labels.insert(0, "id_str", ids)
    return galaxies, labels.iloc[:n_initial].reset_index(drop=True), labels.iloc[n_initial:].reset_index(drop=True)


@pytest.fixture
def frames():
    return make_frames()


def create(tmp_path: Path, frames) -> PoolState:
    galaxies, initial, _ = frames
    return PoolState.create(tmp_path / "campaign.db", SCHEMA, galaxies, initial, {"seed": 3, "arm": "bald"})


@pytest.fixture
def state(tmp_path, frames):
    with create(tmp_path, frames) as s:
        yield s
        s.check_invariants()  # every scenario ends in a consistent campaign


def reveal(oracle: pd.DataFrame, ids) -> pd.DataFrame:
    return oracle.set_index("id_str").loc[list(ids)].reset_index()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program's connection, for what the class would never do."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def finish_stages(state: PoolState, iteration: int, *stages: str) -> None:
    for stage in stages:
        state.mark_done(iteration, stage, {})


# -- creating and opening ------------------------------------------------------------------------------

def test_create_then_open_sees_the_same_campaign(tmp_path, frames):
    galaxies, initial, oracle = frames
    with create(tmp_path, frames) as state:
        assert state.counts().total == 20 and state.counts().initial == 4
        assert state.labelled_ids() == list(initial["id_str"])
        assert state.pool_ids() == list(oracle["id_str"])
        np.testing.assert_array_equal(state.labels(["G002", "G000"]), initial[LABEL_COLS].to_numpy()[[2, 0]])
    with PoolState.open(tmp_path / "campaign.db") as reopened:
        assert reopened.label_cols == tuple(LABEL_COLS)
        assert reopened.schema == SCHEMA
        assert reopened.meta["seed"] == 3 and reopened.meta["arm"] == "bald" and reopened.meta["n_galaxies"] == 20
        table = reopened.galaxies()
        assert list(table["labelled_iteration"]) == [INITIAL] * 4 + [IN_POOL] * 16
        assert list(table["split"]) == ["train"] * 4 + ["pool"] * 16
        assert table["acquired_iteration"].isna().all()
        np.testing.assert_allclose(table["ra"], galaxies["ra"])
        assert table.loc[5, "location"] == galaxies.loc[5, "location"]
        assert reopened.current_iteration() == 1
        assert reopened.history()["iteration"].tolist() == [1]
        assert reopened.check_invariants().pool == 16


def test_create_refuses_to_overwrite(tmp_path, frames):
    path = tmp_path / "campaign.db"
    path.write_text("my notes")
    with pytest.raises(PoolError, match="already exists; a campaign is never overwritten"):
        PoolState.create(path, SCHEMA, frames[0], frames[1])
    assert path.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir()] == ["campaign.db"]  # no temporary file left behind


def test_open_explains_what_is_wrong(tmp_path):
    with pytest.raises(PoolError, match="No campaign at .*missing.db.*PoolState.create"):
        PoolState.open(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, just some bytes" * 100)
    with pytest.raises(PoolError, match="is not a campaign database"):
        PoolState.open(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE runs (id INTEGER)")
    with pytest.raises(PoolError, match=r"SQLite database but not a campaign: it has tables \['runs'\]"):
        PoolState.open(other)


@pytest.mark.parametrize("change, message", [
    (lambda g, l: (pd.concat([g, g.iloc[[3]]]), l), r"ids appear more than once in `galaxies`: \['G003'\]"),
    (lambda g, l: (g, l.assign(id_str=["G000", "G001", "G002", "nope"])), r"labelled ids are not in `galaxies`: \['nope'\]"),
    (lambda g, l: (g, l.assign(bar_no=[1, -2, 3, 4])), r"row 2 \(G001\): 'bar_no' is negative"),
    (lambda g, l: (g, l.drop(columns="bar_yes")), r"`labelled` is missing columns \['bar_yes'\]"),
    (lambda g, l: (g.assign(split="validation"), l), r"splits \['validation'\]"),
    (lambda g, l: (g.assign(split="pool"), l), r"'train' galaxies must be exactly the labelled ones"),
    (lambda g, l: (g.iloc[:0], l), r"`galaxies` has no rows"),
])
def test_create_validates_its_input(tmp_path, frames, change, message):
    galaxies, initial = change(frames[0], frames[1])
    with pytest.raises(PoolError, match=message):
        PoolState.create(tmp_path / "c.db", SCHEMA, galaxies, initial)
    assert not (tmp_path / "c.db").exists()


def test_meta_must_be_json_and_not_reserved(tmp_path, frames):
    with pytest.raises(PoolError, match=r"keys \['schema'\] are reserved"):
        PoolState.create(tmp_path / "a.db", SCHEMA, frames[0], frames[1], {"schema": "mine"})
    with pytest.raises(PoolError, match="must be JSON-serialisable"):
        PoolState.create(tmp_path / "b.db", SCHEMA, frames[0], frames[1], {"started": object()})


# -- acquiring -------------------------------------------------------------------------------------------

def test_acquired_galaxies_leave_the_pool_and_await_labels(state):
    state.acquire(1, ["G010", "G005"])
    assert "G010" not in state.pool_ids() and len(state.pool_ids()) == 14
    assert state.awaiting_ids() == ["G005", "G010"] == state.acquired_ids(1)
    assert state.counts() == type(state.counts())(total=20, initial=4, labelled=4, awaiting=2, pool=14)
    with pytest.raises(PoolError, match=r"1 are not labelled yet \['G005'\]"):
        state.labels(["G005"])


def test_acquire_refuses_labelled_acquired_and_unknown_ids_all_or_nothing(state):
    state.acquire(1, ["G004"])
    with pytest.raises(PoolError) as error:
        state.acquire(1, ["G006", "G001", "G004", "X99", "G007"])
    message = str(error.value)
    assert "1 are not in this campaign ['X99']" in message
    assert "1 are already labelled ['G001 (initial labelled set)']" in message
    assert "1 are already acquired and awaiting labels ['G004 (at iteration 1)']" in message
    assert "Nothing was acquired" in message
    assert state.awaiting_ids() == ["G004"]  # G006 and G007 were fine but are not acquired either
    with pytest.raises(PoolError, match=r"appear more than once: \['G008'\]"):
        state.acquire(1, ["G008", "G008"])
    with pytest.raises(PoolError, match="single string"):
        state.acquire(1, "G008")


def test_the_database_itself_forbids_double_labelling_and_acquiring(state):
    state.acquire(1, ["G004"])
    with raw(state.path) as other:
        with pytest.raises(sqlite3.IntegrityError, match="never labelled twice"):
            other.execute("UPDATE galaxies SET labels = '[1,1,1,1]' WHERE id_str = 'G000'")
        with pytest.raises(sqlite3.IntegrityError, match="never acquired twice"):
            other.execute("UPDATE galaxies SET acquired_iteration = 2 WHERE id_str = 'G004'")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            other.execute("DELETE FROM galaxies WHERE id_str = 'G010'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint"):
            other.execute("UPDATE galaxies SET labels = '[1,1,1,1]' WHERE id_str = 'G010'")


# -- ingesting labels ------------------------------------------------------------------------------------

def test_ingest_labels_stores_good_rows_and_sets_aside_each_bad_one_with_its_reason(state, frames):
    oracle = frames[2]
    state.acquire(1, ["G004", "G005", "G006", "G007", "G008", "G009", "G010", "G011"])
    good = reveal(oracle, ["G004", "G005"])
    bad = pd.DataFrame([
        ["X99", 1, 2, 3, 4],        # unknown
        ["G012", 1, 2, 3, 4],       # never acquired
        ["G001", 1, 2, 3, 4],       # initially labelled
        ["G006", -1, 2, 3, 4],      # negative
        ["G007", np.nan, 2, 3, 4],  # NaN
        ["G008", 1.5, 2, 3, 4],     # fractional
        ["G009", 1, 2, 3, 4],       # duplicate...
        ["G009", 1, 2, 3, 5],       # ...id
        [None, 1, 2, 3, 4],         # no id
    ], columns=["id_str", *LABEL_COLS])
    report = state.ingest_labels(1, pd.concat([good, bad], ignore_index=True))
    assert report.ingested == ("G004", "G005")
    reasons = dict(zip(report.rejected["row"], report.rejected["reason"]))
    assert list(report.rejected.columns) == ["row", "id_str", "reason"]
    assert reasons[3] == "unknown id: not a galaxy of this campaign"
    assert reasons[4].startswith("not acquired: the galaxy is still in the pool")
    assert reasons[5].startswith("already labelled (initial labelled set)")
    assert reasons[6] == "'smooth_yes' is negative (-1); vote counts are >= 0"
    assert reasons[7] == "'smooth_yes' is missing (NaN)"
    assert reasons[8] == "'smooth_yes' is not a whole number (1.5); expected vote counts"
    assert reasons[9] == reasons[10] == "duplicate id 'G009' (rows 9, 10); keep one row per galaxy"
    assert reasons[11] == "missing id in column 'id_str'"
    assert report.n_rejected == 9 and "ingested labels of 2 galaxies; set aside 9 rows" in report.summary()
    np.testing.assert_array_equal(state.labels(["G005", "G004"]), good[LABEL_COLS].to_numpy()[::-1])
    table = state.galaxies(["G004", "G006"])
    assert list(table["labelled_iteration"]) == [1, IN_POOL]
    assert set(state.awaiting_ids()) == {"G006", "G007", "G008", "G009", "G010", "G011"}


def test_a_galaxy_is_never_labelled_twice(state, frames):
    state.acquire(1, ["G004"])
    state.ingest_labels(1, reveal(frames[2], ["G004"]))
    finish_stages(state, 1, *STAGES)
    report = state.ingest_labels(2, reveal(frames[2], ["G004"]).assign(smooth_yes=99))
    assert report.ingested == ()
    assert report.rejected["reason"].tolist() == ["already labelled (at iteration 1); a galaxy is never labelled twice"]
    assert state.labels(["G004"])[0, 0] == frames[2].set_index("id_str").loc["G004", "smooth_yes"]


def test_ingest_without_label_columns_is_an_error_for_the_whole_table(state):
    with pytest.raises(PoolError, match=r"missing columns \['bar_yes', 'bar_no'\] required by schema 'tiny'; "
                                        r"they have \['id_str', 'smooth_yes', 'smooth_no'\]"):
        state.ingest_labels(1, pd.DataFrame({"id_str": ["G004"], "smooth_yes": [1], "smooth_no": [2]}))


def test_validate_votes_accepts_whole_floats_and_text_numbers():
    frame = pd.DataFrame({"id_str": ["a", "b", "c"], "n": ["3", " 4 ", "four"], "m": [1.0, 2.0, 3.0]})
    good, rejected = validate_votes(frame, ["n", "m"])
    assert good["id_str"].tolist() == ["a", "b"] and good["n"].tolist() == [3, 4] and good["m"].dtype == np.int64
    assert rejected["reason"].tolist() == ["'n' is not a number: 'four'"]


# -- scores ------------------------------------------------------------------------------------------------

def test_record_scores_ranks_and_a_rerun_replaces_the_iteration(state):
    pool = state.pool_ids()
    state.record_scores(1, pool, np.arange(len(pool), dtype=float))
    state.record_scores(1, pool[:3], [0.1, 0.9, 0.5])  # a rerun after a crash
    scores = state.scores(1)
    assert scores["id_str"].tolist() == [pool[1], pool[2], pool[0]]
    assert scores["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(scores["score"], [0.9, 0.5, 0.1])
    with pytest.raises(PoolError, match=r"1 are labelled or awaiting labels \['G000'\]"):
        state.record_scores(1, ["G000"], [1.0])
    with pytest.raises(PoolError, match=r"Scores must be finite; 1 are NaN or infinite, for \['G005'\]"):
        state.record_scores(1, ["G004", "G005"], [1.0, np.nan])
    with pytest.raises(PoolError, match=r"one score per id \(2,\); found scores of shape \(3,\)"):
        state.record_scores(1, ["G004", "G005"], [1.0, 2.0, 3.0])
    assert len(state.scores(1)) == 3  # failed calls changed nothing
    finish_stages(state, 1, "train", "predict", "acquire")
    with pytest.raises(PoolError, match="Stage 'acquire' of iteration 1 is already done"):
        state.record_scores(1, pool[:3], [1.0, 2.0, 3.0])


# -- transactions ------------------------------------------------------------------------------------------

def inject_failure(path: Path, table: str, event: str, id_str: str) -> None:
    """Make the database fail one row of a multi-row write, as a full disk or a bug would."""
    with raw(path) as other:
        other.execute(f"CREATE TRIGGER injected BEFORE {event} ON {table} WHEN NEW.id_str = '{id_str}' "
                      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


def remove_failure(path: Path) -> None:
    with raw(path) as other:
        other.execute("DROP TRIGGER injected")


def test_a_failure_mid_way_through_a_write_leaves_no_partial_writes(state, frames):
    pool = state.pool_ids()
    state.record_scores(1, pool, np.linspace(0, 1, len(pool)))
    before = state.scores(1)

    inject_failure(state.path, "scores", "INSERT", pool[-1])  # the last row of the rewrite
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        state.record_scores(1, pool, np.ones(len(pool)))
    pd.testing.assert_frame_equal(state.scores(1), before)  # the DELETE of the old scores was undone too
    remove_failure(state.path)

    inject_failure(state.path, "galaxies", "UPDATE", "G010")
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        state.acquire(1, ["G004", "G005", "G010", "G011"])
    assert state.awaiting_ids() == []
    remove_failure(state.path)

    state.acquire(1, ["G004", "G005", "G006"])
    inject_failure(state.path, "galaxies", "UPDATE OF labels", "G006")
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        state.ingest_labels(1, reveal(frames[2], ["G004", "G005", "G006"]))
    remove_failure(state.path)
    assert state.n_labelled() == 4 and state.awaiting_ids() == ["G004", "G005", "G006"]


def test_an_exception_inside_a_stage_undoes_all_of_its_writes(state):
    with pytest.raises(RuntimeError, match="killed"):
        with state.stage(1, "train") as info:
            info["model"] = "runs:/abc"
            raise RuntimeError("killed")
    assert not state.is_done(1, "train")
    finish_stages(state, 1, "train", "predict")
    with pytest.raises(RuntimeError):
        with state.stage(1, "acquire"):
            state.record_scores(1, ["G004", "G005"], [1.0, 2.0])
            state.acquire(1, ["G004", "G005"])
            raise RuntimeError("killed")
    assert state.awaiting_ids() == [] and state.scores(1).empty and not state.is_done(1, "acquire")


def test_a_failed_call_inside_a_transaction_undoes_only_its_own_writes(state):
    inject_failure(state.path, "galaxies", "UPDATE", "G010")
    with state.transaction():
        state.acquire(1, ["G004"])
        with pytest.raises(sqlite3.IntegrityError):
            state.acquire(1, ["G005", "G010"])  # G005 is written, then undone at its savepoint
        state.acquire(1, ["G006"])
    remove_failure(state.path)
    assert state.awaiting_ids() == ["G004", "G006"]


def test_another_connection_sees_committed_state_only(state):
    other = PoolState.open(state.path)
    try:
        with state.transaction():
            state.acquire(1, ["G004", "G005"])
            assert other.awaiting_ids() == []  # not committed yet; readers are not blocked (WAL)
        assert other.awaiting_ids() == ["G004", "G005"]
        state.mark_done(1, "train", {"model": "m1"})
        assert other.stage_info(1, "train")["model"] == "m1"
    finally:
        other.close()
    script = ("import json, sys; from zoobot.active.pool import PoolState; s = PoolState.open(sys.argv[1]); "
              "print(json.dumps([s.awaiting_ids(), s.current_iteration(), s.is_done(1, 'train')]))")
    result = subprocess.run([sys.executable, "-c", script, str(state.path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [["G004", "G005"], 1, True]


# -- stages -------------------------------------------------------------------------------------------------

def test_stages_finish_in_order_and_the_last_one_starts_the_next_iteration(state):
    assert state.current_iteration() == 1 and state.next_stage() == (1, "train")
    with pytest.raises(PoolError, match=r"earlier stages \['train', 'predict'\] are not done"):
        state.mark_done(1, "acquire", {})
    with pytest.raises(PoolError, match=r"Unknown stage 'score'; the stages of an iteration are \['train'"):
        state.mark_done(1, "score", {})
    with pytest.raises(PoolError, match="Iteration 2 is not started"):
        state.mark_done(2, "train", {})
    state.mark_done(1, "train", {"model_uri": "runs:/1/model", "loss": 1.5})
    assert state.stage_info(1, "train")["model_uri"] == "runs:/1/model"
    assert state.is_done(1, "train") and not state.is_done(1, "predict")
    with pytest.raises(PoolError, match="Stage 'train' of iteration 1 is already done"):
        state.mark_done(1, "train", {})
    with pytest.raises(PoolError, match="is not done, so it has no info"):
        state.stage_info(1, "predict")
    finish_stages(state, 1, "predict", "acquire", "request")
    assert state.current_iteration() == 1 and state.next_stage() == (1, "ingest")
    state.mark_done(1, "ingest", {})
    assert state.current_iteration() == 2 and state.next_stage() == (2, "train")
    with pytest.raises(PoolError, match="Iteration 1 is finished; the campaign is at iteration 2"):
        state.acquire(1, ["G004"])
    with pytest.raises(PoolError, match="Iterations are whole numbers from 1; found 0"):
        state.acquire(0, ["G004"])
    with pytest.raises(PoolError, match="JSON-serialisable"):
        state.mark_done(2, "train", {"model": object()})


def test_history_counts_each_iteration(state, frames):
    for iteration, batch, labelled in ((1, ["G004", "G005", "G006"], ["G004", "G005"]), (2, ["G007"], ["G006"])):
        finish_stages(state, iteration, "train", "predict")
        state.record_scores(iteration, state.pool_ids(), np.arange(len(state.pool_ids()), dtype=float))
        state.acquire(iteration, batch)
        state.ingest_labels(iteration, reveal(frames[2], labelled))
        finish_stages(state, iteration, "acquire", "request", "ingest")
    history = state.history()
    assert history["iteration"].tolist() == [1, 2, 3]
    assert history["complete"].tolist() == [True, True, False]
    assert history["n_labelled_before"].tolist() == [4, 6, 7]
    assert history["n_scored"].tolist() == [16, 13, 0]
    assert history["n_acquired"].tolist() == [3, 1, 0]
    assert history["n_ingested"].tolist() == [2, 1, 0]
    assert history["n_labelled"].tolist() == [6, 7, 7]
    assert history["n_awaiting"].tolist() == [1, 1, 1]
    assert history["n_pool"].tolist() == [13, 12, 12]
    assert history.loc[0, "stages_done"] == ",".join(STAGES) and history.loc[2, "stages_done"] == ""
    assert state.awaiting_ids() == ["G007"]


# -- resuming after a crash -------------------------------------------------------------------------------

class Crash(Exception):
    pass


def run_campaign(state: PoolState, oracle: pd.DataFrame, folder: Path, crash_at: str | None = None,
                 n_iterations: int = 3, batch: int = 3) -> None:
    """The active-learning loop as a driver runs it: every stage not yet done, in order."""
    def point(name: str, iteration: int) -> None:
        if name == crash_at and iteration == 2:
            raise Crash(name)

    while (iteration := state.current_iteration()) <= n_iterations:
        if not state.is_done(iteration, "train"):
            state.mark_done(iteration, "train", {"n_train": state.n_labelled()})
            point("after_train", iteration)
        if not state.is_done(iteration, "predict"):
            pool = state.pool_ids()
            # Stands in for an acquisition function: depends on the galaxy and on what is labelled.
            scores = [(int(i[1:]) * 7919 + state.n_labelled() * 31) % 101 for i in pool]
            state.record_scores(iteration, pool, scores)
            point("after_scores", iteration)
            state.mark_done(iteration, "predict", {"n_scored": len(pool)})
            point("after_predict", iteration)
        if not state.is_done(iteration, "acquire"):
            with state.stage(iteration, "acquire") as info:
                chosen = state.scores(iteration)["id_str"].head(batch).tolist()
                state.acquire(iteration, chosen)
                info["n_acquired"] = len(chosen)
                point("in_acquire", iteration)
            point("after_acquire", iteration)
        if not state.is_done(iteration, "request"):
            votes = folder / f"votes_{iteration}.csv"
            reveal(oracle, state.awaiting_ids(iteration)).to_csv(votes, index=False)
            state.mark_done(iteration, "request", {"votes": str(votes)})
            point("after_request", iteration)
        if not state.is_done(iteration, "ingest"):
            votes = pd.read_csv(state.stage_info(iteration, "request")["votes"], dtype={"id_str": str})
            with state.stage(iteration, "ingest") as info:
                info["n_ingested"] = state.ingest_labels(iteration, votes).n_ingested
                point("in_ingest", iteration)
            point("after_ingest", iteration)


def outcome(state: PoolState) -> tuple:
    table = state.galaxies()
    history = state.history().drop(columns="finished_at")
    table["acquired_iteration"] = table["acquired_iteration"].fillna(0).astype(int)
    return (table[["id_str", "labelled_iteration", "acquired_iteration"]].to_dict("list"),
            state.labels(state.labelled_ids()).tolist(), history.to_dict("list"),
            [state.scores(i).to_dict("list") for i in (1, 2, 3)])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    frames = make_frames()
    with PoolState.create(folder / "campaign.db", SCHEMA, frames[0], frames[1]) as s:
        run_campaign(s, frames[2], folder)
        s.check_invariants()
        return outcome(s)


@pytest.mark.parametrize("crash_at", ["after_train", "after_scores", "after_predict", "in_acquire", "after_acquire",
                                      "after_request", "in_ingest", "after_ingest"])
def test_resuming_after_a_crash_at_any_stage_boundary_gives_the_uninterrupted_result(
        tmp_path, frames, uninterrupted, crash_at):
    path = tmp_path / "campaign.db"
    state = PoolState.create(path, SCHEMA, frames[0], frames[1])
    with pytest.raises(Crash):
        run_campaign(state, frames[2], tmp_path, crash_at=crash_at)
    state.close()  # the process is gone; a new one opens the file

    with PoolState.open(path) as resumed:
        resumed.check_invariants()
        if crash_at == "in_acquire":  # the stage's acquisitions were rolled back with it
            assert not resumed.is_done(2, "acquire") and resumed.acquired_ids(2) == []
        if crash_at == "in_ingest":
            assert not resumed.is_done(2, "ingest") and resumed.history()["n_ingested"].tolist()[1] == 0
        if crash_at == "after_acquire":
            assert resumed.next_stage() == (2, "request") and len(resumed.awaiting_ids(2)) == 3
        run_campaign(resumed, frames[2], tmp_path)
        resumed.check_invariants()
        assert outcome(resumed) == uninterrupted
        assert resumed.n_labelled() == 4 + 3 * 3


# -- invariants ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("corrupt, message", [
    ("DROP TRIGGER galaxies_labelled_once", r"guard triggers \['galaxies_labelled_once'\] are missing"),
    ("DROP TRIGGER galaxies_never_deleted; DELETE FROM galaxies WHERE id_str = 'G019'",
     "created with 20 galaxies but has 19: galaxies were lost"),
    ("DROP TRIGGER galaxies_labelled_once; UPDATE galaxies SET labels = NULL WHERE id_str = 'G000'",
     r"labels present without labelled_iteration, or labelled_iteration without labels: \['G000'\]"),
    ("UPDATE galaxies SET labelled_iteration = 1 WHERE id_str = 'G012'",
     r"labelled at an iteration without being acquired at or before it: \['G012'\]"),
    ("DROP TRIGGER galaxies_labelled_once; UPDATE galaxies SET labels = '[1, 2]' WHERE id_str = 'G001'",
     r"labels are not 4 non-negative whole vote counts for \['G001'\]"),
    ("UPDATE galaxies SET acquired_iteration = 5 WHERE id_str = 'G013'",
     r"acquired in an iteration after the current one \(1\): \['G013'\]"),
    ("INSERT INTO stages VALUES (1, 'acquire', 'now', '{}')", r"iteration 1 finished stages \['acquire'\] out of order"),
    ("INSERT INTO scores VALUES (1, 'G010', 0.5, 2)", r"score ranks are not 1..n in iterations \[1\]"),
])
def test_check_invariants_names_what_another_program_broke(tmp_path, frames, corrupt, message):
    with create(tmp_path, frames) as state:
        state.check_invariants()
        with raw(state.path) as other:
            other.execute("PRAGMA ignore_check_constraints = ON")  # as a careless tool might
            for statement in corrupt.split(";"):
                other.execute(statement)
        with pytest.raises(InvariantError, match=message):
            state.check_invariants()


# -- a real SIGKILL ---------------------------------------------------------------------------------------
# The writer runs in its own process and, at the chosen point inside a transaction, says so on stdout and
# waits for a stdin line that never comes; the test kills it as soon as it reads that line. So the kill
# always lands inside the transaction, on a fast machine or a loaded one; no sleep decides where.

WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np, pandas as pd
    from zoobot.active.pool import PoolState

    path, pause_at, pause_iteration, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def pause(where):
        print(where, flush=True)
        sys.stdin.readline()  # the test sends nothing: it kills this process
        os._exit(3)  # stdin closed without a kill: end without committing

    def pause_mid_update(connection, n_rows):
        # SQLite calls the handler every 100 steps of its VM, here inside the UPDATE's executemany.
        start = connection.total_changes
        def handler():
            if connection.total_changes - start >= n_rows:
                pause(f"{n_rows} rows updated")
            return 0
        connection.set_progress_handler(handler, 100)

    def pausing(stage, it):
        if it == pause_iteration and pause_at == f"{stage}_update":
            pause_mid_update(state._connection, batch // 2)  # the one hook a test needs from inside

    state = PoolState.open(path)
    while state.pool_ids():
        it = state.current_iteration()
        print(f"iteration {it}", flush=True)
        for stage in ("train", "predict"):
            if not state.is_done(it, stage):
                state.mark_done(it, stage, {})
        if not state.is_done(it, "acquire"):
            chosen = state.pool_ids()[:batch]
            with state.stage(it, "acquire") as info:
                pausing("acquire", it)
                state.acquire(it, chosen)
                info["n_acquired"] = len(chosen)
        if not state.is_done(it, "request"):
            state.mark_done(it, "request", {})
        ids = state.awaiting_ids(it)
        votes = pd.DataFrame({"id_str": ids, **{c: np.arange(len(ids)) % 7 for c in state.label_cols}})
        with state.stage(it, "ingest") as info:
            if it == pause_iteration and pause_at == "between_ingest_calls":
                state.ingest_labels(it, votes.iloc[: len(ids) // 2])
                pause("half ingested")
            pausing("ingest", it)
            state.ingest_labels(it, votes)
    print("finished", flush=True)
""")
WATCHDOG_S = 600  # only for a writer that never reaches its pause: the test then fails instead of hanging


def assert_write_locked(path: Path) -> None:
    """Another connection cannot start writing: the writer is inside a transaction."""
    with raw(path) as other:
        other.execute("PRAGMA busy_timeout = 0")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")


def kill_writer(path: Path, pause_at: str, iteration: int, batch: int, wait_for: str) -> None:
    script = path.parent / "writer.py"
    script.write_text(WRITER)
    process = subprocess.Popen([sys.executable, str(script), str(path), pause_at, str(iteration), str(batch)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    watchdog = threading.Timer(WATCHDOG_S, process.kill)
    watchdog.start()
    try:
        while (line := process.stdout.readline().strip()) != wait_for:
            assert line and line != "finished", f"writer ended before '{wait_for}': {process.stderr.read()[-2000:]}"
        assert_write_locked(path)
        process.kill()  # SIGKILL: no cleanup, no rollback in Python
    finally:
        watchdog.cancel()
        process.kill()
        process.wait(timeout=30)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
    assert process.returncode == -9


def big_campaign(path: Path, n_pool: int) -> None:
    galaxies, initial, _ = make_frames(n_initial=10, n_pool=n_pool, seed=1)
    PoolState.create(path, SCHEMA, galaxies, initial).close()


def assert_each_iteration_all_or_nothing(state: PoolState, batch: int) -> None:
    state.check_invariants()
    for row in state.history().itertuples():
        assert row.n_acquired == (batch if state.is_done(row.iteration, "acquire") else 0), row
        assert row.n_ingested == (batch if state.is_done(row.iteration, "ingest") else 0), row


def test_sigkill_in_the_middle_of_an_ingest_transaction_leaves_no_trace_of_it(tmp_path):
    path, batch = tmp_path / "campaign.db", 4000
    big_campaign(path, n_pool=20_000)
    kill_writer(path, "between_ingest_calls", 2, batch, wait_for="half ingested")
    with PoolState.open(path) as state:
        assert_each_iteration_all_or_nothing(state, batch)
        assert state.current_iteration() == 2 and state.next_stage() == (2, "ingest")
        assert len(state.awaiting_ids(2)) == batch and state.n_labelled() == 10 + batch
        votes = pd.DataFrame({"id_str": state.awaiting_ids(2), **{c: 1 for c in LABEL_COLS}})
        with state.stage(2, "ingest"):
            assert state.ingest_labels(2, votes).n_ingested == batch  # the resumed run ingests them all
        assert_each_iteration_all_or_nothing(state, batch)


@pytest.mark.parametrize("stage", ["acquire", "ingest"])
def test_sigkill_half_way_through_an_update_statement_keeps_every_iteration_all_or_nothing(tmp_path, stage):
    path, batch = tmp_path / "campaign.db", 2000
    big_campaign(path, n_pool=20_000)
    kill_writer(path, f"{stage}_update", 3, batch, wait_for=f"{batch // 2} rows updated")
    with PoolState.open(path) as state:
        assert_each_iteration_all_or_nothing(state, batch)
        assert state.next_stage() == (3, stage)  # iterations 1 and 2 finished; 3 resumes at the killed stage
        assert len(state.acquired_ids(3)) == (0 if stage == "acquire" else batch)
        assert state.n_labelled() == 10 + 2 * batch


# -- from a converted shard folder --------------------------------------------------------------------------

def converted_folder(tmp_path: Path) -> Path:
    """What `convert` leaves behind, minus the TFRecords: manifest.json, galaxies.csv, oracle.csv."""
    folder = tmp_path / "shards"
    folder.mkdir()
    galaxies, initial, oracle = make_frames(n_initial=3, n_pool=5)
    index = galaxies[["id_str", "image_path", "ra", "dec"]].assign(split=["train"] * 3 + ["pool"] * 5)
    index = pd.concat([index, pd.DataFrame({"id_str": ["V1", "T1"], "image_path": ["/v.png", "/t.png"], "ra": 1.0,
                                            "dec": 2.0, "split": ["validation", "test"]})])
    index[["id_str", "split", "image_path", "ra", "dec"]].to_csv(folder / "galaxies.csv", index=False)
    oracle.to_csv(folder / "oracle.csv", index=False)
    splits = {name: Split(name, name != "pool", count, ()) for name, count in
              (("train", 3), ("validation", 1), ("test", 1), ("pool", 5))}
    Manifest(schema=SCHEMA.to_dict(), image_shape=(8, 8, 3), image_encoding="raw", splits=splits, catalog={},
             config={}, oracle="oracle.csv", created="2026-01-01T00:00:00+00:00").write(folder)
    return folder


def test_from_manifest_builds_the_campaign_from_train_and_pool(tmp_path):
    manifest = Manifest.read(converted_folder(tmp_path))
    _, initial, _ = make_frames(n_initial=3, n_pool=5)
    with PoolState.from_manifest(tmp_path / "c.db", manifest, initial, {"arm": "random"}) as state:
        assert state.labelled_ids() == ["G000", "G001", "G002"]
        assert state.pool_ids() == ["G003", "G004", "G005", "G006", "G007"]
        assert state.meta["shards"] == str(manifest.root) and state.meta["arm"] == "random"
        assert state.galaxies(["G004"]).loc[0, "location"] == "/images/G004.png"
        assert state.schema == SCHEMA
        state.check_invariants()
    with pytest.raises(PoolError, match=r"1 are missing \['G002'\], 1 are not train galaxies \['G003'\]"):
        PoolState.from_manifest(tmp_path / "d.db", manifest, initial.assign(id_str=["G000", "G001", "G003"]))
