"""The recipe study: candidate training recipes compared at equal CPU time, each a tracked
`zoobot train` + `zoobot evaluate` pair in one MLflow experiment, over several seeds.

    .venv/bin/python benchmarks/recipe_study.py                       # simulate, convert, every candidate
    .venv/bin/python benchmarks/recipe_study.py --candidates baseline,bf16 --seeds 0

What it does, all with the platform's own commands (so every number is an MLflow run):
  1. `zoobot simulate` a survey (4,000 galaxies at 64 px, seed 11) and `zoobot convert` it
     (train 2,800 / validation 400 / test 800), unless they exist in --work-dir;
  2. measures every candidate's CPU-seconds per epoch on this machine (in-process timings of its
     model on random images of the training set's size, the candidates interleaved over --timing-rounds
     rounds so that a change in the machine's load hits all of them alike; the median round) and gives
     each as many epochs as fit in --budget CPU-seconds, so every candidate gets the same compute;
  3. for each seed, runs `zoobot train` then `zoobot evaluate` on the test split, names both runs
     `<candidate>-s<seed>`, tags them `zoobot.candidate` and logs the CPU seconds each used;
  4. writes a table of every candidate (mean and min-max over seeds) and the `zoobot report` of the
     experiment to --output.

The model is the binomial smooth-or-featured model unless --output-kind dirichlet. Metrics that
matter: `test_truth_rmse` (against the simulator's true probability), `test_spread_error_spearman`
(is the model uncertain where it is wrong?), coverage errors at +-5 and +-10 votes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = {"output": "binomial", "epochs": 0, "patience": 100}  # epochs set per candidate from the budget
# Each candidate: settings on top of today's defaults (zoobot train --help).
CANDIDATES = {
    "baseline": {},
    "bf16": {"precision": "bfloat16"},
    "bf16-cosine": {"precision": "bfloat16", "schedule": "cosine"},
    "bf16-cosine-adamw": {"precision": "bfloat16", "schedule": "cosine", "weight_decay": 0.05},
    "bf16-cosine-bn-avg": {"precision": "bfloat16", "schedule": "cosine", "batch_norm": True, "pooling": "avg"},
    "bf16-cosine-bn": {"precision": "bfloat16", "schedule": "cosine", "batch_norm": True},
    "bf16-cosine-trunkdrop": {"precision": "bfloat16", "schedule": "cosine", "trunk_dropout_rate": 0.1},
    "bf16-cosine-convdrop": {"precision": "bfloat16", "schedule": "cosine", "conv_dropout_rate": 0.25},
    "bf16-cosine-small": {"precision": "bfloat16", "schedule": "cosine", "filters": "16,32,64,128",
                          "dense_units": 64},
    "bf16-cosine-drop25": {"precision": "bfloat16", "schedule": "cosine", "dropout_rate": 0.25},
    "bf16-cosine-batch64": {"precision": "bfloat16", "schedule": "cosine", "batch_size": 64,
                            "learning_rate": 0.002},
    "bf16-cosine-noaug": {"precision": "bfloat16", "schedule": "cosine", "augment": False},
    "bf16-cosine-drop25-dense256": {"precision": "bfloat16", "schedule": "cosine", "dropout_rate": 0.25,
                                    "dense_units": 256},
    "bf16-cosine-drop25-convdrop": {"precision": "bfloat16", "schedule": "cosine", "dropout_rate": 0.25,
                                    "conv_dropout_rate": 0.25},
    # on the 2026-12-07 defaults (bfloat16 where it pays, cosine, head dropout 0.25 on 256 features):
    # the tree model's smooth-or-featured recovery (figure 9)
    "lr2e-3": {"learning_rate": 0.002},
    "wide-top": {"filters": "32,64,128,256"},
    "dense512": {"dense_units": 512},
    "noaug": {"augment": False},
    "avg": {"pooling": "avg"},
    "dense1024": {"dense_units": 1024},
    "dense512-lr2e-3": {"dense_units": 512, "learning_rate": 0.002},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="data/recipe-study")
    parser.add_argument("--experiment", default="recipe-study")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--budget", type=float, default=150.0, help="CPU-seconds of training per run")
    parser.add_argument("--n-galaxies", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--output-kind", default="binomial", choices=("binomial", "dirichlet"))
    parser.add_argument("--output", default="")
    parser.add_argument("--timing-rounds", type=int, default=3, help="interleaved rounds of the per-epoch timing")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = args.experiment
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work_dir).resolve()
    shards = prepare_data(work, args.n_galaxies, args.image_size)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"Unknown candidates {unknown}; choose from {list(CANDIDATES)}.")
    todo = [name for name in names if not all(finished_runs(f"{name}-s{seed}") for seed in seeds)]
    for name in sorted(set(names) - set(todo), key=names.index):
        print(f"{name}: every seed done before, kept", flush=True)
    settings_of = {name: {**COMMON, "output": args.output_kind, **CANDIDATES[name]} for name in todo}
    per_epoch = epoch_seconds(shards, settings_of, args.timing_rounds)
    for name in todo:
        settings = settings_of[name]
        settings["epochs"] = max(2, int(args.budget / per_epoch[name]))
        print(f"{name}: {per_epoch[name]:.1f} CPU-s per epoch -> {settings['epochs']} epochs", flush=True)
        for seed in seeds:
            run_candidate(name, settings, seed, shards, work, args.budget)
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"recipe-study-{time.strftime('%Y-%m-%d')}.md")
    write_summary(args, output)
    print(f"Wrote {output}")


def zoobot(*args: str) -> tuple[str, float]:
    """Run a zoobot command; (its output, the CPU-seconds it used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "zoobot.cli", *args], cwd=ROOT, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"zoobot {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare_data(work: Path, n_galaxies: int, image_size: int) -> Path:
    survey, shards = work / "survey", work / "shards"
    if not (survey / "simulation.json").is_file():
        zoobot("simulate", "--output-dir", str(survey), "--n-galaxies", str(n_galaxies),
               "--image-size", str(image_size), "--seed", "11")
    if not (shards / "manifest.json").is_file():
        zoobot("convert", "--catalog", str(survey / "catalog.csv"), "--output-dir", str(shards),
               "--image-size", str(image_size), "--seed", "11")
    return shards


def epoch_seconds(shards: Path, settings_of: dict[str, dict], rounds: int) -> dict[str, float]:
    """CPU-seconds per epoch of each candidate on this machine: its training step timed on random
    images (after a warm-up pass, which traces the function), scaled to the training and validation
    splits. The candidates take turns, `rounds` times, and each keeps its median, so a busier spell
    of the machine does not fall on one candidate alone."""
    import keras

    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig, build_model
    from zoobot.model.train import TrainConfig, compile_model

    manifest = Manifest.read(shards)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    rng = np.random.default_rng(0)
    n_labels = len(manifest.schema_obj.label_cols)
    n_train, n_val = manifest.split("train").count, manifest.split("validation").count
    prepared = {}
    for name, settings in settings_of.items():
        model_config = ModelConfig(**{k: v for k, v in settings.items() if k in model_fields})
        train_config = TrainConfig(shards=str(shards), **{k: v for k, v in settings.items()
                                                         if k not in model_fields and k != "epochs"})
        model = build_model(model_config, manifest.schema_obj, manifest.image_shape)
        compile_model(model, train_config, model_config, manifest.schema_obj, steps_per_epoch=100)
        batch = train_config.batch_size
        x = rng.uniform(0, 255, (batch * 20, *manifest.image_shape)).astype("float32")
        y = rng.integers(0, 20, (batch * 20, n_labels)).astype("float32")
        model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)
        prepared[name] = (model, x, y, batch)
    timings = {name: [] for name in settings_of}
    for _ in range(max(1, rounds)):
        for name, (model, x, y, batch) in prepared.items():
            start = time.process_time()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            per_image = (time.process_time() - start) / len(x)
            timings[name].append(per_image * n_train + per_image / 3 * n_val)  # validation: forward only
    keras.backend.clear_session()
    return {name: float(np.median(values)) for name, values in timings.items()}


def run_candidate(name: str, settings: dict, seed: int, shards: Path, work: Path, budget: float) -> None:
    import mlflow

    run_name = f"{name}-s{seed}"
    if finished_runs(run_name):
        print(f"{run_name}: done before, kept", flush=True)
        return
    options = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    checkpoint = work / "checkpoints" / run_name
    _, train_cpu = zoobot("train", "--shards", str(shards), f"--seed={seed}", f"--checkpoint-dir={checkpoint}",
                          *options)
    client = mlflow.MlflowClient()
    train_run = latest_run("train")
    _, eval_cpu = zoobot("evaluate", "--model", f"runs:/{train_run}", "--shards", str(shards))
    eval_run = latest_run("evaluate")
    for run_id, cpu in ((train_run, train_cpu), (eval_run, eval_cpu)):
        client.set_tag(run_id, "mlflow.runName", run_name)
        client.set_tag(run_id, "zoobot.candidate", name)
        client.set_tag(run_id, "zoobot.study_seed", str(seed))
        client.log_metric(run_id, "cpu_seconds", cpu)
    client.set_tag(eval_run, "zoobot.study_settings", json.dumps(settings))
    client.log_metric(train_run, "cpu_budget_seconds", budget)
    print(f"{run_name}: train {train_cpu:.0f} CPU-s, evaluate {eval_cpu:.0f} CPU-s", flush=True)


def latest_run(step: str) -> str:
    import mlflow

    runs = mlflow.search_runs(filter_string=f"tags.step = '{step}'", order_by=["start_time DESC"],
                              max_results=1)
    return runs.run_id.iloc[0]


def finished_runs(run_name: str):
    import mlflow

    runs = mlflow.search_runs(filter_string=f"tags.`mlflow.runName` = '{run_name}' and tags.step = "
                                            "'evaluate' and attributes.status = 'FINISHED'")
    return len(runs)


SUMMARY_METRICS = ("test_truth_rmse", "test_truth_rmse_ratio", "test_spread_error_spearman", "test_rmse",
                   "test_coverage_error_w5", "test_coverage_error_w10", "test_accuracy")
# the tree model's summary adds its smooth-or-featured question, the binomial model's one question
TREE_QUESTION = "smooth-or-featured"
TREE_METRICS = tuple(f"test_{TREE_QUESTION}_{m}" for m in (
    "truth_rmse", "truth_rmse_ratio", "spread_error_spearman", "coverage_error_w5", "coverage_error_w10"))


def write_summary(args, output: Path) -> None:
    import mlflow

    runs = mlflow.search_runs(filter_string="tags.step = 'evaluate'")
    train_runs = mlflow.search_runs(filter_string="tags.step = 'train'")
    lines = [f"# Recipe study (experiment `{args.experiment}`)", "",
             "Reproduce: `.venv/bin/python benchmarks/recipe_study.py` "
             f"(--budget {args.budget:g} CPU-seconds of training per run, seeds {args.seeds}, "
             f"{args.n_galaxies} simulated galaxies at {args.image_size} px, {args.output_kind} model). "
             "Each cell: mean over seeds [min, max]. Lower is better except the Spearman correlation.", ""]
    wanted = SUMMARY_METRICS + (TREE_METRICS if args.output_kind == "dirichlet" else ())
    columns = [m for m in wanted if f"metrics.{m}" in runs]
    lines.append("| candidate | epochs | train CPU-s | " + " | ".join(columns) + " |")
    lines.append("|---" * (len(columns) + 3) + "|")
    for name in CANDIDATES:
        mine = runs[runs.get("tags.zoobot.candidate", "") == name]
        if mine.empty:
            continue
        trains = train_runs[train_runs.get("tags.zoobot.candidate", "") == name]
        epochs = trains.get("params.epochs", []).iloc[0] if len(trains) else "?"
        cpu = trains.get("metrics.cpu_seconds")
        cells = [f"{cpu.mean():.0f}" if cpu is not None else "?"]
        for metric in columns:
            cells.append(mean_and_range(mine[f"metrics.{metric}"]))
        lines.append(f"| {name} | {epochs} | " + " | ".join(cells) + " |")
    write_with_report(lines, args.experiment, output)


def mean_and_range(values) -> str:
    """'mean [min, max]' of a column of per-seed metrics, '-' when none is there."""
    values = values.dropna()
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]" if len(values) else "-"


def write_with_report(lines: list[str], experiment: str, output: Path) -> None:
    """The summary in `lines`, then a link to the experiment's `zoobot report` written beside it."""
    report = output.with_name(output.stem + "-report.md")
    zoobot("report", "--experiment", experiment, "--output", str(report))
    lines += ["", f"The experiment's full `zoobot report`: [{report.name}]({report.name}).", ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
