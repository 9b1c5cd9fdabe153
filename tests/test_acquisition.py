"""Known-answer tests for acquisition functions: BALD against brute-force enumeration, its limits
(0 when the samples agree, confident disagreement above shared uncertainty), the question weighting
of the decision tree and the registry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln

import zoobot.core.acquisition as acquisition
from zoobot.core.acquisition import (bald, bald_binomial, bald_dirichlet, dirichlet_information, get_acquisition,
                                max_entropy, random_scores, register, score)
from zoobot.core.selection import top_k
from zoobot.core.predictions import Predictions
from zoobot.core.schema import GZ2, GZ_DECALS, Answer, Question, Schema

BAR = Schema("bar-only", (Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no"))),))
# A root yes/no question and a two-answer question asked only after "yes".
TREE = Schema("tree", (
    Question("disk", (Answer("yes", "disk_yes"), Answer("no", "disk_no"))),
    Question("bar", (Answer("yes", "bar_yes"), Answer("no", "bar_no")), follows="disk_yes"),
))


def one_question(n_answers: int) -> Schema:
    return Schema("q", (Question("q", tuple(Answer(f"a{i}", f"q_a{i}") for i in range(n_answers))),))


def binomial(p: np.ndarray) -> Predictions:
    return Predictions(np.array([f"g{i}" for i in range(len(p))]), np.asarray(p, float)[:, None, :], "binomial",
                       BAR, "bar")


def dirichlet(alpha: np.ndarray, schema: Schema) -> Predictions:
    return Predictions(np.array([f"g{i}" for i in range(len(alpha))]), np.asarray(alpha, float), "dirichlet", schema)


def mixture_information(log_pmf: np.ndarray) -> tuple[float, float]:
    """Brute-force (MI, mixture entropy) of outcomes x samples log pmfs, straight from the definitions."""
    pmf = np.exp(log_pmf)
    mixture = pmf.mean(axis=1)
    entropy = -sum(m * np.log(m) for m in mixture if m > 0)
    conditional = np.mean([-sum(q * np.log(q) for q in pmf[:, t] if q > 0) for t in range(pmf.shape[1])])
    return entropy - conditional, entropy


def random_alpha(rng, n: int, n_answers: int, n_samples: int) -> np.ndarray:
    """Concentrations whose MC samples agree to varying degrees, as a model's would."""
    centre = rng.dirichlet(np.ones(n_answers), size=n) * rng.uniform(2, 50, (n, 1)) + 0.2
    return centre[:, :, None] * rng.lognormal(0, rng.uniform(0.05, 1.0, (n, 1, 1)), (n, n_answers, n_samples))


# -- reference: the stick-breaking BALD as it was before it was vectorised (issue 13) -----------------
# A copy, not an import, so the fast version is checked against code it cannot change: one beta-binomial
# kernel call per question and whole number of votes, pmfs laid out (counts, rows, samples).

def _reference_information(log_pmf):
    pmf = np.exp(log_pmf)
    mixture = pmf.mean(axis=2)
    log_mixture = np.log(np.maximum(mixture, np.finfo(float).tiny))
    log_pmf -= log_mixture[:, :, None]
    log_pmf *= pmf
    mutual_information = np.maximum(log_pmf.sum(axis=0).mean(axis=1), 0.0)
    entropy = -(mixture * log_mixture).sum(axis=0)
    return mutual_information, np.maximum(entropy, 0.0)


def _reference_row_chunks(n_rows, width):
    step = max(1, 2**17 // max(width, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _reference_interpolated_in_votes(kernel, n_votes, *params):
    n_votes = np.asarray(n_votes, dtype=float)
    nearest = np.round(n_votes)
    n_votes = np.where(np.abs(n_votes - nearest) < 1e-9, nearest, n_votes)
    low = np.floor(n_votes)
    frac = n_votes - low
    mutual_information = np.zeros(len(n_votes))
    entropy = np.zeros(len(n_votes))
    for votes in np.unique(low):
        for with_next in (False, True):
            rows = np.flatnonzero((low == votes) & ((frac > 0) == with_next))
            if not rows.size or (votes == 0 and not with_next):
                continue
            results = kernel(int(votes), with_next, *(p[rows] for p in params))
            weights = [1 - frac[rows], frac[rows]] if with_next else [1.0]
            for (mi, h), weight in zip(results, weights):
                mutual_information[rows] += weight * mi
                entropy[rows] += weight * h
    return mutual_information, entropy


def _reference_log_rising(x, steps):
    out = np.empty((len(steps) + 1, len(x)))
    out[0] = 0.0
    np.log(np.add(x, steps, out=out[1:]), out=out[1:])
    for k in range(2, len(out)):
        out[k] += out[k - 1]
    return out


def _reference_beta_binomial_kernel(votes, with_next, a, b):
    top = votes + 1 if with_next else votes
    n_rows, n_samples = a.shape
    results = [(np.empty(n_rows), np.empty(n_rows)) for _ in range(top - votes + 1)]
    for rows in _reference_row_chunks(n_rows, (top + 1) * n_samples):
        a_, b_ = a[rows].reshape(-1), b[rows].reshape(-1)
        steps = np.arange(top, dtype=float)[:, None]
        log_rising_a, log_rising_b = _reference_log_rising(a_, steps), _reference_log_rising(b_, steps)
        log_terms_ab = np.log((a_ + b_) + steps)
        log_rising_ab = {votes: log_terms_ab[:votes].sum(axis=0), top: log_terms_ab.sum(axis=0)}
        for i, m in enumerate(range(votes, top + 1)):
            log_pmf = log_rising_a[: m + 1] + log_rising_b[m::-1]
            log_pmf -= log_rising_ab[m]
            k = np.arange(m + 1, dtype=float)
            log_pmf += (gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1))[:, None]
            mi, h = _reference_information(log_pmf.reshape(m + 1, -1, n_samples))
            results[i][0][rows], results[i][1][rows] = mi, h
    return results


def _reference_dirichlet_information(predictions, n_volunteers=40.0):
    """Per question (MI, entropy), (n_galaxies, n_questions): method="stick" of `dirichlet_information`."""
    schema = predictions.schema
    n = len(predictions.id_str)
    fractions = np.concatenate([predictions.mean_fractions(q) for q in schema.question_names], axis=1)
    reach = schema.reach_probability(fractions)
    mutual_information = np.zeros((n, len(schema.questions)))
    entropy = np.zeros_like(mutual_information)
    for i, (start, stop) in enumerate(schema.question_index_groups):
        alpha = predictions.samples[:, start:stop, :].astype(float)
        votes = n_volunteers * reach[:, i]
        order = np.argsort(fractions[:, start:stop], axis=1, kind="stable")
        alpha = np.take_along_axis(alpha, order[:, :, None], axis=1)
        left = np.take_along_axis(fractions[:, start:stop], order, axis=1)[:, ::-1].cumsum(axis=1)[:, ::-1]
        rest = alpha[:, ::-1].cumsum(axis=1)[:, ::-1]
        n_splits = stop - start - 1
        a = alpha[:, :n_splits].reshape(n * n_splits, predictions.n_samples)
        b = rest[:, 1:].reshape(n * n_splits, predictions.n_samples)
        split_votes = (votes[:, None] * left[:, :n_splits]).reshape(-1)
        mi, h = _reference_interpolated_in_votes(_reference_beta_binomial_kernel, split_votes, a, b)
        mutual_information[:, i] = mi.reshape(n, n_splits).sum(axis=1)
        entropy[:, i] = h.reshape(n, n_splits).sum(axis=1)
    return mutual_information, entropy


def _reference_bald_dirichlet(predictions, n_volunteers=40.0):
    return _reference_dirichlet_information(predictions, n_volunteers)[0].sum(axis=1)


# -- binomial: exact against enumeration -------------------------------------------------------------

@pytest.mark.parametrize("n_votes", [3, 5, 7, 10])
def test_bald_binomial_matches_enumerating_every_sequence_of_votes(n_votes):
    rng = np.random.default_rng(n_votes)
    p = rng.uniform(0, 1, (4, 6))
    p[0] = [0.0, 1.0, 0.3, 0.3, 1.0, 0.0]  # the edges are allowed
    got = bald_binomial(p, n_votes)
    entropy = max_entropy(binomial(p), n_votes)
    # Every one of the 2^N yes/no sequences; the count is sufficient, so I(sequence; t) = I(count; t).
    sequences = np.array(list(itertools.product([0, 1], repeat=n_votes)))
    yes = sequences.sum(axis=1)[:, None]
    for i in range(len(p)):
        with np.errstate(divide="ignore"):
            log_pmf = np.log(p[i] ** yes * (1 - p[i]) ** (n_votes - yes))
        assert got[i] == pytest.approx(mixture_information(log_pmf)[0], rel=1e-10, abs=1e-13)
        counts = np.arange(n_votes + 1)[:, None]
        with np.errstate(divide="ignore"):
            expected_entropy = mixture_information(np.log(stats.binom.pmf(counts, n_votes, p[i])))[1]
        assert entropy[i] == pytest.approx(expected_entropy, rel=1e-10)


def test_bald_binomial_takes_one_number_of_votes_per_galaxy_and_interpolates_fractions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (5, 8))
    n_votes = np.array([0, 1, 12, 40, 3])
    together = bald_binomial(p, n_votes)
    separately = [bald_binomial(p[i:i + 1], n)[0] for i, n in enumerate(n_votes)]
    np.testing.assert_allclose(together, separately, rtol=1e-12)
    assert together[0] == 0  # no votes, no information
    # 14.8 expected volunteers: 14 with probability 0.2, 15 with 0.8.
    np.testing.assert_allclose(bald_binomial(p, 14.8), 0.2 * bald_binomial(p, 14) + 0.8 * bald_binomial(p, 15),
                               rtol=1e-12)


# -- known answers: agreement, confident disagreement, shared uncertainty ----------------------------

def test_bald_is_zero_when_all_samples_agree():
    p = np.repeat(np.array([[0.0], [1e-9], [0.3], [0.5], [1.0]]), 10, axis=1)
    assert np.all(np.abs(bald_binomial(p, 40)) <= 1e-12)
    assert np.all(max_entropy(binomial(p), 40)[2:4] > 1)  # uncertain votes, but nothing to learn

    rng = np.random.default_rng(1)
    alpha = np.repeat(random_alpha(rng, 6, GZ_DECALS.n_answers, 1), 12, axis=2)
    predictions = dirichlet(alpha, GZ_DECALS)
    assert np.all(np.abs(bald_dirichlet(predictions, 40)) <= 1e-12)
    assert np.all(np.abs(bald_dirichlet(dirichlet(alpha[:, :3], one_question(3)), 6, method="exact")) <= 1e-12)
    assert np.all(max_entropy(predictions, 40) > 1)


def test_confident_disagreement_beats_shared_uncertainty_and_max_entropy_ranks_them_the_other_way():
    disagree = np.tile([0.05, 0.95], 10)
    shared = np.full(20, 0.5)
    p = np.stack([disagree, shared])
    bald_scores = bald_binomial(p, 40)
    entropies = max_entropy(binomial(p), 40)
    assert bald_scores[0] > 0.6 and bald_scores[1] == pytest.approx(0, abs=1e-12)  # ~log 2: which of two
    assert entropies[1] > entropies[0]
    assert list(top_k(bald_scores, np.array(["disagree", "shared"]), 1)) == ["disagree"]

    # Dirichlet: samples each sure of a different answer, versus all samples flat over the answers.
    confident = np.array([[40, 1, 1], [1, 40, 1], [1, 1, 40]], float)
    alpha = np.stack([np.tile(confident, 4), np.ones((3, 12))])
    for method in ("stick", "exact"):
        predictions = dirichlet(alpha, one_question(3))
        mi, entropy = dirichlet_information(predictions, 20, method)
        assert mi[0, 0] > 0.8 and mi[1, 0] == pytest.approx(0, abs=1e-12), method
        assert entropy[1, 0] > entropy[0, 0], method


def test_bald_grows_with_the_spread_of_the_samples_and_with_the_number_of_volunteers():
    spreads = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.45])
    p = 0.5 + spreads[:, None] * np.tile([-1, 1], 5)
    assert np.all(np.diff(bald_binomial(p, 40)) > 0)
    by_votes = [bald_binomial(p[3:4], n)[0] for n in (1, 2, 5, 10, 20, 40)]
    assert np.all(np.diff(by_votes) > 0)

    base = np.array([5.0, 10.0, 15.0])
    alpha = np.stack([base[:, None] * np.exp(s * np.tile([[-1, 1], [1, -1], [0, 0]], 5)) for s in spreads])
    predictions = dirichlet(alpha, one_question(3))
    assert np.all(np.diff(bald_dirichlet(predictions, 40)) > 0)
    by_volunteers = [bald_dirichlet(predictions, n)[3] for n in (1, 2.5, 5, 10, 20, 40)]
    assert np.all(np.diff(by_volunteers) > 0)


# -- dirichlet: exact against enumeration, and the approximation's error -----------------------------

@pytest.mark.parametrize("n_answers,n_votes", [(2, 1), (2, 6), (2, 25), (3, 2), (3, 7)])
def test_dirichlet_exact_method_matches_enumerating_count_vectors_with_scipy(n_answers, n_votes):
    rng = np.random.default_rng(n_answers * 100 + n_votes)
    alpha = random_alpha(rng, 3, n_answers, 5)
    predictions = dirichlet(alpha, one_question(n_answers))
    mi_exact, h_exact = dirichlet_information(predictions, n_votes, "exact")
    mi_stick, h_stick = dirichlet_information(predictions, n_votes, "stick")
    vectors = np.array([v for v in itertools.product(range(n_votes + 1), repeat=n_answers) if sum(v) == n_votes])
    for i in range(len(alpha)):
        log_pmf = np.stack([stats.dirichlet_multinomial.logpmf(vectors, alpha[i, :, t], n_votes)
                            for t in range(alpha.shape[2])], axis=1)
        expected_mi, expected_h = mixture_information(log_pmf)
        assert mi_exact[i, 0] == pytest.approx(expected_mi, rel=1e-9, abs=1e-13)
        assert h_exact[i, 0] == pytest.approx(expected_h, rel=1e-10)
        if n_answers == 2:  # one beta-binomial: the stick method is exact too
            assert mi_stick[i, 0] == pytest.approx(expected_mi, rel=1e-9, abs=1e-13)
            assert h_stick[i, 0] == pytest.approx(expected_h, rel=1e-10)


def test_stick_approximation_stays_close_to_exact_and_ranks_galaxies_alike():
    rng = np.random.default_rng(3)
    for n_answers, n_votes in ((3, 12), (4, 8)):
        alpha = random_alpha(rng, 40, n_answers, 8)
        predictions = dirichlet(alpha, one_question(n_answers))
        mi_exact, h_exact = dirichlet_information(predictions, n_votes, "exact")
        mi_stick, h_stick = dirichlet_information(predictions, n_votes, "stick")
        ratio = mi_stick[:, 0] / mi_exact[:, 0]
        assert 0.9 < ratio.min() and ratio.max() < 1.6 and np.median(ratio) < 1.15
        assert stats.spearmanr(mi_stick[:, 0], mi_exact[:, 0]).statistic > 0.95
        np.testing.assert_allclose(h_stick, h_exact, rtol=0.12)
        assert np.all(h_stick >= h_exact * (1 - 1e-9))  # sum of the splits' entropies bounds it here


@pytest.mark.parametrize("schema", [GZ_DECALS, GZ2], ids=["decals", "gz2"])
@pytest.mark.parametrize("n_galaxies,n_samples", [(1, 1), (1, 30), (7, 1), (7, 30)])
def test_stick_bald_agrees_with_the_reference_implementation(schema, n_galaxies, n_samples):
    rng = np.random.default_rng(n_galaxies * 100 + n_samples)
    predictions = dirichlet(random_alpha(rng, n_galaxies, schema.n_answers, n_samples), schema)
    # Whole, fractional and few volunteers: every question gets a fractional number of votes
    # (interpolated), a whole one, or nearly none.
    for n_volunteers in (40.0, 17.3, 3.0, 0.5):
        mi, entropy = dirichlet_information(predictions, n_volunteers)
        expected_mi, expected_entropy = _reference_dirichlet_information(predictions, n_volunteers)
        if n_samples == 1:  # one sample is its own mixture: MI is 0 up to rounding in either
            assert np.all(mi <= 1e-13) and np.all(expected_mi <= 1e-13)
        else:
            np.testing.assert_allclose(mi, expected_mi, rtol=1e-9, atol=0)
        np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-9, atol=0)
    if n_samples > 1:
        np.testing.assert_allclose(score("bald", predictions), _reference_bald_dirichlet(predictions), rtol=1e-9)
        assert np.all(mi > 0)


@pytest.mark.parametrize("values", [[1e-3, 1.0, 100.0, 1e6], [1e-300, 1.0, 1e31], [1e-12, 5.0]])
def test_stick_bald_agrees_with_the_reference_for_extreme_concentrations(values):
    rng = np.random.default_rng(len(values))
    predictions = dirichlet(rng.choice(values, size=(6, GZ_DECALS.n_answers, 5)), GZ_DECALS)
    for n_volunteers in (40.0, 17.3):
        for got, expected in zip(dirichlet_information(predictions, n_volunteers),
                                 _reference_dirichlet_information(predictions, n_volunteers)):
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)


def test_stick_does_not_depend_on_the_order_the_schema_lists_answers():
    rng = np.random.default_rng(4)
    alpha = random_alpha(rng, 5, 4, 6)
    permuted = alpha[:, [2, 0, 3, 1]]
    np.testing.assert_allclose(bald_dirichlet(dirichlet(alpha, one_question(4)), 30),
                               bald_dirichlet(dirichlet(permuted, one_question(4)), 30), rtol=1e-12)


def test_bald_is_between_zero_and_the_predictive_entropy():
    rng = np.random.default_rng(5)
    predictions = dirichlet(random_alpha(rng, 50, GZ_DECALS.n_answers, 10), GZ_DECALS)
    mi, entropy = dirichlet_information(predictions, 40)
    assert np.all(mi >= 0) and np.all(mi <= entropy + 1e-12)
    np.testing.assert_allclose(bald_dirichlet(predictions, 40), mi.sum(axis=1))
    np.testing.assert_allclose(max_entropy(predictions, 40), entropy.sum(axis=1))
    p = rng.uniform(0, 1, (50, 10)) ** rng.uniform(0.2, 5, (50, 1))
    assert np.all(bald_binomial(p, 40) >= 0)
    assert np.all(bald_binomial(p, 40) <= max_entropy(binomial(p), 40) + 1e-12)


def test_results_do_not_depend_on_how_the_work_is_split_into_blocks(monkeypatch):
    rng = np.random.default_rng(6)
    predictions = dirichlet(random_alpha(rng, 20, GZ_DECALS.n_answers, 7), GZ_DECALS)
    p = rng.uniform(0, 1, (20, 7))
    before = bald_dirichlet(predictions, 33.3), bald_binomial(p, 17)
    monkeypatch.setattr(acquisition, "_CHUNK_ELEMENTS", 100)
    np.testing.assert_allclose(bald_dirichlet(predictions, 33.3), before[0], rtol=1e-12)
    np.testing.assert_allclose(bald_binomial(p, 17), before[1], rtol=1e-12)


# -- the decision tree: questions weighted by the volunteers who reach them --------------------------

def test_each_question_gets_the_volunteers_expected_to_reach_it():
    rng = np.random.default_rng(7)
    # Root answered yes/no half and half by every sample: no information there, and the bar question
    # is reached by exactly half of 40 volunteers.
    bar_alpha = random_alpha(rng, 3, 2, 6)
    alpha = np.concatenate([np.full((3, 2, 6), 7.0), bar_alpha], axis=1)
    mi, entropy = dirichlet_information(dirichlet(alpha, TREE), 40)
    assert np.all(np.abs(mi[:, 0]) <= 1e-12)
    assert np.all(entropy[:, 0] > 2)
    np.testing.assert_allclose(mi[:, 1], bald_dirichlet(dirichlet(bar_alpha, BAR), 20), rtol=1e-12)
    # The same against brute force, for a beta-binomial over 20 votes.
    for i in range(3):
        k = np.arange(21)[:, None]
        log_pmf = stats.betabinom.logpmf(k, 20, bar_alpha[i, 0], bar_alpha[i, 1])
        assert mi[i, 1] == pytest.approx(mixture_information(log_pmf)[0], rel=1e-9)


def test_a_question_nobody_reaches_contributes_nothing():
    rng = np.random.default_rng(8)
    # Bar samples sure of "yes" and sure of "no", alternately: as much disagreement as samples can have.
    bar_alpha = np.tile(np.array([[30.0, 0.5], [0.5, 30.0]]), (2, 1, 4))
    root_alpha = np.concatenate([np.full((2, 1, 8), 1e-12), rng.uniform(1, 20, (2, 1, 8))], axis=1)
    predictions = dirichlet(np.concatenate([root_alpha, bar_alpha], axis=1), TREE)
    mi, entropy = dirichlet_information(predictions, 40)
    assert np.all(mi[:, 1] == 0) and np.all(entropy[:, 1] == 0)
    # The same bar samples, reached by everyone.
    reached = np.concatenate([np.full((2, 1, 8), 1e6), np.full((2, 1, 8), 1e-3), bar_alpha], axis=1)
    assert np.all(dirichlet_information(dirichlet(reached, TREE), 40)[0][:, 1] > 0.5)


# -- extremes and bad input -------------------------------------------------------------------------

def test_scores_are_finite_for_extreme_concentrations_and_probabilities():
    rng = np.random.default_rng(9)
    alpha = rng.choice([1.0, 100.0], size=(6, GZ_DECALS.n_answers, 5))
    alpha[0] = 1.0
    alpha[1] = 100.0
    alpha[2, :, ::2] = 1e-3
    alpha[3, :, 1::2] = 1e6
    p = np.array([[0.0] * 5, [1.0] * 5, [1e-15, 1e-12, 0.0, 1e-300, 1e-9], [1 - 1e-15, 1.0, 1 - 1e-9, 1.0, 0.999],
                  [0.0, 1.0, 0.0, 1.0, 0.0]])
    for predictions in (dirichlet(alpha, GZ_DECALS), binomial(p)):
        for name in ("bald", "max_entropy", "random"):
            values = score(name, predictions, 40.0)
            assert values.dtype == np.float64 and values.shape == (len(predictions.id_str),)
            assert np.all(np.isfinite(values)) and np.all(values >= 0), (predictions.kind, name)
    # Samples sure of 0 votes (3 of 5) or sure of all 40: BALD is the entropy of which, H(0.6, 0.4).
    assert score("bald", binomial(p))[4] == pytest.approx(-0.6 * np.log(0.6) - 0.4 * np.log(0.4), rel=1e-12)
    assert np.all(score("bald", binomial(p))[:2] == 0)


def test_an_empty_pool_gets_no_scores():
    for predictions in (dirichlet(np.ones((0, GZ_DECALS.n_answers, 4)), GZ_DECALS), binomial(np.ones((0, 4)))):
        for name in ("bald", "max_entropy", "random"):
            assert score(name, predictions).shape == (0,)
    assert len(top_k(np.zeros(0), np.zeros(0, dtype=str), 0)) == 0


def test_bad_input_says_what_was_expected():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        bald_binomial(np.array([[0.5, 1.2]]), 40)
    with pytest.raises(ValueError, match="n_votes must be a number >= 0"):
        bald_binomial(np.array([[0.5, 0.2]]), -1)
    with pytest.raises(ValueError, match="shape \\(n_galaxies, n_samples\\)"):
        bald_binomial(np.array([0.5, 0.2]), 40)
    alpha = np.ones((2, 2, 3))
    alpha[1, 0, 2] = 0.0
    with pytest.raises(ValueError, match="finite and > 0; galaxy 'g1'.*bar_yes"):
        bald_dirichlet(dirichlet(alpha, BAR), 40)
    with pytest.raises(ValueError, match="method must be one of"):
        bald_dirichlet(dirichlet(np.ones((1, 2, 3)), BAR), 40, method="mc")
    with pytest.raises(ValueError, match="would enumerate .* count vectors"):
        bald_dirichlet(dirichlet(np.ones((1, 6, 2)), one_question(6)), 40, method="exact")
    with pytest.raises(ValueError, match="needs dirichlet predictions"):
        dirichlet_information(binomial(np.full((1, 3), 0.5)), 40)


# -- registry ---------------------------------------------------------------------------------------

def test_score_dispatches_on_the_kind_of_predictions():
    rng = np.random.default_rng(10)
    p = rng.uniform(0, 1, (6, 9))
    np.testing.assert_array_equal(score("bald", binomial(p), 25.0), bald_binomial(p, 25))
    predictions = dirichlet(random_alpha(rng, 6, GZ_DECALS.n_answers, 9), GZ_DECALS)
    np.testing.assert_array_equal(score("bald", predictions), bald_dirichlet(predictions, 40.0))
    np.testing.assert_array_equal(score("max_entropy", predictions, 12.0), max_entropy(predictions, 12.0))
    assert get_acquisition("bald") is bald


def test_a_users_own_acquisition_is_selectable_by_name(monkeypatch):
    monkeypatch.setattr(acquisition, "ACQUISITIONS", dict(acquisition.ACQUISITIONS))

    @register("bar_votes")
    def expected_bar_votes(predictions, n_volunteers, rng):
        return n_volunteers * predictions.samples[:, 0, :].mean(axis=1)

    p = np.array([[0.1, 0.3], [0.9, 0.7]])
    np.testing.assert_allclose(score("bar_votes", binomial(p), 10), [2.0, 8.0])
    assert "bar_votes" in acquisition.ACQUISITIONS
    with pytest.raises(ValueError, match="already registered"):
        register("bar_votes")(lambda predictions, n_volunteers, rng: np.zeros(len(predictions.id_str)))

    register("wrong_shape")(lambda predictions, n_volunteers, rng: np.zeros(3))
    with pytest.raises(ValueError, match=r"returned shape \(3,\); expected one score per galaxy, \(2,\)"):
        score("wrong_shape", binomial(p))
    register("nan")(lambda predictions, n_volunteers, rng: np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="non-finite scores.*'g1'"):
        score("nan", binomial(p))


def test_unknown_name_lists_the_known_ones():
    known = r"Unknown acquisition function 'bladd'; known: \['bald', 'entropy', 'max_entropy', 'random'\]"
    with pytest.raises(KeyError, match=known):
        score("bladd", binomial(np.full((2, 3), 0.5)))
    with pytest.raises(ValueError) as error:  # what the command line reports as bad input
        get_acquisition("bladd")
    assert str(error.value).startswith("Unknown acquisition function 'bladd'; known: ['bald', ")


def test_random_scores_are_uniform_and_reproducible_for_a_seed():
    predictions = binomial(np.full((500, 2), 0.5))
    first, again, other = score("random", predictions, seed=3), score("random", predictions, seed=3), \
        score("random", predictions, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert 0 <= first.min() and first.max() < 1 and abs(first.mean() - 0.5) < 0.05
    np.testing.assert_array_equal(random_scores(predictions, 40, np.random.default_rng(3)), first)
