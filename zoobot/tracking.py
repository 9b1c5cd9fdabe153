"""Everything Zoobot says to MLflow lives here (and in the thin entry points).

The science modules return plain values; these functions turn them into params, metrics, tags,
tables, figures, datasets and artifacts, and turn artifact URIs back into local folders.

Tag names are the same on every run so that `mlflow.search_runs(filter_string="tags.step = 'convert'")`
and the UI's compare view work without knowing the code: step, schema, and later architecture,
arm, iteration.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from zoobot import plots

TAG_STEP = "step"
TAG_SCHEMA = "schema"
TAG_LOCAL_OUTPUT = "local_output"  # absolute folder the step wrote on the machine it ran on
TAG_OUTPUT_DIGEST = "output_digest"  # sha256 that identifies that output (catalog or manifest)
URI_SCHEMES = ("runs:/", "mlflow-artifacts:/", "models:/", "s3://", "gs://", "wasbs://", "hdfs://", "dbfs:/",
               "file://", "http://", "https://")


def is_uri(value: str) -> bool:
    return str(value).startswith(URI_SCHEMES)


@contextlib.contextmanager
def step_run(step: str, config, tags: dict[str, str] | None = None, nested: bool = False):
    """Open (or, under `mlflow run`, resume) the step's run and record its resolved config once.

    Parameters already logged by `mlflow run` are left alone (MLflow refuses to change a logged
    parameter); the resolved config, defaults included, is always logged in full as config.json.
    """
    with mlflow.start_run(nested=nested) as run:
        config_dict = asdict(config) if is_dataclass(config) else dict(config)
        existing = MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: _param(v) for k, v in config_dict.items() if k not in existing})
        mlflow.set_tags({TAG_STEP: step, "mlflow.runName": run.info.run_name or step, **(tags or {})})
        mlflow.log_dict(config_dict, "config.json")
        yield run


def _param(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text[:6000]  # MLflow's limit on a param value


def log_simulation(result) -> None:
    """A `simulate` run: the survey's catalog, images and a few counts."""
    catalog = result.catalog
    folder = result.catalog_path.parent
    mlflow.log_metric("n_galaxies", len(catalog))
    mlflow.set_tags({TAG_LOCAL_OUTPUT: str(folder.resolve()), TAG_OUTPUT_DIGEST: _sha256(result.catalog_path)})
    mlflow.log_artifacts(str(folder), artifact_path="survey")


def log_conversion(result, config) -> None:
    """A `convert` run: counts per split, rejects with reasons, manifest, examples, catalog input."""
    manifest = result.manifest
    output_dir = Path(manifest.root)
    metrics = {f"n_{split}": count for split, count in manifest.counts.items()}
    metrics.update(n_catalog_rows=manifest.catalog["rows"], n_rejected=len(result.rejected),
                   n_written=sum(manifest.counts.values()))
    mlflow.log_metrics(metrics)
    mlflow.set_tags({
        TAG_SCHEMA: manifest.schema["name"],
        TAG_LOCAL_OUTPUT: str(output_dir),
        TAG_OUTPUT_DIGEST: _sha256(output_dir / "manifest.json"),
    })
    mlflow.log_artifact(str(output_dir / "manifest.json"))
    mlflow.log_artifact(str(output_dir / "rejected.csv"))
    if len(result.rejected):
        mlflow.log_table(result.rejected.astype({"row": int, "id_str": str, "reason": str}),
                         artifact_file="rejected_rows.json")
    if result.examples:
        figure = plots.image_grid(result.examples, title="Example galaxies per split")
        mlflow.log_figure(figure, "examples_per_split.png")
        plots.plt.close(figure)
    galaxies = result.catalog.galaxies
    columns = [c for c in ("id_str", "ra", "dec", *result.catalog.schema.label_cols) if c in galaxies.columns]
    with warnings.catch_warnings():
        # A local path is "interpretable in multiple ways" and int columns draw a schema hint; both noise here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(galaxies[columns], source=str(result.catalog.path.resolve()),
                                          name=result.catalog.path.name, digest=result.catalog.sha256[:16])
    mlflow.log_input(dataset, context="catalog")
    if config.log_shards:
        mlflow.log_artifacts(str(output_dir), artifact_path="shards")


def _sha256(path: Path) -> str:
    from zoobot.catalog import file_sha256

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
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(target.name + f".partial-{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(staging))
        Path(downloaded).rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_local_file(uri_or_path: str, default_artifact: str = "survey") -> Path:
    """A file inside a logged folder (e.g. a simulated survey's catalog.csv), with its folder
    alongside so that relative image paths in it still resolve."""
    text = str(uri_or_path)
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    folder, _, name = text.rstrip("/").rpartition("/")
    return resolve_local(folder, default_artifact) / name


def _unchanged_local_output(run_id: str, inner: str, default_artifact: str) -> Path | None:
    tags = MlflowClient().get_run(run_id).data.tags
    local, digest = tags.get(TAG_LOCAL_OUTPUT), tags.get(TAG_OUTPUT_DIGEST)
    top, _, rest = inner.partition("/")
    if not local or top != default_artifact:
        return None
    folder = Path(local)
    for name in ("manifest.json", "catalog.csv"):
        if (folder / name).is_file() and _sha256(folder / name) == digest:
            return folder / rest if rest else folder
    return None


def _safe_name(uri: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uri)[-180:]

