"""Opening, naming, resuming and completing the MLflow runs of Zoobot's steps.

A step's run gets the same tags everywhere (step, code_version, git_commit, plus what the caller
says the run is about) and its resolved config, defaults included, logged once in full.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names
from zoobot.core.staging import atomic_write_text

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: zoobot/, entrypoints/, MLproject
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex) of zoobot/, entrypoints/ and MLproject as they are on disk, so an edit not yet
    committed still counts as new code."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted([*PACKAGE_ROOT.joinpath("zoobot").rglob("*.py"), *PACKAGE_ROOT.joinpath("entrypoints").glob("*.py"),
                    PACKAGE_ROOT / "MLproject"])
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(PACKAGE_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def standard_tags() -> dict[str, str]:
    tags = {tag_names.CODE_VERSION: code_version()}
    if git_commit():
        tags[tag_names.GIT_COMMIT] = git_commit()
    return tags


def run_name(step: str, tags: dict) -> str:
    """Names that say what a run is, the same way everywhere: train-vgg-dirichlet-decals,
    evaluate, al-bald-iteration-002 (instead of MLflow's random adjective-animal names)."""
    parts = [step] + [str(tags[k]) for k in (tag_names.ARCHITECTURE, tag_names.OUTPUT, tag_names.SCHEMA) if tags.get(k)]
    return "-".join(parts)


def param_value(value) -> str:
    """A config value as MLflow stores a param: lists and dicts as JSON, cut to MLflow's limit."""
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text[:MAX_PARAM_LENGTH]


def log_new_params(config_dict: dict) -> None:
    """Log the params the active run lacks. Those `mlflow run` logged already are left alone:
    MLflow refuses to change a logged param."""
    existing = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: param_value(v) for k, v in config_dict.items() if k not in existing})


@contextlib.contextmanager
def step_run(step: str, config, tags: dict[str, str] | None = None, nested: bool = False,
             system_metrics: bool = False):
    """Open (or, under `mlflow run`, resume) the step's run and record its resolved config once,
    in full, as config.json; `system_metrics`: MLflow's monitor logs the machine's use meanwhile."""
    if system_metrics:  # its start and stop lines are not the user's business
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    with mlflow.start_run(nested=nested, log_system_metrics=system_metrics or None) as run:
        config_dict = _as_dict(config)
        log_new_params(config_dict)
        mlflow.set_tags({tag_names.STEP: step, tag_names.RUN_NAME: run_name(step, tags or {}), **standard_tags(),
                         **(tags or {})})
        mlflow.log_dict(config_dict, "config.json")
        yield run


def resume_or_start(step: str, config, resume_run_id: str | None, tags: dict | None = None,
                    system_metrics: bool = False):
    """`step_run`, but into `resume_run_id` when a killed job left one.

    Under `mlflow run` a new run was already made for this process; it is tagged with where the
    work went, so the UI shows why it is empty.
    """
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if resume_run_id and wrapper and wrapper != resume_run_id:
        client = MlflowClient()
        client.set_tag(wrapper, tag_names.RESUMED_INTO, resume_run_id)
        client.set_tag(wrapper, tag_names.NOTE,
                       f"This launch resumed the interrupted run {resume_run_id}; its results are logged there.")
    if resume_run_id:
        os.environ["MLFLOW_RUN_ID"] = resume_run_id
    return step_run(step, config, tags=tags, system_metrics=system_metrics)


# -- active learning: one run per iteration, kept across restarts ---------------------------------------


@contextlib.contextmanager
def iteration_run(runs_file: Path, key: str, config, tags: dict, nested: bool):
    """The MLflow run of one active-learning iteration; a restarted iteration logs into the run
    it started before (its id is kept in `runs_file` beside the campaign's state)."""
    runs = _read_runs(runs_file)
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if key in runs and wrapper and wrapper != runs[key]:
        MlflowClient().set_tag(wrapper, tag_names.RESUMED_INTO, runs[key])
    with mlflow.start_run(run_id=runs.get(key), nested=nested, run_name=key if key not in runs else None) as run:
        if key not in runs:
            runs[key] = run.info.run_id
            atomic_write_text(runs_file, json.dumps(runs, indent=1))
        log_new_params(_as_dict(config))
        mlflow.set_tags({tag_names.STEP: "al_iteration", tag_names.RUN_NAME: key, **standard_tags(), **tags})
        yield run


def unfinished_runs(runs_file: Path) -> dict[str, str]:
    """The iteration runs of a campaign (key -> run id) that are still RUNNING in the tracking store."""
    client = MlflowClient()
    return {key: run_id for key, run_id in _read_runs(runs_file).items()
            if client.get_run(run_id).info.status == "RUNNING"}


@contextlib.contextmanager
def reopened_run(run_id: str, nested: bool):
    """Back into a run a kill left RUNNING, to log what it lacks; it ends FINISHED."""
    with mlflow.start_run(run_id=run_id, nested=nested) as run:
        mlflow.set_tag(tag_names.COMPLETED_AFTER_RESTART, "true")
        yield run


def _read_runs(runs_file: Path) -> dict[str, str]:
    return json.loads(runs_file.read_text()) if runs_file.is_file() else {}


def _as_dict(config) -> dict:
    return asdict(config) if is_dataclass(config) else dict(config)


def experiment_name(run_id: str) -> str:
    """The name of the experiment a run belongs to (what `zoobot report --experiment` takes)."""
    client = MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name
