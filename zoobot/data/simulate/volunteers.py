"""Volunteers of a simulated survey: the true probability of each answer, and their votes.

The truth is a smooth function of what the image shows (features need light in a disc, a
face-on view and enough signal to noise), so a model can learn the votes from the pixels. Votes
are drawn question by question down the decision tree, over-dispersed like real ones.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from zoobot.core.schema import Schema
from zoobot.data.simulate.morphology import Galaxy

MIN_VOLUNTEERS = 3  # real subjects are retired only after several classifications
CONCENTRATION = 30.0  # Dirichlet concentration: lower = more over-dispersed votes
PROBABILITY_FLOOR = 0.002  # every answer keeps a little probability: volunteers make mistakes

# Which root answer ends a classification, so later questions with follows=None are not asked.
ENDS_CLASSIFICATION = {
    "decals": "smooth-or-featured_artifact",
    "gz2": "t01_smooth_or_features_a03_star_or_artifact_count",
}


def _ordinal(x: float, cuts: list[float], sharpness: float) -> np.ndarray:
    """Probabilities of ordered categories (lowest first) for a latent value x, by ordered logit."""
    at_least = expit(sharpness * (x - np.asarray(cuts, dtype=float)))
    return np.concatenate([[1.0], at_least]) - np.concatenate([at_least, [0.0]])


def _perceived(g: Galaxy) -> dict[str, np.ndarray]:
    """What volunteers would answer, as probabilities per answer, independent of the tree's names.

    Each is a smooth function of what the image shows, so a model can learn it from the pixels:
    features need light in a disc, a face-on view and enough signal to noise (`visibility`).
    """
    vis = g.visibility
    q = g.axis_ratio
    disc_light = 1 - g.bulge_fraction
    thin = float(expit((0.3 - q) / 0.04))  # a thin streak: edge-on disc (or a very flat elliptical)
    p_edge_on = 0.02 + (0.96 if g.is_disc else 0.3) * thin
    # Arms and bars get harder to see as the disc tilts; an edge-on disc is obviously a disc.
    face_on = math.sqrt(g.disc_axis_ratio)
    arm_signal = g.arm_strength * math.sqrt(disc_light) * vis * face_on
    featured_signal = 0.0
    if g.is_disc:
        shape = max(g.arm_strength * face_on, 0.9 * g.bar_strength * face_on, 0.8 * p_edge_on, 0.1)
        featured_signal = disc_light**0.75 * shape * (0.3 + 0.7 * vis)
    p_featured = 0.03 + 0.94 * float(expit(9 * (featured_signal - 0.28)))
    p_artifact = 0.01 + (0.5 + 0.45 * g.artifact_strength) * (g.artifact > 0)

    # Arm count: a bump around the true count; "can't tell" when the arms are hard to see.
    counts = np.arange(1, 6)  # 5 stands for more than four
    near = np.exp(-((counts - min(g.arm_count, 5)) ** 2) / (2 * 0.6**2)) if g.arm_count else np.ones(5)
    cant_tell = 0.05 + 0.7 * float(expit(-8 * (arm_signal - 0.25)))
    arm_count = np.concatenate([(1 - cant_tell) * near / near.sum(), [cant_tell]])

    no_bulge = float(expit(12 * (0.1 - g.bulge_fraction)))
    boxy = (1 - no_bulge) * (0.08 + 0.7 * g.bar_strength)  # edge-on bars look like boxy bulges
    interaction = g.merger_state * (0.5 + 0.5 * vis)  # faint tails and companions get missed
    return {
        "first": np.array([(1 - p_artifact) * (1 - p_featured), (1 - p_artifact) * p_featured, p_artifact]),
        "edge_on": _yes_no(p_edge_on),
        "spiral": _yes_no(0.04 + 0.92 * float(expit(10 * (arm_signal - 0.3)))),
        "bar": _ordinal(g.bar_strength * vis * face_on, [0.2, 0.5], 10.0),  # no, weak, strong
        "bulge_fraction": g.bulge_fraction,
        "rounded": _ordinal(1 - q, [0.25, 0.6], 10.0),  # round, in-between, cigar
        "edge_bulge": np.array([boxy, no_bulge, 1 - no_bulge - boxy]),  # boxy, none, rounded
        "winding": _ordinal(g.pitch_angle_deg, [16.0, 26.0], 0.35),  # tight, medium, loose
        "arm_count": arm_count,  # 1, 2, 3, 4, more than 4, can't tell
        "merging": _ordinal(interaction, [0.5, 1.5, 2.5], 4.0),  # none, minor, major, merger
    }


def _yes_no(p_yes: float) -> np.ndarray:
    return np.array([p_yes, 1 - p_yes])


def _decals_truth(seen: dict) -> dict[str, np.ndarray]:
    return {
        "smooth-or-featured": seen["first"],
        "disk-edge-on": seen["edge_on"],
        "has-spiral-arms": seen["spiral"],
        "bar": seen["bar"][::-1],  # strong, weak, no
        # dominant, large, moderate, small, none
        "bulge-size": _ordinal(seen["bulge_fraction"], [0.08, 0.25, 0.45, 0.7], 14.0)[::-1],
        "how-rounded": seen["rounded"],
        "edge-on-bulge": seen["edge_bulge"],
        "spiral-winding": seen["winding"],
        "spiral-arm-count": seen["arm_count"],
        "merging": seen["merging"],
    }


def _gz2_truth(seen: dict) -> dict[str, np.ndarray]:
    bar = seen["bar"]
    none, minor, major, merger = seen["merging"]
    p_odd = 0.06 + 0.85 * (1 - none)
    odd_feature = np.array([
        0.12,  # ring
        0.06,  # lens or arc
        0.08 + 2 * minor + major,  # disturbed
        0.08 + major,  # irregular
        0.2,  # other
        0.04 + 3 * merger,  # merger
        0.04 + 0.6 * seen["edge_on"][0],  # dust lane
    ])
    boxy, no_bulge, rounded = seen["edge_bulge"]
    return {
        "t01_smooth_or_features": seen["first"],
        "t02_edgeon": seen["edge_on"],
        "t03_bar": _yes_no(bar[2] + 0.6 * bar[1]),
        "t04_spiral": seen["spiral"],
        # no bulge, just noticeable, obvious, dominant
        "t05_bulge_prominence": _ordinal(seen["bulge_fraction"], [0.1, 0.3, 0.6], 12.0),
        "t06_odd": _yes_no(p_odd),
        "t07_rounded": seen["rounded"],
        "t08_odd_feature": odd_feature / odd_feature.sum(),
        "t09_bulge_shape": np.array([rounded, boxy, no_bulge]),
        "t10_arms_winding": seen["winding"],
        "t11_arms_number": seen["arm_count"],
    }


_TRUTH_BY_SCHEMA = {"decals": _decals_truth, "gz2": _gz2_truth}


def true_probabilities(galaxy: Galaxy, schema: Schema) -> dict[str, np.ndarray]:
    """Probability of each answer of each question (in the schema's answer order), summing to 1."""
    if schema.name not in _TRUTH_BY_SCHEMA:
        raise ValueError(
            f"The simulator knows how volunteers answer the trees {sorted(_TRUTH_BY_SCHEMA)}; "
            f"schema '{schema.name}' is not one of them."
        )
    truth = _TRUTH_BY_SCHEMA[schema.name](_perceived(galaxy))
    out = {}
    for question in schema.questions:
        p = np.maximum(np.asarray(truth[question.name], dtype=float), PROBABILITY_FLOOR)
        out[question.name] = p / p.sum()
    return out


def draw_votes(
    truth: dict[str, np.ndarray], schema: Schema, mean_volunteers: float, rng: np.random.Generator
) -> dict[str, int]:
    """Vote counts per answer column, walking the tree from the root.

    A question is answered by the volunteers who gave the answer it follows; a question asked of
    everyone (follows=None) is answered by all who did not end the classification at the root.
    Each galaxy and question gets its own Dirichlet draw around the truth before the multinomial,
    so counts scatter more than a multinomial alone, as real votes do.
    """
    root = schema.questions[0]
    counts: dict[str, int] = {}
    n_root = max(MIN_VOLUNTEERS, int(rng.poisson(mean_volunteers)))
    for question in _parents_first(schema):
        if question is root:
            n = n_root
        elif question.follows is None:
            n = n_root - counts[ENDS_CLASSIFICATION[schema.name]]
        else:
            n = counts[question.follows]
        p = rng.dirichlet(CONCENTRATION * truth[question.name])
        votes = rng.multinomial(n, p / p.sum())
        counts.update({column: int(k) for column, k in zip(question.columns, votes)})
    return {column: counts[column] for column in schema.label_cols}


def _parents_first(schema: Schema) -> list:
    ordered, done = [], set()
    pending = list(schema.questions)
    while pending:
        ready = [
            q for q in pending
            if q.follows is None or schema.question_of(q.follows).name in done
        ]
        for q in ready:
            ordered.append(q)
            done.add(q.name)
        pending = [q for q in pending if q.name not in done]
    return ordered
