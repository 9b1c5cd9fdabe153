"""Acquisition functions: which galaxies of the unlabelled pool volunteers should classify next.

Every function scores every galaxy; higher means more worth sending to volunteers. The model speaks
through MC-dropout samples t = 1..T (the last axis of `Predictions.samples`). Each sample predicts a
distribution over the votes the galaxy would get; the posterior predictive is their mixture.

- BALD (Houlsby et al. 2011; Walmsley et al. 2020): the mutual information between the votes and the
  model, H[mixture] - mean_t H[sample t]. High when the samples disagree confidently, i.e. when the
  votes would tell us which samples were right. Zero when all samples agree, however uncertain they
  are about the votes (that uncertainty is the volunteers' own and no amount of labelling removes it).
- max_entropy: H[mixture] alone; high for any uncertainty, including the irreducible kind.
- random: the baseline every acquisition function must beat.

All entropies are in nats. Functions are pure numpy/scipy and are chosen by name through a registry
(`score("bald", predictions)`); `register` adds your own. Every registered function has the signature
`fn(predictions, n_volunteers, rng) -> (n_galaxies,)`.

No TensorFlow or MLflow here: the active-learning loop and fast tests import this module.

(Over the ~400-line guide on purpose: the entropies of the binomial and of the Dirichlet-multinomial
tree, the mixtures they are taken over and the functions built on them are one derivation, read
together; the registry at the end is a few dozen lines.)
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from scipy.special import gammaln

from zoobot.core.coverage import _log_pmf_block
from zoobot.core.machine import usable_cores
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Schema

DEFAULT_VOLUNTEERS = 40.0
METHODS = ("stick", "exact")
# Blocks of pmfs over vote counts hold ~1 MB each: cached, which here is worth more than fewer,
# larger numpy calls.
_CHUNK_ELEMENTS = 2**17
_MAX_EXACT_VECTORS = 50_000  # count vectors per question for method="exact"
_TASK_ELEMENTS = 2**20  # log-pmf entries per thread task of the vote-count kernels
_TINY = np.finfo(float).tiny

Acquisition = Callable[[Predictions, float, np.random.Generator], np.ndarray]


# -- information in a mixture of vote-count distributions ------------------------------------------

def _information(log_pmf: np.ndarray, sample_axis: int = 2, pmf: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(mutual information, mixture entropy) per row, from log pmfs of shape (n_outcomes, rows, T), or
    (n_outcomes, T, rows) with sample_axis=1.

    MI is computed as mean_t KL(pmf_t || mixture), a mean of divergences that are each >= 0, rather
    than as H[mixture] - mean_t H[pmf_t], which cancels badly when the samples nearly agree.
    log_pmf must be finite (-inf replaced by a huge negative number) and is overwritten; `pmf`, if
    given, is scratch space of the same shape.
    """
    # einsum sums (and multiplies and sums) in one pass, where numpy's reductions take one or two.
    layout = "ktr" if sample_axis == 1 else "krt"
    n_samples = log_pmf.shape[sample_axis]
    pmf = np.exp(log_pmf, out=pmf)
    mixture = np.einsum(f"{layout}->kr", pmf)
    mixture /= n_samples
    log_mixture = np.log(np.maximum(mixture, _TINY))  # impossible outcomes: 0 * finite = 0
    log_pmf -= np.expand_dims(log_mixture, sample_axis)
    mutual_information = np.einsum(f"{layout},{layout}->r", pmf, log_pmf)
    mutual_information /= n_samples
    entropy = -np.einsum("kr,kr->r", mixture, log_mixture)
    return np.maximum(mutual_information, 0.0), np.maximum(entropy, 0.0)


def _row_chunks(n_rows: int, width: int):
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _interpolated_in_votes(kernel, n_votes: np.ndarray, *params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MI, entropy) per row for a possibly fractional number of votes per row.

    `kernel(M, with_next, *params_of_rows)` returns [(MI, entropy) at M votes] and, if with_next, the
    same at M + 1 votes, for rows that all share M. An expected number of votes like
    40 * 0.37 = 14.8 is not a whole number of volunteers: it is read as 14 votes with probability 0.2
    and 15 with probability 0.8 (the same mean), so the information is interpolated linearly between
    the two whole numbers. Scores are then continuous in the reach probability, and a question
    nobody reaches (0 votes) contributes exactly nothing.
    """
    n_votes = np.asarray(n_votes, dtype=float)
    nearest = np.round(n_votes)
    n_votes = np.where(np.abs(n_votes - nearest) < 1e-9, nearest, n_votes)  # 40 * 0.3 = 12.000000000000002
    low = np.floor(n_votes)
    frac = n_votes - low
    mutual_information = np.zeros(len(n_votes))
    entropy = np.zeros(len(n_votes))
    tasks = []
    for votes in np.unique(low):
        for with_next in (False, True):
            rows = np.flatnonzero((low == votes) & ((frac > 0) == with_next))
            if not rows.size or (votes == 0 and not with_next):
                continue  # no votes, no information
            # pieces of about _TASK_ELEMENTS, so every core gets a share of the large groups
            width = (votes + 2) * params[0].shape[-1]
            n_pieces = max(1, int(np.ceil(rows.size * width / _TASK_ELEMENTS)))
            tasks += [(int(votes), with_next, piece) for piece in np.array_split(rows, n_pieces)]

    def run(task):
        votes, with_next, rows = task
        return kernel(votes, with_next, *(p[rows] for p in params))

    # numpy's ufuncs and einsum release the GIL on blocks this large, so threads share the cores
    with _thread_pool(len(tasks)) as pool:
        for (votes, with_next, rows), results in zip(tasks, pool.map(run, tasks)):
            weights = [1 - frac[rows], frac[rows]] if with_next else [1.0]
            for (mi, h), weight in zip(results, weights):
                mutual_information[rows] += weight * mi
                entropy[rows] += weight * h
    return mutual_information, entropy


@contextlib.contextmanager
def _thread_pool(n_tasks: int):
    """A pool of one thread per core (at most one per task); a single task runs in this thread."""
    workers = min(n_tasks, usable_cores())
    if workers <= 1:
        yield _SerialPool()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoobot-bald") as pool:
        yield pool


class _SerialPool:
    @staticmethod
    def map(function, items):
        return map(function, items)


def _one_count_at_a_time(kernel):
    """A kernel(M, *params) -> (MI, entropy) as the kernel(M, with_next, *params) above."""
    def both(votes: int, with_next: bool, *params):
        return [kernel(m, *params) for m in ((votes, votes + 1) if with_next else (votes,))]
    return both


# -- kernels: all rows get M votes -------------------------------------------------------------------

def _binomial_kernel(votes: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binomial(M, p_t) of each row (r, T): exact sum over k = 0..M."""
    out = [np.empty(len(p)), np.empty(len(p))]
    for rows in _row_chunks(len(p), (votes + 1) * p.shape[1]):
        log_pmf = _log_pmf_block((p[rows],), np.full(rows.stop - rows.start, votes), votes + 1)
        # p = 0 or 1 makes some counts impossible (-inf); a finite stand-in keeps 0 * log 0 = 0.
        log_pmf = np.ascontiguousarray(np.maximum(log_pmf, np.finfo(float).min).transpose(1, 0, 2))
        out[0][rows], out[1][rows] = _information(log_pmf)
    return out[0], out[1]


def _running_log_rising(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[k] = out[0] + log[x (x+1) .. (x+k-1) / k!] for k = 1..len(out)-1, given out[0]; out is
    (top + 1, len(x)).

    A running sum of log((x+i) / (i+1)): cheaper than gammaln(x + k) - gammaln(x) - gammaln(k + 1),
    and without its cancellation for large x.
    """
    steps = np.arange(len(out) - 1, dtype=float)[:, None]
    terms = out[1:]
    np.add(x, steps, out=terms)
    terms *= 1.0 / (steps + 1.0)
    np.log(terms, out=terms)
    for k in range(1, len(out)):  # numpy's cumsum along the first axis is several times slower
        out[k] += out[k - 1]
    return out


def _beta_binomial_kernel(votes: int, with_next: bool, a: np.ndarray, b: np.ndarray) -> list:
    """BetaBinomial(M, a_t, b_t) (and at M + 1) of each row (r, T): exact sums over k.

    pmf(k) = C(M, k) a^(k) b^(M-k) / (a+b)^(M), x^(k) = x (x+1) .. (x+k-1) the rising factorial, so
    log pmf(k) = [log M! - log (a+b)^(M) + log a^(k)/k!] + log b^(M-k)/(M-k)!: one table for a and b
    side by side over k = 0..M+1, shared by M and M + 1 votes (M + 1 adds log (M+1) / (a+b+M)).
    Blocks are laid out (counts, samples, rows), which makes the mixture and the divergences sums of
    whole rows, and reuse three buffers.
    """
    top = votes + 1 if with_next else votes
    n_rows, n_samples = a.shape
    results = [(np.empty(n_rows), np.empty(n_rows)) for _ in range(top - votes + 1)]
    width = (top + 1) * n_samples
    size = min(n_rows, max(1, _CHUNK_ELEMENTS // width)) * width  # elements of the largest block
    tables, log_pmf, pmf = np.empty(2 * size), np.empty(size), np.empty(size)
    for rows in _row_chunks(n_rows, width):
        n = (rows.stop - rows.start) * n_samples
        x = np.concatenate([a[rows].T.reshape(-1), b[rows].T.reshape(-1)])  # (T, r) order
        ab = x[:n] + x[n:]
        table = tables[: 2 * (top + 1) * n].reshape(top + 1, 2 * n)
        # Started at log M! - log (a+b)^(M), the running sums for a carry it into every log pmf.
        table[0, :n] = gammaln(votes + 1.0) - np.log(ab + np.arange(votes, dtype=float)[:, None]).sum(axis=0)
        table[0, n:] = 0.0
        log_a, log_b = np.split(_running_log_rising(x, table), 2, axis=1)
        for i, m in enumerate(range(votes, top + 1)):
            block = np.add(log_a[: m + 1], log_b[m::-1], out=log_pmf[: (m + 1) * n].reshape(m + 1, n))
            if m > votes:
                block += np.log(m / (ab + votes))
            shape = (m + 1, n_samples, rows.stop - rows.start)
            mi, h = _information(block.reshape(shape), 1, pmf[: (m + 1) * n].reshape(shape))
            results[i][0][rows], results[i][1][rows] = mi, h
    return results


def _count_vectors(total: int, parts: int) -> np.ndarray:
    """Every way of splitting `total` votes among `parts` answers: (comb(total+parts-1, parts-1), parts)."""
    if parts == 1:
        return np.array([[total]])
    blocks = []
    for first in range(total + 1):
        rest = _count_vectors(total - first, parts - 1)
        blocks.append(np.column_stack([np.full(len(rest), first), rest]))
    return np.concatenate(blocks)


def _dirichlet_multinomial_kernel(votes: int, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DirMult(M, alpha_t) of each row (r, K, T) by enumerating every count vector."""
    counts = _count_vectors(votes, alpha.shape[1]).astype(float)  # (V, K)
    log_choose = gammaln(votes + 1) - gammaln(counts + 1).sum(axis=1)
    out = [np.empty(len(alpha)), np.empty(len(alpha))]
    for rows in _row_chunks(len(alpha), len(counts) * alpha.shape[2]):
        al = alpha[rows]  # (r, K, T)
        total = al.sum(axis=1)
        log_pmf = np.broadcast_to((gammaln(total) - gammaln(votes + total))[None], (len(counts), *total.shape)).copy()
        log_pmf += log_choose[:, None, None]
        for j in range(al.shape[1]):
            log_pmf += gammaln(counts[:, j, None, None] + al[None, :, j, :]) - gammaln(al[:, j, :])[None]
        out[0][rows], out[1][rows] = _information(log_pmf)
    return out[0], out[1]


# -- input checks -------------------------------------------------------------------------------------

def _check_n_votes(n_votes, n: int, name: str) -> np.ndarray:
    values = np.broadcast_to(np.asarray(n_votes, dtype=float), (n,)) if np.ndim(n_votes) == 0 else \
        np.asarray(n_votes, dtype=float)
    if values.shape != (n,) or not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"{name} must be a number >= 0 or an array of them with shape ({n},), one per galaxy; "
                         f"found {np.asarray(n_votes)!r:.200}.")
    return values


def _check_probabilities(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"p must have shape (n_galaxies, n_samples) with at least one MC sample; "
                         f"found {p.shape}.")
    if not np.all(np.isfinite(p) & (p >= 0) & (p <= 1)):
        bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))]
        raise ValueError(f"p must be probabilities in [0, 1]; found {bad.size} values outside, e.g. {bad[:3]}. "
                         "Fix: pass the model's probability of the question's first answer (after its sigmoid).")
    return p


def _check_predictions(predictions: Predictions) -> None:
    if not isinstance(predictions, Predictions):
        raise TypeError(f"expected zoobot.core.predictions.Predictions; found {type(predictions).__name__}.")
    if predictions.n_samples == 0:
        raise ValueError("predictions have no MC samples (samples.shape[2] == 0); BALD needs at least one.")
    if predictions.kind == "binomial":
        _check_probabilities(predictions.samples[:, 0, :])
        return
    alpha = predictions.samples
    if not alpha.size or (alpha.min() > 0 and alpha.max() < np.inf):  # NaN fails both
        return
    good = np.isfinite(alpha) & (alpha > 0)
    if not np.all(good):
        g, j, _ = np.argwhere(~good)[0]
        raise ValueError(
            f"Dirichlet concentrations must be finite and > 0; galaxy {str(predictions.id_str[g])!r} has "
            f"{float(alpha[g, j].min())} for answer '{predictions.schema.label_cols[j]}' "
            f"({int((~good).sum())} bad values in all). Fix: check the model's output activation (e.g. 1 + softplus).")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; found {method!r}.")


# -- binomial model ----------------------------------------------------------------------------------

def _binomial_information(p, n_votes) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probabilities(p)
    return _interpolated_in_votes(_one_count_at_a_time(_binomial_kernel), _check_n_votes(n_votes, len(p), "n_votes"), p)


def bald_binomial(p: np.ndarray, n_votes) -> np.ndarray:
    """BALD of a binomial model: I(k; model) for k ~ Binomial(N, p_t), shape (n,).

    p is (n, T), the MC samples of the probability of the question's first answer; n_votes is N, the
    number of volunteers expected to answer (a number, or one per galaxy). Computed exactly as
    H[mean_t Binomial(N, p_t)] - mean_t H[Binomial(N, p_t)] by summing over k = 0..N in log space.
    A fractional N is read as floor(N) or floor(N) + 1 votes with the probabilities that give mean N.
    """
    return _binomial_information(p, n_votes)[0]


# -- dirichlet model ---------------------------------------------------------------------------------

def _posterior_mean_fractions(predictions: Predictions) -> np.ndarray:
    """(n, n_answers) in schema.label_cols order."""
    return np.concatenate([predictions.mean_fractions(q) for q in predictions.schema.question_names], axis=1)


def dirichlet_information(predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS,
                          method: str = "stick") -> tuple[np.ndarray, np.ndarray]:
    """Per question (mutual information, predictive entropy), each (n_galaxies, n_questions), in nats.

    Question q gets N_q = n_volunteers * reach_q votes, reach_q from the posterior-mean fractions of
    the answers leading to it (`Schema.reach_probability`). See `bald_dirichlet` for the methods.
    Summing the columns gives `bald_dirichlet` and `max_entropy`; the columns show which question
    drives a galaxy's score.
    """
    _check_predictions(predictions)
    if predictions.kind != "dirichlet":
        raise ValueError(f"dirichlet_information needs dirichlet predictions; these are {predictions.kind!r} "
                         "(use bald_binomial).")
    _check_method(method)
    schema = predictions.schema
    n_volunteers = float(_check_n_votes(n_volunteers, 1, "n_volunteers")[0])
    n = len(predictions.id_str)
    fractions = _posterior_mean_fractions(predictions)
    votes = n_volunteers * schema.reach_probability(fractions)  # (n, n_questions)
    if method == "stick":
        return _stick_information(predictions.samples, fractions, votes, schema)
    mutual_information = np.zeros((n, len(schema.questions)))
    entropy = np.zeros_like(mutual_information)
    for i, (start, stop) in enumerate(schema.question_index_groups):
        alpha = predictions.samples[:, start:stop, :].astype(float)
        n_vectors = math.comb(int(np.ceil(votes[:, i].max(initial=0))) + stop - start - 1, stop - start - 1)
        if n_vectors > _MAX_EXACT_VECTORS:
            raise ValueError(
                f"method='exact' would enumerate {n_vectors} count vectors for question "
                f"'{schema.question_names[i]}' ({stop - start} answers, up to {votes[:, i].max():.1f} votes); the "
                f"limit is {_MAX_EXACT_VECTORS}. Fix: use method='stick', or fewer volunteers.")
        mutual_information[:, i], entropy[:, i] = _interpolated_in_votes(
            _one_count_at_a_time(_dirichlet_multinomial_kernel), votes[:, i], alpha)
    return mutual_information, entropy


def _stick_information(samples: np.ndarray, fractions: np.ndarray, votes: np.ndarray,
                       schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Per question (MI, entropy) by stick-breaking (see `bald_dirichlet`): (n, n_questions) each.

    Each split of each question is a row of beta-binomials (a: the concentrations of the split's
    answer, b: those of the answers after it in its question) with its own number of votes, so one
    kernel call per whole number of votes serves every question.
    """
    n, n_answers, n_samples = samples.shape
    groups = schema.question_index_groups
    # Rarest answer first within each question; exact ties in the mean fractions keep the schema's order.
    order = np.empty((n, n_answers), dtype=np.intp)
    for start, stop in groups:
        order[:, start:stop] = start + np.argsort(fractions[:, start:stop], axis=1, kind="stable")
    rows = order + n_answers * np.arange(n)[:, None]  # of samples as (n * n_answers, T), sorted
    flat = np.asarray(samples, dtype=float).reshape(n * n_answers, n_samples)
    fractions = np.take_along_axis(fractions, order, axis=1)
    splits = np.concatenate([np.arange(start, stop - 1) for start, stop in groups])  # all answers but the last
    a = flat[rows[:, splits]]  # (n, n_splits, T)
    b = np.empty_like(a)
    left = np.empty((n, len(splits)))  # mean fraction of the split's answer and those after it
    for i, (start, stop) in enumerate(groups):
        rest, rest_fraction = flat[rows[:, stop - 1]], fractions[:, stop - 1]
        for j in range(stop - 2, start - 1, -1):  # question i's splits are at j - i
            b[:, j - i] = rest
            left[:, j - i] = rest_fraction = rest_fraction + fractions[:, j]
            rest = rest + a[:, j - i]
    split_votes = votes[:, np.repeat(np.arange(len(groups)), [stop - start - 1 for start, stop in groups])] * left
    mi, h = _interpolated_in_votes(_beta_binomial_kernel, split_votes.reshape(-1), a.reshape(-1, n_samples),
                                   b.reshape(-1, n_samples))
    first = [start - i for i, (start, _) in enumerate(groups)]
    return tuple(np.add.reduceat(x.reshape(left.shape), first, axis=1) for x in (mi, h))


def bald_dirichlet(predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS,
                   method: str = "stick") -> np.ndarray:
    """BALD of a Dirichlet-multinomial decision-tree model, summed over questions: (n,) in nats.

    Question q is weighted by the volunteers expected to be asked it, N_q = n_volunteers * reach_q,
    reach_q from the posterior-mean vote fractions. Per question the score is the mutual information
    between the answer-count vector x ~ DirMult(N_q, alpha_t) and the MC sample t. A fractional N_q
    is interpolated between the two neighbouring whole numbers of votes (see `_interpolated_in_votes`).

    method="stick" (default) is fast and exact for two-answer questions. A Dirichlet-multinomial
    count vector is a chain of beta-binomials (neutrality of the Dirichlet): with the answers sorted
    by posterior-mean fraction, rarest first, x_1 ~ BetaBinomial(N, alpha_1, alpha_2 + .. + alpha_K),
    then x_2 | x_1 ~ BetaBinomial(N - x_1, alpha_2, alpha_3 + .. + alpha_K), and so on; by the chain
    rule I(x; t) = sum_j I(x_j; t | x_1..x_{j-1}). Each term is approximated by the MI of the j-th
    beta-binomial, computed exactly (a sum over its counts), at the expected number of votes left,
    N * (the mean fractions of answers j..K), ignoring what x_1..x_{j-1} already said about t. Both
    simplifications tend to overestimate. Error, measured against exact enumeration on 90 random
    mixtures (T = 10; agreeing, one-answer and all-answer disagreement) for each of 3 answers with
    1/5/15/40 votes, 4 answers with 5/15/30 and 6 answers with 5/10: ratio stick/exact 0.95-1.51,
    median 1.00-1.09 (growing with answers and votes); Spearman rank correlation 0.993-0.999; for the
    predictive entropy (max_entropy) 0.995-1.10, median 1.00-1.02. The cost is one beta-binomial over
    at most N + 1 counts per answer but one, so 10,000 galaxies x 34 answers x 30 samples take seconds.
    Rarest-first measured closer than schema order or commonest-first, and a rule based on the
    fractions makes the score independent of the order in which a schema lists its answers. Summing
    the MI of every answer's own beta-binomial marginal was worse (1.0-2.5x, Spearman ~0.98), and
    double-counts exactly for two answers. A seeded Monte-Carlo estimate would be unbiased but noisy
    and, for T^2 pmf evaluations per draw, far slower.

    The score is 0 when the samples agree, never above the predictive entropy, and grows with the
    number of volunteers and with the spread of the samples.

    method="exact" enumerates every count vector (comb(N+K-1, K-1) of them: 861 for 3 answers and
    40 votes, 12,341 for 4, 1.2 million for 6) and refuses above 50,000. For checks and small trees.
    Do not mix methods in one ranking: stick's overestimate would favour some questions over others.
    """
    return dirichlet_information(predictions, n_volunteers, method)[0].sum(axis=1)


# -- registered acquisition functions -----------------------------------------------------------------

ACQUISITIONS: dict[str, Acquisition] = {}


def register(name: str, overwrite: bool = False):
    """Decorator adding `fn(predictions, n_volunteers, rng) -> (n_galaxies,)` to the registry as `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an acquisition needs a non-empty string name; found {name!r}.")

    def decorator(fn: Acquisition) -> Acquisition:
        if name in ACQUISITIONS and not overwrite and ACQUISITIONS[name] is not fn:
            raise ValueError(f"An acquisition named {name!r} is already registered ({ACQUISITIONS[name].__name__}). "
                             "Fix: choose another name, or pass overwrite=True to replace it.")
        ACQUISITIONS[name] = fn
        return fn

    return decorator


class UnknownAcquisitionError(KeyError, ValueError):
    """No acquisition function of that name. A ValueError too, so command lines report it as bad input."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get_acquisition(name: str) -> Acquisition:
    if name not in ACQUISITIONS:
        raise UnknownAcquisitionError(f"Unknown acquisition function {name!r}; known: {sorted(ACQUISITIONS)}. "
                       "Fix: use one of those, or add yours with @zoobot.core.acquisition.register(name).")
    return ACQUISITIONS[name]


@register("bald")
def bald(predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS, rng=None) -> np.ndarray:
    """BALD of either kind: `bald_binomial` of a binomial model's question (N = n_volunteers), or
    `bald_dirichlet` summed over the tree."""
    _check_predictions(predictions)
    if predictions.kind == "binomial":
        return bald_binomial(predictions.samples[:, 0, :], n_volunteers)
    return bald_dirichlet(predictions, n_volunteers)


@register("entropy")
@register("max_entropy")
def max_entropy(predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS, rng=None) -> np.ndarray:
    """Entropy of the predictive (mixture over MC samples) distribution of the votes, (n,) in nats.

    Binomial model: exact over k = 0..N. Dirichlet model: summed over questions with N_q votes each,
    with the same stick-breaking approximation as `bald_dirichlet` (exact for two-answer questions).
    """
    _check_predictions(predictions)
    if predictions.kind == "binomial":
        return _binomial_information(predictions.samples[:, 0, :], n_volunteers)[1]
    return dirichlet_information(predictions, n_volunteers)[1].sum(axis=1)


@register("random")
def random_scores(predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS, rng=None) -> np.ndarray:
    """Uniform [0, 1) scores: the baseline. `rng` is a numpy Generator or a seed."""
    return np.random.default_rng(rng).random(len(predictions.id_str))


def score(name: str, predictions: Predictions, n_volunteers: float = DEFAULT_VOLUNTEERS, seed: int = 0) -> np.ndarray:
    """Scores (n_galaxies,) of the acquisition function `name`; higher = label sooner.

    n_volunteers is how many volunteers will see each acquired galaxy (for a binomial model: how many
    answer its question). `seed` seeds the generator handed to the function (used by "random").
    """
    fn = get_acquisition(name)
    _check_predictions(predictions)
    n_volunteers = float(_check_n_votes(n_volunteers, 1, "n_volunteers")[0])
    scores = np.asarray(fn(predictions, n_volunteers, np.random.default_rng(seed)), dtype=np.float64)
    n = len(predictions.id_str)
    if scores.shape != (n,):
        raise ValueError(f"Acquisition {name!r} returned shape {scores.shape}; expected one score per galaxy, "
                         f"({n},).")
    if not np.all(np.isfinite(scores)):
        bad = np.flatnonzero(~np.isfinite(scores))
        raise ValueError(f"Acquisition {name!r} returned {len(bad)} non-finite scores, e.g. "
                         f"{float(scores[bad[0]])} for galaxy {str(predictions.id_str[bad[0]])!r}.")
    return scores
