"""Calibration of posterior vote predictions, as in Walmsley et al. 2020 (MNRAS 491, 1554).

A Bayesian model should be wrong by as much as it says it will be. For each galaxy and answer the
model's posterior predictive over the vote count k, given the N volunteers who answered the
question, is a mixture over the MC samples t = 1..T:

- binomial model: mean over t of Binomial(k | N, p_t);
- dirichlet model: mean over t of the answer's marginal under Dirichlet-multinomial(N, alpha_t),
  which is BetaBinomial(k | N, alpha_a, alpha_0 - alpha_a) with alpha_0 the question's total.

Coverage compares two numbers for windows around the predicted count. The window of half-width w
votes is every k with |k - c| <= w, where c is the predictive mean count rounded to a whole vote.
Expected coverage is the mean over galaxies of the predictive probability of that window; observed
coverage is the fraction of galaxies whose actual count falls in it. A calibrated model has
observed = expected at every width; observed < expected means over-confident (too narrow), observed >
expected under-confident. The same is done on a vote-fraction grid: deviation d is the window
|k/N - c/N| <= d, i.e. |k - c| <= d N, around the same centre, so galaxies with different N compare.

Galaxies whose question got no votes say nothing about calibration and are left out.

No TensorFlow or MLflow here: fast tests and the active-learning code import this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import betaln, gammaln, xlog1py, xlogy

from zoobot.core.predictions import Predictions

WINDOWS = tuple(range(16))  # +-0 .. +-15 votes
DEVIATIONS = tuple(round(0.05 * i, 2) for i in range(11))  # vote-fraction deviation 0, 0.05, .., 0.5
# pmf blocks are (galaxies, N+1, T); bound them so a 50k-galaxy test set does not need gigabytes.
_CHUNK_ELEMENTS = 4_000_000
TABLE_COLUMNS = ("question", "answer", "kind", "width", "expected", "observed", "n_galaxies")


# -- input checks (public: metrics and plots take the same counts) ---------------------------------

def as_counts(predictions: Predictions, counts) -> np.ndarray:
    """Volunteer vote counts as an int array (n_galaxies, n_answers) in the schema's column order.

    `counts` is an array already in `schema.label_cols` order, or a DataFrame holding those columns;
    either way its rows are the galaxies of `predictions`, in the same order.
    """
    schema = predictions.schema
    n = len(predictions.id_str)
    if isinstance(counts, pd.DataFrame):
        missing = [c for c in schema.label_cols if c not in counts.columns]
        if missing:
            raise ValueError(
                f"counts is missing vote columns {missing} of schema '{schema.name}'; it has "
                f"{list(counts.columns)[:20]}. Fix: pass the catalog's count columns {list(schema.label_cols)}.")
        values = counts[list(schema.label_cols)].to_numpy(dtype=float)
    else:
        values = np.asarray(counts, dtype=float)
    if values.shape != (n, schema.n_answers):
        raise ValueError(
            f"counts must have shape (n_galaxies={n}, n_answers={schema.n_answers}), one column per "
            f"answer of schema '{schema.name}' in order {list(schema.label_cols)}; found shape {values.shape}. "
            "Fix: align the rows with predictions.id_str and the columns with schema.label_cols.")
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"counts must be non-negative whole numbers of votes; found {values[row, col]!r} for galaxy "
            f"{predictions.id_str[row]!r}, column '{schema.label_cols[col]}' ({int(bad.sum())} bad values in "
            "all). Fix: pass vote counts, not fractions, with missing questions as 0.")
    return values.astype(np.int64)


def _check_totals(predictions: Predictions, totals) -> np.ndarray:
    totals = np.asarray(totals)
    n = len(predictions.id_str)
    if totals.shape != (n,):
        raise ValueError(f"totals must have shape (n_galaxies={n},), the votes each galaxy got on the question; "
                         f"found shape {totals.shape}.")
    values = totals.astype(float)
    if not np.all(np.isfinite(values) & (values >= 0) & (values == np.round(values))):
        raise ValueError(f"totals must be non-negative whole numbers of votes; found {totals[:10]}...")
    return values.astype(np.int64)


def _answer_parameters(predictions: Predictions, question: str, answer_index: int) -> tuple[np.ndarray, ...]:
    """(p,) for a binomial model or (a, b) of the answer's Beta marginal, each (n, T)."""
    if question not in predictions.questions:
        raise KeyError(f"These {predictions.kind} predictions cover {list(predictions.questions)}, not {question!r}.")
    n_answers = len(predictions.answer_columns(question))
    if not 0 <= answer_index < n_answers:
        raise ValueError(f"answer_index must be in 0..{n_answers - 1} for question '{question}' "
                         f"({list(predictions.answer_columns(question))}); found {answer_index}.")
    if predictions.kind == "binomial":
        if answer_index > 0 and n_answers > 2:
            raise ValueError(
                f"A binomial model predicts only the first answer of '{question}'; how the other "
                f"{n_answers - 1} answers share the rest is unknown. Use answer_index=0.")
        p = predictions.sample_fractions(question)[:, answer_index, :]
        if not np.all(np.isfinite(p) & (p >= 0) & (p <= 1)):
            raise ValueError("Binomial predictions must be probabilities in [0, 1]; found values outside "
                             f"(min {np.nanmin(p)}, max {np.nanmax(p)}) or NaN.")
        return (p,)
    alpha = predictions.concentrations(question)
    if not np.all(np.isfinite(alpha) & (alpha > 0)):
        raise ValueError(f"Dirichlet concentrations must be finite and > 0; question '{question}' has "
                         f"min {np.nanmin(alpha)} or NaN. Fix: check the model's output activation.")
    a = alpha[:, answer_index, :]
    return a, alpha.sum(axis=1) - a


# -- the posterior predictive over votes -----------------------------------------------------------

def _log_pmf_block(params: tuple[np.ndarray, ...], totals: np.ndarray, n_k: int) -> np.ndarray:
    """log pmf over k = 0..n_k-1 for each galaxy and sample: (n, n_k, T), -inf above N."""
    N = totals[:, None, None].astype(float)
    k = np.arange(n_k, dtype=float)[None, :, None]
    rest = np.maximum(N - k, 0)  # clipped: k > N is masked below, and gammaln(<=0) would be inf
    log_choose = gammaln(N + 1) - gammaln(k + 1) - gammaln(rest + 1)
    if len(params) == 1:
        p = params[0][:, None, :]
        # xlogy/xlog1py give 0 * log 0 = 0, so p = 0 or 1 puts all mass on k = 0 or k = N.
        log_pmf = log_choose + xlogy(k, p) + xlog1py(rest, -p)
    else:
        a, b = params[0][:, None, :], params[1][:, None, :]
        log_pmf = log_choose + betaln(k + a, rest + b) - betaln(a, b)
    return np.where(k <= N, log_pmf, -np.inf)


def sample_pmfs(predictions: Predictions, question: str, answer_index: int, totals) -> np.ndarray:
    """Each MC sample's pmf over the answer's vote count k = 0..max(N): (n, max_N + 1, T).

    Row i is zero above totals[i]. Use `predictive_pmf` for the mixture; this is for plotting the
    spread between samples and for small sets (it holds every sample's pmf at once).
    """
    totals = _check_totals(predictions, totals)
    params = _answer_parameters(predictions, question, answer_index)
    n_k = int(totals.max(initial=0)) + 1
    return np.exp(_log_pmf_block(params, totals, n_k))


def predictive_pmf(predictions: Predictions, question: str, answer_index: int, totals) -> np.ndarray:
    """Posterior predictive pmf of the answer's vote count, the mean over MC samples: (n, max_N + 1).

    totals[i] is the number of volunteers who answered `question` for galaxy i; row i covers
    k = 0..max(totals) and is zero above totals[i] (a galaxy with no votes has all mass on k = 0).
    """
    totals = _check_totals(predictions, totals)
    params = _answer_parameters(predictions, question, answer_index)
    n, n_k = len(totals), int(totals.max(initial=0)) + 1
    pmf = np.zeros((n, n_k))
    step = max(1, _CHUNK_ELEMENTS // (n_k * predictions.n_samples))
    for start in range(0, n, step):
        block = slice(start, start + step)
        log_pmf = _log_pmf_block(tuple(p[block] for p in params), totals[block], n_k)
        pmf[block] = np.exp(log_pmf).mean(axis=2)
    return pmf


# -- coverage --------------------------------------------------------------------------------------

def _coverage(pmf: np.ndarray, k: np.ndarray, half_widths: np.ndarray) -> tuple[float, float]:
    """Mean predicted and observed probability that k is within half_widths[i] of the rounded mean."""
    centre = np.floor(pmf @ np.arange(pmf.shape[1]) + 0.5).astype(np.int64)
    cdf = np.concatenate([np.zeros((len(pmf), 1)), np.cumsum(pmf, axis=1)], axis=1)  # cdf[:, j] = P(k < j)
    rows = np.arange(len(pmf))
    lo = np.clip(centre - half_widths, 0, pmf.shape[1])
    hi = np.clip(centre + half_widths + 1, 0, pmf.shape[1])
    expected = np.clip(cdf[rows, hi] - cdf[rows, lo], 0, 1)  # clip: cumsum rounding can overshoot 1
    observed = np.abs(k - centre) <= half_widths
    return float(expected.mean()), float(observed.mean())


def coverage_table(predictions: Predictions, counts, question: str | None = None, answer_index: int = 0,
                   windows=WINDOWS, deviations=DEVIATIONS) -> pd.DataFrame:
    """Expected and observed coverage per question, window and vote-fraction deviation.

    One row per (question, kind, width): kind "votes" has width in votes (+-w around the rounded
    predictive mean count), kind "fraction" has width as a vote-fraction deviation d (|k - c| <= d N).
    `answer_index` picks the answer of each question whose count is checked (0: the first).
    n_galaxies counts those whose question got at least one vote; rows with none have NaN coverage.
    """
    counts = as_counts(predictions, counts)
    if question is not None and question not in vote_count_questions(predictions):
        if question in predictions.questions:
            raise ValueError(
                f"Coverage of '{question}' is not defined: its labels are one 0/1 value per galaxy (binary_column), "
                "not volunteers' votes, and any window of votes covers a single label. Judge it by accuracy, ROC "
                "AUC, precision, recall and F1 (`evaluate` reports them).")
    questions = vote_count_questions(predictions) if question is None else (question,)
    windows = np.asarray(list(windows), dtype=float)
    deviations = np.asarray(list(deviations), dtype=float)
    if np.any(windows < 0) or np.any(windows != np.round(windows)) or np.any(deviations < 0):
        raise ValueError(f"windows must be whole numbers of votes >= 0 and deviations >= 0; found "
                         f"windows {windows.tolist()}, deviations {deviations.tolist()}.")
    rows = []
    for name in questions:
        _answer_parameters(predictions, name, answer_index)  # fail early on a bad question/answer
        a, b = predictions.schema.question_index_groups[predictions.schema.question_names.index(name)]
        totals = counts[:, a:b].sum(axis=1)
        voted = totals > 0
        answer = predictions.schema.question(name).answers[answer_index].name
        n_voted = int(voted.sum())
        if n_voted:
            pmf = predictive_pmf(predictions.subset(voted), name, answer_index, totals[voted])
            k = counts[voted, a + answer_index]
        for kind, widths in (("votes", windows), ("fraction", deviations)):
            for width in widths:
                if not n_voted:
                    expected = observed = np.nan
                else:
                    # k and the centre are whole votes, so |k - c| <= d N is |k - c| <= floor(d N);
                    # the 1e-9 keeps d N = 2.0000000001-style rounding from dropping a vote.
                    half = np.full(n_voted, int(width)) if kind == "votes" else \
                        np.floor(width * totals[voted] + 1e-9).astype(np.int64)
                    expected, observed = _coverage(pmf, k, half)
                rows.append((name, answer, kind, float(width), expected, observed, n_voted))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def vote_count_questions(predictions: Predictions) -> tuple[str, ...]:
    """The predicted questions whose labels are volunteers' vote counts: all but those derived from a
    0/1 label per galaxy (`binary_column`), for which coverage in votes means nothing."""
    return tuple(q for q in predictions.questions if not predictions.schema.question(q).binary_column)


def _label(kind: str, width: float) -> str:
    return f"w{width:g}" if kind == "votes" else f"f{width:g}"


def coverage_errors(table: pd.DataFrame, widths=(5, 10), deviations=(0.2,)) -> dict[str, float]:
    """Coverage error at given widths: |observed - expected| / expected, as a fraction, and signed.

    This is the relative miss of the observed coverage against the coverage the model promised:
    0.1 means 10% more or fewer galaxies inside the window than predicted. Walmsley et al. 2020
    quote 10.6% at +-5 votes and 2.9% at +-10 votes for their bar model (0.106 and 0.029 here);
    it shrinks as windows widen, since both coverages approach 1. The signed error,
    (observed - expected) / expected, tells the two failures apart: below 0, fewer galaxies fall
    inside the window than the model promised (its posteriors are too narrow: over-confident);
    above 0, more do (too wide: under-confident).

    Keys: "<question>_coverage_error_w5" per question (averaged over answers if the table holds
    several) and "coverage_error_w5", the plain mean over questions, so a rarely asked question
    counts as much as the root one; "..._coverage_signed_error_w5" likewise. Vote-fraction
    deviations give "..._coverage_error_f0.2". NaN where the question had no voted galaxies or
    expected coverage is 0.
    """
    missing_columns = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing_columns:
        raise ValueError(f"table is missing columns {missing_columns}; expected the output of coverage_table, "
                         f"with {list(TABLE_COLUMNS)}.")
    errors: dict[str, float] = {}
    if table.empty:  # no question with vote counts (single 0/1 labels only): nothing to report
        return errors
    for kind, values in (("votes", widths), ("fraction", deviations)):
        rows = table[table["kind"] == kind]
        for value in values:
            at = rows[np.isclose(rows["width"].to_numpy(dtype=float), float(value))]
            if at.empty:
                raise ValueError(f"coverage table has no {kind!r} rows at width {value}; it has "
                                 f"{sorted(set(rows['width']))}. Fix: include {value} in coverage_table's "
                                 f"{'windows' if kind == 'votes' else 'deviations'}.")
            expected = at["expected"].to_numpy(dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                signed = np.where(expected > 0, (at["observed"].to_numpy(dtype=float) - expected) / expected, np.nan)
            label = _label(kind, float(value))
            for name, relative in (("coverage_error", np.abs(signed)), ("coverage_signed_error", signed)):
                per_question = pd.Series(relative, index=at["question"].to_numpy()).groupby(level=0, sort=False).mean()
                for question, error in per_question.items():
                    errors[f"{question}_{name}_{label}"] = float(error)
                defined = per_question.dropna()
                errors[f"{name}_{label}"] = float(defined.mean()) if len(defined) else float("nan")
    return errors
