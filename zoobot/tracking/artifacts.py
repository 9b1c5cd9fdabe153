"""From an MLflow artifact URI (runs:/, models:/, mlflow-artifacts:/, ...) back to a local path.

A step takes its input as a local path or as the URI of the step that made it. A run made on this
machine whose output folder is still there, unchanged, is read in place; anything else is
downloaded once into a cache folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names

URI_SCHEMES = ("runs:/", "mlflow-artifacts:/", "models:/", "s3://", "gs://", "wasbs://", "hdfs://", "dbfs:/",
               "file://", "http://", "https://")
MODEL_ARTIFACT = "model"  # name of the logged model in a train run
KERAS_FILE = "model.keras"  # zoobot.model.network.BUNDLE_KERAS
DIGESTED_FILES = ("manifest.json", "catalog.csv")  # what a step's output_digest tag is the sha256 of


def run_artifacts_location() -> str:
    """Where the active run's artifacts are, for people: a local folder when the store keeps them on
    this machine (the default SQLite + ./mlruns), else the artifact URI (a server's)."""
    from urllib.parse import unquote, urlparse

    uri = mlflow.get_artifact_uri()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else uri
    return uri


def is_uri(value: str) -> bool:
    return str(value).startswith(URI_SCHEMES)


def file_digest(path: Path) -> str:
    from zoobot.data.catalog import file_sha256

    return file_sha256(path)


def resolve_local(uri_or_path: str, default_artifact: str, cache_dir: str | Path = "data/downloads") -> Path:
    """A local path for a step's input given as a path or as an MLflow artifact URI.

    `runs:/<id>` alone means that run's `default_artifact` folder (e.g. 'shards'). When the run was
    made on this machine and its output folder is still there, unchanged, that folder is used
    instead of downloading a copy.
    """
    text = str(uri_or_path)
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    if text.startswith("file://"):
        return Path(text[len("file://"):]).resolve()
    if text.startswith("runs:/"):
        run_id, _, inner = text[len("runs:/"):].strip("/").partition("/")
        inner = inner or default_artifact
        local = _unchanged_local_output(run_id, inner, default_artifact)
        if local is not None:
            return local
        text = f"runs:/{run_id}/{inner}"
    target = Path(cache_dir).resolve() / _safe_name(text)
    if not target.exists():
        _download(text, target)
    return target


def resolve_local_file(uri_or_path: str, default_artifact: str = "survey") -> Path:
    """A file inside a logged folder (e.g. a simulated survey's catalog.csv), with its folder
    alongside so that relative image paths in it still resolve."""
    text = str(uri_or_path)
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    folder, _, name = text.rstrip("/").rpartition("/")
    return resolve_local(folder, default_artifact) / name


def local_model_path(uri_or_path: str) -> Path:
    """The .keras file of a model given as a local file/folder, a run URI, or models:/NAME@ALIAS."""
    text = str(uri_or_path)
    if not is_uri(text):
        path = Path(text).expanduser().resolve()
    else:
        if text.startswith("runs:/") and text.strip("/").count("/") == 1:
            text = f"{text.rstrip('/')}/{MODEL_ARTIFACT}"
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    if path.is_file():
        return path
    found = sorted(path.rglob(KERAS_FILE))
    if not found:
        raise FileNotFoundError(f"No {KERAS_FILE} found in model '{uri_or_path}' ({path}). Give a model logged by "
                                "`zoobot train` (runs:/<id>, models:/NAME@ALIAS) or a .keras file.")
    return found[0]


def _download(uri: str, target: Path) -> None:
    """Into a staging folder first, then renamed: a killed download never passes for a finished one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    downloaded = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging))
    Path(downloaded).rename(target)
    shutil.rmtree(staging, ignore_errors=True)


def _unchanged_local_output(run_id: str, inner: str, default_artifact: str) -> Path | None:
    tags = MlflowClient().get_run(run_id).data.tags
    local, digest = tags.get(tag_names.LOCAL_OUTPUT), tags.get(tag_names.OUTPUT_DIGEST)
    top, _, rest = inner.partition("/")
    if not local or top != default_artifact:
        return None
    folder = Path(local)
    for name in DIGESTED_FILES:
        if (folder / name).is_file() and file_digest(folder / name) == digest:
            return folder / rest if rest else folder
    return None


def _safe_name(uri: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uri)[-180:]
