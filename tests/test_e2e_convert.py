"""End to end: `mlflow run` simulate -> convert against a real `mlflow server`, and on the embedded
default SQLite store; then the runs read back through the MLflow client and the shards read back
through the tf.data reader."""

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import mlflow_run
from zoobot.data.catalog import load_catalog
from zoobot.data.images import ImageSpec, read_image
from zoobot.data.manifest import Manifest
from zoobot.core.schema import GZ_DECALS
from zoobot.data.shards import read_split

pytestmark = pytest.mark.slow


def only_run(client, experiment_name, step):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.step = '{step}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_simulate_then_convert_through_a_tracking_server(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    survey, shards_dir = tmp_path / "survey", tmp_path / "shards"
    mlflow_run("simulate", {"n_galaxies": 24, "image_size": 32, "seed": 3, "output_dir": survey},
               mlflow_server, tmp_path, "e2e-convert")
    catalog_csv = survey / "catalog.csv"
    frame = pd.read_csv(catalog_csv)
    # one galaxy whose votes are broken: it must be set aside, the rest converted
    frame.loc[0, "bar_no"] = -1
    frame.to_csv(catalog_csv, index=False)
    mlflow_run("convert", {"catalog": catalog_csv, "output_dir": shards_dir, "image_size": 32, "shard_size": 8},
               mlflow_server, tmp_path, "e2e-convert")

    client = MlflowClient(mlflow_server)
    simulate_run = only_run(client, "e2e-convert", "simulate")
    run = only_run(client, "e2e-convert", "convert")
    assert simulate_run.info.status == run.info.status == "FINISHED"
    assert simulate_run.data.metrics["n_galaxies"] == 24
    params = run.data.params
    assert params["catalog"] == str(catalog_csv) and params["image_size"] == "32"
    assert params["schema"] == "decals" and params["val_fraction"] == "0.1"  # defaults logged too
    metrics = run.data.metrics
    assert metrics["n_rejected"] == 1
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_test"] == 23
    assert run.data.tags["schema"] == "decals"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "rejected.csv", "examples_per_split.png", "config.json", "shards",
            "rejected_rows.json"} <= artifacts
    shard_artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "shards")}
    assert "shards/manifest.json" in shard_artifacts
    rejected = pd.read_csv(client.download_artifacts(run.info.run_id, "rejected.csv", str(tmp_path)))
    assert rejected["reason"].tolist() == ["'bar_no' is negative (-1); vote counts are >= 0"]

    # the catalog it read and each split it wrote, as dataset inputs (tests/test_lineage.py follows them on)
    inputs = {i.tags[0].value: i.dataset.name for i in run.inputs.dataset_inputs}
    assert inputs == {"catalog": "catalog.csv", "train": "catalog/train", "validation": "catalog/validation",
                      "test": "catalog/test"}

    # The shards read back, by local path, equal what went in.
    manifest = Manifest.read(shards_dir)
    catalog = load_catalog(catalog_csv, "decals").galaxies.set_index("id_str")
    for split in ("train", "validation", "test"):
        records = read_split(manifest, split)
        for id_str, image, labels in zip(records["id_str"], records["image"], records["labels"]):
            np.testing.assert_array_equal(labels, catalog.loc[id_str, list(GZ_DECALS.label_cols)].to_numpy(int))
            np.testing.assert_array_equal(image, read_image(catalog.loc[id_str, "image_path"], ImageSpec(32, 3)))

    # ... and by the convert run's URI: the unchanged local folder is used, and once it is gone the
    # shards are downloaded from the server's artifact store and read the same.
    from zoobot import tracking

    assert tracking.resolve_local(f"runs:/{run.info.run_id}", "shards") == shards_dir
    moved = tmp_path / "moved"
    shutil.move(shards_dir, moved)
    monkeypatch.chdir(tmp_path)
    downloaded = tracking.resolve_local(f"runs:/{run.info.run_id}", "shards")
    assert downloaded != shards_dir and downloaded.is_relative_to(tmp_path)
    again = Manifest.read(downloaded)
    again.verify(checksums=True)
    assert again.counts == manifest.counts
    np.testing.assert_array_equal(read_split(again, "test")["image"], read_split(Manifest.read(moved), "test")["image"])


def test_convert_on_the_embedded_default_store_takes_the_catalog_by_run_uri(tmp_path):
    """No MLFLOW_TRACKING_URI: MLflow's default SQLite store in the working directory."""
    survey = tmp_path / "survey"
    mlflow_run("simulate", {"n_galaxies": 16, "image_size": 32, "output_dir": survey, "image_format": "fits"},
               None, tmp_path, "embedded")
    db = tmp_path / "mlflow.db"
    assert db.is_file()
    client = MlflowClient(f"sqlite:///{db}")
    simulate_run = only_run(client, "embedded", "simulate")
    uri = f"runs:/{simulate_run.info.run_id}/survey/catalog.csv"
    mlflow_run("convert", {"catalog": uri, "output_dir": tmp_path / "shards", "image_size": 32,
                           "log_shards": "false"}, None, tmp_path, "embedded")
    run = only_run(client, "embedded", "convert")
    assert run.data.metrics["n_written"] == 16
    assert "shards" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from runs").fetchone()[0] == 2


TINY_PIPELINE = {"n_galaxies": 60, "image_size": 32, "labelled_size": 16, "epochs": 1, "filters": "4,8",
                 "dense_units": 16, "al_iterations": 1, "n_acquire": 4, "registered_model_name": "tiny-default"}


def test_main_pipeline_runs_every_step_then_reuses_them_and_reruns_what_a_change_invalidates(tmp_path):
    """The README's main job, small: simulate -> convert -> train -> evaluate -> active_learning as
    children of one parent, each fed the step before by runs:/ URI; run again, every step is reused;
    a changed training setting reruns train and what follows, not simulate or convert."""
    params = {**TINY_PIPELINE, "work_dir": tmp_path / "work"}
    mlflow_run("main", params, None, tmp_path, "main", timeout=900)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = only_run(client, "main", "main")
    experiment_id = parent.info.experiment_id
    steps = ("simulate", "train", "evaluate", "active_learning")
    children = {step: only_run(client, "main", step) for step in steps}
    conversions = client.search_runs([experiment_id], "tags.step = 'convert'")
    # every labelled galaxy for the train step; labelled_size of them and a pool for the campaign
    children.update({"convert" if r.data.params["labelled_size"] == "0" else "convert_campaign": r for r in conversions})
    assert len(conversions) == 2 and set(children) == {*steps, "convert", "convert_campaign"}
    for step, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id, step
        assert child.info.status == "FINISHED" and child.data.tags["code_version"], step
        assert parent.data.tags[f"run.{step}"] == child.info.run_id
    run_id = {step: child.info.run_id for step, child in children.items()}
    # consistent names and tags, for the UI's compare view and search_runs filters
    assert children["train"].info.run_name == "train-vgg-dirichlet-decals"
    assert children["convert"].data.tags["schema"] == "decals" and children["train"].data.tags["architecture"] == "vgg"
    iterations = client.search_runs([experiment_id], "tags.step = 'al_iteration' and tags.arm = 'bald'")
    assert [r.info.run_name for r in iterations] == ["bald-iteration-001"]
    for conversion in ("convert", "convert_campaign"):
        assert children[conversion].data.params["catalog"] == f"runs:/{run_id['simulate']}/survey/catalog.csv"
    assert children["train"].data.params["shards"] == f"runs:/{run_id['convert']}/shards"
    assert children["evaluate"].data.params["model"] == children["train"].data.tags["model_uri"]
    assert children["active_learning"].data.params["shards"] == f"runs:/{run_id['convert_campaign']}/shards"
    assert {"n_written", "test_rmse", "test_coverage_error_w5", "label_saving",
            "bald_iterations_compared"} <= set(parent.data.metrics)
    assert client.get_model_version_by_alias("tiny-default", "champion").run_id == run_id["train"]
    assert "pool" not in Manifest.read(tmp_path / "work" / "shards").counts
    assert Manifest.read(tmp_path / "work" / "campaign_shards").counts["pool"] > 0

    again = mlflow_run("main", params, None, tmp_path, "main", timeout=900)
    for step, run in run_id.items():
        entry_point = "convert" if step.startswith("convert") else step
        assert f"--- {entry_point}: reusing run {run}" in again.stdout, again.stdout[-3000:]
    for step in steps:
        assert len(client.search_runs([experiment_id], f"tags.step = '{step}'")) == 1

    changed = mlflow_run("main", {**params, "epochs": 2, "steps": "train,evaluate"}, None, tmp_path, "main",
                         timeout=900)
    for step in ("simulate", "convert"):
        assert f"--- {step}: reusing run {run_id[step]}" in changed.stdout
    for step in ("train", "evaluate"):
        runs = client.search_runs([experiment_id], f"tags.step = '{step}'")
        assert len(runs) == 2, step
    assert len(client.search_runs([experiment_id], "tags.step = 'active_learning'")) == 1

    # the experiment's status, generated from the store instead of a hand-edited status.md
    mlflow_run("report", {"experiment": "main", "sort_by": "test_rmse", "output": tmp_path / "status.md"}, None,
               tmp_path, "reports")
    (report_run,) = client.search_runs([client.get_experiment_by_name("reports").experiment_id])
    assert report_run.data.tags["step"] == "report"
    assert "status.md" in {a.path for a in client.list_artifacts(report_run.info.run_id)}
    text = (tmp_path / "status.md").read_text()
    for section in ("## main runs", "## train runs (2)", "## evaluate runs (2)", "## active_learning runs (1)",
                    "| tiny-default | @champion |"):
        assert section in text, section


def test_main_on_a_users_catalog_trains_on_every_labelled_galaxy(tmp_path):
    """`mlflow run . -P catalog=...` with the catalog's own id column and image folder: convert, train and
    evaluate, every labelled galaxy in train/validation/test, no campaign carved out of them."""
    from zoobot.data.simulate import SimulateConfig, simulate_survey

    survey = simulate_survey(SimulateConfig(output_dir=str(tmp_path / "survey"), n_galaxies=40, image_size=32,
                                            workers=1))
    catalog = pd.read_csv(survey.catalog_path).rename(columns={"iauname": "objname"})
    (tmp_path / "cutouts").mkdir()
    shutil.move(str(tmp_path / "survey" / "images"), str(tmp_path / "cutouts" / "images"))  # elsewhere: image_root
    catalog.to_csv(tmp_path / "mine.csv", index=False)
    params = {"catalog": tmp_path / "mine.csv", "id_column": "objname", "image_root": tmp_path / "cutouts",
              "image_size": 32, "epochs": 1, "filters": "4,8", "dense_units": 16, "work_dir": tmp_path / "work",
              "registered_model_name": "mine"}
    mlflow_run("main", params, None, tmp_path, "my-survey", timeout=900)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("my-survey")
    steps = sorted(r.data.tags["step"] for r in client.search_runs([experiment.experiment_id]))
    assert steps == ["convert", "evaluate", "main", "train"]  # no simulation, no campaign
    convert = only_run(client, "my-survey", "convert")
    assert (convert.data.params["labelled_size"], convert.data.params["id_column"]) == ("0", "objname")
    manifest = Manifest.read(tmp_path / "work" / "shards")
    assert "pool" not in manifest.counts and sum(manifest.counts.values()) == 40  # every labelled galaxy
    train = only_run(client, "my-survey", "train")
    assert train.data.metrics["n_train"] == manifest.counts["train"]
    assert client.get_model_version_by_alias("mine", "champion").run_id == train.info.run_id
