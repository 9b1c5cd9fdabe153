"""Evaluation on the test split: how close, how well calibrated, and what being Bayesian buys.

Returns plain values (metrics, coverage table, confusion matrices, a few images); the tracking
module turns them into MLflow metrics, tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from zoobot.core import coverage, metrics
from zoobot.core.predictions import Predictions
from zoobot.core.verdicts import verdicts


@dataclass(frozen=True)
class EvaluateConfig:
    model: str = field(metadata={
        "help": "The model: models:/NAME@ALIAS, a train run URI (runs:/<id>), or a local .keras file/folder."})
    shards: str = field(metadata={"help": "Shards with a labelled test split (path or convert run URI)."})
    split: str = field(default="test", metadata={"help": "The labelled split to evaluate on."})
    n_samples: int = field(default=30, metadata={"help": "MC-dropout samples per galaxy."})
    batch_size: int = field(default=256, metadata={"help": "Galaxies per batch."})

    def __post_init__(self):
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 for a posterior (got {self.n_samples}); the paper used 15-30.")


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, float]  # unprefixed: rmse, smooth-or-featured_rmse, coverage_error_w5, ...
    coverage: pd.DataFrame
    confusion: dict[str, pd.DataFrame]
    predictions: Predictions
    deterministic: Predictions
    counts: np.ndarray
    images: np.ndarray  # the first few galaxies, for the examples figure
    roc: dict[str, dict] = field(default_factory=dict)  # single-label questions: {"fpr", "tpr", "auc"}
    notes: tuple[str, ...] = ()  # what was not reported and why, for the user
    verdicts: tuple[str, ...] = ()  # a sentence per question and one overall, for people (zoobot.core.verdicts)


def evaluate(predictions: Predictions, deterministic: Predictions, counts: np.ndarray,
             images: np.ndarray, truth: np.ndarray | None = None) -> EvaluationResult:
    """`truth`: the true answer probabilities of a simulated survey (see `known_truth`), or None."""
    scores: dict[str, float] = {}
    scores.update(metrics.regression_metrics(predictions, counts))
    classification, confusion = metrics.classification_metrics(predictions, counts)
    scores.update(classification)
    labels, roc = metrics.label_metrics(predictions, counts)
    scores.update(labels)
    table = coverage.coverage_table(predictions, counts)
    scores.update(coverage.coverage_errors(table))
    singles = [q for q in predictions.questions if q not in coverage.vote_count_questions(predictions)]
    notes = tuple(
        f"Coverage is not reported for '{q}': its labels are one 0/1 value per galaxy (binary_column), not "
        "volunteers' votes, so every window of votes covers them. Its accuracy, ROC AUC, precision, recall and F1 "
        "are reported instead." for q in singles)
    scores.update(metrics.bayesian_gain(predictions, deterministic, counts))
    if truth is not None:
        scores.update(metrics.truth_metrics(predictions, truth, counts))
    scores["n_galaxies"] = float(len(predictions.id_str))
    said = tuple(verdicts(scores, predictions.questions, singles))
    return EvaluationResult(scores, table, confusion, predictions, deterministic, counts, images, roc, notes, said)


def known_truth(manifest, ids) -> np.ndarray | None:
    """The true answer probabilities of `ids` (schema label-column order), when the catalog the shards
    were converted from is a simulated survey still on this disk (its `true_<answer>` columns); else
    None. Rows the catalog lacks are NaN."""
    from pathlib import Path

    from zoobot.data.catalog import read_table

    path = Path(manifest.catalog.get("path", ""))
    id_column = manifest.config.get("id_column") or manifest.schema_obj.id_column
    columns = [f"true_{c}" for c in manifest.label_cols]
    if not path.is_file():
        return None
    table = read_table(path, text_columns=(id_column,))
    if id_column not in table.columns or not set(columns) <= set(table.columns):
        return None
    table = table.drop_duplicates(id_column).set_index(table[id_column].astype(str).str.strip())
    return table.reindex([str(i) for i in ids])[columns].to_numpy(dtype=float)
