"""Benchmarks: how fast Zoobot turns a survey into calibrated posteriors, and how many labels it saves.

The machine these run on is shared and noisy: absolute times drift, ratios measured side by side in
one process run hold. So every speed figure is a ratio against a reference measured in the same run,
on the same images, with the variants interleaved within each repetition (and their order rotated),
so that a burst of load from elsewhere hits every variant alike. Each figure is the median over
repetitions, with the spread (min, max) of those repetitions.

Figures, in the order they run (targets from the project's issues 6 and 13), and where each is measured:

1. mc_speedup, mc_cost_vs_single_pass (speed): `predict` (trunk once, dropout head T times, streamed
   to disk) against T full stochastic passes, and against one pass.
6. bald_fraction (speed): BALD over predict's samples, as a fraction of the predict time that made them.
12. inference_ratio_cnn, inference_ratio_efficientnetb0 (speed): `predict` at T=30 from shards against
   one in-memory `model.predict` of the same network, the default CNN and EfficientNetB0 at 224 px;
   a cold `zoobot predict` process's fixed start-up cost is reported beside it.
2. train_input_ratio (speed): `train` from TFRecord shards with augmentation against `model.fit` on
   the same images in memory (steady-state epochs).
3. tracking_overhead (speed): the real training job (zoobot.workflows.training.run_training: its run,
   per-epoch metrics, model, curves) against plain `train` with no MLflow, in a throwaway SQLite store.
4. convert_2_workers, convert_1_worker (speed): `convert` against a bare decode+resize loop.
5. predict_memory_ratio (memory): peak RSS of `predict` over a pool 4x larger, each in a fresh process.
7-11. label_efficiency and label_efficiency_dirichlet (the real campaign, zoobot.workflows.campaign.run_campaign,
   for the binomial and the tree model), coverage_error_w5/_w10, recovery_rmse_ratio, spread_error_spearman,
   transfer_auc_finetuned, transfer_auc_gain and transfer_label_ratio (the tree model finetuned to a new
   0/1 question, and a campaign started from it) (science): on simulated surveys, in full mode (one seed)
   and science mode (three seeds, figures 7-11
   alone), or quick/tiny with `with_science=True`.

Everything is written to a temporary folder (or `work_dir`) and removed afterwards; the runs the
real workflows open go to a throwaway tracking store (zoobot.bench.scratch).

This module is the run itself; it also offers what the `benchmark` command imports.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from zoobot.bench.config import SCIENCE_GROUPS, BenchmarkConfig, Sizes, resolve_sizes
from zoobot.bench.data import prepare_speed_data
from zoobot.bench.measurement import SCIENCE_KEYS, SPECS, Measurement
from zoobot.bench.inference import inference_figures
from zoobot.bench.memory import memory_child, memory_figure
from zoobot.bench.report import environment, format_table, report, write_report
from zoobot.bench.science import science_figures
from zoobot.bench.speed import conversion_figures, prediction_figures, training_figures

__all__ = ["SCIENCE_KEYS", "SPECS", "BenchmarkConfig", "Measurement", "Sizes", "environment", "format_table",
           "memory_child", "report", "resolve_sizes", "run_benchmarks", "write_report"]


def run_benchmarks(config: BenchmarkConfig, say=print) -> list[Measurement]:
    """Every figure of SPECS, in its order; science figures are None unless measured."""
    sizes = resolve_sizes(config)
    start = time.perf_counter()

    def progress(text: str) -> None:
        say(f"[{(time.perf_counter() - start) / 60:4.1f} min] {text}")

    progress(f"Benchmark, {sizes.mode} mode: {sizes.repeats} repetition(s); sizes {asdict(sizes)}")
    with _work_dir(config.work_dir) as root:
        measurements = []
        if sizes.speed:
            measurements += speed_figures(root, sizes, config.seed, progress)
        if sizes.science:
            chosen = ", ".join(f"{group} ({SCIENCE_GROUPS[group]})" for group in sizes.science_groups)
            progress(f"Science figures over {sizes.science_seeds} seed(s): {chosen} ...")
            measurements += science_figures(root, sizes, config.seed, progress)
    by_key = {m.key: m for m in measurements}
    missing = {key: "speed figure: not measured in science mode" for key in SPECS}
    for key in SCIENCE_KEYS:
        missing[key] = (f"science figure: not among the figures chosen ({','.join(sizes.science_groups)})"
                        if sizes.science else "science figure: full or science mode (or quick/tiny with --with-science true)")
    return [by_key.get(key) or Measurement(key, None, notes=missing[key]) for key in SPECS]


def speed_figures(root: Path, sizes: Sizes, seed: int, progress) -> list[Measurement]:
    progress("Preparing data: simulated survey, shards, PNGs to convert ...")
    data = prepare_speed_data(root, sizes, seed)
    progress("Figures 1 and 6: prediction and acquisition speed ...")
    measurements = prediction_figures(data["shards"], sizes, root, seed)
    progress("Figure 12: end-to-end inference, the CNN and EfficientNetB0 ...")
    measurements += inference_figures(data["speed_catalog"], sizes, root, seed)
    progress("Figures 2 and 3: training input and tracking overhead (run_training) ...")
    measurements += training_figures(data["shards"], sizes, root, seed)
    progress("Figure 4: conversion speed ...")
    measurements += conversion_figures(data["convert_catalog"], sizes, root)
    progress("Figure 5: prediction memory ...")
    measurements.append(memory_figure(root, sizes, seed))
    return measurements


@contextlib.contextmanager
def _work_dir(work_dir: str):
    if work_dir:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="zoobot-benchmark-") as tmp:
        yield Path(tmp)
