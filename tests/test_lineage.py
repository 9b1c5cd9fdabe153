"""Dataset lineage and model cards in the MLflow UI: convert logs each split it wrote; train logs the
splits it learned and validated on, evaluate the split it scored, with the digests convert logged, so
the runs that share the same shards are linked (an active-learning iteration's labelled set and pool:
tests/test_volunteers.py). Every registered version carries a model card, which evaluate completes,
however the model was named to it."""

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL
from zoobot.cli import main
from zoobot.data.manifest import Manifest
from zoobot.tracking.lineage import split_digest


def inputs_of(client, run) -> dict[str, tuple[str, str]]:
    """context -> (dataset name, digest) of a run's dataset inputs."""
    run = client.get_run(run.info.run_id)
    return {tag.value: (i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs for tag in i.tags
            if tag.key == "mlflow.data.context"}


def test_train_and_evaluate_read_the_splits_convert_wrote_and_fill_the_model_card(tiny_shards, sqlite_tracking, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # a tiny training lasts seconds
    survey_catalog = tiny_shards.parent / "survey" / "catalog.csv"
    runner = CliRunner()
    for args in (["convert", "--catalog", str(survey_catalog), "--output-dir", str(tmp_path / "shards"),
                  "--image-size", "32", "--workers", "1", "--log-shards", "false"],
                 ["train", "--shards", str(tmp_path / "shards"), "--epochs", "1", "--batch-size", "8",
                  "--filters", TINY_MODEL["filters"], "--dense-units", str(TINY_MODEL["dense_units"]),
                  "--registered-model-name", "lineage"],
                 ["evaluate", "--model", "models:/lineage@champion", "--shards", str(tmp_path / "shards"),
                  "--n-samples", "3"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    client = MlflowClient(sqlite_tracking)
    runs = {r.data.tags["step"]: r for r in client.search_runs(["0"])}
    manifest = Manifest.read(tmp_path / "shards")
    converted, trained, evaluated = (inputs_of(client, runs[s]) for s in ("convert", "train", "evaluate"))
    assert converted["train"] == ("catalog/train", split_digest(manifest, "train"))
    assert converted["catalog"][0] == "catalog.csv"
    assert trained == {"training": converted["train"], "validation": converted["validation"]}
    assert evaluated == {"evaluation": converted["test"]}
    # the machine's use while training, by MLflow's own system-metrics monitor (on by default)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        client.get_run(runs["train"].info.run_id).data.metrics)
    assert len({converted["train"][1], converted["validation"][1], converted["test"][1]}) == 3

    # the registered version's card: what it is and learned from, then the evaluation with its run
    client_version = client.get_model_version("lineage", "1")
    card = client_version.description
    assert card.startswith("**Model.** `vgg` CNN with MC dropout") and "Dirichlet-multinomial model of the whole" in card
    assert f"{manifest.counts['train']} training" in card and runs["train"].info.run_id in card
    assert f"`catalog/train` (digest `{converted['train'][1]}`)" in card  # the very datasets the runs list
    assert "34 answers: smooth-or-featured, disk-edge-on," in card
    experiment = runs["train"].info.experiment_id
    assert f"(#/experiments/{experiment}/runs/{runs['train'].info.run_id})" in card  # links to the runs' pages
    assert f"(#/experiments/{experiment}/runs/{runs['evaluate'].info.run_id})" in card
    assert "#### Evaluation" in card and "vote-fraction RMSE" in card and runs["evaluate"].info.run_id in card
    assert "coverage_votes.png" in card and "Not evaluated yet" not in card
    tags = client_version.tags
    assert tags["evaluated_by"] == runs["evaluate"].info.run_id and float(tags["test_rmse"]) > 0
    assert tags["schema"] == "decals" and tags["n_train"] == str(manifest.counts["train"])
    # evaluated again through the logged model's own URI (as the main pipeline does): the same card, updated
    logged = runs["train"].data.tags["model_uri"]
    assert logged.startswith("models:/m-")
    result = runner.invoke(main, ["evaluate", "--model", logged, "--shards", str(tmp_path / "shards"),
                                  "--n-samples", "3"])
    assert result.exit_code == 0 and "Model card updated: lineage v1" in result.output, result.output
    assert f"Next: zoobot predict --model {logged} --images" in result.output
    assert "zoobot report --experiment Default" in result.output
    again = [r for r in client.search_runs(["0"], "tags.step = 'evaluate'") if r.info.run_id != runs["evaluate"].info.run_id]
    updated = client.get_model_version("lineage", "1")
    assert updated.tags["evaluated_by"] == again[0].info.run_id and updated.description.count("#### Evaluation") == 1
