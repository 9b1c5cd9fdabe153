"""The experiment status report: the tracking server's record as Markdown, replacing the research
code's hand-edited status.md.

One table per step (train, evaluate, active_learning, ...): a row per run, with the parameters
that differ between those runs, the step's key metrics, the git commit, the date and a link to the
run; sorted by a metric of your choice. Plus the registered models' current aliases (the champion),
and, for active-learning campaigns, each setting's arms compared with random selection over the
seeds it ran on (`zoobot.core.learning_curves.compare_over_seeds`).
Pure pandas: tracking.report_data fetches the runs, this renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from zoobot.core import tags as tag_names
from zoobot.core.learning_curves import ArmOverSeeds, compare_over_seeds

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
# Campaigns that differ only in these are one setting run on several seeds (each seed may have its own
# survey, hence shards; an arm may have run in a campaign of its own, hence arms).
SEED_PARAMS = {"seed", "work_dir", "shards", "arms"}
# The random arm draws uniformly whatever these say, so a setting without its own random arm is
# compared with the random arm of a campaign that differs from it only in them (and the seed's).
BASELINE_FREE_PARAMS = {"selection", "diverse_candidates"}
BASELINE = "random"
CAMPAIGN_METRIC = "test_loss"
PARENT_RUN = "mlflow.parentRunId"


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
    lines += campaigns_over_seeds(runs)
    for step in ordered:
        group = runs[steps == step]
        lines += [f"## {step or 'other'} runs ({len(group)})", ""]
        lines += _table(group, step, experiment_id, tracking_uri, sort_by, descending)
        lines.append("")
    return "\n".join(lines)


# -- active-learning campaigns over seeds --------------------------------------------------------------


def campaigns_over_seeds(runs: pd.DataFrame) -> list[str]:
    """The "Campaigns over seeds" section: per setting (active_learning runs that differ only in
    SEED_PARAMS), a table of its arms: the mean test loss over seeds by labelled galaxies, how often
    each arm was below random at the same iteration of the same seed, the label saving of each
    seed's campaign and that read from the seed-mean curves. [] without campaigns."""
    campaigns = _campaign_curves(runs)
    if not campaigns:
        return []
    settings: dict[tuple, dict[int, dict[str, pd.DataFrame]]] = {}
    for setting, seed, curves in campaigns:
        arms = settings.setdefault(setting, {}).setdefault(seed, {})
        arms.update(curves)  # campaigns listed oldest first: a repeated arm keeps its newest curve
    borrowed = _borrow_baselines(settings)
    differing = _differing_keys(list(settings))
    lines = ["## Campaigns over seeds", "",
             f"Each setting's `active_learning` runs (parameters differing only in {', '.join(sorted(SEED_PARAMS))}), "
             f"every arm against the {BASELINE} arm of the same seed. `{CAMPAIGN_METRIC}` by labelled galaxies: the mean "
             "over seeds (over fewer seeds where a count follows in brackets); lower is better. Label saving: 1 - "
             f"the labels an arm needs to reach the {BASELINE} arm's final {CAMPAIGN_METRIC} / the labels {BASELINE} "
             "needed.", ""]
    for setting, by_seed in settings.items():
        values = dict(setting)
        label = ", ".join(f"{k}={values.get(k, '(not logged)')}" for k in differing) or "all campaigns"
        lines += [f"### {label} (seeds {', '.join(str(s) for s in sorted(by_seed))})", ""]
        if setting in borrowed:
            lines += [f"The {BASELINE} arm of seeds {', '.join(str(s) for s in borrowed[setting])} is that of a campaign "
                      f"differing only in {', '.join(sorted(BASELINE_FREE_PARAMS))} (the {BASELINE} arm ignores them).", ""]
        lines += _seed_table(compare_over_seeds(by_seed, BASELINE, CAMPAIGN_METRIC))
        lines.append("")
    return lines


def _campaign_curves(runs: pd.DataFrame) -> list[tuple[tuple, int, dict[str, pd.DataFrame]]]:
    """(setting, seed, arm -> curve) of every active_learning run with iteration runs under it,
    oldest first. A setting is the run's parameters but SEED_PARAMS, as sorted (name, value) pairs."""
    step_column, parent_column = f"tags.{tag_names.STEP}", f"tags.{PARENT_RUN}"
    needed = (step_column, parent_column, "metrics.n_labelled", f"metrics.{CAMPAIGN_METRIC}")
    if any(column not in runs.columns for column in needed):
        return []
    parents = runs[runs[step_column] == "active_learning"]
    children = runs[(runs[step_column] == "al_iteration") & runs["metrics.n_labelled"].notna()
                    & runs[f"metrics.{CAMPAIGN_METRIC}"].notna()]
    if "start_time" in parents.columns:
        parents = parents.sort_values("start_time")
        children = children.sort_values("start_time")
    arm_column = f"tags.{tag_names.ARM}" if f"tags.{tag_names.ARM}" in runs.columns else "params.acquisition"
    by_parent = {parent_id: rows for parent_id, rows in children.groupby(parent_column)}
    out = []
    for _, parent in parents.iterrows():
        mine = by_parent.get(parent["run_id"], children.iloc[:0])
        seed = pd.to_numeric(parent.get("params.seed"), errors="coerce")
        if mine.empty or arm_column not in mine.columns or pd.isna(seed):
            continue
        curves = {}
        for arm, rows in mine.groupby(arm_column):
            curve = pd.DataFrame({"n_labelled": rows["metrics.n_labelled"].to_numpy(float),
                                  CAMPAIGN_METRIC: rows[f"metrics.{CAMPAIGN_METRIC}"].to_numpy(float)})
            iteration = f"tags.{tag_names.ITERATION}"
            if iteration in rows.columns and rows[iteration].notna().all():
                curve["iteration"] = pd.to_numeric(rows[iteration]).to_numpy()
            # a restarted campaign may hold an iteration twice: the newest run counts
            curves[str(arm)] = curve.drop_duplicates("n_labelled", keep="last").sort_values("n_labelled")
        setting = tuple(sorted((c[len("params."):], str(v)) for c, v in parent.items()
                               if c.startswith("params.") and isinstance(v, str)
                               and c[len("params."):] not in SEED_PARAMS | HIDDEN_PARAMS))
        out.append((setting, int(seed), curves))
    return out


def _borrow_baselines(settings: dict) -> dict[tuple, list[int]]:
    """Fills in, for each setting's seeds without a random arm, the random arm of the same seed from a
    setting that differs only in BASELINE_FREE_PARAMS. Returns setting -> seeds filled in."""
    def free(setting):
        return tuple((k, v) for k, v in setting if k not in BASELINE_FREE_PARAMS)

    borrowed: dict[tuple, list[int]] = {}
    for setting, by_seed in settings.items():
        for seed, curves in by_seed.items():
            if BASELINE in curves:
                continue
            donors = [other[seed][BASELINE] for key, other in settings.items()
                      if key != setting and free(key) == free(setting) and BASELINE in other.get(seed, {})]
            if donors:
                curves[BASELINE] = donors[-1]
                borrowed.setdefault(setting, []).append(seed)
    return borrowed


def _differing_keys(settings: list[tuple]) -> list[str]:
    keys = sorted({k for setting in settings for k, _ in setting})
    return [k for k in keys if len({dict(s).get(k) for s in settings}) > 1]


def _seed_table(arms: list[ArmOverSeeds]) -> list[str]:
    labelled = sorted({n for arm in arms for n in arm.mean_curve.index})
    header = ["arm", "seeds", *[_number(n) for n in labelled], f"below {BASELINE}", "label saving per seed",
              "label saving, seed-mean curves"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        cells = [arm.arm, ", ".join(str(s) for s in arm.seeds)]
        for n in labelled:
            if n not in arm.mean_curve.index:
                cells.append("")
                continue
            count = int(arm.seeds_at[n])
            cells.append(f"{arm.mean_curve[n]:.3f}" + (f" ({count})" if count < len(arm.seeds) else ""))
        if arm.arm == BASELINE:
            cells += ["", "", ""]
        else:
            cells.append(f"{arm.below} of {arm.compared}" if arm.compared else "")
            cells.append(", ".join(f"{seed}: {_percent(v)}" for seed, v in sorted(arm.savings.items())))
            cells.append(_percent(arm.mean_saving) if not math.isnan(arm.mean_saving) else
                         ("not reached" if arm.savings else arm.mean_note))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _percent(value: float) -> str:
    return "not reached" if math.isnan(value) else f"{100 * value:.1f}%"


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
