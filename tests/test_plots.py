"""Each figure builds from small synthetic inputs, has the panels it should, and saves as PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zoobot.core import plots
from zoobot.core.coverage import coverage_table
from zoobot.core.metrics import classification_metrics
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Answer, Question, Schema

TREE = Schema("tree", (
    Question("shape", tuple(Answer(a, f"shape_{a}") for a in ("smooth", "featured", "artifact"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="shape_featured"),
    Question("merging", (Answer("none", "merging_none"), Answer("merger", "merging_merger"))),
))


@pytest.fixture(scope="module")
def survey():
    """Dirichlet predictions for 300 galaxies with votes drawn from them, and tiny images."""
    rng = np.random.default_rng(0)
    n, t = 300, 8
    alpha = rng.uniform(0.5, 8, (n, TREE.n_answers, 1)) * rng.uniform(0.7, 1.3, (n, 1, t))
    counts = np.zeros((n, TREE.n_answers), dtype=np.int64)
    for (a, b), question in zip(TREE.question_index_groups, TREE.questions):
        totals = counts[:, 1] if question.follows else np.full(n, 40)
        fractions = rng.gamma(alpha[:, a:b, 0])
        counts[:, a:b] = rng.multinomial(totals, fractions / fractions.sum(axis=1, keepdims=True))
    predictions = Predictions(np.array([f"J{i:05d}" for i in range(n)]), alpha, "dirichlet", TREE)
    images = rng.integers(0, 255, (n, 32, 32, 1), dtype=np.uint8)
    return predictions, counts, images


def saves(figure, path) -> None:
    figure.savefig(path)
    plots.plt.close(figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_coverage_plot_has_one_panel_per_question_for_votes_and_fractions(survey, tmp_path):
    predictions, counts, _ = survey
    table = coverage_table(predictions, counts)
    for kind in ("votes", "fraction"):
        figure = plots.coverage_plot(table, kind=kind)
        assert len(figure.axes) == 3
        assert [ax.get_title().split(" ")[0] for ax in figure.axes] == ["shape", "bar", "merging"]
        assert len(figure.axes[0].lines) == 2  # expected (ideal) and observed
        saves(figure, tmp_path / f"coverage_{kind}.png")
    with pytest.raises(ValueError, match="kind must be"):
        plots.coverage_plot(table, kind="percent")


def test_calibration_plot_draws_each_answer_against_the_diagonal(survey, tmp_path):
    predictions, counts, _ = survey
    figure = plots.calibration_plot(predictions, counts)
    assert len(figure.axes) == 3
    assert len(figure.axes[0].lines) == 3 + 1  # three answers and the diagonal
    saves(figure, tmp_path / "calibration.png")


def test_binomial_calibration_plot_shows_only_its_question(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, (100, 1, 4))
    counts = np.zeros((100, TREE.n_answers), dtype=int)
    counts[:, 3] = rng.binomial(20, p[:, 0, 0])
    counts[:, 4] = 20 - counts[:, 3]
    predictions = Predictions(np.arange(100).astype(str), p, "binomial", TREE, "bar")
    figure = plots.calibration_plot(predictions, counts)
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 2
    saves(figure, tmp_path / "calibration_binomial.png")


def test_posterior_examples_pairs_each_image_with_its_vote_distribution(survey, tmp_path):
    predictions, counts, images = survey
    chosen = [5, 17, 42, 99, 150]
    ids = predictions.id_str[chosen]
    figure = plots.posterior_examples(predictions, counts, images[chosen], ids, "shape", n=5)
    assert len(figure.axes) == 10  # 5 images + 5 pmfs (the empty sixth pair is removed)
    pmf_axes = figure.axes[1::2]
    assert len(pmf_axes[0].lines) == predictions.n_samples + 2  # samples, mixture, observed count
    assert "of 40 votes" in pmf_axes[0].get_title()
    saves(figure, tmp_path / "posterior.png")
    with pytest.raises(KeyError, match="not in the predictions"):
        plots.posterior_examples(predictions, counts, images[:1], ["nope"], "shape")


def test_training_curves_pair_each_metric_with_its_validation_twin(tmp_path):
    history = {"loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.4, 2.1], "rmse": [0.3, 0.2, 0.18],
               "val_rmse": [0.31, 0.25, 0.2], "learning_rate": [1e-3] * 3}
    figure = plots.training_curves(history)
    assert len(figure.axes) == 3
    assert len(figure.axes[0].lines) == 2 and len(figure.axes[2].lines) == 1
    saves(figure, tmp_path / "training.png")
    with pytest.raises(ValueError, match="history is empty"):
        plots.training_curves({})


def test_confusion_matrices_one_panel_per_question(survey, tmp_path):
    predictions, counts, _ = survey
    _, matrices = classification_metrics(predictions, counts)
    figure = plots.confusion_matrices(matrices)
    assert len(figure.axes) == 3
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["smooth", "featured", "artifact"]
    saves(figure, tmp_path / "confusion.png")
    plain = plots.confusion_matrices({"q": np.array([[3, 1], [0, 0]])})  # an empty row must not break it
    assert len(plain.axes) == 1
    saves(plain, tmp_path / "confusion_plain.png")


def test_coverage_plot_reads_a_table_built_by_hand(tmp_path):
    table = pd.DataFrame({"question": ["q"] * 3, "answer": ["a"] * 3, "kind": ["votes"] * 3,
                          "width": [0.0, 5.0, 10.0], "expected": [0.1, 0.6, 0.9], "observed": [0.1, 0.5, 0.9],
                          "n_galaxies": [10] * 3})
    figure = plots.coverage_plot(table)
    assert "16.7%" in figure.axes[0].get_title()  # |0.5 - 0.6| / 0.6
    saves(figure, tmp_path / "coverage_hand.png")
