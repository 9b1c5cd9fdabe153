"""How good are the predictions on the test split: vote-fraction errors, majority-answer
classification, and what the MC-dropout posterior buys over a single deterministic pass.

Every function takes a `Predictions` and the volunteers' vote counts for the same galaxies (an
array in `schema.label_cols` order or a DataFrame with those columns; see `coverage.as_counts`),
and returns plain dicts of floats ready for `mlflow.log_metrics`. Per-question keys are
"<question>_<metric>"; the overall value is the plain mean over questions that had data, so a
question asked of few galaxies counts as much as the root question (a pooled mean would be
dominated by the root).

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp, xlog1py, xlogy
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from zoobot.core.coverage import as_counts, coverage_errors, coverage_table
from zoobot.core.predictions import Predictions

# A "majority answer" from fewer volunteers than this is mostly noise, yet deeper questions of the
# tree rarely reach many more: 5 keeps most galaxies of sub-questions while dropping coin flips.
MIN_VOTES = 5


def _group(predictions: Predictions, question: str) -> tuple[int, int]:
    schema = predictions.schema
    return schema.question_index_groups[schema.question_names.index(question)]


def _nanmean(values) -> float:
    values = np.asarray(list(values), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


# -- vote fractions --------------------------------------------------------------------------------

def regression_metrics(predictions: Predictions, counts) -> dict[str, float]:
    """RMSE and MAE of the posterior-mean vote fractions against the volunteers' fractions.

    Only galaxies whose question got votes count. A dirichlet model is scored on every answer of
    each question (errors pooled over answers and galaxies); a binomial model on the first answer
    of its one question, the only one it predicts. For a two-answer question the two coincide,
    since both answers' errors are equal. Keys "<question>_rmse", "<question>_mae", and "rmse",
    "mae": the mean over questions.
    """
    counts = as_counts(predictions, counts)
    fractions = predictions.schema.vote_fractions(counts)
    result: dict[str, float] = {}
    for question in predictions.questions:
        a, b = _group(predictions, question)
        observed = fractions[:, a:b]
        predicted = predictions.mean_fractions(question)
        if predictions.kind == "binomial":
            observed, predicted = observed[:, :1], predicted[:, :1]
        voted = ~np.isnan(observed[:, 0])
        error = (predicted - observed)[voted]
        result[f"{question}_rmse"] = float(np.sqrt(np.mean(error**2))) if error.size else float("nan")
        result[f"{question}_mae"] = float(np.mean(np.abs(error))) if error.size else float("nan")
    result["rmse"] = _nanmean(result[f"{q}_rmse"] for q in predictions.questions)
    result["mae"] = _nanmean(result[f"{q}_mae"] for q in predictions.questions)
    return result


# -- majority answer -------------------------------------------------------------------------------

def _majority_labels(predictions: Predictions, question: str, counts: np.ndarray, min_votes: int):
    """(keep mask, true class, predicted class, class scores, class names) for one question.

    Dirichlet: classes are the answers; the volunteers' class is the most-voted answer (galaxies
    where the top answers tie have no majority and are left out). Binomial: the model only knows
    p(first answer), so the classes are "first answer has more than half the votes" and "not";
    for a two-answer question that is the same majority (ties, exactly half, left out).
    """
    a, b = _group(predictions, question)
    votes = counts[:, a:b]
    totals = votes.sum(axis=1)
    if predictions.schema.question(question).binary_column:
        min_votes = 1  # one 0/1 label per galaxy: the label is the truth, not a noisy majority
    answers = [ans.name for ans in predictions.schema.question(question).answers]
    mean = predictions.mean_fractions(question)
    if predictions.kind == "binomial":
        first = votes[:, 0] / np.maximum(totals, 1)
        keep = (totals >= min_votes) & (first != 0.5)
        truth = np.where(first > 0.5, 0, 1)
        scores = np.stack([mean[:, 0], 1 - mean[:, 0]], axis=1)
        names = answers if len(answers) == 2 else [answers[0], f"not-{answers[0]}"]
    else:
        ordered = np.sort(votes, axis=1)
        keep = (totals >= min_votes) & (ordered[:, -1] > ordered[:, -2])
        truth = np.argmax(votes, axis=1)
        scores, names = mean, answers
    predicted = np.argmax(scores, axis=1)
    return keep, truth[keep], predicted[keep], scores[keep], names


def _roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Binary: AUC of the first class's score. More classes: one-vs-rest AUC averaged over the
    classes that are both present and absent among the galaxies (AUC is undefined otherwise)."""
    classes = [0] if scores.shape[1] == 2 else range(scores.shape[1])
    aucs = [roc_auc_score(truth == c, scores[:, c]) for c in classes if 0 < np.sum(truth == c) < len(truth)]
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(predictions: Predictions, counts, min_votes: int = MIN_VOTES
                           ) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Accuracy, ROC AUC and confusion matrix of the predicted majority answer, per question.

    The predicted class is the answer with the highest posterior-mean vote fraction; the true one
    the volunteers' majority (see `_majority_labels`), for galaxies with at least `min_votes` votes
    on the question (a question of one 0/1 label per galaxy, `binary_column`: every labelled galaxy). ROC AUC: two classes -> AUC of the first answer's predicted fraction; more ->
    one-vs-rest macro average over answers where it is defined; NaN if none is (one class only).
    Returns ({"<question>_accuracy", "<question>_roc_auc", "<question>_n_galaxies", "accuracy",
    "roc_auc"}, {question: confusion matrix DataFrame, rows = volunteers, columns = model}).
    """
    if not isinstance(min_votes, (int, np.integer)) or min_votes < 1:
        raise ValueError(f"min_votes must be a whole number >= 1 (a majority needs a vote); found {min_votes!r}.")
    counts = as_counts(predictions, counts)
    scalars: dict[str, float] = {}
    matrices: dict[str, pd.DataFrame] = {}
    for question in predictions.questions:
        keep, truth, predicted, scores, names = _majority_labels(predictions, question, counts, min_votes)
        labels = list(range(len(names)))
        if len(truth):
            matrix = confusion_matrix(truth, predicted, labels=labels)
            scalars[f"{question}_accuracy"] = float(accuracy_score(truth, predicted))
            scalars[f"{question}_roc_auc"] = _roc_auc(truth, scores)
        else:
            matrix = np.zeros((len(names), len(names)), dtype=np.int64)
            scalars[f"{question}_accuracy"] = scalars[f"{question}_roc_auc"] = float("nan")
        scalars[f"{question}_n_galaxies"] = float(keep.sum())
        matrices[question] = pd.DataFrame(matrix, index=pd.Index(names, name="volunteers"),
                                          columns=pd.Index(names, name="model"))
    scalars["accuracy"] = _nanmean(scalars[f"{q}_accuracy"] for q in predictions.questions)
    scalars["roc_auc"] = _nanmean(scalars[f"{q}_roc_auc"] for q in predictions.questions)
    return scalars, matrices


def label_metrics(predictions: Predictions, counts) -> tuple[dict[str, float], dict[str, dict]]:
    """For each question of one 0/1 label per galaxy (`binary_column`: 'yes' is the positive class):
    precision, recall and F1 of predicting 'yes' where its posterior-mean probability is >= 0.5, and
    the ROC curve of that probability. Accuracy and ROC AUC are `classification_metrics`'.

    Returns ({"<question>_precision", "<question>_recall", "<question>_f1"}, {question: {"fpr",
    "tpr", "auc"}}); a curve only where both classes occur, NaN precision where 'yes' is never
    predicted.
    """
    from sklearn.metrics import precision_recall_fscore_support, roc_curve

    counts = as_counts(predictions, counts)
    scalars: dict[str, float] = {}
    curves: dict[str, dict] = {}
    for question in predictions.questions:
        if not predictions.schema.question(question).binary_column:
            continue
        a, b = _group(predictions, question)
        labelled = counts[:, a:b].sum(axis=1) > 0
        truth = counts[labelled, a] > 0
        p_yes = predictions.mean_fractions(question)[labelled, 0]
        predicted = p_yes >= 0.5
        if labelled.any():
            precision, recall, f1, _ = precision_recall_fscore_support(
                truth, predicted, average="binary", zero_division=np.nan)
        else:
            precision = recall = f1 = float("nan")
        scalars.update({f"{question}_precision": float(precision), f"{question}_recall": float(recall),
                        f"{question}_f1": float(f1)})
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, p_yes)
            curves[question] = {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(truth, p_yes))}
    return scalars, curves


# -- likelihood and the value of the posterior -----------------------------------------------------

def predictive_log_likelihood(predictions: Predictions, counts, question: str) -> np.ndarray:
    """log p(observed votes on `question` | posterior predictive) per galaxy: (n,), NaN without votes.

    The predictive is the mean over MC samples of each sample's likelihood (a mixture, averaged in
    probability, not in log space). Dirichlet: the Dirichlet-multinomial probability of the whole
    vote vector of the question. Binomial: Binomial(k_first | N, p). Multinomial coefficients are
    included, so these are true log-probabilities in nats.
    """
    counts = as_counts(predictions, counts)
    if question not in predictions.questions:
        raise KeyError(f"These {predictions.kind} predictions cover {list(predictions.questions)}, not {question!r}.")
    a, b = _group(predictions, question)
    votes = counts[:, a:b].astype(float)
    total = votes.sum(axis=1)
    if predictions.kind == "binomial":
        p = predictions.samples[:, 0, :]
        k, rest = votes[:, :1], (total - votes[:, 0])[:, None]
        per_sample = (gammaln(total + 1) - gammaln(votes[:, 0] + 1) - gammaln(rest[:, 0] + 1))[:, None] \
            + xlogy(k, p) + xlog1py(rest, -p)
    else:
        alpha = predictions.concentrations(question)
        alpha0 = alpha.sum(axis=1)
        per_sample = (gammaln(total + 1) - gammaln(votes + 1).sum(axis=1))[:, None] \
            + gammaln(alpha0) - gammaln(total[:, None] + alpha0) \
            + (gammaln(votes[:, :, None] + alpha) - gammaln(alpha)).sum(axis=1)
    log_lik = logsumexp(per_sample, axis=1) - np.log(predictions.n_samples)
    return np.where(total > 0, log_lik, np.nan)


def _check_comparable(mc: Predictions, deterministic: Predictions) -> None:
    if mc.kind != deterministic.kind or mc.schema != deterministic.schema or mc.question != deterministic.question:
        raise ValueError(
            f"MC and deterministic predictions must come from the same kind of model on the same schema; found "
            f"{mc.kind}/{mc.schema.name}/{mc.question} and {deterministic.kind}/{deterministic.schema.name}/"
            f"{deterministic.question}.")
    if len(mc.id_str) != len(deterministic.id_str) or not np.array_equal(mc.id_str, deterministic.id_str):
        raise ValueError("MC and deterministic predictions must be for the same galaxies in the same order; "
                         "their id_str differ. Fix: predict both on the same test split.")
    if deterministic.n_samples != 1:
        raise ValueError(f"deterministic_predictions should be one pass with dropout off (n_samples = 1); found "
                         f"n_samples = {deterministic.n_samples}. Fix: predict with training off, once.")


def bayesian_gain(mc_predictions: Predictions, deterministic_predictions: Predictions, counts) -> dict[str, float]:
    """What the MC-dropout posterior buys over one deterministic pass of the same model.

    For each of "mc" and "deterministic": "<prefix>_loglik", the mean over questions of the mean
    over voted galaxies of `predictive_log_likelihood` (nats per galaxy and question); "<prefix>_rmse"
    from `regression_metrics`; "<prefix>_coverage_error_w5" from `coverage.coverage_errors` on the
    first answer of each question. "loglik_gain" = mc_loglik - deterministic_loglik: positive when
    averaging over dropout masks explains the volunteers' votes better.
    """
    _check_comparable(mc_predictions, deterministic_predictions)
    counts = as_counts(mc_predictions, counts)
    result: dict[str, float] = {}
    for prefix, predictions in (("mc", mc_predictions), ("deterministic", deterministic_predictions)):
        per_question = [_nanmean(predictive_log_likelihood(predictions, counts, q)) for q in predictions.questions]
        result[f"{prefix}_loglik"] = _nanmean(per_question)
        result[f"{prefix}_rmse"] = regression_metrics(predictions, counts)["rmse"]
        table = coverage_table(predictions, counts, windows=(5,), deviations=())
        errors = coverage_errors(table, widths=(5,), deviations=())
        result[f"{prefix}_coverage_error_w5"] = errors.get("coverage_error_w5", float("nan"))  # none: labels only
    result["loglik_gain"] = result["mc_loglik"] - result["deterministic_loglik"]
    return result


# -- against the truth (simulated surveys) ---------------------------------------------------------

def truth_metrics(predictions: Predictions, truth: np.ndarray, counts: np.ndarray | None = None) -> dict[str, float]:
    """How close the posterior-mean fractions are to the true answer probabilities, and whether the
    model knows where it is wrong: the rank correlation over galaxies between the MC spread and the
    error. Only a simulated survey has a truth (its `true_<answer>` columns).

    `truth`: (n_galaxies, n_label_cols) true probabilities in `schema.label_cols` order (NaN where
    unknown), aligned with `predictions.id_str`. Per question, a galaxy's error is the RMSE over the
    answers (a binomial model: its first answer) and its spread the mean over answers of the standard
    deviation over MC samples. Keys "<question>_truth_rmse", "<question>_spread_error_spearman", and
    "truth_rmse", "spread_error_spearman": the means over questions. A spread that rises with the
    error (> 0) is what BALD needs; a model least uncertain where it is most wrong steers it away from
    what it most needs to learn.

    With `counts` (the volunteers' votes, label-column order) also "<question>_noise_floor": the RMSE
    of the volunteers' own vote fractions against the truth over the same galaxies (what one
    galaxy's votes can tell), and "<question>_truth_rmse_ratio": the model's truth RMSE over it.
    """
    from scipy.stats import spearmanr

    result: dict[str, float] = {}
    for question in predictions.questions:
        a, b = _group(predictions, question)
        fractions = predictions.sample_fractions(question)
        true = np.asarray(truth, dtype=float)[:, a:b]
        if predictions.kind == "binomial":
            fractions, true = fractions[:, :1], true[:, :1]
        known = np.isfinite(true).all(axis=1)
        error = np.sqrt(np.mean((fractions.mean(axis=2) - true) ** 2, axis=1))[known]
        spread = fractions.std(axis=2).mean(axis=1)[known]
        result[f"{question}_truth_rmse"] = float(np.sqrt(np.mean(error**2))) if error.size else float("nan")
        if counts is not None:
            votes = np.asarray(counts, dtype=float)[:, a:b]
            total = votes.sum(axis=1)
            seen = known & (total > 0)
            observed = votes[seen] / total[seen, None]
            floor = np.sqrt(np.mean((observed[:, :true.shape[1]] - true[seen]) ** 2)) if seen.any() else np.nan
            result[f"{question}_noise_floor"] = float(floor)
            result[f"{question}_truth_rmse_ratio"] = result[f"{question}_truth_rmse"] / floor if floor > 0 else np.nan
        varied = error.size >= 3 and np.ptp(error) > 0 and np.ptp(spread) > 0
        result[f"{question}_spread_error_spearman"] = float(spearmanr(spread, error).statistic) if varied else float("nan")
    result["truth_rmse"] = _nanmean(result[f"{q}_truth_rmse"] for q in predictions.questions)
    result["spread_error_spearman"] = _nanmean(result[f"{q}_spread_error_spearman"] for q in predictions.questions)
    if counts is not None:
        result["truth_rmse_ratio"] = _nanmean(result[f"{q}_truth_rmse_ratio"] for q in predictions.questions)
    return result
