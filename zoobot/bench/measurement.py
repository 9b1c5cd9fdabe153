"""What the benchmark reports: a Measurement is one measured ratio (the median over repetitions,
with their spread) set against its target, never a plot. SPECS names every figure of the report,
its target and the comparison that decides whether it passes, in the order of the table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from zoobot.bench.config import MEMORY_SCALE, QUESTION

# key -> (title, comparison, target, unit); the order is the table's. Targets from the project's issues 6 and 13.
SPECS = {
    "mc_speedup": ("1. predict T=30 vs T full passes (galaxies/s ratio)", ">=", 15.0, "x"),
    "mc_cost_vs_single_pass": ("1. predict T=30 time / one deterministic pass", "<=", 1.2, "x"),
    "train_input_ratio": ("2. train from shards+aug / fit on numpy (images/s)", ">=", 0.85, "x"),
    "tracking_overhead": ("3. training job wall time, logged run_training / plain train", "<=", 1.03, "x"),
    "convert_2_workers": ("4. convert, 2 workers / bare decode+resize (images/s)", ">=", 1.6, "x"),
    "convert_1_worker": ("4. convert, 1 worker / bare decode+resize (images/s)", ">=", 0.7, "x"),
    "predict_memory_ratio": (f"5. predict peak RSS, {MEMORY_SCALE}x pool / 1x pool", "<=", 1.1, "x"),
    "bald_fraction": ("6. BALD time / predict time of the same samples", "<", 0.05, "fraction"),
    "inference_ratio_cnn": ("12. predict T=30 from shards / in-memory model.predict, default CNN (galaxies/s)",
                            ">=", 0.8, "x"),
    "inference_ratio_efficientnetb0": ("12. predict T=30 from shards / in-memory model.predict, EfficientNetB0 "
                                       "224 px", ">=", 0.8, "x"),
    "label_efficiency": (f"7. labels BALD needs / random needs, binomial {QUESTION} model", "<=", 0.65,
                         "fraction"),
    "label_efficiency_dirichlet": ("7. labels BALD needs / random needs, Dirichlet tree model", "<=", 0.65,
                                   "fraction"),
    "coverage_error_w5": (f"8. coverage error {QUESTION}, +-5 votes", "<=", 0.05, "fraction"),
    "coverage_error_w10": (f"8. coverage error {QUESTION}, +-10 votes", "<=", 0.029, "fraction"),
    "recovery_rmse_ratio": ("9. RMSE predicted vs true / RMSE vote fractions vs true", "<=", 1.5, "x"),
    "spread_error_spearman": (f"9. rank correlation of MC spread with error vs truth, {QUESTION}", ">", 0.0,
                              "correlation"),
    "transfer_auc_finetuned": ("10. test ROC AUC of a new 0/1 question, finetuned from the tree model, 300 labels",
                               ">=", 0.90, "AUC"),
    "transfer_auc_gain": ("10. ROC AUC finetuned - from scratch, same labels and CPU time", ">=", 0.10, "AUC"),
    "transfer_label_ratio": ("11. labels a BALD campaign on that question needs from the tree model / from "
                             "scratch", "<", 1.0, "fraction"),
}
SCIENCE_KEYS = ("label_efficiency", "label_efficiency_dirichlet", "coverage_error_w5", "coverage_error_w10",
                "recovery_rmse_ratio", "spread_error_spearman", "transfer_auc_finetuned", "transfer_auc_gain",
                "transfer_label_ratio")
PASSES = {">=": lambda value, target: value >= target, "<=": lambda value, target: value <= target,
          "<": lambda value, target: value < target, ">": lambda value, target: value > target}


@dataclass(frozen=True)
class Measurement:
    key: str  # one of SPECS
    value: float | None  # median over repetitions; None when not measured
    spread: tuple[float, float] | None = None  # (min, max) over repetitions
    values: tuple[float, ...] = ()
    notes: str = ""
    details: dict = field(default_factory=dict)  # the absolute numbers behind the ratio, for the record

    @property
    def title(self) -> str:
        return SPECS[self.key][0]

    @property
    def comparison(self) -> str:
        return SPECS[self.key][1]

    @property
    def target(self) -> float:
        return SPECS[self.key][2]

    @property
    def unit(self) -> str:
        return SPECS[self.key][3]

    @property
    def passed(self) -> bool | None:
        if self.value is None or not np.isfinite(self.value):
            return None
        return bool(PASSES[self.comparison](self.value, self.target))

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "value": _number(self.value), "target": self.target,
                "comparison": self.comparison, "unit": self.unit,
                "spread": None if self.spread is None else [_number(v) for v in self.spread],
                "repeats": len(self.values), "values": [_number(v) for v in self.values],
                "passed": self.passed, "notes": self.notes, "details": _jsonable(self.details)}


def over_seeds(key: str, per_seed: list[Measurement], seeds: list[int]) -> Measurement:
    """One science figure over several seeds: the mean, with the min-max over seeds as its spread.
    A seed whose figure could not be computed (BALD never reached random's final loss) leaves the
    figure unmeasured: a mean over the other seeds would flatter it."""
    values = tuple(m.value for m in per_seed)
    finite = [v for v in values if v is not None and np.isfinite(v)]
    notes = per_seed[0].notes if per_seed else ""
    if len(per_seed) > 1:
        shown = ", ".join("-" if v is None else f"{v:.3g}" for v in values)
        notes = f"Mean over seeds {seeds} ({shown}); spread: min-max over seeds. " + notes
    details = {f"seed_{s}": {"value": m.value, "notes": m.notes, **m.details} for s, m in zip(seeds, per_seed)}
    if not finite or len(finite) < len(values):
        return Measurement(key, None, None, tuple(finite), notes, details)
    return Measurement(key, float(np.mean(finite)), (min(finite), max(finite)), tuple(finite), notes, details)


def measured(key: str, values, notes: str = "", **details) -> Measurement:
    """The median and spread of the repetitions' finite values."""
    values = tuple(float(v) for v in values)
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return Measurement(key, None, None, values, notes or "no finite value was measured", details)
    return Measurement(key, statistics.median(finite), (min(finite), max(finite)), values, notes, details)


def _number(value):
    return None if value is None or not np.isfinite(value) else float(value)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return _number(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
