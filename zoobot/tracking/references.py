"""Checking what a command was pointed at before the work starts: the tracking server it will log to
and the model it will load.

Either mistake used to surface late and unreadably: minutes of MLflow's HTTP retries for a server
that was never there, or a long MLflow traceback for a model that does not exist. Each check here
ends in one line that names the reference, says why it does not work and what to give instead.
MLflow is imported only where a check needs it; TensorFlow never is.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path

import requests

from zoobot.core import tags as tag_names

HEALTH_ENDPOINT = "/health"  # answered by `mlflow server`, without a login even under basic auth
RETRY_DELAY = 1.0  # seconds before the one retry: time for a server that is just starting
SHOWN_NAMES = 8  # registered models, versions or artifacts listed in a message
MODEL_ARTIFACT = "model"  # zoobot.tracking.mlflow_io.MODEL_ARTIFACT, the name a train run logs its model under
HOW_TO_GIVE_A_MODEL = ("Give a finished `zoobot train` run (runs:/<run id>), models:/NAME@champion, or a local "
                       ".keras file or folder holding one.")


class TrackingServerError(ValueError):
    """The tracking server the command would log to does not answer."""


class ModelReferenceError(ValueError):
    """A model reference (path, runs:/, models:/) that does not lead to a model."""


# -- the tracking server -----------------------------------------------------------------------------


def check_tracking_server(uri: str | None = None, timeout: float = 5.0, retries: int = 1) -> None:
    """Fail within seconds, instead of after minutes of MLflow's retries, when an http(s) tracking
    server does not answer.

    Any HTTP answer below 500 counts as reachable: 200 from `mlflow server`, 401/403 from one behind
    a login, 404 from one served under a path prefix. Local and database stores (sqlite:, file:,
    postgresql:...) are not checked here: they cost no silent network wait, and MLflow's own error
    for them is immediate.
    """
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    uri = str(uri)
    if not uri.lower().startswith(("http://", "https://")):
        return
    reason = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_DELAY)
        try:
            response = requests.get(uri.rstrip("/") + HEALTH_ENDPOINT, timeout=timeout, **_tls_options())
        except requests.RequestException as e:
            reason = _request_failure(e, timeout)
            continue
        if response.status_code < 500:
            return
        reason = f"{HEALTH_ENDPOINT} answered HTTP {response.status_code} {response.reason}".rstrip()
    raise TrackingServerError(
        f"Cannot reach the tracking server at {shown_uri(uri)} ({reason}). Start it (e.g. `bash "
        "scripts/tracking_server.sh` or `mlflow server --host 127.0.0.1 --port 5000`), or unset "
        "MLFLOW_TRACKING_URI to log to the local store ./mlflow.db.")


def _tls_options() -> dict:
    """The TLS settings MLflow's own client would use for this server."""
    from mlflow.environment_variables import (
        MLFLOW_TRACKING_CLIENT_CERT_PATH,
        MLFLOW_TRACKING_INSECURE_TLS,
        MLFLOW_TRACKING_SERVER_CERT_PATH,
    )

    verify = False if MLFLOW_TRACKING_INSECURE_TLS.get() else (MLFLOW_TRACKING_SERVER_CERT_PATH.get() or True)
    return {"verify": verify, "cert": MLFLOW_TRACKING_CLIENT_CERT_PATH.get()}


def _request_failure(error: requests.RequestException, timeout: float) -> str:
    """The reason in a few words: requests' own message is a paragraph of connection-pool detail."""
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS error: " + _shorten(text)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found[-1].strip() if found else _shorten(text)


def shown_uri(uri: str) -> str:
    """The URI without a password in it, fit to print."""
    parts = urllib.parse.urlsplit(str(uri))
    if parts.password is None:
        return str(uri)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _shorten(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


# -- model references --------------------------------------------------------------------------------


def resolve_model(uri_or_path: str) -> Path:
    """The local .keras file of a model reference, after checking that the reference exists.

    Accepts what `zoobot predict --model` documents: a .keras file or a folder holding one,
    runs:/<run id>[/path], models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-<id>.
    """
    reference = str(uri_or_path).strip()
    check_model_reference(reference)
    from mlflow.exceptions import MlflowException

    from zoobot import tracking

    try:
        return tracking.local_model_path(reference)
    except FileNotFoundError as e:
        if e.errno is None:  # local_model_path's own message: no .keras file in what was found
            raise ModelReferenceError(str(e)) from e
        raise ModelReferenceError(f"Model '{reference}' could not be fetched: {_shorten(str(e))}. "
                                  f"{HOW_TO_GIVE_A_MODEL}") from e
    except MlflowException as e:
        if "API request to" in str(e):  # the server went away: the CLI's lost-server message, not this one
            raise
        raise ModelReferenceError(f"Model '{reference}' could not be downloaded: {_shorten(e.message)}. "
                                  f"{HOW_TO_GIVE_A_MODEL}") from e


def check_model_reference(reference: str) -> None:
    """Raise ModelReferenceError, in one line, when `reference` does not lead to a model."""
    if reference.startswith("models:/"):
        _check_models_uri(reference)
    elif reference.startswith("runs:/"):
        _check_runs_uri(reference)
    elif reference.startswith("file://"):
        _check_local(reference, Path(urllib.parse.unquote(urllib.parse.urlsplit(reference).path)))
    elif not re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", reference):  # s3://, mlflow-artifacts:/...: MLflow's to fetch
        _check_local(reference, Path(reference).expanduser())


def _check_local(reference: str, path: Path) -> None:
    if not path.exists():
        raise ModelReferenceError(f"Model '{reference}' not found: there is no file or folder "
                                  f"{path.resolve()}. {HOW_TO_GIVE_A_MODEL}")


def _check_models_uri(reference: str) -> None:
    parts = reference[len("models:/"):].strip("/").split("/")
    if not parts[0] or len(parts) > 2 or parts[0].endswith("@") or parts[0].startswith("@"):
        raise ModelReferenceError(f"Model '{reference}' is not a model URI MLflow understands. Give "
                                  "models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-<id>.")
    if len(parts) == 2:
        name, suffix = parts
        model = _registered_model(reference, name)
        versions = _versions(name)
        if suffix.isdigit():
            if suffix not in {str(v.version) for v in versions}:
                raise _no_such_version(reference, model, versions, f"no version {suffix}")
        elif suffix.lower() == "latest":
            if not versions:
                raise _no_such_version(reference, model, versions, "no versions yet")
        elif suffix.lower() not in {str(v.current_stage).lower() for v in versions}:
            raise _no_such_version(reference, model, versions, f"no version in stage '{suffix}'")
    elif "@" in parts[0]:
        name, alias = parts[0].rsplit("@", 1)
        model = _registered_model(reference, name)
        if alias not in model.aliases:
            raise _no_such_version(reference, model, _versions(name), f"no alias '{alias}'")
    else:
        _check_logged_model(reference, parts[0])


def _registered_model(reference: str, name: str):
    client = _client()
    try:
        return client.get_registered_model(name)
    except _mlflow_exception() as e:
        if not _is_missing(e):
            raise
    names = [m.name for m in client.search_registered_models(max_results=SHOWN_NAMES + 1)]
    known = (f"registered models: {_listing(names)}" if names else
             "there are no registered models yet: `zoobot train --registered-model-name NAME` registers one")
    raise _not_found(reference, f"no registered model named '{name}' in {_store()} ({known})",
                     "Give models:/NAME@ALIAS of a registered model, or runs:/<run id> of a finished "
                     "`zoobot train` run.")


def _versions(name: str) -> list:
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return sorted(_client().search_model_versions(f"name = '{escaped}'"), key=lambda v: int(v.version))


def _no_such_version(reference: str, model, versions: list, lacks: str) -> ModelReferenceError:
    """What the registered model does have, and the reference to give instead."""
    name = model.name
    aliases = ", ".join(f"@{alias} = v{version}" for alias, version in sorted(model.aliases.items()))
    has = "; ".join([f"aliases: {aliases}" if aliases else "it has no aliases",
                     f"versions: {_listing([v.version for v in versions])}" if versions else "no versions"])
    if model.aliases:
        instead = f"Give models:/{name}@{sorted(model.aliases)[0]} or models:/{name}/VERSION."
    elif versions:
        instead = f"Give models:/{name}/VERSION, or set an alias on a version."
    else:
        instead = "Train a model into it (`zoobot train --registered-model-name NAME`), or give runs:/<run id>."
    return _not_found(reference, f"registered model '{name}' has {lacks} ({has})", instead)


def _check_logged_model(reference: str, model_id: str) -> None:
    try:
        model = _client().get_logged_model(model_id)
    except _mlflow_exception() as e:
        if not _is_missing(e):
            raise
        raise _not_found(reference, f"no logged model with id '{model_id}' in {_store()}",
                         "Give the models:/m-<id> printed by `zoobot train` (its run's model_uri tag), "
                         "runs:/<run id>, or models:/NAME@champion.") from e
    status = str(getattr(model.status, "value", model.status))
    if status != "READY":
        raise _not_found(reference, f"logged model '{model_id}' is {status}, not READY (its upload did not "
                                    "finish)", HOW_TO_GIVE_A_MODEL)


def _check_runs_uri(reference: str) -> None:
    run_id, _, inner = reference[len("runs:/"):].strip("/").partition("/")
    inner = inner or MODEL_ARTIFACT
    if not run_id:
        raise ModelReferenceError(f"Model '{reference}' names no run. {HOW_TO_GIVE_A_MODEL}")
    client = _client()
    try:
        run = client.get_run(run_id)
    except _mlflow_exception() as e:
        if _is_missing(e):
            raise _not_found(reference, f"no run with id '{run_id}' in {_store()}", HOW_TO_GIVE_A_MODEL) from e
        if _error_code(e) == "INVALID_PARAMETER_VALUE":
            raise _not_found(reference, f"'{run_id}' is not a run id ({_shorten(e.message)})",
                             HOW_TO_GIVE_A_MODEL) from e
        raise
    if run.info.lifecycle_stage == "deleted":
        raise _not_found(reference, f"run {run_id} was deleted", HOW_TO_GIVE_A_MODEL)
    models = _logged_models_of(run)
    if inner.split("/")[0] in {m.name for m in models} or _has_artifact(client, run_id, inner):
        return
    status = run.info.status
    if status in ("FAILED", "KILLED"):
        why = f"run {run_id} {status} and logged no model"
    elif status in ("RUNNING", "SCHEDULED"):
        why = f"run {run_id} is still {status} and has logged no model yet"
    else:
        step = run.data.tags.get(tag_names.STEP)
        what = ", ".join(sorted({m.name for m in models})) or "none"
        why = (f"run {run_id}{f' (a {step} run)' if step else ''} logged no model named '{inner}' "
               f"(its logged models: {what})")
    raise _not_found(reference, why, "Give a finished train run (runs:/<run id>), or models:/NAME@champion.")


def _logged_models_of(run) -> list:
    """The LoggedModels a run produced: its outputs, and any logged with it as their source run."""
    import mlflow

    client = _client()
    ids = {output.model_id for output in getattr(run.outputs, "model_outputs", None) or []}
    found = {m.model_id: m for m in mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list")}
    for model_id in ids - set(found):
        try:
            found[model_id] = client.get_logged_model(model_id)
        except _mlflow_exception() as e:
            if not _is_missing(e):
                raise
    return list(found.values())


def _has_artifact(client, run_id: str, path: str) -> bool:
    """A model saved as plain run artifacts (MLflow 2 style, or a copied folder)."""
    parent = path.rpartition("/")[0] or None
    try:
        return path in {a.path for a in client.list_artifacts(run_id, parent)}
    except (OSError, _mlflow_exception()):  # an artifact store that cannot list: leave it to the download
        return True


def _not_found(reference: str, why: str, instead: str = HOW_TO_GIVE_A_MODEL) -> ModelReferenceError:
    return ModelReferenceError(f"Model '{reference}' not found: {why}. {instead}")


def _listing(names: list) -> str:
    shown = ", ".join(str(n) for n in names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _store() -> str:
    import mlflow

    return f"the tracking store {shown_uri(mlflow.get_tracking_uri())}"


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _mlflow_exception():
    from mlflow.exceptions import MlflowException

    return MlflowException


def _error_code(error) -> str:
    return str(getattr(error, "error_code", ""))


def _is_missing(error) -> bool:
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    return _error_code(error) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def describe_model_reference(reference: str) -> str:
    """What a model reference pointed at when it was used, for records that outlive aliases:
    'models:/NAME@ALIAS = NAME version 3 (run abc...)'; a local path as an absolute path."""
    reference = str(reference).strip()
    if not reference.startswith(("models:/", "runs:/")):
        return str(Path(reference).resolve())
    if reference.startswith("runs:/"):
        return reference
    client = _client()
    parts = reference[len("models:/"):].strip("/").split("/")
    try:
        if len(parts) == 2 and parts[1].isdigit():
            version = client.get_model_version(parts[0], parts[1])
        elif "@" in parts[0]:
            version = client.get_model_version_by_alias(*parts[0].rsplit("@", 1))
        elif len(parts) == 1:
            logged = client.get_logged_model(parts[0])
            return f"{reference} (logged model of run {logged.source_run_id})"
        else:
            return reference
    except _mlflow_exception():
        return reference
    return f"{reference} = {version.name} version {version.version} (run {version.run_id})"
