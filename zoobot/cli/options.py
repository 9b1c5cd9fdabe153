"""What every `zoobot` command shares: options generated from config dataclasses, and the way
errors reach the user (one paragraph for a user's mistake, a traceback for a bug)."""

from __future__ import annotations

import dataclasses
import functools
import os
import traceback
from pathlib import Path
from typing import get_type_hints

import click

import zoobot

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the step's own output

PACKAGE = Path(zoobot.__file__).resolve().parent


def options_from(*config_classes):
    """Click options for every field of the config dataclasses, with their defaults and help."""
    fields = [(f, get_type_hints(cls)[f.name]) for cls in config_classes for f in dataclasses.fields(cls) if f.init]

    def decorate(command):
        for f, kind in reversed(fields):
            click_type = {bool: click.BOOL, int: int, float: float}.get(kind, str)
            required = f.default is dataclasses.MISSING
            names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
            command = click.option(
                *names, f.name,
                type=click_type,
                required=required,
                default=None if required else f.default,
                show_default=not required,
                help=f.metadata.get("help", ""),
            )(command)
        return command

    return decorate


def split_options(options: dict, *config_classes):
    """One config per class from the command's options."""
    return tuple(cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.init})
                 for cls in config_classes)


EXPERIMENT_HELP = ("MLflow experiment for this command's runs, created if new (default: $MLFLOW_EXPERIMENT_NAME, "
                   "else 'Default'). Under `mlflow run`, name it there: mlflow run . -e STEP --experiment-name NAME.")


EXPERIMENT_KEY = "tracking_experiment"  # not 'experiment': `report`'s own option names the experiment it reads


def experiment_option(command):
    """`--experiment NAME` for a command that logs runs; `user_errors` puts it into effect."""
    return click.option("--experiment", EXPERIMENT_KEY, default="", show_default=False, help=EXPERIMENT_HELP)(command)


def use_experiment(name: str) -> None:
    """Make `name` the experiment of every run this process starts (and of the `mlflow.run` child
    steps it launches). Under `mlflow run`, whose run already exists, it must be that run's."""
    import mlflow

    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if wrapper:
        run = mlflow.tracking.MlflowClient().get_run(wrapper)
        current = mlflow.tracking.MlflowClient().get_experiment(run.info.experiment_id).name
        if current != name:
            raise ValueError(
                f"--experiment {name} was given, but this step runs under `mlflow run`, which already made its run "
                f"in experiment '{current}'. Name the experiment to `mlflow run` instead: "
                f"mlflow run . -e STEP --experiment-name {name} ...")
        return
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    mlflow.set_experiment(name)


def user_errors(function):
    """Turn a user's mistake into a one-paragraph error instead of a traceback, and a lost tracking
    server into a message that says the local work is safe and how to resume.

    Every command so wrapped logs to MLflow, so an http(s) tracking server is checked once before
    the work starts: one that was never there fails within seconds, and the "lost mid-run" message
    is kept for a server that really went away after that. (`--help` never gets here.)"""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        experiment = kwargs.pop(EXPERIMENT_KEY, "")
        try:
            from zoobot.tracking.references import check_tracking_server

            check_tracking_server()
            if experiment:
                use_experiment(experiment)
            return function(*args, **kwargs)
        except (ValueError, FileExistsError) as e:
            if not is_user_error(e):
                raise
            raise click.ClickException(str(e)) from e
        except Exception as e:
            if not _lost_tracking_server(e):
                raise
            uri = os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")
            raise click.ClickException(
                f"Lost the MLflow tracking server at {uri} mid-run ({_first_line(e)}). Nothing local was lost: "
                "checkpoints (data/checkpoints/ or --checkpoint-dir), shards, predictions and campaign state stay "
                "on disk. Start the server again and rerun the same command: it resumes into the same run from "
                "where it stopped.") from e

    return wrapper


def is_user_error(error: BaseException) -> bool:
    """A ValueError (or FileExistsError) that Zoobot raised itself about what it was given: its
    message says what to fix, so it is shown without a traceback. One raised inside numpy, pandas,
    TensorFlow or MLflow is a bug of Zoobot's (it passed them something it should have checked) and
    keeps its traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def _lost_tracking_server(error: BaseException) -> bool:
    """An MLflow REST call that could not reach the server (after MLflow's own retries)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if "API request to" in text and any(s in text for s in (
                "Max retries exceeded", "Connection refused", "ConnectionError", "timeout", "RemoteDisconnected",
                "Connection aborted", "too many 5")):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."


