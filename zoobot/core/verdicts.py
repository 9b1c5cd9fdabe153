"""What an evaluation means, in a sentence per question: the error, the majority answer, and whether
the posteriors are too narrow or too wide, next to the published model's figures.

Plain text from the metrics `zoobot.model.evaluate` computes (unprefixed names: `smooth-or-featured_mae`,
`smooth-or-featured_coverage_signed_error_w5`, ...). No TensorFlow or MLflow here.
"""

from __future__ import annotations

import math

# Walmsley et al. 2020 (bar model, GZ2): coverage error at +-5 and +-10 votes
PAPER_COVERAGE_ERROR = {5: 0.106, 10: 0.029}

# |signed coverage error| at +-5 votes below which the calibration is called ..., in order
CALIBRATION_WORDS = ((0.03, "well calibrated"), (0.10, "slightly"), (0.25, ""), (math.inf, "badly"))


def calibration_words(signed_error: float) -> str:
    """'well calibrated', or '[slightly|badly] over-/under-confident' from a signed coverage error
    ((observed - expected) / expected: below 0 the posteriors are too narrow)."""
    if not math.isfinite(signed_error):
        return "calibration not measured"
    for limit, degree in CALIBRATION_WORDS:
        if abs(signed_error) < limit:
            if degree == "well calibrated":
                return degree
            kind = "over-confident" if signed_error < 0 else "under-confident"
            return f"{degree} {kind}".strip()
    raise AssertionError("unreachable: the last limit is infinite")


def question_verdict(question: str, metrics: dict[str, float], single_label: bool) -> str:
    """One sentence on one question."""
    get = lambda key: float(metrics.get(f"{question}_{key}", math.nan))  # noqa: E731
    if single_label:
        parts = [f"accuracy {get('accuracy'):.2f}, ROC AUC {get('roc_auc'):.2f} (0.5 is chance)"]
        if math.isfinite(get("f1")):
            parts.append(f"precision {get('precision'):.2f}, recall {get('recall'):.2f}, F1 {get('f1'):.2f}")
        return f"{question}: " + "; ".join(parts) + " (one 0/1 label per galaxy: no coverage in votes)."
    n = get("n_galaxies")
    counted = f" ({n:,.0f} galaxies with enough votes for a majority)" if math.isfinite(n) else ""
    parts = [f"mean error {get('mae'):.3f} in vote fraction (RMSE {get('rmse'):.3f})"]
    if math.isfinite(get("accuracy")):
        parts.append(f"the volunteers' majority answer predicted for {get('accuracy'):.0%}")
    signed = get("coverage_signed_error_w5")
    if math.isfinite(signed):
        side = "fewer" if signed < 0 else "more"
        parts.append(f"at +-5 votes {abs(signed):.1%} {side} galaxies inside than the model promised: "
                     f"{calibration_words(signed)}")
        signed_10 = get("coverage_signed_error_w10")
        if math.isfinite(signed_10):
            parts[-1] += f" (at +-10: {signed_10:+.1%})"
    else:
        parts.append("coverage not measured (no galaxy with votes on it)")
    return f"{question}{counted}: " + "; ".join(parts) + "."


def verdicts(metrics: dict[str, float], questions, single_label_questions=()) -> list[str]:
    """A sentence per question, then one on the whole model with the paper's figures beside it."""
    lines = [question_verdict(q, metrics, q in set(single_label_questions)) for q in questions]
    overall = metrics.get("coverage_error_w5", math.nan)
    if math.isfinite(overall):
        lines.append(
            f"Overall: coverage error {overall:.1%} at +-5 votes and {metrics.get('coverage_error_w10', math.nan):.1%} "
            f"at +-10 (mean over questions; the 2020 paper's model: {PAPER_COVERAGE_ERROR[5]:.1%} and "
            f"{PAPER_COVERAGE_ERROR[10]:.1%}). Over-confident: posteriors too narrow, fewer galaxies inside a window "
            "than promised; under-confident: too wide.")
    truth = metrics.get("truth_rmse_ratio", math.nan)
    if math.isfinite(truth):
        lines.append(f"Simulated survey: error against the true probabilities {truth:.2f}x the volunteers' own noise "
                     f"floor (1.0 is as good as 40-odd volunteers can tell); MC spread follows the error with rank "
                     f"correlation {metrics.get('spread_error_spearman', math.nan):+.2f} (above 0 is what active "
                     "learning needs).")
    return lines
