"""Everything Zoobot says to MLflow lives here (and in the thin entry points).

The science modules return plain values; these functions turn them into params, metrics, tags,
tables, figures, datasets and artifacts, and turn artifact URIs back into local folders.

Tag names are the same on every run so that `mlflow.search_runs(filter_string="tags.step = 'convert'")`
and the UI's compare view work without knowing the code: step, schema, and later architecture,
arm, iteration.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from zoobot.core import plots

TAG_STEP = "step"
TAG_SCHEMA = "schema"
TAG_LOCAL_OUTPUT = "local_output"  # absolute folder the step wrote on the machine it ran on
TAG_OUTPUT_DIGEST = "output_digest"  # sha256 that identifies that output (catalog or manifest)
URI_SCHEMES = ("runs:/", "mlflow-artifacts:/", "models:/", "s3://", "gs://", "wasbs://", "hdfs://", "dbfs:/",
               "file://", "http://", "https://")


def is_uri(value: str) -> bool:
    return str(value).startswith(URI_SCHEMES)


TAG_CODE_VERSION = "code_version"  # hash of the package's source: what the pipeline's step reuse compares
TAG_GIT_COMMIT = "git_commit"
TAG_MODEL_URI = "model_uri"  # the logged model of a train run (models:/m-...)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex) of zoobot/, entrypoints/ and MLproject as they are on disk, so an edit not yet
    committed still counts as new code."""
    import hashlib

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    files = sorted([*root.joinpath("zoobot").rglob("*.py"), *root.joinpath("entrypoints").glob("*.py"),
                    root / "MLproject"])
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[2],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def standard_tags() -> dict[str, str]:
    tags = {TAG_CODE_VERSION: code_version()}
    if git_commit():
        tags[TAG_GIT_COMMIT] = git_commit()
    return tags


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
        mlflow.set_tags({TAG_STEP: step, "mlflow.runName": run_name(step, tags or {}), **standard_tags(),
                         **(tags or {})})
        mlflow.log_dict(config_dict, "config.json")
        yield run


def run_name(step: str, tags: dict) -> str:
    """Names that say what a run is, the same way everywhere: train-vgg-dirichlet-decals,
    evaluate, al-bald-iteration-002 (instead of MLflow's random adjective-animal names)."""
    parts = [step] + [str(tags[k]) for k in ("architecture", "output", TAG_SCHEMA) if tags.get(k)]
    return "-".join(parts)


def _param(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text[:6000]  # MLflow's limit on a param value


def log_simulation(result) -> None:
    """A `simulate` run: the survey's catalog, images and a few counts."""
    catalog = result.catalog
    folder = result.catalog_path.parent
    mlflow.log_metric("n_galaxies", len(catalog))
    mlflow.set_tags({TAG_LOCAL_OUTPUT: str(folder.resolve()), TAG_OUTPUT_DIGEST: file_digest(result.catalog_path)})
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
        TAG_OUTPUT_DIGEST: file_digest(output_dir / "manifest.json"),
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
        if (folder / name).is_file() and file_digest(folder / name) == digest:
            return folder / rest if rest else folder
    return None


def _safe_name(uri: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uri)[-180:]



# -- the pipeline ------------------------------------------------------------------------------------


def find_finished_run(step):
    """The newest finished run in this experiment that did `step` (a zoobot.workflows.pipeline.Step) with
    the same parameters and inputs and this code version, or None."""
    from zoobot.workflows.pipeline import matches

    experiment_id = mlflow.active_run().info.experiment_id if mlflow.active_run() else None
    if experiment_id is None:
        return None
    candidates = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(f"tags.{TAG_STEP} = '{step.entry_point}' and attributes.status = 'FINISHED' "
                       f"and tags.{TAG_CODE_VERSION} = '{code_version()}'"),
        order_by=["attributes.start_time DESC"], max_results=200)
    for run in candidates:
        if matches(step, run.data.params, run.data.tags, code_version()):
            return run
    return None


def record_reuse(entry_point: str, run) -> None:
    mlflow.set_tag(f"reused.{entry_point}", run.info.run_id)


def log_pipeline_summary(runs: dict) -> None:
    """On the pipeline's parent run: each step's run id, and the headline numbers of the whole job."""
    mlflow.set_tags({f"run.{name}": run.info.run_id for name, run in runs.items()})
    headline = {}
    for name, run in runs.items():
        for key, value in run.data.metrics.items():
            if (name == "convert" and key.startswith("n_")) or (name == "evaluate" and key in SUMMARY_METRICS) \
                    or key in ("label_saving", "best_val_loss"):
                headline[key] = value
    if headline:
        mlflow.log_metrics(headline)


SUMMARY_METRICS = ("test_rmse", "test_mae", "test_accuracy", "test_coverage_error_w5", "test_coverage_error_w10",
                   "test_mc_loglik", "test_loglik_gain")


# -- the status report -------------------------------------------------------------------------------


def report_data(experiment: str) -> dict:
    """Everything zoobot.tracking.report.build_report needs about one experiment, from the tracking server."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments(max_results=50)]
        raise ValueError(f"No experiment named '{experiment}' at {mlflow.get_tracking_uri()}; it has {names}. "
                         "Give one of those with --experiment, or point MLFLOW_TRACKING_URI at the right server.")
    runs = mlflow.search_runs([found.experiment_id], max_results=5000)
    run_ids = set(runs["run_id"]) if len(runs) else set()
    champions = []
    for model in client.search_registered_models(max_results=1000):
        for alias, version in (model.aliases or {}).items():
            detail = client.get_model_version(model.name, version)
            if detail.run_id in run_ids:
                champions.append({"model": model.name, "alias": alias, "version": version, "run_id": detail.run_id,
                                  "val_loss": detail.tags.get("val_loss")})
    return {"runs": runs, "experiment": experiment, "experiment_id": found.experiment_id,
            "tracking_uri": mlflow.get_tracking_uri(), "champions": champions}


def log_report(path: Path, n_runs: int) -> None:
    mlflow.log_artifact(str(path))
    mlflow.log_metric("n_runs_reported", n_runs)


# -- training ----------------------------------------------------------------------------------------

MODEL_ARTIFACT = "model"  # name of the logged model in a train run
KERAS_FILE = "model.keras"  # zoobot.model.network.BUNDLE_KERAS


def metrics_logger(start_step: int = 0):
    """A Keras callback logging every epoch's metrics to the active run, at step = epoch (1-based)."""
    import keras

    class MetricsLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    return MetricsLogger()


def backfill_history(history: dict[str, list[float]]) -> int:
    """Log the epochs a killed process finished but did not get to log; returns how many.

    The checkpoint's history is the truth; MLflow gets whatever steps it lacks, so a restart leaves
    the run's curves without gaps or duplicates.
    """
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    missing = 0
    for key, values in history.items():
        logged = {m.step for m in client.get_metric_history(run_id, key)}
        for step, value in enumerate(values, start=1):
            if step not in logged:
                mlflow.log_metric(key, value, step=step)
                missing += 1
    return missing


def resume_or_start(step: str, config, resume_run_id: str | None, tags: dict | None = None):
    """`step_run`, but into `resume_run_id` when a killed job left one.

    Under `mlflow run` a new run was already made for this process; it is tagged with where the
    work went, so the UI shows why it is empty.
    """
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if resume_run_id and wrapper and wrapper != resume_run_id:
        client = MlflowClient()
        client.set_tag(wrapper, "resumed_into", resume_run_id)
        client.set_tag(wrapper, "mlflow.note.content",
                       f"This launch resumed the interrupted run {resume_run_id}; its results are logged there.")
    if resume_run_id:
        os.environ["MLFLOW_RUN_ID"] = resume_run_id
    return step_run(step, config, tags=tags)


def log_training(result, manifest, train_config, model_config, n_replicas: int = 1) -> dict:
    """Summary metrics, training curves, the model (pyfunc with MC sampling), and its registration."""
    mlflow.log_metrics({"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                        "epochs_run": result.epochs_run, "n_replicas": n_replicas})
    mlflow.set_tags({"stopped_early": str(result.stopped_early).lower(), TAG_SCHEMA: manifest.schema["name"],
                     "architecture": model_config.architecture, "output": model_config.output})
    figure = plots.training_curves(result.history)
    mlflow.log_figure(figure, "training_curves.png")
    plots.plt.close(figure)
    return log_model(result.model, manifest, train_config, model_config, result.best_val_loss)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for name in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "astropy", "pillow", "scipy",
                 "pyyaml", "mlflow"):
        try:
            requirements.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return requirements


def log_model(model, manifest, train_config, model_config, val_loss: float) -> dict:
    """Log the model as a pyfunc that returns MC-dropout samples, register it, maybe crown it."""
    import tempfile

    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    import zoobot

    height, width, channels = model.input_shape[1:]
    n_outputs = model.output_shape[-1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, height, width, channels), "images")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, n_outputs, -1), "samples")]),
        params=ParamSchema([ParamSpec("n_samples", "long", 5)]),
    )
    metadata = {"schema": manifest.schema, "output": model_config.output,
                "question": model_config.question or None, "image_shape": [height, width, channels],
                "val_loss": val_loss}
    with tempfile.TemporaryDirectory() as tmp:
        from zoobot.model.network import save_bundle

        bundle = save_bundle(model, Path(tmp) / "bundle", metadata)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ZoobotPyfunc(),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(zoobot.__file__).parent)],
            signature=signature,
            pip_requirements=_pip_requirements(),
            metadata=metadata,
            registered_model_name=train_config.registered_model_name or None,
        )
    out = {"model_uri": info.model_uri, "registered_version": None, "champion": False}
    mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    if train_config.registered_model_name:
        version = str(info.registered_model_version)
        out["registered_version"] = version
        out["champion"] = crown_if_better(train_config.registered_model_name, version, val_loss,
                                          train_config.champion_alias)
    return out


def crown_if_better(name: str, version: str, val_loss: float, alias: str) -> bool:
    """The first version takes the alias; a later one only when its validation loss is lower."""
    client = MlflowClient()
    client.set_model_version_tag(name, version, "val_loss", f"{val_loss:.6f}")
    if not alias:
        return False
    try:
        holder = client.get_model_version_by_alias(name, alias)
        holder_loss = float(holder.tags.get("val_loss", "inf"))
    except mlflow.exceptions.MlflowException:
        holder, holder_loss = None, float("inf")
    if holder is None or val_loss < holder_loss:
        client.set_registered_model_alias(name, alias, version)
        mlflow.set_tag("champion", f"{name}@{alias} = v{version}")
        return True
    mlflow.set_tag("champion", f"not crowned: v{holder.version} holds {alias} with val_loss {holder_loss:.4f}")
    return False


# MLflow suggests type hints on predict when a PythonModel is defined; this one's signature is explicit.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
# The signature is explicit; an input example would make MLflow run the model while logging it.
warnings.filterwarnings("ignore", message=".*An input example was not provided")


class ZoobotPyfunc(mlflow.pyfunc.PythonModel):
    """The registered model: images (B, H, W, C), values 0..255 -> MC-dropout samples
    (B, n_outputs, n_samples); `params={"n_samples": T}` sets T (default 5)."""

    def load_context(self, context):
        from zoobot.model.network import BUNDLE_KERAS, load_bundle, split_trunk_head

        self.model, self.meta = load_bundle(Path(context.artifacts["bundle"]) / BUNDLE_KERAS)
        self.trunk_head = split_trunk_head(self.model)

    def predict(self, context, model_input, params=None):
        import numpy as np

        from zoobot.model.network import mc_predict

        if isinstance(model_input, dict):  # a named tensor input arrives as {"images": array}
            model_input = model_input["images"]
        images = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input,
                            dtype=np.float32)
        n_samples = int((params or {}).get("n_samples", 5))
        return mc_predict(self.model, images, n_samples, trunk_head=self.trunk_head).astype(np.float32)


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


# -- evaluation --------------------------------------------------------------------------------------


def log_evaluation(result, split: str, question_for_examples: str | None = None) -> None:
    """Metrics as `<split>_<metric>` and `<split>_<question>_<metric>`, the coverage table and plots,
    calibration, example posteriors, confusion matrices."""
    import math

    mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in result.metrics.items()
                        if v is not None and not math.isnan(float(v))})
    mlflow.log_table(result.coverage, artifact_file="coverage.json")
    _log_csv(result.coverage, "coverage.csv")
    figures = {
        "coverage_votes.png": plots.coverage_plot(result.coverage, kind="votes"),
        "coverage_fraction.png": plots.coverage_plot(result.coverage, kind="fraction"),
        "calibration.png": plots.calibration_plot(result.predictions, result.counts),
        "confusion_matrices.png": plots.confusion_matrices(result.confusion),
    }
    n = len(result.images)
    if n:
        question = question_for_examples or result.predictions.questions[0]
        figures["posterior_examples.png"] = plots.posterior_examples(
            result.predictions.subset(slice(0, n)), result.counts[:n], result.images,
            result.predictions.id_str[:n], question, n=min(6, n))
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        plots.plt.close(figure)
    for question, matrix in result.confusion.items():
        _log_csv(matrix.reset_index(), f"confusion/{question}.csv")


def log_prediction(result) -> None:
    mlflow.log_metrics({"n_galaxies": result.n_galaxies, "galaxies_per_second": result.n_galaxies / result.seconds})
    mlflow.set_tag(TAG_LOCAL_OUTPUT, str(result.samples_path.parent.resolve()))
    mlflow.log_artifact(str(result.samples_path), artifact_path="predictions")
    mlflow.log_artifact(str(result.summary_path), artifact_path="predictions")


def _log_csv(frame: pd.DataFrame, artifact_file: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        folder = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)


# -- active learning ---------------------------------------------------------------------------------


@contextlib.contextmanager
def iteration_run(runs_file: Path, key: str, config, tags: dict, nested: bool):
    """The MLflow run of one active-learning iteration; a restarted iteration logs into the run
    it started before (its id is kept in `runs_file` beside the campaign's state)."""
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    config_dict = asdict(config) if is_dataclass(config) else dict(config)
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if key in runs and wrapper and wrapper != runs[key]:
        MlflowClient().set_tag(wrapper, "resumed_into", runs[key])
    with mlflow.start_run(run_id=runs.get(key), nested=nested, run_name=key if key not in runs else None) as run:
        if key not in runs:
            runs[key] = run.info.run_id
            tmp = runs_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(runs, indent=1))
            os.replace(tmp, runs_file)
        existing = MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: _param(v) for k, v in config_dict.items() if k not in existing})
        mlflow.set_tags({TAG_STEP: "al_iteration", "mlflow.runName": key, **standard_tags(), **tags})
        yield run


def unfinished_runs(runs_file: Path) -> dict[str, str]:
    """The iteration runs of a campaign (key -> run id) that are still RUNNING in the tracking store."""
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    client = MlflowClient()
    return {key: run_id for key, run_id in runs.items() if client.get_run(run_id).info.status == "RUNNING"}


@contextlib.contextmanager
def reopened_run(run_id: str, nested: bool):
    """Back into a run a kill left RUNNING, to log what it lacks; it ends FINISHED."""
    with mlflow.start_run(run_id=run_id, nested=nested) as run:
        mlflow.set_tag("completed_after_restart", "true")
        yield run


def register_iteration_model(model, manifest, model_config, name: str, val_loss: float) -> dict:
    """Each iteration's model becomes a version of `name` (no alias: the campaign decides)."""
    from types import SimpleNamespace

    logged = log_model(model, manifest, SimpleNamespace(registered_model_name=name, champion_alias=""),
                       model_config, val_loss)
    return {"registered_model": name, "registered_version": logged["registered_version"],
            "model_uri": logged["model_uri"]}


def log_iteration(outcome, state, manifest, only_missing: bool = False) -> None:
    """One iteration's record: counts, test metrics, scores, what was acquired and what it looks like,
    and the vote rows its ingest set aside. `only_missing`: completing a run a kill interrupted, log
    only the metrics it does not have yet (artifacts are simply written again)."""
    import numpy as np

    from zoobot.active.loop import rejects_path
    from zoobot.data.images import ImageSpec, read_image

    step = outcome.iteration
    info = outcome.train_info
    metrics = {"iteration": step, "n_labelled": info.get("n_labelled", 0), "n_acquired": len(outcome.acquired),
               "n_labelled_after": outcome.n_labelled}
    metrics.update({k: v for k, v in info.items() if k.startswith("test_") or k in ("best_val_loss", "epochs_run")})
    if state.is_done(step, "ingest"):
        metrics["n_labels_rejected"] = state.stage_info(step, "ingest").get("n_rejected", 0)
    logged = set(MlflowClient().get_run(mlflow.active_run().info.run_id).data.metrics) if only_missing else set()
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and k not in logged}, step=step)
    if rejects_path(state, step).is_file():
        mlflow.log_artifact(str(rejects_path(state, step)))
    if info.get("registered_version"):
        mlflow.set_tag("registered_model", f"{info['registered_model']} v{info['registered_version']}")
    scores = outcome.scores
    if len(scores):
        figure = plots.score_histogram(scores["score"].to_numpy(), scores["id_str"].isin(outcome.acquired).to_numpy())
        mlflow.log_figure(figure, "acquisition_scores.png")
        plots.plt.close(figure)
        acquired = scores[scores["id_str"].isin(outcome.acquired)].sort_values("rank")
        mlflow.log_table(acquired.astype({"id_str": str}), artifact_file="acquired.json")
        _log_csv(acquired, "acquired.csv")
        # what was chosen beside what chance would have chosen
        height, width, channels = manifest.image_shape
        spec = ImageSpec(size=max(height, 32), channels=channels)
        rng = np.random.default_rng(step)
        random_ids = list(rng.choice(scores["id_str"].to_numpy(), size=min(8, len(scores)), replace=False))
        rows = {}
        for name, ids in (("acquired (top)", list(acquired["id_str"][:8])), ("random from pool", random_ids)):
            paths = state.galaxies(ids)["image_path"].tolist()
            rows[name] = (ids, np.stack([read_image(p, spec) for p in paths]))
        figure = plots.image_grid(rows, title=f"Iteration {step}: acquired vs random")
        mlflow.log_figure(figure, "acquired_vs_random.png")
        plots.plt.close(figure)


def log_learning_curves(curves: dict, saving: float, reason: str) -> None:
    """On the campaign's parent run: every arm's test loss and RMSE against labelled galaxies, and
    the label saving of the best arm over random."""
    figure = plots.learning_curves(curves, saving)
    mlflow.log_figure(figure, "learning_curves.png")
    plots.plt.close(figure)
    mlflow.log_metric("label_saving", saving)
    mlflow.set_tag("label_saving_note", reason or "computed")
    for arm, curve in curves.items():
        _log_csv(curve, f"curves/{arm}.csv")


# -- benchmark ---------------------------------------------------------------------------------------

_RUN_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@contextlib.contextmanager
def scratch_store(folder):
    """A throwaway SQLite tracking store in `folder` for the block, yielding an experiment id whose
    artifacts stay in `folder`; afterwards the caller's tracking URI and run environment are back.

    The benchmark times runs with logging on; they must not land in the user's store.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    saved_environment = {name: os.environ.get(name) for name in _RUN_ENVIRONMENT}
    for name in _RUN_ENVIRONMENT:
        os.environ.pop(name, None)
    try:
        # MLflow's own temporary switch: afterwards the tracking URI is whatever it was, including
        # "not set, read from the environment" (mlflow.set_tracking_uri(old) would pin it for good).
        with _use_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}"):
            # Creating the store runs its schema migrations: done here, before anything is timed.
            yield MlflowClient().create_experiment("benchmark-scratch",
                                                   artifact_location=(folder / "artifacts").as_uri())
    finally:
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_apart(function, step: str, params: dict, experiment_id: str):
    """function() inside a new run of `experiment_id`, logged as `step_run` logs a step.

    It runs in a thread of its own: MLflow keeps the active run per thread, so a run the caller has
    open (the benchmark's own) is neither its parent nor written to.
    """
    import threading

    outcome: dict = {}

    def target():
        try:
            with mlflow.start_run(experiment_id=experiment_id, run_name=step):
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                mlflow.set_tags({TAG_STEP: step})
                mlflow.log_dict(params, "config.json")
                outcome["value"] = function()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"zoobot-{step}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def log_benchmark(figures, config, report: dict, table: str) -> None:
    """A `benchmark` run: machine, versions and resolved sizes as params; every measured figure (and
    its spread) as metrics; the report as benchmark.json and the printed table beside it."""
    params = {f"machine.{k}": v for k, v in report["machine"].items()}
    params.update({f"version.{k}": v for k, v in report["versions"].items()})
    params.update({f"size.{k}": v for k, v in report["sizes"].items()})
    existing = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: _param(v) for k, v in params.items() if k not in existing})
    metrics = {"benchmark_seconds": report["seconds"]}
    for figure in figures:
        if figure.value is None:
            continue
        metrics[figure.key] = figure.value
        if figure.spread is not None:
            metrics[f"{figure.key}_min"], metrics[f"{figure.key}_max"] = figure.spread
    measured = [f for f in figures if f.passed is not None]
    metrics.update(figures_measured=len(measured), figures_passed=sum(bool(f.passed) for f in measured))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.set_tags({"benchmark_mode": config.mode})
    mlflow.log_dict(report, "benchmark.json")
    mlflow.log_text(table, "benchmark_table.txt")


# -- download ----------------------------------------------------------------------------------------


def log_download(result) -> None:
    """A `download` run: the addresses fetched, counts, failures with reasons, the catalog as a dataset."""
    from zoobot.data.download import CatalogDownload

    if isinstance(result, CatalogDownload):
        _log_catalog_download(result)
    else:
        _log_images_download(result)


def _log_catalog_download(result) -> None:
    source = result.source
    mlflow.log_params({"url": result.url, "published_url": source.url, "published_checksum": str(source.checksum)})
    mlflow.log_metrics({"n_rows": result.n_rows, "size_bytes": result.size, "downloaded": int(result.downloaded),
                        "seconds": result.seconds})
    mlflow.set_tags({TAG_SCHEMA: source.schema, "source": source.name, "verified": result.verified,
                     "sha256": result.sha256, TAG_LOCAL_OUTPUT: str(result.path.parent),
                     TAG_OUTPUT_DIGEST: result.sha256})
    _log_catalog_dataset(result.table, source=result.url, name=result.path.name, digest=result.sha256)


def _log_images_download(result) -> None:
    from zoobot.data.download import image_examples
    from zoobot.data.images import ImageReadError, ImageSpec, read_image

    mlflow.log_params({"cutout_url": result.url_template, "cutout_survey": result.survey,
                       "cutout_pixscale": result.pixscale})
    mlflow.log_metrics({"n_rows": result.n_rows, "n_selected": result.n_selected, "n_downloaded": result.n_downloaded,
                        "n_present": result.n_present, "n_failed": result.n_failed, "n_written": result.n_written,
                        "seconds": result.seconds,
                        "galaxies_per_second": result.n_downloaded / max(result.seconds, 1e-9)})
    mlflow.set_tags({TAG_LOCAL_OUTPUT: str(result.output_catalog.parent),
                     TAG_OUTPUT_DIGEST: file_digest(result.output_catalog)})
    mlflow.log_artifact(str(result.failures_path))
    if len(result.failures):
        with warnings.catch_warnings():
            # MLflow 3.17's log_table trips pandas 3's deprecation of object/str dtype selection: noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            mlflow.log_table(result.failures.astype({"row": int, "id": str, "url": str, "reason": str}),
                             artifact_file="download_failures.json")
    examples = []
    for path in image_examples(result):
        try:
            examples.append((path.stem, read_image(path, ImageSpec(size=64, channels=3))))
        except ImageReadError:
            continue
    if examples:
        import numpy as np

        figure = plots.image_grid({result.survey: ([i for i, _ in examples], np.stack([a for _, a in examples]))},
                                  title=f"Downloaded cutouts ({result.survey}, {result.image_format})")
        mlflow.log_figure(figure, "examples.png")
        plots.plt.close(figure)
    _log_catalog_dataset(result.galaxies, source=str(result.catalog_path), name=result.catalog_path.name,
                         digest=result.catalog_sha256)


def _log_catalog_dataset(frame: pd.DataFrame, source: str, name: str, digest: str) -> None:
    with warnings.catch_warnings():
        # As in log_conversion: source-interpretation and int-column schema hints are noise here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:16])
        mlflow.log_input(dataset, context="catalog")
