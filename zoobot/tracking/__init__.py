"""The MLflow side of Zoobot, one concern per module; `from zoobot import tracking` gives the whole API.

    runs            opening, naming, resuming and completing runs; code_version and git tags
    artifacts       artifact URIs (runs:/, models:/, ...) back to local paths
    lineage         the splits, labelled sets and pools a run read, as MLflow dataset inputs
    model_card      the Markdown card and tags of every registered version; evaluate's section of it
    step_logs       what each step records on its run: log_simulation, log_training, ...
    registry        logging the model, registering it, crowning the champion
    pyfunc          ZoobotPyfunc, the registered model that serves MC-dropout samples
    callbacks       the Keras callback that logs every epoch; history backfill after a restart
    reuse           the pipeline's reuse of finished steps, and its summary
    report_queries  what the status report (report.py) fetches from the tracking server
    scratch         the benchmark's throwaway tracking store
    references      checking a tracking server and a model reference before the work starts
    spark           scoring with the registered model as a Spark UDF

Tag names live in zoobot.core.tags; TAG_STEP, TAG_SCHEMA, ... here are those constants under the
names callers have long used (tracking.TAG_SCHEMA is zoobot.core.tags.SCHEMA).
"""

from zoobot.core.tags import CODE_VERSION as TAG_CODE_VERSION
from zoobot.core.tags import GIT_COMMIT as TAG_GIT_COMMIT
from zoobot.core.tags import LOCAL_OUTPUT as TAG_LOCAL_OUTPUT
from zoobot.core.tags import MODEL_URI as TAG_MODEL_URI
from zoobot.core.tags import OUTPUT_DIGEST as TAG_OUTPUT_DIGEST
from zoobot.core.tags import SCHEMA as TAG_SCHEMA
from zoobot.core.tags import STEP as TAG_STEP
from zoobot.tracking.artifacts import (KERAS_FILE, MODEL_ARTIFACT, URI_SCHEMES, file_digest, is_uri, local_model_path,
                                       resolve_local, resolve_local_file, run_artifacts_location)
from zoobot.tracking.callbacks import backfill_history, metrics_logger
from zoobot.tracking.lineage import log_labelled_set, log_splits
from zoobot.tracking.model_card import add_evaluation
# Registered models pickle their python_model by name: the flat package's as zoobot.tracking.ZoobotPyfunc.
from zoobot.tracking.pyfunc import ZoobotPyfunc
from zoobot.tracking.registry import crown_if_better, log_model, register_iteration_model
from zoobot.tracking.report_queries import log_report, report_data
from zoobot.tracking.reuse import SUMMARY_METRICS, find_finished_run, log_pipeline_summary, record_reuse
from zoobot.tracking.runs import (code_version, experiment_name, git_commit, iteration_run, reopened_run,
                                  resume_or_start, run_name, standard_tags, step_run, unfinished_runs)
from zoobot.tracking.scratch import run_apart, scratch_store
from zoobot.tracking.step_logs import (log_benchmark, log_conversion, log_download, log_embedding, log_evaluation,
                                       log_iteration, log_learning_curves, log_prediction, log_simulation,
                                       log_training)

__all__ = [
    # runs
    "code_version", "experiment_name", "git_commit", "iteration_run", "reopened_run", "resume_or_start", "run_name",
    "standard_tags", "step_run", "unfinished_runs",
    # artifacts
    "KERAS_FILE", "MODEL_ARTIFACT", "URI_SCHEMES", "file_digest", "is_uri", "local_model_path", "resolve_local",
    "resolve_local_file", "run_artifacts_location",
    # step_logs
    "log_benchmark", "log_conversion", "log_download", "log_embedding", "log_evaluation", "log_iteration",
    "log_learning_curves", "log_prediction", "log_simulation", "log_training",
    # registry and the served model
    "ZoobotPyfunc", "crown_if_better", "log_model", "register_iteration_model",
    # callbacks
    "backfill_history", "metrics_logger",
    # lineage
    "log_labelled_set", "log_splits",
    # model cards
    "add_evaluation",
    # reuse
    "SUMMARY_METRICS", "find_finished_run", "log_pipeline_summary", "record_reuse",
    # report_queries
    "log_report", "report_data",
    # scratch
    "run_apart", "scratch_store",
    # tag names
    "TAG_CODE_VERSION", "TAG_GIT_COMMIT", "TAG_LOCAL_OUTPUT", "TAG_MODEL_URI", "TAG_OUTPUT_DIGEST", "TAG_SCHEMA",
    "TAG_STEP",
]
