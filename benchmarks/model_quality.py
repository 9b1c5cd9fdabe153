"""Model quality on a simulated survey, where the truth is known: how close the predicted
smooth-or-featured fractions get to the simulator's true probabilities (beside the noise floor of
the volunteers' own vote fractions), and how well calibrated the posteriors are (coverage errors at
+-5 and +-10 votes; Walmsley et al. 2020's bar model: 10.6% and 2.9%).

    .venv/bin/python benchmarks/model_quality.py --n-galaxies 3000 --epochs 15

Everything runs in a temporary folder with its own tracking store; the figures print as a table.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

from zoobot.convert import ConvertConfig, convert
from zoobot.coverage import coverage_errors, coverage_table
from zoobot.evaluate import evaluate
from zoobot.manifest import Manifest
from zoobot.model import ModelConfig
from zoobot.predict import predict_split
from zoobot.simulate import SimulateConfig, simulate_survey
from zoobot.train import Checkpoint, TrainConfig, train

QUESTION = "smooth-or-featured"


def recovery(predictions, catalog: pd.DataFrame) -> dict[str, float]:
    """RMSE of predicted and of observed vote fractions against the true probabilities."""
    truth = catalog.set_index("iauname").loc[predictions.id_str]
    columns = predictions.answer_columns(QUESTION)
    true = truth[[f"true_{c}" for c in columns]].to_numpy()
    observed = truth[[f"{c}_fraction" for c in columns]].to_numpy()
    predicted = predictions.mean_fractions(QUESTION)
    return {
        "rmse_predicted_vs_true": float(np.sqrt(np.mean((predicted - true) ** 2))),
        "rmse_observed_vs_true": float(np.sqrt(np.nanmean((observed - true) ** 2))),
        "rmse_predicted_vs_observed": float(np.sqrt(np.nanmean((predicted - observed) ** 2))),
    }


def run(n_galaxies: int, epochs: int, image_size: int, n_samples: int, folder: Path,
        model_config: ModelConfig | None = None) -> dict[str, float]:
    start = time.perf_counter()
    survey = simulate_survey(SimulateConfig(output_dir=str(folder / "survey"), n_galaxies=n_galaxies,
                                            image_size=image_size))
    result = convert(ConvertConfig(catalog=str(survey.catalog_path), output_dir=str(folder / "shards"),
                                   image_size=image_size))
    manifest = Manifest.read(result.manifest.root)
    trained = train(TrainConfig(shards=str(manifest.root), epochs=epochs, batch_size=64, patience=4),
                    model_config or ModelConfig(), manifest, Checkpoint(folder / "checkpoint"))
    meta = {"schema": manifest.schema, "output": "dirichlet", "question": None}
    mc, single, counts, images = predict_split(trained.model, meta, manifest, "test", n_samples)
    scores = evaluate(mc, single, counts, images).metrics
    table = coverage_table(mc, counts, question=QUESTION)
    figures = {
        "n_galaxies": n_galaxies, "n_test": len(mc.id_str), "epochs_run": trained.epochs_run,
        "best_val_loss": trained.best_val_loss,
        **recovery(mc, survey.catalog),
        **{k: v for k, v in coverage_errors(table).items() if k.startswith(QUESTION)},
        "coverage_error_w5_all_questions": scores["coverage_error_w5"],
        "coverage_error_w10_all_questions": scores["coverage_error_w10"],
        f"{QUESTION}_accuracy": scores[f"{QUESTION}_accuracy"],
        "loglik_gain_mc_vs_deterministic": scores["loglik_gain"],
        "minutes": (time.perf_counter() - start) / 60,
    }
    return figures


@click.command()
@click.option("--n-galaxies", default=3000, show_default=True)
@click.option("--epochs", default=15, show_default=True)
@click.option("--image-size", default=64, show_default=True)
@click.option("--n-samples", default=30, show_default=True)
@click.option("--json-out", default="", help="Also write the figures to this JSON file.")
def main(n_galaxies, epochs, image_size, n_samples, json_out):
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(n_galaxies, epochs, image_size, n_samples, Path(tmp))
    for key, value in figures.items():
        click.echo(f"{key:45s} {value:.4f}" if isinstance(value, float) else f"{key:45s} {value}")
    if json_out:
        Path(json_out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
