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


def evaluate(predictions: Predictions, deterministic: Predictions, counts: np.ndarray,
             images: np.ndarray) -> EvaluationResult:
    scores: dict[str, float] = {}
    scores.update(metrics.regression_metrics(predictions, counts))
    classification, confusion = metrics.classification_metrics(predictions, counts)
    scores.update(classification)
    table = coverage.coverage_table(predictions, counts)
    scores.update(coverage.coverage_errors(table))
    scores.update(metrics.bayesian_gain(predictions, deterministic, counts))
    scores["n_galaxies"] = float(len(predictions.id_str))
    return EvaluationResult(scores, table, confusion, predictions, deterministic, counts, images)
