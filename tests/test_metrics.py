"""Metrics on tiny synthetic predictions whose answers are worked out by hand (or with scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from zoobot.core.metrics import bayesian_gain, classification_metrics, predictive_log_likelihood, regression_metrics
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Answer, Question, Schema

TREE = Schema("tree", (
    Question("shape", tuple(Answer(a, f"shape_{a}") for a in ("smooth", "featured", "artifact"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="shape_featured"),
))


def ids(n: int) -> np.ndarray:
    return np.array([f"g{i}" for i in range(n)])


def dirichlet(alpha) -> Predictions:
    alpha = np.asarray(alpha, dtype=float)
    return Predictions(ids(len(alpha)), alpha, "dirichlet", TREE)


def binomial(p) -> Predictions:
    p = np.asarray(p, dtype=float)
    return Predictions(ids(len(p)), p[:, None, :], "binomial", TREE, "bar")


def constant_alpha(rows) -> np.ndarray:
    """Concentrations per galaxy, the same in two MC samples except for scale (same fractions)."""
    alpha = np.asarray(rows, dtype=float)[:, :, None]
    return np.concatenate([alpha, 2 * alpha], axis=2)


# -- regression ---------------------------------------------------------------------------------------

def test_regression_metrics_of_a_dirichlet_model_by_hand():
    predictions = dirichlet(constant_alpha([[2, 1, 1, 3, 1], [1, 1, 2, 1, 1]]))
    counts = np.array([[2, 2, 0, 1, 1], [0, 0, 4, 0, 0]])  # galaxy 1 has no votes on 'bar'
    metrics = regression_metrics(predictions, counts)
    # shape errors: [0, .25, -.25] and [.25, .25, -.5]; bar: [.25, -.25] for galaxy 0 only.
    assert metrics["shape_rmse"] == pytest.approx(np.sqrt(0.5 / 6))
    assert metrics["shape_mae"] == pytest.approx(0.25)
    assert metrics["bar_rmse"] == pytest.approx(0.25)
    assert metrics["bar_mae"] == pytest.approx(0.25)
    assert metrics["rmse"] == pytest.approx((np.sqrt(0.5 / 6) + 0.25) / 2)
    assert metrics["mae"] == pytest.approx(0.25)


def test_regression_metrics_of_a_binomial_model_use_the_mean_over_samples_of_its_one_answer():
    predictions = binomial([[0.2, 0.6], [0.9, 0.9], [0.5, 0.5]])
    counts = np.array([[9, 0, 0, 1, 2], [9, 0, 0, 3, 1], [9, 0, 0, 0, 0]])
    metrics = regression_metrics(predictions, counts)
    assert set(metrics) == {"bar_rmse", "bar_mae", "rmse", "mae"}
    assert metrics["bar_rmse"] == pytest.approx(np.sqrt(((0.4 - 1 / 3) ** 2 + 0.15**2) / 2))
    assert metrics["bar_mae"] == pytest.approx((0.4 - 1 / 3 + 0.15) / 2)
    assert metrics["rmse"] == metrics["bar_rmse"]


def test_a_question_nobody_answered_is_nan_and_left_out_of_the_overall_mean():
    predictions = dirichlet(constant_alpha([[1, 1, 2, 1, 1]]))
    metrics = regression_metrics(predictions, np.array([[0, 0, 4, 0, 0]]))
    assert np.isnan(metrics["bar_rmse"])
    assert metrics["rmse"] == metrics["shape_rmse"] == pytest.approx(np.sqrt((0.25**2 * 2 + 0.5**2) / 3))


# -- classification -----------------------------------------------------------------------------------

def test_binary_accuracy_roc_auc_and_confusion_matrix_by_hand():
    # bar: first-answer scores .9 .4 .6 .1; volunteers' majority yes yes no no (and a tie, and too few votes).
    yes = np.array([0.9, 0.4, 0.6, 0.1, 0.5, 0.9])
    predictions = binomial(np.repeat(yes[:, None], 3, axis=1))
    counts = np.zeros((6, 5), dtype=int)
    counts[:, 3:] = [[8, 2], [6, 4], [1, 9], [3, 7], [5, 5], [2, 0]]
    scalars, matrices = classification_metrics(predictions, counts, min_votes=5)
    assert scalars["bar_n_galaxies"] == 4  # the tie and the 2-vote galaxy are left out
    assert scalars["bar_accuracy"] == pytest.approx(0.5)  # right on galaxies 0 and 3
    assert scalars["bar_roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (yes, no) pairs ordered right
    assert scalars["accuracy"] == scalars["bar_accuracy"]
    matrix = matrices["bar"]
    assert list(matrix.index) == list(matrix.columns) == ["yes", "no"]
    np.testing.assert_array_equal(matrix.to_numpy(), [[1, 1], [1, 1]])
    assert scalars["bar_n_galaxies"] == matrix.to_numpy().sum()


def test_multi_answer_roc_auc_is_sklearn_one_vs_rest_macro_when_every_class_is_present():
    rng = np.random.default_rng(0)
    n = 60
    alpha = rng.uniform(0.5, 5, (n, 5, 4))
    counts = np.zeros((n, 5), dtype=int)
    counts[:, :3] = rng.multinomial(20, [0.4, 0.35, 0.25], n)
    scalars, matrices = classification_metrics(dirichlet(alpha), counts)
    votes = counts[:, :3]
    top = np.sort(votes, axis=1)
    keep = top[:, -1] > top[:, -2]
    truth = np.argmax(votes[keep], axis=1)
    scores = (alpha[:, :3] / alpha[:, :3].sum(axis=1, keepdims=True)).mean(axis=2)[keep]
    assert len(set(truth)) == 3
    assert scalars["shape_roc_auc"] == pytest.approx(roc_auc_score(truth, scores, multi_class="ovr", average="macro"))
    assert scalars["shape_accuracy"] == pytest.approx(np.mean(np.argmax(scores, axis=1) == truth))
    np.testing.assert_array_equal(np.diag(matrices["shape"].to_numpy()).sum(),
                                  np.sum(np.argmax(scores, axis=1) == truth))
    assert np.isnan(scalars["bar_accuracy"])  # nobody answered 'bar' here
    assert matrices["bar"].to_numpy().sum() == 0 and matrices["bar"].shape == (2, 2)


def test_absent_classes_give_nan_auc_without_crashing_and_a_full_size_matrix():
    predictions = dirichlet(constant_alpha([[3, 1, 1, 1, 1], [1, 3, 1, 1, 1], [2, 1, 1, 1, 1]]))
    counts = np.array([[9, 1, 0, 0, 0], [8, 2, 0, 0, 0], [7, 0, 3, 0, 0]])  # always 'smooth'
    scalars, matrices = classification_metrics(predictions, counts)
    assert np.isnan(scalars["shape_roc_auc"])
    assert scalars["shape_accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(matrices["shape"].to_numpy(), [[2, 1, 0], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="min_votes"):
        classification_metrics(predictions, counts, min_votes=0)


# -- likelihood and the Bayesian gain -------------------------------------------------------------------

def test_binomial_predictive_likelihood_is_the_mixture_by_hand():
    counts = np.array([[0, 0, 0, 1, 2], [0, 0, 0, 0, 0]])
    log_lik = predictive_log_likelihood(binomial([[0.2, 0.6], [0.5, 0.5]]), counts, "bar")
    # 0.5 * (3 * .2 * .8^2) + 0.5 * (3 * .6 * .4^2) = 0.336
    assert log_lik[0] == pytest.approx(np.log(0.336))
    assert np.isnan(log_lik[1])


def test_dirichlet_predictive_likelihood_matches_scipy_dirichlet_multinomial():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(0.3, 10, (4, 5, 3))
    counts = np.concatenate([rng.multinomial(30, [0.3, 0.5, 0.2], 4), rng.multinomial(12, [0.4, 0.6], 4)], axis=1)
    for question, (a, b) in zip(TREE.question_names, TREE.question_index_groups):
        log_lik = predictive_log_likelihood(dirichlet(alpha), counts, question)
        for i in range(4):
            per_sample = [stats.dirichlet_multinomial.pmf(counts[i, a:b], alpha[i, a:b, t], counts[i, a:b].sum())
                          for t in range(3)]
            assert log_lik[i] == pytest.approx(np.log(np.mean(per_sample)), rel=1e-9)


def test_bayesian_gain_by_hand():
    counts = np.array([[0, 0, 0, 1, 2]])
    gain = bayesian_gain(binomial([[0.2, 0.6]]), binomial([[0.4]]), counts)
    assert gain["mc_loglik"] == pytest.approx(np.log(0.336))
    assert gain["deterministic_loglik"] == pytest.approx(np.log(3 * 0.4 * 0.36))
    assert gain["loglik_gain"] == pytest.approx(np.log(0.336 / 0.432))
    assert gain["mc_rmse"] == gain["deterministic_rmse"] == pytest.approx(0.4 - 1 / 3)
    assert {"mc_coverage_error_w5", "deterministic_coverage_error_w5"} <= set(gain)


def test_posterior_with_the_right_spread_beats_a_point_estimate_on_over_dispersed_votes():
    rng = np.random.default_rng(2)
    n, t, spread = 2000, 20, 15.0
    estimate = rng.uniform(0.1, 0.9, n)
    yes = rng.binomial(40, rng.beta(spread * estimate, spread * (1 - estimate)))
    counts = np.zeros((n, 5), dtype=int)
    counts[:, 3], counts[:, 4] = yes, 40 - yes
    mc = binomial(rng.beta(spread * estimate[:, None], spread * (1 - estimate[:, None]), (n, t)))
    deterministic = binomial(estimate[:, None])
    gain = bayesian_gain(mc, deterministic, counts)
    assert gain["loglik_gain"] > 0.3
    assert gain["mc_coverage_error_w5"] < 0.05 < 0.2 < gain["deterministic_coverage_error_w5"]
    assert abs(gain["mc_rmse"] - gain["deterministic_rmse"]) < 0.01  # same means, different spread


def test_bayesian_gain_refuses_predictions_it_cannot_compare():
    counts = np.array([[0, 0, 0, 1, 2]])
    with pytest.raises(ValueError, match="n_samples = 2"):
        bayesian_gain(binomial([[0.2, 0.6]]), binomial([[0.2, 0.6]]), counts)
    other = Predictions(np.array(["x"]), np.full((1, 1, 1), 0.4), "binomial", TREE, "bar")
    with pytest.raises(ValueError, match="same galaxies"):
        bayesian_gain(binomial([[0.2, 0.6]]), other, counts)
    with pytest.raises(ValueError, match="same kind"):
        bayesian_gain(binomial([[0.2, 0.6]]), dirichlet(np.ones((1, 5, 1))), counts)


def test_truth_metrics_know_a_model_whose_spread_follows_its_error():
    from zoobot.core.metrics import truth_metrics
    from zoobot.core.predictions import Predictions
    from zoobot.core.schema import GZ_DECALS

    rng = np.random.default_rng(0)
    n, t = 40, 20
    p = rng.uniform(0.2, 0.8, n)
    error = np.linspace(0.0, 0.15, n)  # the model is wrong by more and more ...
    spread = np.linspace(0.01, 0.2, n)  # ... and knows it
    samples = np.clip(p + error, 0.01, 0.99)[:, None, None] + spread[:, None, None] * rng.standard_normal((n, 1, t))
    samples = np.clip(samples, 1e-3, 1 - 1e-3)
    predictions = Predictions(np.array([f"g{i}" for i in range(n)]), samples, "binomial", GZ_DECALS,
                              "smooth-or-featured")
    truth = np.full((n, GZ_DECALS.n_answers), np.nan)
    truth[:, 0] = p
    good = truth_metrics(predictions, truth)
    assert good["smooth-or-featured_spread_error_spearman"] > 0.8
    assert good["truth_rmse"] == pytest.approx(np.sqrt(np.mean((samples.mean(axis=2)[:, 0] - p) ** 2)))
    noise = rng.standard_normal((n, 1, t))
    overconfident = np.clip(np.clip(p + error, 0.01, 0.99)[:, None, None] + spread[::-1, None, None] * noise, 1e-3,
                            1 - 1e-3)  # least sure where it is right, surest where it is wrong
    backwards = Predictions(predictions.id_str, overconfident, "binomial", GZ_DECALS, "smooth-or-featured")
    assert truth_metrics(backwards, truth)["spread_error_spearman"] < -0.5
    unknown = truth_metrics(predictions, np.full_like(truth, np.nan))
    assert np.isnan(unknown["truth_rmse"]) and np.isnan(unknown["spread_error_spearman"])


def test_truth_metrics_compare_the_model_with_the_volunteers_own_noise():
    from zoobot.core.metrics import truth_metrics
    from zoobot.core.predictions import Predictions
    from zoobot.core.schema import GZ_DECALS

    rng = np.random.default_rng(1)
    n, t, volunteers = 500, 10, 40
    p = rng.uniform(0.1, 0.9, n)
    counts = np.zeros((n, GZ_DECALS.n_answers))
    counts[:, 0] = rng.binomial(volunteers, p)
    counts[:, 1] = volunteers - counts[:, 0]
    truth = np.full((n, GZ_DECALS.n_answers), np.nan)
    truth[:, 0], truth[:, 1] = p, 1 - p
    exact = Predictions(np.array([f"g{i}" for i in range(n)]), np.repeat(p[:, None, None], t, axis=2), "binomial",
                        GZ_DECALS, "smooth-or-featured")
    scores = truth_metrics(exact, truth, counts)
    expected_floor = np.sqrt(np.mean(p * (1 - p) / volunteers))  # binomial noise of 40 votes
    assert scores["smooth-or-featured_noise_floor"] == pytest.approx(expected_floor, rel=0.1)
    assert scores["smooth-or-featured_truth_rmse_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert "truth_rmse_ratio" not in truth_metrics(exact, truth)


# -- one 0/1 label per galaxy (binary_column) ------------------------------------------------------------

LENS = Schema("lenses", (
    Question("lens", (Answer("yes", "is_lens_yes"), Answer("no", "is_lens_no")), binary_column="is_lens"),
    Question("shape", tuple(Answer(a, f"shape_{a}") for a in ("smooth", "featured", "artifact"))),
))


def lens_case():
    """Ten galaxies: labels and the model's p(lens) over 3 MC samples, by hand."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
    p_yes = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05, 0.55])
    samples = np.stack([p_yes - 0.02, p_yes, p_yes + 0.02], axis=1)[:, None, :]
    counts = np.zeros((10, LENS.n_answers))
    counts[:, 0], counts[:, 1] = labels, 1 - labels
    counts[:, 2:5] = [30, 8, 2]  # the vote-count question, voted on by 40 volunteers
    return labels, p_yes, Predictions(ids(10), samples, "binomial", LENS, "lens"), counts


def test_single_labels_get_accuracy_auc_precision_recall_f1_as_scikit_learn_computes_them():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_curve

    from zoobot.core.metrics import label_metrics

    labels, p_yes, predictions, counts = lens_case()
    predicted = (p_yes >= 0.5).astype(int)
    scalars, _ = classification_metrics(predictions, counts)  # min_votes=5 does not apply to one label
    assert scalars["lens_accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert scalars["lens_roc_auc"] == pytest.approx(roc_auc_score(labels, p_yes))
    assert scalars["lens_n_galaxies"] == 10
    found, curves = label_metrics(predictions, counts)
    assert found["lens_precision"] == pytest.approx(precision_score(labels, predicted))  # 4/5
    assert found["lens_recall"] == pytest.approx(recall_score(labels, predicted))  # 4/5
    assert found["lens_f1"] == pytest.approx(f1_score(labels, predicted))
    fpr, tpr, _ = roc_curve(labels, p_yes)
    np.testing.assert_allclose(curves["lens"]["fpr"], fpr)
    np.testing.assert_allclose(curves["lens"]["tpr"], tpr)
    assert curves["lens"]["auc"] == pytest.approx(roc_auc_score(labels, p_yes))


def test_coverage_is_not_reported_for_single_labels_and_evaluate_says_why():
    from zoobot.core.coverage import coverage_table
    from zoobot.model.evaluate import evaluate

    _, _, predictions, counts = lens_case()
    with pytest.raises(ValueError, match="Coverage of 'lens' is not defined: its labels are one 0/1 value"):
        coverage_table(predictions, counts, question="lens")
    assert coverage_table(predictions, counts).empty  # the binomial model predicts only 'lens'
    deterministic = Predictions(predictions.id_str, predictions.samples[..., 1:2], "binomial", LENS, "lens")
    result = evaluate(predictions, deterministic, counts, np.zeros((0, 8, 8, 3)))
    assert not any(key.startswith(("coverage_error", "lens_coverage")) for key in result.metrics)
    assert result.metrics["lens_f1"] == pytest.approx(0.8) and set(result.roc) == {"lens"}
    assert len(result.notes) == 1 and "Coverage is not reported for 'lens'" in result.notes[0]


def test_coverage_of_a_mixed_schema_skips_only_the_single_label_question():
    from zoobot.core.coverage import coverage_errors, coverage_table

    _, _, _, counts = lens_case()
    alpha = np.tile(np.array([5.0, 5.0, 20.0, 6.0, 2.0])[None, :, None], (10, 1, 4))
    table = coverage_table(Predictions(ids(10), alpha, "dirichlet", LENS), counts)
    assert set(table["question"]) == {"shape"}
    errors = coverage_errors(table)
    assert "shape_coverage_error_w5" in errors and not any(k.startswith("lens_") for k in errors)
