"""A campaign with real volunteers, as an astronomer runs it: a labelled catalog and a separate catalog
of galaxies nobody has classified, converted together (`mlflow run -e convert -P pool_catalog=...`);
week 1 trains, acquires and exports a Panoptes subject set, then stops and says what to do next; week 2
ingests the reduced votes (named the reducer's way, mapped by a YAML file), then trains again and
exports the next subject set. The votes come from a file the test writes, as a reducer would."""

import os
import subprocess

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY_MODEL, VENV_BIN
from zoobot.active.pool import PoolState
from zoobot.core.schema import load_schema
from zoobot.data.simulate import SimulateConfig, simulate_survey

pytestmark = pytest.mark.slow


def environment(tracking_uri):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}


@pytest.fixture(scope="module")
def two_catalogs(tmp_path_factory):
    """(labelled catalog, unclassified catalog, the truth): 30 galaxies with votes, 30 without any."""
    root = tmp_path_factory.mktemp("volunteers")
    survey = simulate_survey(SimulateConfig(output_dir=str(root / "survey"), n_galaxies=60, image_size=32, workers=1))
    catalog = pd.read_csv(survey.catalog_path, dtype={"iauname": str})
    schema = load_schema("decals")
    labelled, unclassified = catalog.iloc[:30], catalog.iloc[30:].copy()
    unclassified[list(schema.label_cols)] = float("nan")  # the columns may be there, empty
    paths = root / "survey" / "labelled.csv", root / "survey" / "unclassified.csv"
    labelled.to_csv(paths[0], index=False)
    unclassified.to_csv(paths[1], index=False)
    return paths[0], paths[1], catalog.set_index("iauname")


def test_two_weeks_with_volunteers_from_a_labelled_and_an_unclassified_catalog(two_catalogs, tmp_path):
    labelled, unclassified, truth = two_catalogs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = environment(uri)
    shards = tmp_path / "shards"
    converted = subprocess.run(
        [str(VENV_BIN / "mlflow"), "run", str(ROOT), "-e", "convert", "--env-manager", "local", "--experiment-name",
         "volunteers", "-P", f"catalog={labelled}", "-P", f"pool_catalog={unclassified}", "-P", f"output_dir={shards}",
         "-P", "image_size=32", "-P", "workers=1"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert converted.returncode == 0, converted.stdout[-3000:] + converted.stderr[-5000:]
    unclassified_ids = set(pd.read_csv(unclassified, dtype={"iauname": str})["iauname"])

    state_path = tmp_path / "campaign" / "state.db"
    week = [str(VENV_BIN / "zoobot"), "al_iteration", "--experiment", "volunteers", "--state", str(state_path),
            "--shards", str(shards), "--oracle", "zooniverse", "--n-acquire", "4", "--n-samples", "3", "--epochs", "1",
            "--batch-size", "8", "--filters", TINY_MODEL["filters"], "--dense-units", str(TINY_MODEL["dense_units"])]
    first = subprocess.run(week, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    subjects_1 = tmp_path / "campaign" / "iteration_001" / "subjects" / "subjects_iteration_1.csv"
    assert "waiting for volunteers' labels" in first.stdout
    assert f"panoptes subject-set upload-subjects SUBJECT_SET_ID {subjects_1}" in first.stdout
    assert "--labels-file" in first.stdout
    sent = pd.read_csv(subjects_1, dtype={"#id_str": str})
    assert len(sent) == 4 and set(sent["#id_str"]) <= unclassified_ids  # only unclassified galaxies are sent
    assert all((subjects_1.parent / name).is_file() for name in sent["image"])
    with PoolState.open(state_path) as state:
        initial = set(state.labelled_ids())
        assert not initial & unclassified_ids and set(state.pool_ids()) | set(sent["#id_str"]) == unclassified_ids

    # the volunteers' reduced votes, with the reducer's own column names and a map to the schema's
    schema = load_schema("decals")
    reducer_names = {column: f"T{k}_votes" for k, column in enumerate(schema.label_cols)}
    reduced = pd.DataFrame({"#id_str": sent["#id_str"], "subject_id": range(9000, 9004)})
    for column, name in reducer_names.items():
        reduced[name] = truth.loc[sent["#id_str"], column].to_numpy()
    reduced_path, map_path = tmp_path / "reduced_week2.csv", tmp_path / "columns.yaml"
    reduced.to_csv(reduced_path, index=False)
    map_path.write_text(yaml.safe_dump({name: column for column, name in reducer_names.items()}))

    second = subprocess.run([*week, "--labels-file", str(reduced_path), "--labels-map", str(map_path)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert "Iteration 1 (ingest): acquired 4; 4 labels ingested" in second.stdout, second.stdout
    assert "Iteration 2 (train, predict, acquire, request)" in second.stdout, second.stdout
    subjects_2 = tmp_path / "campaign" / "iteration_002" / "subjects" / "subjects_iteration_2.csv"
    assert f"upload-subjects SUBJECT_SET_ID {subjects_2}" in second.stdout
    sent_2 = pd.read_csv(subjects_2, dtype={"#id_str": str})
    assert len(sent_2) == 4 and set(sent_2["#id_str"]) <= unclassified_ids - set(sent["#id_str"])
    with PoolState.open(state_path) as state:
        # pool galaxies became labelled only through the volunteers' file, with its very counts
        assert set(state.labelled_ids()) == initial | set(sent["#id_str"])
        stored = state.labels(list(sent["#id_str"]))
        expected = truth.loc[sent["#id_str"], list(schema.label_cols)].to_numpy()
        assert (stored == expected).all()
        assert state.current_iteration() == 2 and sorted(state.awaiting_ids()) == sorted(sent_2["#id_str"])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("volunteers")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.step = 'al_iteration'")
    assert sorted(r.data.tags["iteration"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # each iteration's run names the labelled set it learned from and the pool it scored (dataset inputs)
    datasets = {}
    for run in runs:
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        datasets[run.data.tags["iteration"]] = {t.value: i.dataset.digest for i in inputs for t in i.tags
                                                if t.key == "mlflow.data.context"}
    assert {"training", "pool", "validation", "evaluation"} <= set(datasets["1"]) == set(datasets["2"])
    assert datasets["1"]["training"] != datasets["2"]["training"]  # four more galaxies labelled
    assert datasets["1"]["evaluation"] == datasets["2"]["evaluation"]  # the fixed test split
