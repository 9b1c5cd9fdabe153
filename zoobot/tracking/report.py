"""The experiment status report: the tracking server's record as Markdown, replacing the research
code's hand-edited status.md.

One table per step (train, evaluate, active_learning, ...): a row per run, with the parameters
that differ between those runs, the step's key metrics, the git commit, the date and a link to the
run; sorted by a metric of your choice. Plus the registered models' current aliases (the champion).
Pure pandas: tracking.report_data fetches the runs, this renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from zoobot.core import tags as tag_names

# What a reader wants to see first for each step; any other metric of the step follows if room.
KEY_METRICS = {
    "main": ("test_rmse", "test_coverage_error_w5", "test_coverage_error_w10", "label_saving"),
    "simulate": ("n_galaxies",),
    "convert": ("n_written", "n_rejected", "n_train", "n_test", "n_pool"),
    "train": ("best_val_loss", "best_epoch", "epochs_run", "val_fraction_rmse"),
    "evaluate": ("test_rmse", "test_mae", "test_accuracy", "test_coverage_error_w5", "test_coverage_error_w10",
                 "test_loglik_gain"),
    "predict": ("n_galaxies", "galaxies_per_second"),
    "active_learning": ("label_saving",),
    "al_iteration": ("n_labelled", "test_loss", "test_fraction_rmse", "n_acquired"),
    "download": ("n_downloaded", "n_failed"),
}
STEP_ORDER = ("main", "simulate", "download", "convert", "train", "evaluate", "predict", "active_learning",
              "al_iteration")
HIDDEN_PARAMS = {"overwrite", "progress"}
MAX_EXTRA_METRICS = 2


@dataclass(frozen=True)
class ReportConfig:
    experiment: str = field(metadata={"help": "Name of the MLflow experiment to report on."})
    sort_by: str = field(default="", metadata={
        "help": "Metric to sort each table by, e.g. test_rmse or label_saving ('' = newest first)."})
    descending: bool = field(default=False, metadata={
        "help": "Sort the metric high to low (for metrics where higher is better, e.g. label_saving)."})
    output: str = field(default="status.md", metadata={"help": "Markdown file to write."})


def build_report(runs: pd.DataFrame, experiment: str, experiment_id: str, tracking_uri: str,
                 champions: list[dict], sort_by: str = "", descending: bool = False,
                 now: datetime | None = None) -> str:
    """The Markdown report. `runs`: mlflow.search_runs' frame (run_id, status, start_time,
    params.*, metrics.*, tags.*); `champions`: dicts of model, alias, version, run_id, val_loss."""
    now = now or datetime.now(timezone.utc)
    lines = [f"# Status of experiment `{experiment}`", "",
             f"Generated {now:%Y-%m-%d %H:%M} UTC from `{tracking_uri}` ({len(runs)} runs)"
             + (f", sorted by `{sort_by}`{' (high to low)' if descending else ''}." if sort_by else ", newest first."),
             ""]
    if not _is_http(tracking_uri):
        lines += [f"Open the links with `mlflow ui --backend-store-uri {tracking_uri}`, then the run's page.", ""]

    lines += ["## Champion models", ""]
    if champions:
        lines += ["| model | alias | version | val_loss | run |", "|---|---|---|---|---|"]
        for c in champions:
            lines.append(f"| {c['model']} | @{c['alias']} | v{c['version']} | {_number(c.get('val_loss'))} | "
                         f"{_link(c.get('run_id', ''), c.get('run_id', '')[:8], experiment_id, tracking_uri)} |")
    else:
        lines.append("No registered model of this experiment's runs holds an alias yet.")
    lines.append("")

    if runs.empty:
        return "\n".join(lines + ["No runs yet."]) + "\n"
    steps = runs.get(f"tags.{tag_names.STEP}", pd.Series([""] * len(runs), index=runs.index)).fillna("")
    ordered = [s for s in STEP_ORDER if s in set(steps)] + sorted(set(steps) - set(STEP_ORDER) - {""})
    if (steps == "").any():
        ordered.append("")
    for step in ordered:
        group = runs[steps == step]
        lines += [f"## {step or 'other'} runs ({len(group)})", ""]
        lines += _table(group, step, experiment_id, tracking_uri, sort_by, descending)
        lines.append("")
    return "\n".join(lines)


def _table(group: pd.DataFrame, step: str, experiment_id: str, tracking_uri: str, sort_by: str,
           descending: bool) -> list[str]:
    metrics = _metric_columns(group, step, sort_by)
    params = _differing_params(group)
    group = _sorted(group, sort_by, descending)
    header = ["run", "date", "status", "commit", *params, *metrics]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, run in group.iterrows():
        name = run.get(f"tags.{tag_names.RUN_NAME}") or run["run_id"][:8]
        commit = run.get(f"tags.{tag_names.GIT_COMMIT}") or run.get("tags.mlflow.source.git.commit") or ""
        cells = [
            _link(run["run_id"], str(name), experiment_id, tracking_uri),
            _date(run.get("start_time")),
            str(run.get("status", "")).lower(),
            f"`{commit[:7]}`" if isinstance(commit, str) and commit else "",
            *[_cell(run.get(f"params.{p}")) for p in params],
            *[_number(run.get(f"metrics.{m}")) for m in metrics],
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _metric_columns(group: pd.DataFrame, step: str, sort_by: str) -> list[str]:
    present = [c[len("metrics."):] for c in group.columns if c.startswith("metrics.") and group[c].notna().any()]
    chosen = [m for m in KEY_METRICS.get(step, ()) if m in present]
    if sort_by and sort_by in present and sort_by not in chosen:
        chosen.insert(0, sort_by)
    if not chosen:
        chosen = sorted(present)[:MAX_EXTRA_METRICS + 2]
    return chosen


def _differing_params(group: pd.DataFrame) -> list[str]:
    out = []
    for column in sorted(c for c in group.columns if c.startswith("params.")):
        name = column[len("params."):]
        if name in HIDDEN_PARAMS:
            continue
        if group[column].fillna("").astype(str).nunique() > 1:
            out.append(name)
    return out


def _sorted(group: pd.DataFrame, sort_by: str, descending: bool) -> pd.DataFrame:
    column = f"metrics.{sort_by}"
    if sort_by and column in group.columns:
        return group.sort_values(column, ascending=not descending, na_position="last")
    return group.sort_values("start_time", ascending=False) if "start_time" in group.columns else group


def _is_http(uri: str) -> bool:
    return str(uri).startswith(("http://", "https://"))


def _link(run_id: str, text: str, experiment_id: str, tracking_uri: str) -> str:
    if not run_id:
        return text
    if _is_http(tracking_uri):
        return f"[{text}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"{text} (`{run_id[:8]}`)"


def _date(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def _number(value) -> str:
    if value is None:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return ""
    if number.is_integer() and abs(number) < 1e9:
        return str(int(number))
    return f"{number:.4g}"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).replace("|", "\\|")
    return text if len(text) <= 40 else text[:37] + "..."
