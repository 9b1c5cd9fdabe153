"""What each step records on its run, one function per step, in the order the data flows:
download, simulate, convert, train, evaluate, predict, active learning, benchmark.

The science modules return plain values; these functions turn them into params, metrics, tags,
tables, figures, datasets and artifacts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from zoobot.core import plots
from zoobot.core import tags as tag_names
from zoobot.tracking import lineage
from zoobot.tracking.artifacts import file_digest
from zoobot.tracking.registry import log_model
from zoobot.tracking.runs import log_new_params

EXAMPLES_SHOWN = 8  # galaxies per row of an example grid


# -- download ------------------------------------------------------------------------------------------


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
    mlflow.set_tags({tag_names.SCHEMA: source.schema, tag_names.SOURCE: source.name,
                     tag_names.VERIFIED: result.verified, tag_names.SHA256: result.sha256,
                     tag_names.LOCAL_OUTPUT: str(result.path.parent), tag_names.OUTPUT_DIGEST: result.sha256})
    _log_catalog_dataset(result.table, source=result.url, name=result.path.name, digest=result.sha256)


def _log_images_download(result) -> None:
    mlflow.log_params({"cutout_url": result.url_template, "cutout_survey": result.survey,
                       "cutout_pixscale": result.pixscale})
    mlflow.log_metrics({"n_rows": result.n_rows, "n_selected": result.n_selected, "n_downloaded": result.n_downloaded,
                        "n_present": result.n_present, "n_failed": result.n_failed, "n_written": result.n_written,
                        "seconds": result.seconds,
                        "galaxies_per_second": result.n_downloaded / max(result.seconds, 1e-9)})
    mlflow.set_tags({tag_names.LOCAL_OUTPUT: str(result.output_catalog.parent),
                     tag_names.OUTPUT_DIGEST: file_digest(result.output_catalog)})
    mlflow.log_artifact(str(result.failures_path))
    if len(result.failures):
        with warnings.catch_warnings():
            # MLflow 3.17's log_table trips pandas 3's deprecation of object/str dtype selection: noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            mlflow.log_table(result.failures.astype({"row": int, "id": str, "url": str, "reason": str}),
                             artifact_file="download_failures.json")
    _log_downloaded_examples(result)
    _log_catalog_dataset(result.galaxies, source=str(result.catalog_path), name=result.catalog_path.name,
                         digest=result.catalog_sha256)


def _log_downloaded_examples(result) -> None:
    import numpy as np

    from zoobot.data.download import image_examples
    from zoobot.data.images import ImageReadError, ImageSpec, read_image

    examples = []
    for path in image_examples(result):
        try:
            examples.append((path.stem, read_image(path, ImageSpec(size=64, channels=3))))
        except ImageReadError:
            continue
    if examples:
        figure = plots.image_grid({result.survey: ([i for i, _ in examples], np.stack([a for _, a in examples]))},
                                  title=f"Downloaded cutouts ({result.survey}, {result.image_format})")
        _log_figure(figure, "examples.png")


def _log_catalog_dataset(frame: pd.DataFrame, source: str, name: str, digest: str) -> None:
    with warnings.catch_warnings():
        # A local path is "interpretable in multiple ways" and int columns draw a schema hint; both noise here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:16])
        mlflow.log_input(dataset, context="catalog")


# -- simulate and convert ------------------------------------------------------------------------------


def log_simulation(result) -> None:
    """A `simulate` run: the survey's catalog, images and a few counts."""
    folder = result.catalog_path.parent
    mlflow.log_metric("n_galaxies", len(result.catalog))
    mlflow.set_tags({tag_names.LOCAL_OUTPUT: str(folder.resolve()),
                     tag_names.OUTPUT_DIGEST: file_digest(result.catalog_path)})
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
        tag_names.SCHEMA: manifest.schema["name"],
        tag_names.LOCAL_OUTPUT: str(output_dir),
        tag_names.OUTPUT_DIGEST: file_digest(output_dir / "manifest.json"),
    })
    mlflow.log_artifact(str(output_dir / "manifest.json"))
    mlflow.log_artifact(str(output_dir / "rejected.csv"))
    if len(result.rejected):
        mlflow.log_table(result.rejected.astype({"row": int, "id_str": str, "reason": str}),
                         artifact_file="rejected_rows.json")
    if result.examples:
        _log_figure(plots.image_grid(result.examples, title="Example galaxies per split"), "examples_per_split.png")
    lineage.log_splits(manifest, {split: split for split in manifest.splits})
    catalog = result.catalog
    columns = [c for c in ("id_str", "ra", "dec", *catalog.schema.label_cols) if c in catalog.galaxies.columns]
    _log_catalog_dataset(catalog.galaxies[columns], source=str(catalog.path.resolve()), name=catalog.path.name,
                         digest=catalog.sha256)
    if config.log_shards:
        mlflow.log_artifacts(str(output_dir), artifact_path="shards")


# -- train, evaluate, predict --------------------------------------------------------------------------


def log_training(result, manifest, train_config, model_config, n_replicas: int = 1, description: str = "",
                 version_tags: dict[str, str] | None = None) -> dict:
    """Summary metrics, training curves, the model (pyfunc with MC sampling), and its registration
    (with `description` and `version_tags` on the registered version)."""
    mlflow.log_metrics({"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                        "epochs_run": result.epochs_run, "n_replicas": n_replicas,
                        "n_train": manifest.counts.get("train", 0), "n_validation": manifest.counts.get("validation", 0)})
    mlflow.set_tags({tag_names.STOPPED_EARLY: str(result.stopped_early).lower(),
                     tag_names.SCHEMA: manifest.schema["name"], tag_names.ARCHITECTURE: model_config.architecture,
                     tag_names.OUTPUT: model_config.output})
    if result.calibration is not None:
        mlflow.log_metrics(result.calibration.metrics())
    if result.calibration_note:
        mlflow.set_tag(tag_names.CALIBRATION, result.calibration_note)
    _log_figure(plots.training_curves(result.history), "training_curves.png")
    if result.calibration_note:  # on the registered version's page too
        version_tags = {**(version_tags or {}), tag_names.CALIBRATION: result.calibration_note[:5000]}
    return log_model(result.model, manifest, train_config, model_config, result.best_val_loss, description,
                     version_tags)


def log_evaluation(result, split: str, question_for_examples: str | None = None) -> None:
    """Metrics as `<split>_<metric>` and `<split>_<question>_<metric>`, the coverage table and plots,
    calibration, example posteriors, confusion matrices."""
    import math

    mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in result.metrics.items()
                        if v is not None and not math.isnan(float(v))})
    figures = {}
    if not result.coverage.empty:  # empty when every question is one 0/1 label per galaxy (result.notes)
        mlflow.log_table(result.coverage, artifact_file="coverage.json")
        _log_csv(result.coverage, "coverage.csv")
        figures["coverage_votes.png"] = plots.coverage_plot(result.coverage, kind="votes")
        figures["coverage_fraction.png"] = plots.coverage_plot(result.coverage, kind="fraction")
    figures["calibration.png"] = plots.calibration_plot(result.predictions, result.counts)
    figures["confusion_matrices.png"] = plots.confusion_matrices(result.confusion)
    if result.roc:
        figures["roc_curves.png"] = plots.roc_curves(result.roc)
    if result.notes:
        mlflow.set_tag("zoobot.evaluation_notes", " ".join(result.notes)[:5000])
        mlflow.log_text("\n".join(result.notes) + "\n", "evaluation_notes.txt")
    if result.verdicts:  # the run's description in the UI, and a file beside the plots
        text = "\n".join(f"- {line}" for line in result.verdicts) + "\n"
        mlflow.log_text(text, "verdict.md")
        mlflow.set_tag(tag_names.NOTE, f"**Evaluation on '{split}'**\n\n{text}")
    n = len(result.images)
    if n:
        question = question_for_examples or result.predictions.questions[0]
        figures["posterior_examples.png"] = plots.posterior_examples(
            result.predictions.subset(slice(0, n)), result.counts[:n], result.images,
            result.predictions.id_str[:n], question, n=min(6, n))
    for name, figure in figures.items():
        _log_figure(figure, name)
    for question, matrix in result.confusion.items():
        _log_csv(matrix.reset_index(), f"confusion/{question}.csv")


def log_prediction(result) -> None:
    mlflow.log_metrics({"n_galaxies": result.n_galaxies, "galaxies_per_second": result.n_galaxies / result.seconds})
    mlflow.set_tag(tag_names.LOCAL_OUTPUT, str(result.samples_path.parent.resolve()))
    mlflow.log_artifact(str(result.samples_path), artifact_path="predictions")
    mlflow.log_artifact(str(result.summary_path), artifact_path="predictions")


def log_embedding(result, neighbours=None, figures: dict | None = None) -> None:
    """The features file, the nearest-galaxies table and the figures of an `embed` run."""
    mlflow.log_metrics({"n_galaxies": result.n_galaxies, "n_features": result.n_features,
                        "galaxies_per_second": result.n_galaxies / max(result.seconds, 1e-9)})
    mlflow.set_tag(tag_names.LOCAL_OUTPUT, str(result.features_path.parent.resolve()))
    mlflow.log_artifact(str(result.features_path), artifact_path="embedding")
    if neighbours is not None:
        _log_csv(neighbours, "neighbours.csv")
    for name, figure in (figures or {}).items():
        _log_figure(figure, name)


# -- active learning -----------------------------------------------------------------------------------


def log_iteration(outcome, state, manifest, only_missing: bool = False) -> None:
    """One iteration's record: counts, test metrics, scores, what was acquired and what it looks like,
    and the vote rows its ingest set aside. `only_missing`: completing a run a kill interrupted, log
    only the metrics it does not have yet (artifacts are simply written again)."""
    from zoobot.active.loop import rejects_path

    step = outcome.iteration
    info = outcome.train_info
    metrics = {"iteration": step, "n_labelled": info.get("n_labelled", 0), "n_acquired": len(outcome.acquired),
               "n_labelled_after": outcome.n_labelled}
    metrics.update({k: v for k, v in info.items() if k.startswith(("test_", "calibration_"))
                    or k in ("best_val_loss", "epochs_run", "best_epoch", "peak_learning_rate")})
    if state.is_done(step, "ingest"):
        metrics["n_labels_rejected"] = state.stage_info(step, "ingest").get("n_rejected", 0)
    logged = set(MlflowClient().get_run(mlflow.active_run().info.run_id).data.metrics) if only_missing else set()
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and k not in logged}, step=step)
    if rejects_path(state, step).is_file():
        mlflow.log_artifact(str(rejects_path(state, step)))
    _log_iteration_datasets(state, manifest, step, outcome.scores)
    if info.get("registered_version"):
        mlflow.set_tag(tag_names.REGISTERED_MODEL, f"{info['registered_model']} v{info['registered_version']}")
    scores = outcome.scores
    if len(scores):
        chosen = scores["id_str"].isin(outcome.acquired)
        _log_figure(plots.score_histogram(scores["score"].to_numpy(), chosen.to_numpy()), "acquisition_scores.png")
        acquired = scores[chosen].sort_values("rank")
        mlflow.log_table(acquired.astype({"id_str": str}), artifact_file="acquired.json")
        _log_csv(acquired, "acquired.csv")
        _log_acquired_vs_random(list(acquired["id_str"]), scores["id_str"].to_numpy(), state, manifest, step)
        truth = acquired_truth(manifest, list(acquired["id_str"]), scores["id_str"].tolist())
        if truth:
            mlflow.log_metrics(truth, step=step)


def _log_iteration_datasets(state, manifest, step: int, scores) -> None:
    """What the iteration's model learned from (the labelled set then), the pool it scored, and the
    fixed validation and test splits, as dataset inputs."""
    from zoobot.active.pool import INITIAL

    table = state.galaxies()
    when = table["labelled_iteration"]
    trained_on = sorted(table.loc[(when == INITIAL) | ((when >= 1) & (when < step)), "id_str"].astype(str))
    lineage.log_labelled_set(manifest, trained_on, state.labels(trained_on), "training", "labelled")
    if len(scores):
        lineage.log_labelled_set(manifest, sorted(scores["id_str"].astype(str)), None, "pool", "pool")
    lineage.log_splits(manifest, {"validation": "validation", "test": "evaluation"})


def acquired_truth(manifest, acquired_ids: list, pool_ids: list) -> dict[str, float]:
    """On a simulated survey: the mean true probability of the first answer of the first question
    (p(smooth) for GZ DECaLS) of the acquired galaxies and of the whole pool, so a run shows what the
    acquisition favours (BALD taking only bright smooth galaxies, say). Empty for a real survey."""
    import numpy as np

    from zoobot.model.evaluate import known_truth

    if not acquired_ids or manifest.catalog is None:
        return {}
    column = manifest.label_cols[0]
    pool = known_truth(manifest, pool_ids)
    if pool is None:
        return {}
    first = pool[:, 0]
    chosen = np.isin(np.asarray(pool_ids), np.asarray(acquired_ids))
    if not np.isfinite(first[chosen]).any():
        return {}
    return {f"acquired_true_{column}": float(np.nanmean(first[chosen])), f"pool_true_{column}": float(np.nanmean(first))}


def _log_acquired_vs_random(acquired_ids: list, pool_ids, state, manifest, step: int) -> None:
    """What was chosen beside what chance would have chosen."""
    import numpy as np

    from zoobot.data.images import ImageSpec, read_image

    height, width, channels = manifest.image_shape
    spec = ImageSpec(size=max(height, 32), channels=channels)
    rng = np.random.default_rng(step)
    random_ids = list(rng.choice(pool_ids, size=min(EXAMPLES_SHOWN, len(pool_ids)), replace=False))
    rows = {}
    for name, ids in (("acquired (top)", acquired_ids[:EXAMPLES_SHOWN]), ("random from pool", random_ids)):
        paths = state.galaxies(ids)["image_path"].tolist()
        rows[name] = (ids, np.stack([read_image(p, spec) for p in paths]))
    _log_figure(plots.image_grid(rows, title=f"Iteration {step}: acquired vs random"), "acquired_vs_random.png")


def log_learning_curves(curves: dict, saving: float, reason: str, ahead: dict | None = None) -> None:
    """On the campaign's parent run: every arm's test loss and RMSE against labelled galaxies, the
    label saving of the best arm over random, and (`ahead`: arm -> (iterations below random,
    iterations compared), from zoobot.core.learning_curves.iterations_ahead) how often each arm led."""
    _log_figure(plots.learning_curves(curves, saving), "learning_curves.png")
    mlflow.log_metric("label_saving", saving)
    mlflow.set_tag(tag_names.LABEL_SAVING_NOTE, reason or "computed")
    for arm, curve in curves.items():
        _log_csv(curve, f"curves/{arm}.csv")
        for row in curve.itertuples():  # the learning curve as a chart in the UI: step = labelled galaxies
            mlflow.log_metric(f"{arm}_test_loss", float(row.test_loss), step=int(row.n_labelled))
    for arm, (below, compared) in (ahead or {}).items():
        # e.g. bald_iterations_below_random = 3 of bald_iterations_compared = 3: ahead at every iteration
        mlflow.log_metrics({f"{arm}_iterations_below_random": below, f"{arm}_iterations_compared": compared})


# -- benchmark -----------------------------------------------------------------------------------------


def log_benchmark(figures, config, report: dict, table: str) -> None:
    """A `benchmark` run: machine, versions and resolved sizes as params; every measured figure (and
    its spread) as metrics; the report as benchmark.json and the printed table beside it."""
    params = {f"machine.{k}": v for k, v in report["machine"].items()}
    params.update({f"version.{k}": v for k, v in report["versions"].items()})
    params.update({f"size.{k}": v for k, v in report["sizes"].items()})
    log_new_params(params)
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
    mlflow.set_tags({tag_names.BENCHMARK_MODE: config.mode})
    mlflow.log_dict(report, "benchmark.json")
    mlflow.log_text(table, "benchmark_table.txt")


# -- shared --------------------------------------------------------------------------------------------


def _log_figure(figure, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)
    plots.plt.close(figure)


def _log_csv(frame: pd.DataFrame, artifact_file: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        folder = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)
