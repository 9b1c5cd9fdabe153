"""The model card on every registered version: what the model is, what it learned from, how it was
trained and, once evaluated, how good and how calibrated it is, with links to the runs.

A version's description (Markdown, shown on its page in the UI) is the card; its key figures are also
version tags, so `MlflowClient().search_model_versions("tags.`zoobot.test_rmse` < '0.12'")`-style
queries and the registry's table can use them. `train` and `finetune` write the card when they register
a version; `evaluate` adds its section to every registered version of the model it evaluated, however
the model was given (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, the logged model's `models:/m-<id>`,
or `runs:/<train run>`).
"""

from __future__ import annotations

import math

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names

EVALUATION_HEADING = "#### Evaluation"


def training_text(train_config) -> str:
    return (f"Up to {train_config.epochs} epochs, batch {train_config.batch_size}, learning rate "
            f"{train_config.learning_rate} ({train_config.schedule})")


def run_link(run_id: str, experiment_id: str = "") -> str:
    """A run as Markdown: a link to its page in the UI when its experiment is known."""
    return f"[`{run_id}`](#/experiments/{experiment_id}/runs/{run_id})" if experiment_id else f"`{run_id}`"


def training_card(manifest, model_config, val_loss: float, run_id: str, precision: str, training: str,
                  based_on: str = "", experiment_id: str = "") -> str:
    """The card of a newly registered version (Markdown), before any evaluation."""
    schema = manifest.schema_obj
    height, width, channels = manifest.image_shape
    if model_config.output == "binomial":
        question = model_config.question or schema.question_names[0]
        what = f"binomial model of '{question}' (the probability of its first answer)"
    else:
        what = (f"Dirichlet-multinomial model of the whole '{schema.name}' tree ({len(schema.questions)} questions, "
                f"{schema.n_answers} answers: " + ", ".join(schema.question_names) + ")")
    counts = manifest.counts
    source = manifest.catalog.get("path", "?")
    lines = [
        f"**Model.** `{model_config.architecture}` CNN with MC dropout ({model_config.dropout_rate} on "
        f"{model_config.dense_units} features), a {what}. Input: {height}x{width}x{channels} images, pixel "
        f"values 0..255; precision {precision}. Predict with `mlflow.pyfunc.load_model(...).predict(images, "
        "params={'n_samples': 30})` for MC-dropout samples, or add `'output': 'fractions'` for each answer's "
        "vote fraction and credible interval by name.",
        "",
        f"**Data.** `{source}`: {counts.get('train', 0):,} training, {counts.get('validation', 0):,} validation and "
        f"{counts.get('test', 0):,} test galaxies (shards `{manifest.root}`)." + _datasets(manifest),
        "",
        f"**Training.** {training}; best validation loss {val_loss:.4f}. Run {run_link(run_id, experiment_id)}.",
    ]
    if based_on:
        lines += ["", f"**Base model.** {based_on}"]
    lines += ["", f"{EVALUATION_HEADING}", "", "Not evaluated yet: `zoobot evaluate --model models:/NAME/VERSION "
              "--shards SHARDS` adds it here."]
    return "\n".join(lines)


def _datasets(manifest) -> str:
    """' Datasets: `catalog/train` (digest ...), ...': the names and digests the runs' Datasets show."""
    from zoobot.tracking.lineage import split_digest, split_name

    splits = [split for split in ("train", "validation", "test")
              if split in getattr(manifest, "splits", {}) and manifest.splits[split].count]
    if not splits:
        return ""
    return " Datasets: " + ", ".join(f"`{split_name(manifest, split)}` (digest `{split_digest(manifest, split)}`)"
                                     for split in splits) + "."


def training_tags(manifest, model_config, val_loss: float) -> dict[str, str]:
    return {tag_names.SCHEMA: manifest.schema["name"], tag_names.OUTPUT: model_config.output,
            tag_names.ARCHITECTURE: model_config.architecture, "n_train": str(manifest.counts.get("train", 0)),
            tag_names.VAL_LOSS: f"{val_loss:.6f}"}


def evaluation_section(metrics: dict[str, float], split: str, n_galaxies: int, run_id: str, plots_uri: str,
                       experiment_id: str = "") -> str:
    def figure(key, fmt):
        value = metrics.get(key, math.nan)
        return format(value, fmt) if math.isfinite(value) else "n/a"

    lines = [EVALUATION_HEADING, "",
             f"On '{split}' ({n_galaxies:,} galaxies), run {run_link(run_id, experiment_id)}: vote-fraction RMSE {figure('rmse', '.3f')} "
             f"(MAE {figure('mae', '.3f')}); coverage error {figure('coverage_error_w5', '.1%')} at +-5 votes and "
             f"{figure('coverage_error_w10', '.1%')} at +-10 (signed {figure('coverage_signed_error_w5', '+.1%')} and "
             f"{figure('coverage_signed_error_w10', '+.1%')}: below 0 is over-confident; the 2020 paper's model: "
             "10.6% and 2.9%).",
             "", f"Coverage plot: `{plots_uri}/coverage_votes.png`; calibration: `{plots_uri}/calibration.png`."]
    if math.isfinite(metrics.get("roc_auc", math.nan)):
        lines.insert(3, f"Majority-answer accuracy {figure('accuracy', '.2f')}, ROC AUC {figure('roc_auc', '.2f')}.")
    return "\n".join(lines)


def evaluation_tags(metrics: dict[str, float], split: str, run_id: str) -> dict[str, str]:
    tags = {"evaluated_by": run_id, "evaluated_on": split}
    for key in ("rmse", "coverage_error_w5", "coverage_error_w10", "roc_auc"):
        value = metrics.get(key, math.nan)
        if math.isfinite(value):
            tags[f"{split}_{key}"] = f"{value:.6f}"
    return tags


def with_evaluation(card: str, section: str) -> str:
    """The card with its evaluation section (the last section) replaced by `section`."""
    kept = card.split(EVALUATION_HEADING)[0].rstrip()
    return f"{kept}\n\n{section}" if kept else section


def registered_versions(reference: str) -> list:
    """Every registered version of the model a reference names; [] for a path or an unregistered model."""
    client = MlflowClient()
    if reference.startswith("models:/"):
        rest = reference[len("models:/"):].strip("/")
        if rest.startswith("m-"):  # a logged model: the versions registered from it
            model = client.get_logged_model(rest)
            return [v for v in client.search_model_versions(f"run_id = '{model.source_run_id}'")
                    if v.source == reference or getattr(v, "model_id", None) == rest]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return [client.get_model_version_by_alias(name, alias)]
        name, _, version = rest.rpartition("/")
        return [client.get_model_version(name, version)] if name else []
    if reference.startswith("runs:/"):
        run_id = reference[len("runs:/"):].split("/")[0]
        return list(client.search_model_versions(f"run_id = '{run_id}'"))
    return []


def add_evaluation(reference: str, metrics: dict[str, float], split: str, n_galaxies: int) -> list[str]:
    """On the active (evaluate) run: add the evaluation to the card and tags of every registered version
    of `reference`. Returns 'NAME vVERSION' of each version updated."""
    run = mlflow.active_run().info
    run_id = run.run_id
    client = MlflowClient()
    section = evaluation_section(metrics, split, n_galaxies, run_id, mlflow.get_artifact_uri().rstrip("/"),
                                 run.experiment_id)
    updated = []
    for version in registered_versions(reference):
        client.update_model_version(version.name, version.version,
                                    description=with_evaluation(version.description or "", section))
        for key, value in evaluation_tags(metrics, split, run_id).items():
            client.set_model_version_tag(version.name, version.version, key, value)
        updated.append(f"{version.name} v{version.version}")
    if updated:
        mlflow.set_tag("zoobot.cards_updated", ", ".join(updated))
    return updated
