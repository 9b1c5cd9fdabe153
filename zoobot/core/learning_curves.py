"""Reading active-learning campaigns: learning curves (test metric against labelled galaxies) of
each arm, the label saving of an arm over random selection, and the same over several seeds.

One campaign is a noisy measurement: at a few hundred labels the order of the training galaxies
moves a model's test loss by about as much as the acquisition function does. So campaigns are
compared over seeds: per arm, the mean curve over seeds, how often the arm was below the baseline at
the same iteration of the same seed, the label saving of each seed's campaign, and the label saving
read from the seed-mean curves (`compare_over_seeds`).

A curve is a DataFrame with `n_labelled` and the metric (lower is better, e.g. `test_loss`), one row
per trained model, and optionally `iteration`. No TensorFlow or MLflow here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

Curves = dict[str, pd.DataFrame]  # arm -> its learning curve


def labels_needed(curves: Curves, baseline: str = "random", metric: str = "test_loss") -> tuple[float, str]:
    """The label saving of the best arm over the baseline, and why it is NaN when it is.

    curves: arm -> DataFrame(n_labelled, <metric>) over iterations. The target is the baseline's
    final metric; an arm's labels needed is the first n_labelled (linearly interpolated between
    iterations) at which its curve reaches the target. saving = 1 - best / baseline's own.
    """
    if baseline not in curves:
        return float("nan"), f"no '{baseline}' arm to compare with"
    base = curves[baseline].sort_values("n_labelled")
    if len(base) < 2:
        return float("nan"), "the baseline needs at least two iterations for a learning curve"
    target = float(base[metric].iloc[-1])
    base_needed = _first_reaching(base, metric, target)
    needed = {arm: _first_reaching(c.sort_values("n_labelled"), metric, target)
              for arm, c in curves.items() if arm != baseline}
    reached = {arm: n for arm, n in needed.items() if np.isfinite(n)}
    if not reached:
        return float("nan"), f"no arm reached the {baseline} arm's final {metric} ({target:.4f})"
    best = min(reached.values())
    return 1.0 - best / base_needed, ""


def iterations_ahead(curves: Curves, baseline: str = "random", metric: str = "test_loss") -> dict[str, tuple[int, int]]:
    """Per arm other than the baseline: (iterations after the first at which its metric is below the
    baseline's at the same iteration, iterations compared). The first iteration is trained on the
    shared starting labels, so arms can only differ from the second on."""
    if baseline not in curves:
        return {}
    base = curves[baseline].sort_values("iteration").set_index("iteration")[metric]
    result = {}
    for arm, curve in curves.items():
        if arm == baseline:
            continue
        mine = curve.sort_values("iteration").set_index("iteration")[metric]
        shared = [i for i in mine.index.intersection(base.index) if i > min(base.index)]
        result[arm] = (sum(bool(mine[i] < base[i]) for i in shared), len(shared))
    return result


def _first_reaching(curve: pd.DataFrame, metric: str, target: float) -> float:
    n, values = curve["n_labelled"].to_numpy(float), curve[metric].to_numpy(float)
    for i, value in enumerate(values):
        if value <= target:
            if i == 0:
                return n[0]
            # linear interpolation between the last point above the target and this one
            fraction = (values[i - 1] - target) / (values[i - 1] - value)
            return n[i - 1] + fraction * (n[i] - n[i - 1])
    return float("nan")


# -- over seeds -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmOverSeeds:
    """One arm of a setting run on several seeds, against the baseline arm of the same seeds."""
    arm: str
    seeds: tuple[int, ...]  # the seeds this arm ran on
    mean_curve: pd.Series  # n_labelled -> mean metric over the seeds that reached it
    seeds_at: pd.Series  # n_labelled -> how many seeds the mean is over
    below: int  # iterations after the first (over every seed) with the metric below the baseline's
    compared: int  # iterations after the first compared with the baseline (over every seed)
    savings: dict[int, float]  # seed -> that campaign's label saving over the baseline (NaN: not reached)
    mean_saving: float  # the label saving read from the seed-mean curves (NaN: not reached, or no baseline)
    mean_note: str  # why mean_saving is NaN ('' when it is not)


def compare_over_seeds(campaigns: dict[int, Curves], baseline: str = "random",
                       metric: str = "test_loss") -> list[ArmOverSeeds]:
    """Every arm of campaigns run with one setting on several seeds (seed -> arm -> curve), each
    against the baseline arm of its own seed; the baseline first, then the others by name.

    The seed-mean curves average, per number of labelled galaxies, the seeds that have both the arm
    and the baseline at that number (a seed whose campaign stopped early shortens neither curve).
    """
    arms = sorted({arm for curves in campaigns.values() for arm in curves}, key=lambda a: (a != baseline, a))
    out = []
    for arm in arms:
        seeds = tuple(sorted(seed for seed, curves in campaigns.items() if arm in curves))
        mean, counts = _mean_curve([campaigns[s][arm] for s in seeds], metric)
        below = compared = 0
        savings: dict[int, float] = {}
        paired = [s for s in seeds if baseline in campaigns[s]]
        mean_saving, note = float("nan"), f"no '{baseline}' arm on any of its seeds"
        if arm != baseline and paired:
            for seed in paired:
                pair = {arm: _with_iterations(campaigns[seed][arm]),
                        baseline: _with_iterations(campaigns[seed][baseline])}
                ahead, shared = iterations_ahead(pair, baseline, metric).get(arm, (0, 0))
                below, compared = below + ahead, compared + shared
                savings[seed] = labels_needed(pair, baseline, metric)[0]
            pairs = pd.concat([pd.merge(campaigns[s][arm][["n_labelled", metric]],
                                        campaigns[s][baseline][["n_labelled", metric]],
                                        on="n_labelled", suffixes=("", "_baseline")) for s in paired])
            means = pairs.dropna().groupby("n_labelled").mean()
            mean_saving, note = labels_needed(
                {arm: _as_curve(means[metric], metric), baseline: _as_curve(means[f"{metric}_baseline"], metric)},
                baseline, metric)
        elif arm == baseline:
            note = ""
        out.append(ArmOverSeeds(arm, seeds, mean, counts, below, compared, savings, mean_saving, note))
    return out


def _mean_curve(curves: list[pd.DataFrame], metric: str) -> tuple[pd.Series, pd.Series]:
    if not curves:
        return pd.Series(dtype=float), pd.Series(dtype=int)
    rows = pd.concat([c[["n_labelled", metric]] for c in curves]).dropna()
    grouped = rows.groupby("n_labelled")[metric]
    return grouped.mean(), grouped.size()


def _as_curve(series: pd.Series, metric: str) -> pd.DataFrame:
    return pd.DataFrame({"n_labelled": series.index.to_numpy(float), metric: series.to_numpy(float)})


def _with_iterations(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve with an `iteration` column: its own, or the rank of n_labelled."""
    if "iteration" in curve.columns:
        return curve
    curve = curve.sort_values("n_labelled").reset_index(drop=True)
    return curve.assign(iteration=np.arange(1, len(curve) + 1))
