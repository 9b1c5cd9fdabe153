"""`zoobot report`: the experiment's status as Markdown, generated from the tracking store."""

import os
from datetime import datetime, timezone

import mlflow
import pandas as pd
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from zoobot import cli
from zoobot.tracking.report import build_report


def frame():
    return pd.DataFrame({
        "run_id": ["a" * 32, "b" * 32, "c" * 32],
        "status": ["FINISHED", "FINISHED", "FAILED"],
        "start_time": pd.to_datetime(["2026-11-01 10:00", "2026-11-02 10:00", "2026-11-03 10:00"], utc=True),
        "tags.step": ["evaluate", "evaluate", "train"],
        "tags.mlflow.runName": ["eval-small", "eval-big", "train-1"],
        "tags.git_commit": ["0123456789abcdef", "fedcba9876543210", None],
        "params.model": ["models:/m-1", "models:/m-2", None],
        "params.split": ["test", "test", None],
        "params.epochs": [None, None, "3"],
        "metrics.test_rmse": [0.30, 0.20, None],
        "metrics.test_coverage_error_w5": [0.1, 0.05, None],
        "metrics.best_val_loss": [None, None, 12.5],
    })


def test_one_table_per_step_with_differing_params_key_metrics_commit_and_link():
    text = build_report(frame(), "galaxies", "7", "http://tracking:5000", [
        {"model": "zoobot", "alias": "champion", "version": "2", "run_id": "d" * 32, "val_loss": "11.2"}],
        sort_by="test_rmse", now=datetime(2026, 11, 29, tzinfo=timezone.utc))
    assert text.startswith("# Status of experiment `galaxies`")
    assert "| zoobot | @champion | v2 | 11.2 |" in text
    evaluate = text.split("## evaluate runs (2)")[1].split("##")[0]
    header = evaluate.strip().splitlines()[0]
    assert "model" in header and "split" not in header  # only what differs between the runs
    assert "test_rmse" in header and "test_coverage_error_w5" in header and "commit" in header
    rows = evaluate.strip().splitlines()[2:]
    assert "eval-big" in rows[0] and "eval-small" in rows[1]  # sorted by test_rmse, lowest first
    assert f"(http://tracking:5000/#/experiments/7/runs/{'b' * 32})" in rows[0]
    assert "`fedcba9`" in rows[0] and "2026-11-02 10:00" in rows[0]
    assert "## train runs (1)" in text and "12.5" in text and "failed" in text
    descending = build_report(frame(), "galaxies", "7", "http://t", [], sort_by="test_rmse", descending=True)
    rows = descending.split("## evaluate runs (2)")[1].strip().splitlines()[2:4]
    assert "eval-small" in rows[0]


def test_report_command_reads_the_store_and_writes_markdown(sqlite_tracking, tmp_path):
    experiment_id = MlflowClient().create_experiment("compare")  # not set_experiment: it exports MLFLOW_EXPERIMENT_ID
    for lr, rmse in (("0.001", 0.25), ("0.01", 0.31)):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.set_tags({"step": "evaluate", "git_commit": "abc1234def"})
            mlflow.log_params({"learning_rate": lr, "split": "test"})
            mlflow.log_metrics({"test_rmse": rmse, "test_coverage_error_w5": 0.1})
    client = MlflowClient()
    client.create_registered_model("zoobot-x")
    version = client.create_model_version("zoobot-x", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("zoobot-x", "champion", version.version)
    result = CliRunner().invoke(cli.main, ["report", "--experiment", "compare", "--sort-by", "test_rmse",
                                           "--output", str(tmp_path / "status.md")], env={"MLFLOW_RUN_ID": ""})
    assert result.exit_code == 0, result.output
    text = (tmp_path / "status.md").read_text()
    assert "## evaluate runs (2)" in text and "learning_rate" in text and "| zoobot-x | @champion | v1" in text
    assert text.index("| 0.25 |") < text.index("| 0.31 |")
    assert "mlflow ui --backend-store-uri sqlite:///" in text

    missing = CliRunner().invoke(cli.main, ["report", "--experiment", "nope", "--output", str(tmp_path / "x.md")])
    assert missing.exit_code != 0 and "No experiment named 'nope'" in missing.output and "compare" in missing.output
    assert os.environ.get("MLFLOW_RUN_ID") is None


def campaign_runs():
    """Two settings of a campaign (dense_units 128 on seeds 1 and 2, 512 on seed 1), and a bald-only
    campaign with another selection on seed 1 that has no random arm of its own."""
    rows = []

    def campaign(run_id, seed, dense, selection, arms, curves, minute):
        rows.append({"run_id": run_id, "status": "FINISHED", "tags.step": "active_learning",
                     "start_time": pd.Timestamp("2026-12-08 10:00", tz="UTC") + pd.Timedelta(minutes=minute),
                     "params.seed": str(seed), "params.dense_units": str(dense), "params.selection": selection,
                     "params.arms": arms, "params.work_dir": f"/w/{run_id}", "params.shards": f"/s/{seed}"})
        for arm, losses in curves.items():
            for i, loss in enumerate(losses):
                rows.append({"run_id": f"{run_id}-{arm}-{i}", "status": "FINISHED", "tags.step": "al_iteration",
                             "start_time": rows[-1]["start_time"] + pd.Timedelta(seconds=1),
                             "tags.mlflow.parentRunId": run_id, "tags.arm": arm, "tags.iteration": str(i + 1),
                             "params.acquisition": arm, "metrics.n_labelled": 100.0 + 50 * i, "metrics.test_loss": loss})

    campaign("c1", 1, 128, "diverse", "bald,random", {"bald": [8.0, 6.0, 5.0], "random": [8.0, 7.0, 6.0]}, 0)
    campaign("c2", 2, 128, "diverse", "bald,random", {"bald": [9.0, 8.0, 7.5], "random": [9.0, 7.0, 7.0]}, 1)
    campaign("c3", 1, 512, "diverse", "bald,random", {"bald": [7.0, 6.5, 6.0], "random": [7.0, 6.8, 6.2]}, 2)
    campaign("c4", 1, 128, "top", "bald", {"bald": [8.0, 7.5, 6.6]}, 3)
    return pd.DataFrame(rows)


def test_campaigns_are_compared_with_random_over_their_seeds_setting_by_setting():
    text = build_report(campaign_runs(), "al", "3", "sqlite:///x.db", [])
    section = text.split("## Campaigns over seeds")[1].split("\n## ")[0]
    tables = section.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == [
        "dense_units=128, selection=diverse (seeds 1, 2)", "dense_units=512, selection=diverse (seeds 1)",
        "dense_units=128, selection=top (seeds 1)"]
    header, _, random, bald = [line for line in tables[0].splitlines() if line.startswith("|")]
    assert header.split(" | ")[2:5] == ["100", "150", "200"]
    assert random.startswith("| random | 1, 2 | 8.500 | 7.000 | 6.500 |")
    assert "| bald | 1, 2 | 8.500 | 7.000 | 6.250 | 2 of 4 | 1: 25.0%, 2: not reached | 8.3% |" in bald
    # the top-k campaign ran bald alone: it is compared with the random arm of seed 1's diverse campaign
    assert "random arm of seeds 1 is that of a campaign differing only in diverse_candidates, selection" in tables[2]
    assert "| bald | 1 | 8.000 | 7.500 | 6.600 | 0 of 2 | 1: not reached | not reached |" in tables[2]
    assert "## active_learning runs (4)" in text and "## al_iteration runs (21)" in text
    assert "## Campaigns over seeds" not in build_report(frame(), "galaxies", "7", "http://t", [])
