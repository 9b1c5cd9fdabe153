"""The transfer study (benchmark figure 10 with the platform's own commands): a tree model trained on one
simulated survey, finetuned to a 0/1 question ("has a bar") on another survey's galaxies with a few
hundred labels, against the same CNN trained from scratch on the same labels; every step an MLflow
run in one experiment, over several seeds.

    .venv/bin/python benchmarks/transfer_study.py --work-dir /work/transfer --seeds 0,1,2

What it does:
  1. the base: the recipe study's survey (--base-galaxies, 4,000 by default, at 64 px, seed 11; simulated
     and converted unless --work-dir has them) and `zoobot train` of the default tree model on it, registered as
     `transfer-base` (kept when a finished one exists);
  2. the question: `zoobot simulate` another survey (seed 12), its first galaxies written as a 'has a
     bar' catalog (sim_bar_strength > 0.3) with a schema YAML, and `zoobot convert` (--labels train
     galaxies, a third as many for validation, twice as many for the test);
  3. per seed and arm: `zoobot finetune --base-model models:/transfer-base@champion` (with its defaults, and
     variants that unfreeze more of the trunk) and `zoobot train --output binomial` from scratch for the
     same number of epochs (so at least the finetune's CPU time: a frozen trunk is cheaper per epoch),
     each followed by `zoobot evaluate` (test ROC AUC, F1, ...);
  4. writes a table (mean and min-max over seeds) and the experiment's `zoobot report` to --output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recipe_study import latest_run, mean_and_range, prepare_data, write_with_report, zoobot  # noqa: E402

BASE_NAME = "transfer-base"
# arm -> (command, extra options); "finetuned" is `zoobot finetune` with its defaults
ARMS = {
    "finetuned": ("finetune", []),
    "scratch": ("train", ["--output", "binomial"]),
    "finetuned-4blocks": ("finetune", ["--unfreeze-blocks=4"]),
    "finetuned-all-blocks": ("finetune", ["--unfreeze-blocks=-1"]),
}
METRICS = ("test_barred_roc_auc", "test_barred_f1", "test_barred_precision", "test_barred_recall",
           "test_barred_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="data/transfer-study")
    parser.add_argument("--experiment", default="transfer-study")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--labels", type=int, default=300, help="labelled training galaxies of the new question")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each finetune and from-scratch run")
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--base-galaxies", type=int, default=4000,
                        help="simulated galaxies of the base survey (64 px, seed 11)")
    parser.add_argument("--base-name", default=BASE_NAME, help="registered name of the base model")
    parser.add_argument("--base-options", default="", help="more `zoobot train` options for the base, e.g. "
                                                          "'--dropout-rate=0.25 --dense-units=256'")
    parser.add_argument("--campaigns", type=lambda v: v.lower() == "true", default=False,
                        help="figure 11 instead: BALD campaigns on the question from the base and from scratch")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = args.experiment
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work_dir).resolve()

    base_shards = prepare_data(work, args.base_galaxies, 64)
    base = ensure_base(base_shards, work, args.base_epochs, args.base_name, args.base_options.split())
    if args.campaigns:
        run_campaigns(work, base, [int(s) for s in args.seeds.split(",")], args)
        return
    bars = prepare_question(work, args.labels)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            run_arm(arm, seed, bars, base, work, args.epochs)
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"transfer-study-{time.strftime('%Y-%m-%d')}.md")
    write_summary(args, output)
    print(f"Wrote {output}")


def ensure_base(shards: Path, work: Path, epochs: int, name: str, options: list[str]) -> str:
    import mlflow

    done = mlflow.search_runs(filter_string="tags.`zoobot.candidate` = 'base' and tags.step = 'train' and "
                                            "attributes.status = 'FINISHED'")
    if done.empty:
        _, cpu = zoobot("train", "--shards", str(shards), f"--epochs={epochs}", "--seed=0",
                        f"--checkpoint-dir={work / 'checkpoints' / name}", f"--registered-model-name={name}",
                        *options)
        run = latest_run("train")
        client = mlflow.MlflowClient()
        client.set_tag(run, "zoobot.candidate", "base")
        client.set_tag(run, "mlflow.runName", "base")
        client.log_metric(run, "cpu_seconds", cpu)
        print(f"base: trained in {cpu:.0f} CPU-s", flush=True)
    return f"models:/{name}@champion"


def prepare_question(work: Path, n_train: int) -> Path:
    from zoobot.bench.transfer import bar_split

    n_total, val, test = bar_split(n_train, 10 ** 9)
    return bar_question_shards(work / "bar_survey", work / "bar_shards", n_total, 12, f"--val-fraction={val}",
                               f"--test-fraction={test}")


def bar_question_shards(survey_dir: Path, shards: Path, n_galaxies: int, seed: int, *convert_options: str) -> Path:
    """`zoobot simulate` a survey and `zoobot convert` its 'has a bar' question, unless they exist."""
    from zoobot.bench.transfer import write_bar_question

    if not (survey_dir / "simulation.json").is_file():
        zoobot("simulate", "--output-dir", str(survey_dir), "--n-galaxies", str(n_galaxies), "--image-size", "64",
               "--seed", str(seed))
    if not (shards / "manifest.json").is_file():
        import pandas as pd

        survey = _Survey(survey_dir / "catalog.csv", pd.read_csv(survey_dir / "catalog.csv"))
        catalog, schema = write_bar_question(survey, n_galaxies)
        zoobot("convert", "--catalog", str(catalog), "--schema", str(schema), "--output-dir", str(shards),
               "--image-size", "64", "--seed", str(seed), *convert_options)
    return shards


def run_campaigns(work: Path, base: str, seeds: list[int], args) -> None:
    """Figure 11: per seed, a BALD campaign on 'has a bar' from the base model and one from scratch
    (`zoobot active_learning`, 100 labelled to start, 4 iterations of 50), and the labels the first
    needs to reach the second's final test loss."""
    from zoobot.active.iteration import learning_curve
    from zoobot.core.learning_curves import labels_needed
    from zoobot.active.pool import PoolState

    shards = bar_question_shards(work / "bar_campaign_survey", work / "bar_campaign_shards", 3000, 13,
                                 "--labelled-size=100")
    lines = [f"# Transfer in a campaign (experiment `{args.experiment}`)", "",
             f"Reproduce: `.venv/bin/python benchmarks/transfer_study.py --campaigns true --seeds {args.seeds}`. "
             "'Has a bar' on a third simulated survey (3,000 galaxies at 64 px, seed 13): BALD campaigns of 4 "
             "iterations from 100 labelled galaxies, 50 acquired each, 40 epochs, binomial model; one started from "
             f"the base tree model (`--initial-model {base}`), one from scratch. Test loss by labelled count, and the "
             "labels the campaign from the base needs to reach the from-scratch campaign's final test loss, over "
             "the labels that one used.", "", "| seed | from the base | from scratch | label ratio |", "|---|---|---|---|"]
    ratios = []
    for seed in seeds:
        curves = {}
        for name, initial in (("from_base", ["--initial-model", base]), ("scratch", [])):
            folder = work / "campaigns" / f"{name}-s{seed}"
            zoobot("active_learning", "--shards", str(shards), "--arms", "bald", "--iterations", "4",
                   "--n-acquire", "50", "--epochs", "40", "--output", "binomial", f"--seed={seed}",
                   "--work-dir", str(folder), *initial)
            with PoolState.open(folder / "bald" / "state.db") as state:
                curves[name] = learning_curve(state)
            print(f"{name}-s{seed}: " + ", ".join(f"{int(n)}->{v:.3f}" for n, v in
                                                 zip(curves[name]["n_labelled"], curves[name]["test_loss"])),
                  flush=True)
        saving, reason = labels_needed(curves, baseline="scratch")
        ratio = 1 - saving
        ratios.append(ratio)
        cells = [", ".join(f"{int(n)}: {v:.3f}" for n, v in zip(c["n_labelled"], c["test_loss"]))
                 for c in curves.values()]
        lines.append(f"| {seed} | {cells[0]} | {cells[1]} | {ratio:.2f}{' (' + reason + ')' if reason else ''} |")
    finite = [r for r in ratios if r == r]
    if finite:
        lines += ["", f"Label ratio: mean {sum(finite) / len(finite):.2f} [{min(finite):.2f}, {max(finite):.2f}] over "
                      f"{len(finite)} of {len(ratios)} seeds (< 1: the base model saves labels)."]
    output = Path(args.output or ROOT / "benchmarks" / "results" /
                  f"transfer-campaigns-{time.strftime('%Y-%m-%d')}.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print(f"Wrote {output}")


class _Survey:
    def __init__(self, catalog_path: Path, catalog):
        self.catalog_path, self.catalog = catalog_path, catalog


def run_arm(arm: str, seed: int, shards: Path, base: str, work: Path, epochs: int) -> None:
    import mlflow

    name = f"{arm}-s{seed}"
    finished = mlflow.search_runs(filter_string=f"tags.`mlflow.runName` = '{name}' and tags.step = 'evaluate' and "
                                                "attributes.status = 'FINISHED'")
    if len(finished):
        print(f"{name}: done before, kept", flush=True)
        return
    common = ["--shards", str(shards), f"--seed={seed}", f"--epochs={epochs}",
              f"--checkpoint-dir={work / 'checkpoints' / name}"]
    command, extra = ARMS[arm]
    base_option = ["--base-model", base] if command == "finetune" else []
    _, train_cpu = zoobot(command, *base_option, *common, *extra)
    train_run = latest_run(command)
    _, eval_cpu = zoobot("evaluate", "--model", f"runs:/{train_run}", "--shards", str(shards))
    eval_run = latest_run("evaluate")
    client = mlflow.MlflowClient()
    for run_id, cpu in ((train_run, train_cpu), (eval_run, eval_cpu)):
        client.set_tag(run_id, "mlflow.runName", name)
        client.set_tag(run_id, "zoobot.candidate", arm)
        client.set_tag(run_id, "zoobot.study_seed", str(seed))
        client.log_metric(run_id, "cpu_seconds", cpu)
    auc = client.get_run(eval_run).data.metrics.get("test_barred_roc_auc", float("nan"))
    print(f"{name}: train {train_cpu:.0f} CPU-s, test ROC AUC {auc:.3f}", flush=True)


def write_summary(args, output: Path) -> None:
    import mlflow
    import pandas as pd

    runs = mlflow.search_runs(filter_string="tags.step = 'evaluate'")
    trains = pd.concat([mlflow.search_runs(filter_string=f"tags.step = '{step}'") for step in ("train", "finetune")])
    lines = [f"# Transfer study (experiment `{args.experiment}`)", "",
             f"Reproduce: `.venv/bin/python benchmarks/transfer_study.py --seeds {args.seeds} --labels {args.labels} "
             f"--epochs {args.epochs} --base-galaxies {args.base_galaxies} --base-epochs {args.base_epochs}"
             + (f" --base-options '{args.base_options}'" if args.base_options else "") + "`. "
             f"The base: the default tree model trained on {args.base_galaxies * 7 // 10:,} of {args.base_galaxies:,} "
             "simulated galaxies (64 px, seed 11; the rest its validation and test). The question: 'has a bar' (sim_bar_strength > 0.3) on another "
             f"simulated survey, {args.labels} training galaxies. Each cell: mean over seeds [min, max].", ""]
    columns = [m for m in METRICS if f"metrics.{m}" in runs]
    lines.append("| arm | seeds | train CPU-s | " + " | ".join(columns) + " |")
    lines.append("|---" * (len(columns) + 3) + "|")
    for arm in ARMS:
        mine = runs[runs.get("tags.zoobot.candidate", "") == arm]
        if mine.empty:
            continue
        cpu = trains[trains.get("tags.zoobot.candidate", "") == arm].get("metrics.cpu_seconds")
        cells = [str(len(mine)), f"{cpu.mean():.0f}" if cpu is not None else "?"]
        for metric in columns:
            cells.append(mean_and_range(mine[f"metrics.{metric}"]))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    write_with_report(lines, args.experiment, output)


if __name__ == "__main__":
    main()
