"""Figures a user looks at in the MLflow UI. Each function returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Plain numpy/scipy modules: figures stay importable without TensorFlow or MLflow.
from zoobot.core.coverage import as_counts, coverage_errors, predictive_pmf, sample_pmfs  # noqa: E402
from zoobot.core.predictions import Predictions  # noqa: E402


def image_grid(rows: dict[str, tuple[list[str], np.ndarray]], title: str = "") -> plt.Figure:
    """One row of example images per key (e.g. per split), labelled with their ids."""
    n_cols = max(len(ids) for ids, _ in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.8 * len(rows)), squeeze=False)
    for r, (name, (ids, images)) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(ids):
                image = images[c]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
                ax.set_title(str(ids[c])[-14:], fontsize=6)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def embedding_map(coordinates: np.ndarray, variance_ratio, values: np.ndarray | None = None,
                  label: str = "") -> plt.Figure:
    """The galaxies on the first two principal components of their representations, coloured by
    `values` (a catalog column; grey where missing) or in one colour."""
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    size = max(2.0, min(20.0, 4000 / max(len(coordinates), 1)))
    if values is None:
        ax.scatter(coordinates[:, 0], coordinates[:, 1], s=size, color="C0", alpha=0.6, linewidths=0)
    else:
        known = np.isfinite(values)
        if (~known).any():
            ax.scatter(coordinates[~known, 0], coordinates[~known, 1], s=size, color="lightgrey", linewidths=0,
                       label="no value")
            ax.legend(fontsize=7, loc="best")
        points = ax.scatter(coordinates[known, 0], coordinates[known, 1], c=values[known], s=size, cmap="viridis",
                            alpha=0.8, linewidths=0)
        fig.colorbar(points, ax=ax, label=label)
    ax.set_xlabel(f"PC 1 ({variance_ratio[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({variance_ratio[1]:.0%})")
    ax.set_title(f"{len(coordinates)} galaxies in the model's representation", fontsize=9)
    fig.tight_layout()
    return fig


# -- evaluation figures ----------------------------------------------------------------------------

def _panel_grid(n_panels: int, max_cols: int = 4, panel_size: tuple[float, float] = (3.2, 2.8)):
    """A figure with n_panels axes in rows of at most max_cols; unused cells are removed."""
    n_cols = min(n_panels, max_cols)
    n_rows = -(-n_panels // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows),
                             squeeze=False)
    for ax in axes.flat[n_panels:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n_panels])


def coverage_plot(table, kind: str = "votes") -> plt.Figure:
    """Observed against expected coverage as the window widens, one panel per question.

    kind "votes": windows of +-w votes around the predicted count; kind "fraction": vote-fraction
    deviations. The expected curve is what a calibrated model would observe; observed below it
    means over-confident, above it under-confident. Each panel quotes the coverage error
    (see `coverage.coverage_errors`) at +-5 votes or a deviation of 0.2.
    """
    if kind not in ("votes", "fraction"):
        raise ValueError(f"kind must be 'votes' or 'fraction'; found {kind!r}.")
    rows = table[table["kind"] == kind]
    if rows.empty:
        raise ValueError(f"coverage table has no {kind!r} rows; found kinds {sorted(set(table['kind']))}.")
    questions = list(dict.fromkeys(rows["question"]))
    fig, axes = _panel_grid(len(questions), panel_size=(3.4, 3.1))
    marker_width = 5 if kind == "votes" else 0.2
    for ax, question in zip(axes, questions):
        part = rows[rows["question"] == question].sort_values("width")
        ax.plot(part["width"], part["expected"], "k--", lw=1.2, label="expected (ideal)")
        ax.plot(part["width"], part["observed"], "o-", color="tab:blue", ms=3, lw=1.5, label="observed")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        title = f"{question} ({part['answer'].iloc[0]}), n={int(part['n_galaxies'].iloc[0])}"
        if np.isclose(part["width"], marker_width).any():
            error = coverage_errors(part, widths=(5,) if kind == "votes" else (),
                                    deviations=(0.2,) if kind == "fraction" else ())
            value = next(iter(error.values()))
            title += f"\ncoverage error at {'±5 votes' if kind == 'votes' else 'deviation 0.2'}: {100 * value:.1f}%"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("window ± votes" if kind == "votes" else "vote-fraction deviation")
        ax.set_ylabel("coverage")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Coverage: fraction of galaxies whose votes fall in the window")
    fig.tight_layout()
    return fig


def calibration_plot(predictions: Predictions, counts, n_bins: int = 10, min_per_bin: int = 5) -> plt.Figure:
    """Reliability diagram per question: observed vote fraction against predicted, in bins.

    Galaxies are binned by the posterior-mean predicted fraction of each answer; each point is the
    mean prediction and mean observed fraction of a bin with at least `min_per_bin` galaxies. Points
    on the diagonal are calibrated on average. A binomial model shows only the answer it predicts.
    """
    counts = as_counts(predictions, counts)
    fractions = predictions.schema.vote_fractions(counts)
    edges = np.linspace(0, 1, n_bins + 1)
    fig, axes = _panel_grid(len(predictions.questions))
    for ax, question in zip(axes, predictions.questions):
        a, _ = predictions.schema.question_index_groups[predictions.schema.question_names.index(question)]
        predicted = predictions.mean_fractions(question)
        answers = predictions.schema.question(question).answers
        n_shown = 1 if predictions.kind == "binomial" else len(answers)
        for j in range(n_shown):
            observed = fractions[:, a + j]
            voted = ~np.isnan(observed)
            which = np.clip(np.digitize(predicted[voted, j], edges) - 1, 0, n_bins - 1)
            xs, ys = [], []
            for bin_index in range(n_bins):
                inside = which == bin_index
                if inside.sum() >= min_per_bin:
                    xs.append(predicted[voted, j][inside].mean())
                    ys.append(observed[voted][inside].mean())
            ax.plot(xs, ys, "o-", ms=3, lw=1.2, label=answers[j].name)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(question, fontsize=9)
        ax.set_xlabel("predicted fraction")
        ax.set_ylabel("observed fraction")
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Calibration of predicted vote fractions")
    fig.tight_layout()
    return fig


def posterior_examples(predictions: Predictions, counts, images: np.ndarray, ids, question: str, n: int = 6,
                       answer_index: int = 0) -> plt.Figure:
    """For a few galaxies, the image beside the predicted distribution of votes for one answer.

    `predictions` and `counts` share rows; `images[i]` is the galaxy `ids[i]` (uint8 or float,
    (H, W), (H, W, 1) or (H, W, 3)); the first `n` ids are shown, two galaxies per row. Each
    MC sample's pmf is drawn faintly, the posterior predictive (their mean) in bold, and the
    volunteers' actual count as a red line.
    """
    counts = as_counts(predictions, counts)
    ids = [str(i) for i in list(ids)[:n]]
    if not ids:
        raise ValueError("posterior_examples needs at least one id to show.")
    if len(images) < len(ids):
        raise ValueError(f"images must hold one image per id; found {len(images)} images for {len(ids)} ids.")
    position = {str(i): row for row, i in enumerate(predictions.id_str)}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise KeyError(f"ids {unknown} are not in the predictions (which hold e.g. {list(predictions.id_str[:3])}).")
    rows = np.array([position[i] for i in ids])
    chosen = predictions.subset(rows)
    a, b = predictions.schema.question_index_groups[predictions.schema.question_names.index(question)]
    totals = counts[rows, a:b].sum(axis=1)
    observed = counts[rows, a + answer_index]
    per_sample = sample_pmfs(chosen, question, answer_index, totals)
    mixture = predictive_pmf(chosen, question, answer_index, totals)
    answer = predictions.schema.question(question).answers[answer_index].name

    n_rows = -(-len(ids) // 2)
    n_pairs = min(len(ids), 2)
    fig, axes = plt.subplots(n_rows, 2 * n_pairs, figsize=(4.6 * n_pairs, 2.1 * n_rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2] * n_pairs})
    for i, galaxy in enumerate(ids):
        image_ax, pmf_ax = axes[i // 2, 2 * (i % 2)], axes[i // 2, 2 * (i % 2) + 1]
        image = np.asarray(images[i])
        image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        limits = {"vmin": 0, "vmax": 255} if image.dtype == np.uint8 else {}
        image_ax.imshow(image, cmap="gray", **limits)
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_title(galaxy[-18:], fontsize=7)
        k = np.arange(totals[i] + 1)
        pmf_ax.plot(k, per_sample[i, : totals[i] + 1, :], color="tab:blue", alpha=0.15, lw=0.7)
        pmf_ax.plot(k, mixture[i, : totals[i] + 1], color="navy", lw=2, label="posterior predictive")
        pmf_ax.axvline(observed[i], color="tab:red", lw=1.5, label="volunteers")
        pmf_ax.set_xlim(-0.5, totals[i] + 0.5)  # margins keep a count of 0 or N off the spine
        pmf_ax.set_ylim(bottom=0)
        pmf_ax.set_title(f"'{answer}': {observed[i]} of {totals[i]} votes", fontsize=8)
        pmf_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # votes are whole numbers
        pmf_ax.tick_params(labelsize=7)
        pmf_ax.set_xlabel("votes", fontsize=7)
    for j in range(len(ids), 2 * n_rows):
        axes[j // 2, 2 * (j % 2)].remove()
        axes[j // 2, 2 * (j % 2) + 1].remove()
    axes[0, 1].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{question}: predicted votes for '{answer}' (faint: each MC sample)", fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: dict[str, list[float]]) -> plt.Figure:
    """Each metric per epoch, with its validation twin ("val_<name>") in the same panel."""
    if not history:
        raise ValueError("history is empty; expected e.g. {'loss': [...], 'val_loss': [...]} from keras fit().")
    names = list(dict.fromkeys(k[4:] if k.startswith("val_") else k for k in history))
    fig, axes = _panel_grid(len(names), max_cols=3, panel_size=(3.6, 2.8))
    for ax, name in zip(axes, names):
        for key, style in ((name, "o-"), (f"val_{name}", "s--")):
            if key in history:
                values = np.asarray(history[key], dtype=float)
                ax.plot(np.arange(1, len(values) + 1), values, style, ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrices(matrices: dict) -> plt.Figure:
    """One confusion matrix per question, shaded by the fraction of each true class (row), with counts."""
    if not matrices:
        raise ValueError("matrices is empty; expected {question: confusion matrix} from classification_metrics.")
    fig, axes = _panel_grid(len(matrices), max_cols=3, panel_size=(3.4, 3.2))
    for ax, (question, matrix) in zip(axes, matrices.items()):
        frame = matrix if hasattr(matrix, "columns") else None
        values = np.asarray(matrix, dtype=float)
        labels = [str(c) for c in (frame.columns if frame is not None else range(values.shape[1]))]
        with np.errstate(invalid="ignore", divide="ignore"):
            by_row = np.nan_to_num(values / values.sum(axis=1, keepdims=True))
        ax.imshow(by_row, cmap="Blues", vmin=0, vmax=1)
        for (r, c), count in np.ndenumerate(values):
            ax.text(c, r, f"{count:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if by_row[r, c] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("model", fontsize=8)
        ax.set_ylabel("volunteers", fontsize=8)
        ax.set_title(question, fontsize=9)
    fig.tight_layout()
    return fig


def roc_curves(curves: dict) -> plt.Figure:
    """ROC curve of each question of one 0/1 label per galaxy: true against false positive rate of
    'yes' as the threshold on its predicted probability falls, with the area under it."""
    if not curves:
        raise ValueError("curves is empty; expected {question: {'fpr', 'tpr', 'auc'}} from metrics.label_metrics.")
    fig, axes = _panel_grid(len(curves), max_cols=3, panel_size=(3.4, 3.2))
    for ax, (question, curve) in zip(axes, curves.items()):
        ax.plot(curve["fpr"], curve["tpr"], color="C0", label=f"AUC {curve['auc']:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.set_title(question, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def score_histogram(scores: np.ndarray, acquired: np.ndarray) -> plt.Figure:
    """Acquisition scores of the pool, with the acquired galaxies' scores shaded."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores, bins=bins, color="0.7", label=f"pool ({len(scores)})")
    ax.hist(scores[acquired], bins=bins, color="tab:red", label=f"acquired ({int(acquired.sum())})")
    ax.set_xlabel("acquisition score")
    ax.set_ylabel("galaxies")
    ax.legend()
    fig.tight_layout()
    return fig


def learning_curves(curves: dict, saving: float | None = None,
                    metrics: tuple[str, ...] = ("test_loss", "test_fraction_rmse")) -> plt.Figure:
    """Each arm's test metrics against the number of labelled galaxies, one panel per metric."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for arm, curve in curves.items():
            if metric in curve:
                curve = curve.sort_values("n_labelled")
                ax.plot(curve["n_labelled"], curve[metric], marker="o", label=arm)
        ax.set_xlabel("labelled galaxies")
        ax.set_ylabel(metric)
        ax.legend()
    if "random" in curves and "test_loss" in curves["random"]:
        axes[0, 0].axhline(curves["random"]["test_loss"].iloc[-1], color="0.6", ls=":", label="random's final")
    if saving is not None:
        text = "label saving: n/a" if not np.isfinite(saving) else f"label saving vs random: {saving:.0%}"
        fig.suptitle(text)
    fig.tight_layout()
    return fig
