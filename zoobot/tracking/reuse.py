"""The pipeline's step reuse: a step that already finished with the same parameters, inputs and
code is taken from the tracking server instead of being run again; the parent run records which
run each step used and the headline numbers of the whole job."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names
from zoobot.tracking.runs import code_version

SUMMARY_METRICS = ("test_rmse", "test_mae", "test_accuracy", "test_coverage_error_w5", "test_coverage_error_w10",
                   "test_mc_loglik", "test_loglik_gain", "test_smooth-or-featured_rmse", "test_truth_rmse",
                   "test_truth_rmse_ratio", "test_spread_error_spearman")
CAMPAIGN_SUMMARY = ("label_saving", "bald_iterations_below_random", "bald_iterations_compared")
MAX_CANDIDATES = 200  # newest finished runs of a step looked at for a match


def find_finished_run(step):
    """The newest finished run in this experiment that did `step` (a zoobot.workflows.pipeline.Step) with
    the same parameters and inputs and this code version, or None."""
    from zoobot.workflows.pipeline import matches

    experiment_id = mlflow.active_run().info.experiment_id if mlflow.active_run() else None
    if experiment_id is None:
        return None
    candidates = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(f"tags.{tag_names.STEP} = '{step.entry_point}' and attributes.status = 'FINISHED' "
                       f"and tags.{tag_names.CODE_VERSION} = '{code_version()}'"),
        order_by=["attributes.start_time DESC"], max_results=MAX_CANDIDATES)
    for run in candidates:
        if matches(step, run.data.params, run.data.tags, code_version()):
            return run
    return None


def record_reuse(entry_point: str, run) -> None:
    mlflow.set_tag(f"{tag_names.REUSED_PREFIX}{entry_point}", run.info.run_id)


def log_pipeline_summary(runs: dict) -> None:
    """On the pipeline's parent run: each step's run id, and the headline numbers of the whole job."""
    mlflow.set_tags({f"{tag_names.RUN_PREFIX}{name}": run.info.run_id for name, run in runs.items()})
    headline = {}
    for name, run in runs.items():
        for key, value in run.data.metrics.items():
            if (name == "convert" and key.startswith("n_")) or (name == "evaluate" and key in SUMMARY_METRICS) \
                    or key in CAMPAIGN_SUMMARY or key == "best_val_loss":
                headline[key] = value
    if headline:
        mlflow.log_metrics(headline)
