"""The benchmark's throwaway tracking store: it times runs with logging on, and those runs must not
land in the user's store, nor in the benchmark's own run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names
from zoobot.tracking.runs import param_value

TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
# What `mlflow run` hands the process; left in place, a scratch run would join the caller's run or experiment.
RUN_ENVIRONMENT = (TRACKING_URI_VARIABLE, "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
SCRATCH_EXPERIMENT = "benchmark-scratch"


@contextlib.contextmanager
def scratch_store(folder):
    """A throwaway SQLite tracking store in `folder` for the block, yielding an experiment id whose
    artifacts stay in `folder`; afterwards the caller's tracking URI and run environment are back.

    MLflow 3.17's public switches are MLFLOW_TRACKING_URI and mlflow.set_tracking_uri, which outranks
    it. The environment variable is used when it is what decides: restoring it restores the
    caller's state exactly, whereas mlflow.set_tracking_uri(old) would pin a URI that used to be
    read from the environment (or defaulted from the working directory) for good. Only when the
    caller had pinned one with mlflow.set_tracking_uri is that pin switched and then put back.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous_uri = mlflow.get_tracking_uri()
    saved_environment = {name: os.environ.get(name) for name in RUN_ENVIRONMENT}
    for name in RUN_ENVIRONMENT:
        os.environ.pop(name, None)
    os.environ[TRACKING_URI_VARIABLE] = uri
    pinned = mlflow.get_tracking_uri() != uri  # the caller called mlflow.set_tracking_uri
    try:
        if pinned:
            mlflow.set_tracking_uri(uri)
        # Creating the store runs its schema migrations: done here, before anything is timed.
        yield MlflowClient().create_experiment(SCRATCH_EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    finally:
        if pinned:
            mlflow.set_tracking_uri(previous_uri)  # it exports MLFLOW_TRACKING_URI too: restored next
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def in_own_thread(function, *args, **kwargs):
    """function(*args, **kwargs) in a thread of its own; its result, or its exception re-raised here.

    MLflow keeps the active run per thread: in a fresh thread no run is active, so the runs the
    function opens are top-level runs, whatever run the caller (the benchmark) has open.
    """
    import threading

    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"zoobot-{getattr(function, '__name__', 'work')}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def run_apart(function, step: str, params: dict, experiment_id: str):
    """function() inside a new run of `experiment_id`, logged as `step_run` logs a step, in a thread
    of its own (see `in_own_thread`)."""
    def in_a_run():
        with mlflow.start_run(experiment_id=experiment_id, run_name=step):
            mlflow.log_params({k: param_value(v) for k, v in params.items()})
            mlflow.set_tags({tag_names.STEP: step})
            mlflow.log_dict(params, "config.json")
            return function()

    return in_own_thread(in_a_run)
