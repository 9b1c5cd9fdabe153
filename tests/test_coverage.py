"""Known-answer tests for coverage: the pmf against scipy, and calibrated / over- / under-confident
posteriors on synthetic galaxies whose true vote probabilities are known."""

from __future__ import annotations

import functools
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from zoobot.core.coverage import (as_counts, coverage_errors, coverage_table, predictive_pmf, sample_pmfs)
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Answer, Question, Schema

BAR = Schema("bar-only", (Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no"))),))
TREE = Schema("tree", (
    Question("shape", tuple(Answer(a, f"shape_{a}") for a in ("smooth", "featured", "artifact"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="shape_featured"),
))


def binomial(p: np.ndarray) -> Predictions:
    return Predictions(np.array([f"g{i}" for i in range(len(p))]), p[:, None, :], "binomial", BAR, "bar")


def dirichlet(alpha: np.ndarray, schema: Schema = TREE) -> Predictions:
    return Predictions(np.array([f"g{i}" for i in range(len(alpha))]), alpha, "dirichlet", schema)


# -- the pmf ----------------------------------------------------------------------------------------

def test_binomial_pmf_is_the_mean_of_scipy_binomials_and_sums_to_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (5, 7))
    p[0, 0], p[1, 0] = 0.0, 1.0  # the edges must not produce NaN
    totals = np.array([10, 0, 3, 25, 25])
    pmf = predictive_pmf(binomial(p), "bar", 0, totals)
    assert pmf.shape == (5, 26)
    k = np.arange(26)
    for i, n in enumerate(totals):
        expected = stats.binom.pmf(k[:, None], n, p[i][None, :]).mean(axis=1)
        np.testing.assert_allclose(pmf[i], expected, atol=1e-12)
        assert np.all(pmf[i, n + 1:] == 0)
    np.testing.assert_allclose(pmf.sum(axis=1), 1, atol=1e-12)
    assert pmf[1, 0] == 1  # no votes: certainly zero of them


def test_dirichlet_pmf_is_the_mean_of_scipy_beta_binomials_of_the_answer_marginal():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(0.3, 20, (4, 5, 6))
    totals = np.array([40, 7, 1, 33])
    for answer in range(3):
        pmf = predictive_pmf(dirichlet(alpha), "shape", answer, totals)
        a = alpha[:, answer, :]
        b = alpha[:, :3, :].sum(axis=1) - a
        for i, n in enumerate(totals):
            k = np.arange(n + 1)[:, None]
            expected = stats.betabinom.pmf(k, n, a[i][None, :], b[i][None, :]).mean(axis=1)
            np.testing.assert_allclose(pmf[i, : n + 1], expected, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(pmf.sum(axis=1), 1, atol=1e-10)
    # The second question's marginal uses only its own two concentrations.
    pmf = predictive_pmf(dirichlet(alpha), "bar", 1, totals)
    expected = stats.betabinom.pmf(np.arange(8)[:, None], 7, alpha[1, 4], alpha[1, 3]).mean(axis=1)
    np.testing.assert_allclose(pmf[1, :8], expected, rtol=1e-10)


def test_sample_pmfs_average_to_the_predictive_pmf_even_across_chunks(monkeypatch):
    import zoobot.core.coverage as coverage

    monkeypatch.setattr(coverage, "_CHUNK_ELEMENTS", 50)  # force many small blocks
    rng = np.random.default_rng(2)
    predictions = binomial(rng.uniform(0, 1, (9, 4)))
    totals = rng.integers(0, 12, 9)
    per_sample = sample_pmfs(predictions, "bar", 0, totals)
    assert per_sample.shape == (9, totals.max() + 1, 4)
    np.testing.assert_allclose(per_sample.mean(axis=2), predictive_pmf(predictions, "bar", 0, totals), atol=1e-14)


def test_bad_inputs_say_what_was_expected():
    predictions = binomial(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="non-negative whole numbers"):
        predictive_pmf(predictions, "bar", 0, np.array([1.5, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(n_galaxies=3,\)"):
        predictive_pmf(predictions, "bar", 0, np.array([1, 2]))
    with pytest.raises(ValueError, match="answer_index must be in 0..1"):
        predictive_pmf(predictions, "bar", 2, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="probabilities in"):
        predictive_pmf(binomial(np.full((3, 2), 1.5)), "bar", 0, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(n_galaxies=3, n_answers=2\)"):
        coverage_table(predictions, np.ones((3, 3)))
    with pytest.raises(ValueError, match="vote counts, not fractions"):
        coverage_table(predictions, np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"missing vote columns \['bar_no'\]"):
        as_counts(predictions, pd.DataFrame({"bar_yes": [1, 2, 3]}))


def test_counts_may_be_a_dataframe_with_the_schema_columns_in_any_order():
    predictions = binomial(np.full((2, 1), 0.5))
    frame = pd.DataFrame({"other": [9, 9], "bar_no": [3, 4], "bar_yes": [1, 2]})
    np.testing.assert_array_equal(as_counts(predictions, frame), [[1, 3], [2, 4]])


# -- coverage by hand ---------------------------------------------------------------------------------

def test_coverage_of_one_fair_coin_by_hand():
    # Binomial(2, 0.5): pmf [0.25, 0.5, 0.25], mean 1. Window +-0 is {1} (0.5); +-1 is everything.
    predictions = binomial(np.array([[0.5], [0.5]]))
    counts = np.array([[0, 2], [1, 1]])  # k = 0 and k = 1 of N = 2
    table = coverage_table(predictions, counts, windows=(0, 1, 2), deviations=(0.0, 0.25, 0.5))
    votes = table[table["kind"] == "votes"].set_index("width")
    np.testing.assert_allclose(votes["expected"], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(votes["observed"], [0.5, 1.0, 1.0])
    fraction = table[table["kind"] == "fraction"].set_index("width")
    # d N = 0, 0.5, 1 votes: floor gives half-widths 0, 0, 1.
    np.testing.assert_allclose(fraction["expected"], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(fraction["observed"], [0.5, 0.5, 1.0])
    assert set(table["n_galaxies"]) == {2}
    assert list(table.columns) == ["question", "answer", "kind", "width", "expected", "observed", "n_galaxies"]
    assert set(table["answer"]) == {"yes"}


def test_galaxies_without_votes_on_the_question_are_left_out():
    rng = np.random.default_rng(3)
    predictions = binomial(rng.uniform(0.2, 0.8, (6, 5)))
    counts = np.array([[3, 4], [0, 0], [5, 5], [0, 0], [1, 9], [2, 2]])
    table = coverage_table(predictions, counts)
    kept = coverage_table(predictions.subset(np.array([0, 2, 4, 5])), counts[[0, 2, 4, 5]])
    assert set(table["n_galaxies"]) == {4}
    pd.testing.assert_frame_equal(table, kept)
    nobody = coverage_table(predictions, np.zeros((6, 2), dtype=int))
    assert nobody["expected"].isna().all() and set(nobody["n_galaxies"]) == {0}


def test_coverage_errors_by_hand():
    table = pd.DataFrame({
        "question": ["bar", "bar", "bar", "shape", "shape", "shape"],
        "answer": ["yes"] * 3 + ["smooth"] * 3,
        "kind": ["votes", "votes", "fraction"] * 2,
        "width": [5.0, 10.0, 0.2] * 2,
        "expected": [0.5, 0.8, 0.6, 0.4, 0.9, 0.5],
        "observed": [0.45, 0.84, 0.6, 0.5, 0.9, 0.55],
        "n_galaxies": [10] * 6,
    })
    errors = coverage_errors(table)
    assert errors["bar_coverage_error_w5"] == pytest.approx(0.1)
    assert errors["shape_coverage_error_w5"] == pytest.approx(0.25)
    assert errors["coverage_error_w5"] == pytest.approx(0.175)
    assert errors["bar_coverage_error_w10"] == pytest.approx(0.05)
    assert errors["coverage_error_w10"] == pytest.approx(0.025)
    assert errors["coverage_error_f0.2"] == pytest.approx(0.05)
    # signed: bar has fewer inside than promised (over-confident), shape more (under-confident)
    assert errors["bar_coverage_signed_error_w5"] == pytest.approx(-0.1)
    assert errors["shape_coverage_signed_error_w5"] == pytest.approx(0.25)
    assert errors["coverage_signed_error_w5"] == pytest.approx(0.075)
    assert errors["bar_coverage_signed_error_w10"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no 'votes' rows at width 7"):
        coverage_errors(table, widths=(7,))


# -- calibration on synthetic surveys ---------------------------------------------------------------

N_GALAXIES, N_VOTES, N_SAMPLES = 4000, 40, 30
TRUE_SPREAD = 20.0  # Beta concentration of the truth around the model's estimate


def binomial_survey(sample_spread: float, seed: int = 10):
    """The model's estimate e, the truth p ~ Beta around e, votes ~ Binomial(N, p), and MC samples
    ~ Beta(sample_spread * e, sample_spread * (1 - e)). Calibrated when sample_spread == TRUE_SPREAD."""
    rng = np.random.default_rng(seed)
    estimate = rng.uniform(0.1, 0.9, N_GALAXIES)
    truth = rng.beta(TRUE_SPREAD * estimate, TRUE_SPREAD * (1 - estimate))
    k = rng.binomial(N_VOTES, truth)
    counts = np.stack([k, N_VOTES - k], axis=1)
    samples = rng.beta(sample_spread * estimate[:, None], sample_spread * (1 - estimate[:, None]),
                       (N_GALAXIES, N_SAMPLES))
    return binomial(samples), counts


def coverage_at(table: pd.DataFrame, kind: str, width: float) -> tuple[float, float]:
    row = table[(table["kind"] == kind) & np.isclose(table["width"], width)].iloc[0]
    return row["expected"], row["observed"]


def test_calibrated_binomial_posterior_has_observed_close_to_expected_coverage():
    predictions, counts = binomial_survey(TRUE_SPREAD)
    table = coverage_table(predictions, counts)
    errors = coverage_errors(table)
    assert errors["coverage_error_w5"] < 0.035
    assert errors["coverage_error_w10"] < 0.02
    assert errors["coverage_error_f0.2"] < 0.02
    votes = table[table["kind"] == "votes"]
    np.testing.assert_allclose(votes["observed"], votes["expected"], atol=0.03)
    # Windows only grow, so both coverages are monotone and end near 1.
    for kind in ("votes", "fraction"):
        part = table[table["kind"] == kind]
        assert np.all(np.diff(part["expected"]) >= 0) and np.all(np.diff(part["observed"]) >= 0)
    assert coverage_at(table, "fraction", 0.5)[0] > 0.999


def test_over_confident_posterior_observes_less_than_it_expects():
    predictions, counts = binomial_survey(sample_spread=400.0)  # samples far narrower than the truth's spread
    table = coverage_table(predictions, counts)
    for width in (1, 3, 5):
        expected, observed = coverage_at(table, "votes", width)
        assert observed < expected - 0.05, (width, expected, observed)
    expected, observed = coverage_at(table, "votes", 10)  # wide windows catch nearly everything anyway
    assert observed < expected - 0.02
    assert coverage_errors(table)["coverage_error_w5"] > 0.1  # the calibrated one is < 0.035


def test_under_confident_posterior_observes_more_than_it_expects():
    predictions, counts = binomial_survey(sample_spread=3.0)  # samples far wider than the truth's spread
    table = coverage_table(predictions, counts)
    for width in (1, 3, 5, 10):
        expected, observed = coverage_at(table, "votes", width)
        assert observed > expected + 0.05, (width, expected, observed)
    assert coverage_errors(table)["coverage_error_w5"] > 0.2


@functools.cache
def _dirichlet_truth(seed: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, t = 3000, 20
    alpha = np.empty((n, 5, t))
    for a, b in ((0, 3), (3, 5)):
        mean = rng.dirichlet(np.full(b - a, 2.0), n)
        strength = rng.uniform(5, 40, (n, t))
        alpha[:, a:b, :] = mean[:, :, None] * strength[:, None, :]
    chosen = alpha[np.arange(n), :, rng.integers(0, t, n)]  # (n, 5): one MC sample per galaxy
    counts = np.zeros((n, 5), dtype=np.int64)
    gamma = rng.gamma(chosen)  # normalised gammas are Dirichlet draws
    counts[:, :3] = rng.multinomial(N_VOTES, gamma[:, :3] / gamma[:, :3].sum(axis=1, keepdims=True))
    counts[:, 3:] = rng.multinomial(counts[:, 1], gamma[:, 3:] / gamma[:, 3:].sum(axis=1, keepdims=True))
    return alpha, counts


def dirichlet_survey(scale: float) -> tuple[Predictions, np.ndarray]:
    """Each MC sample t has concentrations s_t * m (mean m, strength s_t); the truth picks one
    sample per galaxy, fractions ~ Dirichlet of it, votes ~ Multinomial: exactly the mixture the
    predictions describe when scale == 1. The second question is asked of those who said 'featured'."""
    alpha, counts = _dirichlet_truth()
    return dirichlet(alpha * scale), counts


def test_calibrated_dirichlet_posterior_on_every_answer_and_the_follow_up_question():
    predictions, counts = dirichlet_survey(scale=1.0)
    for answer in (0, 1):
        table = coverage_table(predictions, counts, answer_index=answer)
        errors = coverage_errors(table)
        assert errors["shape_coverage_error_w5"] < 0.04, (answer, errors)
        assert errors["bar_coverage_error_w5"] < 0.04, (answer, errors)
        assert errors["coverage_error_f0.2"] < 0.03, (answer, errors)
        # 'bar' is asked only when someone answered 'featured': galaxies without are left out.
        n_bar = table.loc[table["question"] == "bar", "n_galaxies"].iloc[0]
        assert n_bar == int((counts[:, 1] > 0).sum()) < len(counts)


def test_dirichlet_concentrations_scaled_up_are_over_and_scaled_down_under_confident():
    over = coverage_table(*dirichlet_survey(scale=20.0), question="shape", windows=(5,), deviations=())
    under = coverage_table(*dirichlet_survey(scale=0.05), question="shape", windows=(5,), deviations=())
    assert over["observed"].iloc[0] < over["expected"].iloc[0] - 0.1
    assert under["observed"].iloc[0] > under["expected"].iloc[0] + 0.1
    assert list(over["question"]) == ["shape"]
