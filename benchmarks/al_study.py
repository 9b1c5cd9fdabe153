"""The active-learning study: does BALD beat random, and with which posterior? Each variant is a real
`zoobot active_learning` campaign (BALD and random from the same labelled start) in one MLflow
experiment, over seeds; the table compares the arms' test loss iteration by iteration.

    .venv/bin/python benchmarks/al_study.py                          # every variant, seeds 1 and 2
    .venv/bin/python benchmarks/al_study.py --variants head,ens3 --seeds 1
    .venv/bin/python benchmarks/al_study.py --summary-only           # the table from the runs so far

The survey: 1,500 simulated galaxies at 64 px (seed 21), converted with 100 labelled, a pool of 950,
validation 150 and test 300. The model: binomial smooth-or-featured (the paper's setting), a small
CNN (16,32,64) in bfloat16 where the CPU has it, warm-up + cosine; 4 iterations of 50 acquired, T=15.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--iterations", "4", "--arms", "bald,random", "--n-acquire", "50", "--n-samples", "15", "--epochs", "15",
          "--patience", "100", "--min-epochs", "0", "--schedule", "cosine", "--output", "binomial",
          "--filters", "16,32,64", "--dense-units", "64", "--precision", "auto"]
VARIANTS = {  # settings on top of COMMON; later options win
    "head": [],  # MC dropout on the dense head only (the design until now)
    "trunk": ["--trunk-dropout-rate", "0.1"],  # and after every conv block
    "power": ["--selection", "power"],  # PowerBALD: batch drawn in proportion to the score
    "long": ["--epochs", "40"],  # longer training of each iteration's model
    "ens3": ["--epochs", "40", "--members", "3"],  # a deep ensemble of 3 MC-dropout models
    # The diagnostic: acquire where the model's mean is furthest from the simulator's true p(smooth),
    # what a perfect uncertainty would point at. If even this does not beat random, no acquisition can
    # on this survey and test metric.
    "oracle": ["--epochs", "40", "--arms", "truth_error,random"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="data/al-study")
    parser.add_argument("--experiment", default="al-study")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = args.experiment
    work = Path(args.work_dir).resolve()
    if not args.summary_only:
        shards = prepare(work)
        for name in args.variants.split(","):
            for seed in args.seeds.split(","):
                options = ["--shards", str(shards), "--seed", seed, "--work-dir", str(work / "runs" / f"{name}-s{seed}"),
                           *COMMON, *VARIANTS[name]]
                if name == "oracle":  # its acquisition reads the truth: registered in this process
                    in_process_campaign(work / "survey" / "catalog.csv", options)
                else:
                    zoobot("active_learning", *options)
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"al-study-{time.strftime('%Y-%m-%d')}.md")
    output.write_text(summary(args.experiment))
    print(f"Wrote {output}")


def zoobot(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "zoobot.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"zoobot {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def in_process_campaign(catalog: Path, options: list[str]) -> None:
    """`zoobot active_learning` in this process, with the acquisition `truth_error` registered: the
    absolute error of the posterior-mean p(smooth) against the simulator's truth."""
    import numpy as np
    import pandas as pd

    from zoobot.cli.active import active_learning
    from zoobot.core.acquisition import register

    table = pd.read_csv(catalog, usecols=["iauname", "true_smooth-or-featured_smooth"]).set_index("iauname")
    truth = table["true_smooth-or-featured_smooth"]

    @register("truth_error", overwrite=True)
    def truth_error(predictions, n_volunteers, rng):
        predicted = predictions.samples[:, 0, :].mean(axis=1)
        return np.abs(predicted - truth.reindex(predictions.id_str).to_numpy(float))

    active_learning().main(options, standalone_mode=False)


def prepare(work: Path) -> Path:
    survey, shards = work / "survey", work / "shards"
    if not (survey / "simulation.json").is_file():
        zoobot("simulate", "--output-dir", str(survey), "--n-galaxies", "1500", "--image-size", "64", "--seed", "21")
    if not (shards / "manifest.json").is_file():
        zoobot("convert", "--catalog", str(survey / "catalog.csv"), "--output-dir", str(shards), "--image-size", "64",
               "--seed", "21", "--labelled-size", "100")
    return shards


def summary(experiment: str) -> str:
    """Per campaign: each arm's test loss by labelled count, and what BALD acquired."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment])
    campaigns = runs[runs["tags.step"] == "active_learning"].sort_values("start_time")
    column = "metrics.acquired_true_smooth-or-featured_smooth"
    lines = [f"# Active-learning study (experiment `{experiment}`)", "",
             "Reproduce: `.venv/bin/python benchmarks/al_study.py` (see its docstring for the survey and settings). "
             "Test loss (binomial negative log-likelihood of the test galaxies' votes, lower is better) of each arm at "
             "each labelled count; BALD's cells in bold where below random's. `p(smooth) acquired`: mean true "
             "p(smooth) of the galaxies BALD acquired at each iteration (the pool's: 0.62).", "",
             "| campaign | arm | test loss by labelled galaxies | label saving | p(smooth) acquired |",
             "|---|---|---|---|---|"]
    for _, campaign in campaigns.iterrows():
        name = Path(str(campaign.get("params.work_dir", ""))).name
        children = runs[runs.get("tags.mlflow.parentRunId") == campaign.run_id]
        curves = {}
        for arm, rows in children.groupby("tags.arm"):
            rows = rows.dropna(subset=["metrics.n_labelled", "metrics.test_loss"]).sort_values("metrics.n_labelled")
            curves[arm] = rows
        if "truth_error" in curves:  # the oracle diagnostic: shown in BALD's place
            curves["bald"] = curves.pop("truth_error")
            name += " (truth_error in the bald row)"
        if set(curves) != {"bald", "random"}:
            continue
        random_loss = dict(zip(curves["random"]["metrics.n_labelled"], curves["random"]["metrics.test_loss"]))
        saving = campaign.get("metrics.label_saving")
        for arm, rows in curves.items():
            cells = []
            for n, loss in zip(rows["metrics.n_labelled"], rows["metrics.test_loss"]):
                text = f"{int(n)}: {loss:.3f}"
                bold = arm == "bald" and n in random_loss and loss < random_loss[n] and n != min(random_loss)
                cells.append(f"**{text}**" if bold else text)
            acquired = ", ".join(f"{v:.2f}" for v in rows[column].dropna()) if arm == "bald" and column in rows else ""
            saving_text = "" if arm != "bald" else ("not reached" if saving != saving else f"{saving:.1%}")
            lines.append(f"| {name} | {arm} | {'; '.join(cells)} | {saving_text} | {acquired} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
