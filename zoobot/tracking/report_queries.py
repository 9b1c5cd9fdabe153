"""What the status report (zoobot.tracking.report, pure pandas) needs from the tracking server, and
the report logged back as an artifact."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names

MAX_RUNS = 5000
MAX_REGISTERED_MODELS = 1000
SHOWN_EXPERIMENTS = 50  # named in the error for an experiment that does not exist


def report_data(experiment: str) -> dict:
    """Everything zoobot.tracking.report.build_report needs about one experiment, from the tracking server:
    its runs, and the registry aliases (the champions) that point at one of them."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments(max_results=SHOWN_EXPERIMENTS)]
        raise ValueError(f"No experiment named '{experiment}' at {mlflow.get_tracking_uri()}; it has {names}. "
                         "Give one of those with --experiment, or point MLFLOW_TRACKING_URI at the right server.")
    runs = mlflow.search_runs([found.experiment_id], max_results=MAX_RUNS)
    run_ids = set(runs["run_id"]) if len(runs) else set()
    return {"runs": runs, "experiment": experiment, "experiment_id": found.experiment_id,
            "tracking_uri": mlflow.get_tracking_uri(), "champions": _champions(client, run_ids)}


def log_report(path: Path, n_runs: int) -> None:
    mlflow.log_artifact(str(path))
    mlflow.log_metric("n_runs_reported", n_runs)


def _champions(client: MlflowClient, run_ids: set) -> list[dict]:
    champions = []
    for model in client.search_registered_models(max_results=MAX_REGISTERED_MODELS):
        for alias, version in (model.aliases or {}).items():
            detail = client.get_model_version(model.name, version)
            if detail.run_id in run_ids:
                champions.append({"model": model.name, "alias": alias, "version": version, "run_id": detail.run_id,
                                  "val_loss": detail.tags.get(tag_names.VAL_LOSS)})
    return champions
