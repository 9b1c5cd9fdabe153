"""Calibration of a Dirichlet model's posteriors after training: one concentration scale per question.

A Dirichlet model says how sure it is through the size of its concentrations: alpha and s * alpha
have the same mean vote fractions, but s < 1 spreads the Dirichlet-multinomial over vote counts
(wider posteriors), s > 1 narrows it. A network trained on a few thousand galaxies predicts fractions
that are further from the truth than its concentrations admit (on simulated surveys its errors are
about twice the volunteers' own noise), so its credible intervals are too narrow: at +-10 votes it
promised 95% of galaxies and 88% fell inside (Walmsley et al. 2020's coverage test, zoobot.core.coverage).

The fix is temperature scaling's counterpart for Dirichlets (Guo et al. 2017 scale logits): after
training, the scale s_q of each question that maximises the likelihood of the held-out validation
galaxies' votes under the MC posterior predictive,

    p(k | images) = 1/T sum_t DirichletMultinomial(k | N, s_q * alpha_t),

is found by a one-dimensional search in log s. The means, and so every vote-fraction metric, are
unchanged; only the widths move. A question answered by fewer than `min_galaxies` validation
galaxies gets the scale fitted to all questions together, so a rarely asked question does not take a
scale from a handful of votes.

No TensorFlow or MLflow here: zoobot.model.calibrate samples the model and sets the scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln, logsumexp

from zoobot.core.coverage import as_counts
from zoobot.core.predictions import Predictions

MIN_GALAXIES = 30  # validation galaxies with votes on a question for it to get a scale of its own
SCALE_BOUNDS = (0.01, 10.0)  # the search's range; a fitted scale at a bound is reported as such


@dataclass(frozen=True)
class Calibration:
    scales: dict[str, float]  # per question: multiply its concentrations by this
    n_galaxies: dict[str, int]  # validation galaxies whose votes fitted each question's scale
    pooled: tuple[str, ...]  # questions with fewer than MIN_GALAXIES: they took the pooled scale
    pooled_scale: float  # the one scale fitted to every question together
    nll_before: float  # validation: mean over galaxies of the summed per-question NLL, scale 1
    nll_after: float  # the same with the fitted scales
    n_validation: int

    def answer_scales(self, schema) -> np.ndarray:
        """The scale of each answer's concentration, in schema order (its question's scale)."""
        scales = np.ones(schema.n_answers, dtype=np.float32)
        for name, (a, b) in zip(schema.question_names, schema.question_index_groups):
            scales[a:b] = self.scales.get(name, 1.0)
        return scales

    def metrics(self) -> dict[str, float]:
        """For the training run: `calibration_scale_<question>` and the validation NLL before and after."""
        return {"calibration_nll_before": self.nll_before, "calibration_nll_after": self.nll_after,
                **{f"calibration_scale_{q}": s for q, s in self.scales.items()}}

    def summary(self) -> str:
        scales = ", ".join(f"{q} {s:.3g}" for q, s in self.scales.items())
        pooled = f"; pooled scale {self.pooled_scale:.3g} for {', '.join(self.pooled)} (too few votes)" \
            if self.pooled else ""
        return (f"Calibrated on {self.n_validation} validation galaxies: concentration scales {scales}{pooled}; "
                f"validation NLL {self.nll_before:.3f} -> {self.nll_after:.3f} per galaxy.")


def mixture_nll(concentrations: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each galaxy's votes on one question under the MC posterior predictive.

    concentrations: (n, n_answers, T), one Dirichlet per MC sample; counts: (n, n_answers). Returns
    (n,): -log(1/T sum_t DirichletMultinomial(counts | N, alpha_t)), 0 where the question got no votes.
    """
    alpha = np.asarray(concentrations, dtype=np.float64)
    k = np.asarray(counts, dtype=np.float64)[:, :, None]
    n = k.sum(axis=1)
    total = alpha.sum(axis=1)
    log_pmf = (gammaln(n + 1) - gammaln(k + 1).sum(axis=1) + gammaln(total) - gammaln(n + total)
               + (gammaln(k + alpha) - gammaln(alpha)).sum(axis=1))  # (n, T)
    return -(logsumexp(log_pmf, axis=1) - np.log(alpha.shape[2]))


def fit_calibration(predictions: Predictions, counts, min_galaxies: int = MIN_GALAXIES) -> Calibration:
    """The concentration scale of each question of a Dirichlet model's predictions on held-out galaxies
    that makes their votes most likely (see the module docstring)."""
    if predictions.kind != "dirichlet":
        raise ValueError(f"Only a dirichlet model's concentrations can be scaled; these predictions are "
                         f"{predictions.kind!r} (a binomial model's p has no width of its own to calibrate).")
    counts = as_counts(predictions, counts)
    schema = predictions.schema
    parts = {}  # question -> (concentrations, counts) of the galaxies that voted on it
    for name, (a, b) in zip(schema.question_names, schema.question_index_groups):
        voted = counts[:, a:b].sum(axis=1) > 0
        parts[name] = (predictions.samples[voted, a:b, :], counts[voted, a:b])
    n_galaxies = {name: len(k) for name, (_, k) in parts.items()}
    if not any(n_galaxies.values()):
        raise ValueError(f"No galaxy of the {len(counts)} given has a vote on any question, so there is nothing to "
                         "calibrate against. Fix: calibrate on a split with volunteers' vote counts.")

    def nll(names, scale):
        return sum(float(mixture_nll(parts[q][0] * scale, parts[q][1]).sum()) for q in names)

    def best(names):
        found = minimize_scalar(lambda log_s: nll(names, np.exp(log_s)), bounds=np.log(SCALE_BOUNDS),
                                method="bounded", options={"xatol": 1e-3})
        return float(np.exp(found.x))

    pooled_scale = best(parts)
    own = {q for q, n in n_galaxies.items() if n >= min_galaxies}
    scales = {q: best([q]) if q in own else pooled_scale for q in parts}
    n = len(counts)
    return Calibration(
        scales=scales, n_galaxies=n_galaxies, pooled=tuple(q for q in parts if q not in own),
        pooled_scale=pooled_scale, nll_before=nll(parts, 1.0) / n,
        nll_after=sum(nll([q], scales[q]) for q in parts) / n, n_validation=n)
