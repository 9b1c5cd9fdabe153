"""Where labels come from: the simulated oracle, Panoptes subject export, reduced-vote import."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoobot.data.manifest import Manifest, Split
from zoobot.active.oracle import OracleError, SimulatedOracle, export_subjects, read_reduced_votes
from zoobot.active.pool import PoolState
from zoobot.core.schema import Answer, Question, Schema

SCHEMA = Schema("tiny", id_column="objid", questions=(
    Question("smooth", (Answer("yes", "smooth_yes"), Answer("no", "smooth_no"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="smooth_no"),
))
LABEL_COLS = list(SCHEMA.label_cols)
IDS = [f"J{i:02d}0000.00+010000.0" for i in range(8)]  # DECaLS-like names: '+' and '.' in the id


@pytest.fixture
def labels() -> pd.DataFrame:
    counts = np.random.default_rng(0).integers(0, 30, (len(IDS), len(LABEL_COLS)))
    frame = pd.DataFrame(counts, columns=LABEL_COLS)
    frame.insert(0, "id_str", IDS)
    return frame


@pytest.fixture
def oracle_csv(tmp_path, labels) -> Path:
    path = tmp_path / "oracle.csv"
    labels.iloc[2:].to_csv(path, index=False)  # the pool: all but the first two
    return path


@pytest.fixture
def campaign(tmp_path, labels):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in IDS:
        (images / f"{i}.png").write_bytes(rng.bytes(64))
    galaxies = pd.DataFrame({"id_str": IDS, "image_path": [str(images / f"{i}.png") for i in IDS],
                             "ra": np.linspace(10, 20, len(IDS)), "dec": np.linspace(-5, 5, len(IDS))})
    with PoolState.create(tmp_path / "campaign.db", SCHEMA, galaxies, labels.iloc[:2]) as state:
        yield state
        state.check_invariants()


def acquire_first(state: PoolState, n: int) -> list[str]:
    for stage in ("train", "predict"):
        state.mark_done(1, stage, {})
    pool = state.pool_ids()
    state.record_scores(1, pool, np.linspace(1, 0, len(pool)))
    chosen = state.scores(1)["id_str"].head(n).tolist()
    state.acquire(1, chosen)
    return chosen


def write_votes(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reduced.csv"
    path.write_text(text)
    return path


# -- simulated oracle ----------------------------------------------------------------------------------

def test_simulated_oracle_reveals_held_out_labels_in_the_order_asked(oracle_csv, labels):
    oracle = SimulatedOracle(oracle_csv, LABEL_COLS)
    assert len(oracle) == 6 and IDS[3] in oracle and IDS[0] not in oracle
    revealed = oracle.reveal([IDS[5], IDS[2]])
    assert list(revealed.columns) == ["id_str", *LABEL_COLS]
    assert revealed["id_str"].tolist() == [IDS[5], IDS[2]]
    np.testing.assert_array_equal(revealed[LABEL_COLS].to_numpy(), labels[LABEL_COLS].to_numpy()[[5, 2]])
    assert revealed[LABEL_COLS].dtypes.eq(np.int64).all()


def test_simulated_oracle_names_the_ids_it_does_not_know(oracle_csv):
    oracle = SimulatedOracle(oracle_csv, LABEL_COLS)
    with pytest.raises(OracleError, match=r"has no labels for 2 of the 3 requested ids: \['J000000.00\+010000.0', "
                                          r"'nope'\].*same shards"):
        oracle.reveal([IDS[0], IDS[3], "nope"])
    with pytest.raises(OracleError, match="appear more than once"):
        oracle.reveal([IDS[3], IDS[3]])


def test_simulated_oracle_sets_aside_bad_rows_and_says_so(tmp_path, labels):
    path = tmp_path / "oracle.csv"
    labels.assign(bar_no=[1, 2, 3, -4, 5, 6, 7, 8]).to_csv(path, index=False)
    oracle = SimulatedOracle(path, LABEL_COLS)
    assert oracle.rejected["reason"].tolist() == ["'bar_no' is negative (-4); vote counts are >= 0"]
    assert len(oracle) == 7  # the good rows are all kept
    with pytest.raises(OracleError, match="1 of them were set aside as bad rows"):
        oracle.reveal([IDS[3]])


def test_simulated_oracle_file_problems(tmp_path, labels):
    path = tmp_path / "oracle.csv"
    labels.drop(columns="bar_yes").to_csv(path, index=False)
    with pytest.raises(OracleError, match=r"missing columns \['bar_yes'\]; it has \['id_str', 'smooth_yes', "
                                          r"'smooth_no', 'bar_no'\]"):
        SimulatedOracle(path, LABEL_COLS)
    with pytest.raises(OracleError, match="does not exist"):
        SimulatedOracle(tmp_path / "nothing.csv", LABEL_COLS)


def test_simulated_oracle_from_a_converted_folder(tmp_path, labels, oracle_csv):
    splits = {"train": Split("train", True, 2, ()), "pool": Split("pool", False, 6, ())}
    Manifest(schema=SCHEMA.to_dict(), image_shape=(8, 8, 3), image_encoding="raw", splits=splits, catalog={},
             config={}, oracle="oracle.csv").write(tmp_path)
    oracle = SimulatedOracle.from_manifest(Manifest.read(tmp_path))
    assert oracle.ids == IDS[2:] and oracle.label_cols == tuple(LABEL_COLS)
    no_pool = Manifest(schema=SCHEMA.to_dict(), image_shape=(8, 8, 3), image_encoding="raw", splits={}, catalog={},
                       config={}, root=tmp_path)
    with pytest.raises(OracleError, match="have no oracle file"):
        SimulatedOracle.from_manifest(no_pool)


# -- Panoptes subject export ------------------------------------------------------------------------------

def test_export_subjects_copies_images_and_writes_a_panoptes_manifest(tmp_path, campaign):
    chosen = acquire_first(campaign, 3)
    path = export_subjects(campaign, chosen, tmp_path / "upload", iteration=1)
    assert path == tmp_path / "upload" / "subjects_iteration_1.csv"
    manifest = pd.read_csv(path, dtype={"#id_str": str})
    assert list(manifest.columns) == ["image", "#id_str", "#iteration", "#acquisition_score", "ra", "dec"]
    assert manifest["#id_str"].tolist() == chosen
    assert manifest["#iteration"].tolist() == [1, 1, 1]
    scores = campaign.scores(1).set_index("id_str")["score"]
    np.testing.assert_allclose(manifest["#acquisition_score"], scores.loc[chosen])
    table = campaign.galaxies(chosen)
    np.testing.assert_allclose(manifest[["ra", "dec"]], table[["ra", "dec"]])
    for name, source in zip(manifest["image"], table["image_path"]):
        assert "/" not in name and name.endswith(".png")
        assert (path.parent / name).read_bytes() == Path(source).read_bytes()  # beside the manifest, as uploaded
    assert export_subjects(campaign, chosen, tmp_path / "upload", iteration=1) == path  # a rerun is harmless
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([*manifest["image"], path.name])


def test_export_refuses_galaxies_not_awaiting_labels_from_that_iteration(tmp_path, campaign):
    acquire_first(campaign, 2)
    not_acquired = campaign.pool_ids()[0]
    with pytest.raises(OracleError, match=re.escape(f"1 are not: ['{not_acquired} (still in the pool: not acquired)']. "
                                                   "Export state.awaiting_ids(1).")):
        export_subjects(campaign, [campaign.awaiting_ids()[0], not_acquired], tmp_path / "upload", 1)
    with pytest.raises(OracleError, match=re.escape(f"['{IDS[0]} (labelled before the campaign)']")):
        export_subjects(campaign, [IDS[0]], tmp_path / "upload", 1)
    with pytest.raises(OracleError, match=r"Cannot export: 1 ids are not in this campaign: \['ghost'\]"):
        export_subjects(campaign, ["ghost"], tmp_path / "upload", 1)
    assert not (tmp_path / "upload").exists()


def test_export_writes_nothing_when_an_image_is_missing(tmp_path, campaign):
    chosen = acquire_first(campaign, 3)
    missing = campaign.galaxies([chosen[1]]).loc[0, "image_path"]
    Path(missing).unlink()
    with pytest.raises(OracleError, match=re.escape(f"Cannot export 1 of 3 subjects: ['{chosen[1]}: {missing} not "
                                                   "found']. Nothing was written")):
        export_subjects(campaign, chosen, tmp_path / "upload", 1)
    assert not (tmp_path / "upload").exists()


def test_export_from_a_table_names_files_safely(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        (images / name).write_bytes(name.encode())
    frame = pd.DataFrame({"id_str": ["dir/x", "dir:x", "y"], "image_path": [str(images / "a.png")] * 2 + [
        str(images / "b.jpg")], "score": [0.5, 0.25, 0.125]})
    path = export_subjects(frame, ["y", "dir/x", "dir:x"], tmp_path / "out", iteration=4)
    manifest = pd.read_csv(path)
    assert list(manifest.columns) == ["image", "#id_str", "#iteration", "#acquisition_score"]  # no ra/dec known
    assert manifest["#acquisition_score"].tolist() == [0.125, 0.5, 0.25]
    names = manifest["image"].tolist()
    assert names[0] == "y.jpg" and len(set(names)) == 3
    assert all(n.startswith("dir_x_") and n.endswith(".png") for n in names[1:])  # clash resolved by a hash
    assert (tmp_path / "out" / names[0]).read_bytes() == b"b.jpg"


# -- reduced votes ---------------------------------------------------------------------------------------

def test_read_reduced_votes_keeps_good_rows_with_the_hidden_id(tmp_path):
    path = write_votes(tmp_path, "subject_id,#id_str,smooth_yes,smooth_no,bar_yes,bar_no,classifications\n"
                                 "101,J1,3,7,2,5,10\n102,00123,10,0,0,0,10\n")
    votes = read_reduced_votes(path, SCHEMA)
    assert votes.rejected.empty
    assert votes.votes["id_str"].tolist() == ["J1", "00123"]  # ids stay exact text
    assert votes.votes["row"].tolist() == [1, 2]
    assert votes.votes[LABEL_COLS].to_numpy().tolist() == [[3, 7, 2, 5], [10, 0, 0, 0]]


@pytest.mark.parametrize("row, reason", [
    ("J9,-1,4,0,0", "'smooth_yes' is negative (-1); vote counts are >= 0"),
    ("J9,,4,0,0", "'smooth_yes' is missing (NaN)"),
    ("J9,2.5,4,0,0", "'smooth_yes' is not a whole number (2.5); expected vote counts"),
    ("J9,lots,4,0,0", "'smooth_yes' is not a number: 'lots'"),
    ("J9,1,4,0,-3", "'bar_no' is negative (-3); vote counts are >= 0"),
    (",1,4,0,0", "missing id in column 'id_str'"),
    ("J1,1,4,0,0", "duplicate id 'J1' (rows 1, 3); keep one row per galaxy"),
])
def test_read_reduced_votes_sets_aside_each_bad_row_with_its_reason(tmp_path, row, reason):
    path = write_votes(tmp_path, f"id_str,{','.join(LABEL_COLS)}\nJ1,3,7,2,5\nJ2,1,1,0,1\n{row}\nJ3,0,9,9,0\n")
    votes = read_reduced_votes(path, SCHEMA)
    assert reason in votes.rejected["reason"].tolist()
    assert votes.rejected.loc[votes.rejected["reason"] == reason, "row"].tolist()[-1] == 3
    kept = votes.votes["id_str"].tolist()
    assert kept == (["J2", "J3"] if reason.startswith("duplicate") else ["J1", "J2", "J3"])  # good rows are never lost
    assert votes.votes[LABEL_COLS].dtypes.eq(np.int64).all()


def test_read_reduced_votes_missing_columns_is_an_error_for_the_whole_file(tmp_path):
    path = write_votes(tmp_path, "#id_str,smooth_yes,smooth_no,data.bar-yes\nJ1,1,2,3\n")
    with pytest.raises(OracleError) as error:
        read_reduced_votes(path, SCHEMA)
    message = str(error.value)
    assert "missing columns ['bar_yes', 'bar_no'] required by schema 'tiny'" in message
    assert "the file has ['#id_str', 'smooth_yes', 'smooth_no', 'data.bar-yes']" in message
    assert "Map the reducer's answer columns to the schema's with --labels-map" in message
    path = write_votes(tmp_path, f"subject_id,{','.join(LABEL_COLS)}\n1,1,2,3,4\n")
    with pytest.raises(OracleError, match=r"an id column \(one of \['id_str', '#id_str', 'objid'\]\)"):
        read_reduced_votes(path, SCHEMA)


def test_read_reduced_votes_accepts_the_schemas_id_column(tmp_path):
    path = write_votes(tmp_path, f"objid,{','.join(LABEL_COLS)}\n587722981741363294,1,2,3,4\n")
    votes = read_reduced_votes(path, SCHEMA)
    assert votes.votes["id_str"].tolist() == ["587722981741363294"]  # all 18 digits


def test_read_reduced_votes_file_problems(tmp_path):
    with pytest.raises(OracleError, match="does not exist"):
        read_reduced_votes(tmp_path / "none.csv", SCHEMA)
    with pytest.raises(OracleError, match="is empty; expected a CSV with a header row"):
        read_reduced_votes(write_votes(tmp_path, ""), SCHEMA)
    header_only = read_reduced_votes(write_votes(tmp_path, f"id_str,{','.join(LABEL_COLS)}\n"), SCHEMA)
    assert header_only.votes.empty and header_only.rejected.empty


def test_export_then_reduced_votes_then_ingest_round_trip(tmp_path, campaign, labels):
    """What a real-volunteer iteration does: the hidden '#id_str' carries each subject back to its galaxy."""
    chosen = acquire_first(campaign, 4)
    manifest = pd.read_csv(export_subjects(campaign, chosen, tmp_path / "upload", 1), dtype={"#id_str": str})
    truth = labels.set_index("id_str").loc[manifest["#id_str"]]
    reduced = truth.reset_index(drop=True).assign(**{"#id_str": manifest["#id_str"], "subject_id": range(4)})
    reduced.loc[3, "bar_yes"] = -1  # one subject's reduction went wrong
    path = tmp_path / "reduced.csv"
    reduced.to_csv(path, index=False)

    votes = read_reduced_votes(path, SCHEMA)
    report = campaign.ingest_labels(1, votes.votes)
    assert report.ingested == tuple(chosen[:3])
    assert votes.rejected["row"].tolist() == [4] and "'bar_yes' is negative" in votes.rejected.loc[0, "reason"]
    np.testing.assert_array_equal(campaign.labels(chosen[:3]), truth[LABEL_COLS].to_numpy()[:3])
    assert campaign.awaiting_ids() == [chosen[3]]  # still awaiting: its labels can arrive later


def test_a_labels_map_renames_the_reducers_columns_and_says_what_does_not_fit(tmp_path):
    from zoobot.active.oracle import read_column_map, read_vote_table

    path = write_votes(tmp_path, "galaxy,T0_a0,T0_a1,T1_a0,T1_a1,bar_yes\nJ1,1,2,3,4,99\n")
    inline = read_column_map("galaxy=id_str, T0_a0=smooth_yes,T0_a1=smooth_no,T1_a0=bar_yes,T1_a1=bar_no")
    yaml_file = tmp_path / "map.yaml"
    yaml_file.write_text("galaxy: id_str\nT0_a0: smooth_yes\nT0_a1: smooth_no\nT1_a0: bar_yes\nT1_a1: bar_no\n")
    assert read_column_map(str(yaml_file)) == inline
    table = read_vote_table(path, SCHEMA, inline)  # the file's own 'bar_yes' gives way to the mapped one
    assert table["id_str"].tolist() == ["J1"] and table[LABEL_COLS].to_numpy().tolist() == [[1, 2, 3, 4]]
    with pytest.raises(OracleError, match=r"does not have: \['T9'\]"):
        read_vote_table(path, SCHEMA, {"T9": "bar_no"})
    with pytest.raises(OracleError, match=r"targets \['bar_maybe'\] are not columns of schema 'tiny'"):
        read_vote_table(path, SCHEMA, {"T1_a1": "bar_maybe"})
    with pytest.raises(OracleError, match=r"several reducer columns map to \['bar_no'\]"):
        read_vote_table(path, SCHEMA, {"T1_a0": "bar_no", "T1_a1": "bar_no"})
    with pytest.raises(OracleError, match="must read 'reducer_column=schema_column'"):
        read_column_map("T0_a0:smooth_yes")
    with pytest.raises(OracleError, match="does not exist"):
        read_column_map(str(tmp_path / "nope.yaml"))
