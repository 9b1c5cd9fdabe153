"""Benchmarks: how fast Zoobot turns a survey into calibrated posteriors, and how many labels it saves.

The machine these run on is shared and noisy: absolute times drift, ratios measured side by side in
one process run hold. So every speed figure is a ratio against a reference measured in the same run,
on the same images, with the variants interleaved within each repetition (and their order rotated),
so that a burst of load from elsewhere hits every variant alike. Each figure is the median over
repetitions, with the spread (min, max) of those repetitions.

Figures, in the order they run (targets from the project's issue 6):

1. mc_speedup, mc_cost_vs_single_pass: `predict` (trunk once, dropout head T times, streamed to
   disk) against T full stochastic passes, and against one pass.
6. bald_fraction: BALD over predict's samples, as a fraction of the predict time that made them.
2. train_input_ratio: `train` from TFRecord shards with augmentation and MLflow logging, against
   `model.fit` on the same images in memory, no logging (steady-state epochs).
3. tracking_overhead: a training run with full logging (run, per-epoch metrics, model, curves)
   against the same run with none, in a throwaway SQLite tracking store.
4. convert_2_workers, convert_1_worker: `convert` against a bare decode+resize loop.
5. predict_memory_ratio: peak RSS of `predict` over a pool 4x larger, each in a fresh process.
7-9. label_efficiency, coverage_error_w5/_w10, recovery_rmse_ratio: science on a simulated survey
   (full mode, or `science=True`).

Everything is written to a temporary folder (or `work_dir`) and removed afterwards; nothing here
talks to MLflow except through zoobot.tracking.mlflow_io.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

QUESTION = "smooth-or-featured"
MEMORY_SCALE = 4  # the large pool is this many times the small one (10,000 -> 40,000 in full mode)


@dataclass(frozen=True)
class BenchmarkConfig:
    quick: bool = field(default=False, metadata={
        "help": "Quick mode: speed and memory figures only, at smaller sizes (under 10 minutes on 2 cores). "
                "Science figures 7-9 are reported as null."})
    tiny: bool = field(default=False, metadata={
        "help": "The smallest sizes, to check that the harness runs (about a minute); the values mean little."})
    science: bool = field(default=False, metadata={
        "help": "Also measure the science figures 7-9 in quick/tiny mode, at that mode's sizes (flagged)."})
    repeats: int = field(default=0, metadata={
        "help": "Repetitions per figure (0 = mode default: full 5, quick 3, tiny 1)."})
    output: str = field(default="data/benchmark.json", metadata={
        "help": "Where to write the JSON report (also logged as benchmark.json in the run)."})
    image_size: int = field(default=0, metadata={
        "help": "Image size of the speed figures 1-3 (0 = mode default: full 64, quick 32, tiny 16)."})
    n_images: int = field(default=0, metadata={
        "help": "Galaxies predicted and trained on in figures 1-3 (0 = mode default: full 2048, quick 1024, tiny 64)."})
    n_samples: int = field(default=30, metadata={"help": "MC-dropout samples T of figures 1, 5 and 6."})
    convert_galaxies: int = field(default=0, metadata={
        "help": "Images converted in figure 4 (0 = mode default: full 2000, quick 600, tiny 48)."})
    memory_pool: int = field(default=0, metadata={
        "help": f"Smaller pool of figure 5; the larger is {MEMORY_SCALE}x (0 = mode default: full 10000, "
                "quick 2500, tiny 200)."})
    science_galaxies: int = field(default=0, metadata={
        "help": "Simulated galaxies of figures 7-9 (0 = mode default: full 3000, quick 600, tiny 120)."})
    seed: int = field(default=0, metadata={"help": "Seed of the simulated surveys, models and splits."})
    work_dir: str = field(default="", metadata={
        "help": "Folder for the benchmark's data (default: a temporary folder, removed afterwards)."})

    def __post_init__(self):
        problems = []
        for name in ("repeats", "image_size", "n_images", "convert_galaxies", "memory_pool", "science_galaxies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a whole number >= 0 (0 = the mode's default), got {value!r}")
        if self.image_size and self.image_size < 16:
            problems.append(f"image_size must be >= 16 (the simulator's smallest), got {self.image_size}")
        if self.n_samples < 2:
            problems.append(f"n_samples must be >= 2, got {self.n_samples}")
        if self.n_images and self.n_images < 32:
            problems.append(f"n_images must be >= 32 (enough for a train, validation and test split), got "
                            f"{self.n_images}")
        if self.convert_galaxies and self.convert_galaxies < 32:
            problems.append(f"convert_galaxies must be >= 32 (fewer are converted without worker processes), "
                            f"got {self.convert_galaxies}")
        if not str(self.output).strip():
            problems.append("output must be a file path for the JSON report")
        if problems:
            raise ValueError("Invalid benchmark settings: " + "; ".join(problems) + ".")

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "full"


@dataclass(frozen=True)
class Sizes:
    """Everything a run measures at, resolved from the mode and the config's overrides."""
    mode: str
    repeats: int
    image_size: int  # figures 1-3
    n_images: int
    naive_images: int  # the T-full-passes reference runs on the first this-many of them
    n_samples: int
    filters: str  # model of figures 1-3
    dense_units: int
    train_epochs: int  # per training run of figures 2-3
    batch_size: int
    convert_galaxies: int
    convert_source_size: int  # the PNGs being converted are this large (Galaxy Zoo shows 424x424)
    memory_pool: int
    memory_image_size: int
    science: bool
    science_galaxies: int
    science_image_size: int
    science_epochs: int
    al_initial: int
    al_acquire: int
    al_iterations: int
    al_epochs: int
    al_samples: int
    warm_up: bool = True  # one untimed run of each path first (tiny mode skips it: its values mean little)


PRESETS = {
    "full": Sizes("full", repeats=5, image_size=64, n_images=2048, naive_images=512, n_samples=30,
                  filters="32,64,128,128", dense_units=128, train_epochs=3, batch_size=32, convert_galaxies=2000,
                  convert_source_size=424, memory_pool=10_000, memory_image_size=16, science=True,
                  science_galaxies=3000, science_image_size=64, science_epochs=15, al_initial=256, al_acquire=128,
                  al_iterations=5, al_epochs=10, al_samples=15),
    "quick": Sizes("quick", repeats=3, image_size=32, n_images=1024, naive_images=256, n_samples=30,
                   filters="32,64,128,128", dense_units=128, train_epochs=3, batch_size=32, convert_galaxies=600,
                   convert_source_size=424, memory_pool=2500, memory_image_size=16, science=False,
                   science_galaxies=600, science_image_size=32, science_epochs=4, al_initial=64, al_acquire=32,
                   al_iterations=3, al_epochs=3, al_samples=10),
    "tiny": Sizes("tiny", repeats=1, image_size=16, n_images=64, naive_images=32, n_samples=30,
                  filters="4,8", dense_units=16, train_epochs=1, batch_size=16, convert_galaxies=48,
                  convert_source_size=64, memory_pool=200, memory_image_size=16, science=False,
                  science_galaxies=120, science_image_size=32, science_epochs=1, al_initial=24, al_acquire=8,
                  al_iterations=2, al_epochs=1, al_samples=4, warm_up=False),
}


def resolve_sizes(config: BenchmarkConfig) -> Sizes:
    sizes = PRESETS[config.mode]
    overrides = {name: getattr(config, name) for name in
                 ("repeats", "image_size", "n_images", "convert_galaxies", "memory_pool", "science_galaxies")
                 if getattr(config, name)}
    sizes = replace(sizes, **overrides, n_samples=config.n_samples,
                    science=sizes.science or config.science)
    return replace(sizes, naive_images=min(sizes.naive_images, sizes.n_images))


# -- figures -----------------------------------------------------------------------------------------

# key -> (title, comparison, target, unit); the order is the table's.
SPECS = {
    "mc_speedup": ("1. predict T=30 vs T full passes (galaxies/s ratio)", ">=", 15.0, "x"),
    "mc_cost_vs_single_pass": ("1. predict T=30 time / one deterministic pass", "<=", 1.5, "x"),
    "train_input_ratio": ("2. train from shards+aug+logging / fit on numpy (images/s)", ">=", 0.85, "x"),
    "tracking_overhead": ("3. training run wall time, logging on / off", "<=", 1.03, "x"),
    "convert_2_workers": ("4. convert, 2 workers / bare decode+resize (images/s)", ">=", 1.6, "x"),
    "convert_1_worker": ("4. convert, 1 worker / bare decode+resize (images/s)", ">=", 0.7, "x"),
    "predict_memory_ratio": (f"5. predict peak RSS, {MEMORY_SCALE}x pool / 1x pool", "<=", 1.1, "x"),
    "bald_fraction": ("6. BALD time / predict time of the same samples", "<", 0.05, "fraction"),
    "label_efficiency": ("7. labels BALD needs / random needs (random's final loss)", "<=", 0.65, "fraction"),
    "coverage_error_w5": (f"8. coverage error {QUESTION}, +-5 votes", "<=", 0.106, "fraction"),
    "coverage_error_w10": (f"8. coverage error {QUESTION}, +-10 votes", "<=", 0.029, "fraction"),
    "recovery_rmse_ratio": ("9. RMSE predicted vs true / RMSE vote fractions vs true", "<=", 1.0, "x"),
}
SCIENCE_KEYS = ("label_efficiency", "coverage_error_w5", "coverage_error_w10", "recovery_rmse_ratio")


@dataclass(frozen=True)
class Figure:
    key: str
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
        return bool({">=": self.value >= self.target, "<=": self.value <= self.target,
                     "<": self.value < self.target}[self.comparison])

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "value": _number(self.value), "target": self.target,
                "comparison": self.comparison, "unit": self.unit,
                "spread": None if self.spread is None else [_number(v) for v in self.spread],
                "repeats": len(self.values), "values": [_number(v) for v in self.values],
                "passed": self.passed, "notes": self.notes, "details": _jsonable(self.details)}


def measured(key: str, values, notes: str = "", **details) -> Figure:
    values = tuple(float(v) for v in values)
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return Figure(key, None, None, values, notes or "no finite value was measured", details)
    return Figure(key, statistics.median(finite), (min(finite), max(finite)), values, notes, details)


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


# -- the run -----------------------------------------------------------------------------------------


def run_benchmarks(config: BenchmarkConfig, say=print) -> list[Figure]:
    """Every figure of SPECS, in its order; science figures are None unless measured."""
    sizes = resolve_sizes(config)
    start = time.perf_counter()

    def progress(text: str) -> None:
        say(f"[{(time.perf_counter() - start) / 60:4.1f} min] {text}")

    progress(f"Benchmark, {sizes.mode} mode: {sizes.repeats} repetition(s); sizes {asdict(sizes)}")
    with _work_dir(config.work_dir) as root:
        progress("Preparing data: simulated survey, shards, PNGs to convert ...")
        data = prepare_speed_data(root, sizes, config.seed)
        figures = []
        progress("Figures 1 and 6: prediction and acquisition speed ...")
        figures += prediction_figures(data["shards"], sizes, root, config.seed)
        progress("Figures 2 and 3: training input and tracking overhead ...")
        figures += training_figures(data["shards"], sizes, root, config.seed)
        progress("Figure 4: conversion speed ...")
        figures += conversion_figures(data["convert_catalog"], sizes, root)
        progress("Figure 5: prediction memory ...")
        figures.append(memory_figure(root, sizes, config.seed))
        if sizes.science:
            progress("Figures 7-9: label efficiency, calibration, recovery ...")
            figures += science_figures(root, sizes, config.seed, progress)
        else:
            figures += [Figure(key, None, notes="full mode only (run without --quick, or with --science true)")
                        for key in SCIENCE_KEYS]
    by_key = {f.key: f for f in figures}
    return [by_key[key] for key in SPECS]


@contextlib.contextmanager
def _work_dir(work_dir: str):
    if work_dir:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="zoobot-benchmark-") as tmp:
        yield Path(tmp)


def _seconds(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return time.perf_counter() - start, out


@contextlib.contextmanager
def _quiet():
    """Keras' per-epoch lines of the many training runs, out of the way of the table."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def _rotated(items: list, repeat: int) -> list:
    """Each repetition starts with a different variant, so none always runs first (cold caches)
    or last."""
    shift = repeat % len(items)
    return items[shift:] + items[:shift]


# -- data --------------------------------------------------------------------------------------------


def simulate(folder: Path, n_galaxies: int, image_size: int, seed: int):
    from zoobot.data.simulate import SimulateConfig, simulate_survey

    workers = 1 if n_galaxies <= 200 else 0  # a process pool costs more than it saves on a few galaxies
    return simulate_survey(SimulateConfig(output_dir=str(folder), n_galaxies=n_galaxies, image_size=image_size,
                                          seed=seed, workers=workers, overwrite=True))


def prepare_speed_data(root: Path, sizes: Sizes, seed: int) -> dict:
    """Shards of n_images simulated galaxies for figures 1-3, and a catalog of large PNGs for figure 4."""
    from PIL import Image

    from zoobot.data.convert import ConvertConfig, convert

    n = max(sizes.n_images, sizes.convert_galaxies)
    survey = simulate(root / "survey", n, sizes.image_size, seed)
    catalog = survey.catalog.iloc[:sizes.n_images]
    catalog.to_csv(root / "survey" / "speed_catalog.csv", index=False)
    shards = convert(ConvertConfig(catalog=str(root / "survey" / "speed_catalog.csv"), output_dir=str(root / "shards"),
                                   image_size=sizes.image_size, seed=seed, shard_size=256)).manifest.root

    # Figure 4 converts PNGs as large as the ones volunteers see, upsampled from the simulation.
    source = root / "convert_source"
    subset = survey.catalog.iloc[:sizes.convert_galaxies]
    for file_loc in subset["file_loc"]:
        target = source / file_loc
        target.parent.mkdir(parents=True, exist_ok=True)
        size = sizes.convert_source_size
        Image.open(root / "survey" / file_loc).resize((size, size), Image.Resampling.BICUBIC).save(target)
    subset.to_csv(source / "catalog.csv", index=False)
    return {"shards": Path(shards), "convert_catalog": source / "catalog.csv"}


def _speed_model(manifest, sizes: Sizes, seed: int):
    import keras

    from zoobot.model.network import ModelConfig, build_model

    keras.utils.set_random_seed(seed)
    model_config = ModelConfig(filters=sizes.filters, dense_units=sizes.dense_units)
    return model_config, build_model(model_config, manifest.schema_obj, manifest.image_shape)


def _split_arrays(manifest, split: str) -> tuple[np.ndarray, np.ndarray]:
    from zoobot.data.manifest import FEATURE_IMAGE, FEATURE_LABELS
    from zoobot.data.shards import read_split

    records = read_split(manifest, split)
    labels = records.get(FEATURE_LABELS)
    return records[FEATURE_IMAGE].astype(np.float32), None if labels is None else labels.astype(np.float32)


# -- 1 and 6: prediction and acquisition speed --------------------------------------------------------


def prediction_figures(shards: Path, sizes: Sizes, root: Path, seed: int) -> list[Figure]:
    from zoobot.core import acquisition
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import mc_predict, mc_predict_naive, split_trunk_head
    from zoobot.model.predict import PredictConfig, predict, read_predictions

    manifest = Manifest.read(shards)
    _, model = _speed_model(manifest, sizes, seed)
    meta = {"schema": manifest.schema, "output": "dirichlet", "question": None}
    images = np.concatenate([_split_arrays(manifest, split)[0] for split in manifest.splits])
    naive_images = images[:sizes.naive_images]
    T, batch = sizes.n_samples, 256
    predict_config = PredictConfig(model="benchmark", shards=str(shards), output_dir=str(root / "predictions"),
                                   n_samples=T, batch_size=batch, overwrite=True)

    def one_pass():
        for start in range(0, len(images), batch):
            model.predict_on_batch(images[start:start + batch])

    trunk_head = split_trunk_head(model)
    # Warm-up: the first call of each path traces its TensorFlow functions.
    mc_predict_naive(model, images[:8], 2, batch_size=batch)
    mc_predict(model, images[:8], 2, trunk_head=trunk_head, batch_size=batch)
    if sizes.warm_up:
        predict(predict_config, model, meta, manifest)

    rates = {"naive": [], "predict": [], "single": [], "mc_in_memory": []}
    bald_fractions = []
    for repeat in range(sizes.repeats):
        for variant in _rotated(["naive", "predict", "single", "mc_in_memory"], repeat):
            if variant == "naive":
                seconds, _ = _seconds(mc_predict_naive, model, naive_images, T, batch_size=batch)
                rates["naive"].append(len(naive_images) / seconds)
            elif variant == "predict":
                seconds, result = _seconds(predict, predict_config, model, meta, manifest)
                rates["predict"].append(result.n_galaxies / seconds)
                samples = read_predictions(result.samples_path)
                bald_seconds, _ = _seconds(acquisition.score, "bald", samples)
                bald_fractions.append(bald_seconds / seconds)
            elif variant == "single":
                seconds, _ = _seconds(one_pass)
                rates["single"].append(len(images) / seconds)
            else:
                seconds, _ = _seconds(mc_predict, model, images, T, trunk_head=trunk_head, batch_size=batch)
                rates["mc_in_memory"].append(len(images) / seconds)
    predict_rates = np.array(rates["predict"])
    details = {f"{k}_galaxies_per_s": statistics.median(v) for k, v in rates.items()}
    details.update(n_galaxies=len(images), naive_galaxies=len(naive_images), n_samples=T, image_size=sizes.image_size)
    in_memory = statistics.median(np.array(rates["mc_in_memory"]) / np.array(rates["naive"]))
    in_memory_cost = statistics.median(np.array(rates["single"]) / np.array(rates["mc_in_memory"]))
    return [
        measured("mc_speedup", predict_rates / np.array(rates["naive"]),
                 f"predict() from shards to parquet+summary over {len(images)} galaxies; reference: {T} full passes "
                 f"(mc_predict_naive) over the first {len(naive_images)} of the same images in memory. "
                 f"mc_predict alone, in memory: {in_memory:.1f}x.", **details),
        measured("mc_cost_vs_single_pass", np.array(rates["single"]) / predict_rates,
                 "predict() time over one pass of the model on the same images in memory (dropout costs the same "
                 f"on or off). mc_predict alone, in memory: {in_memory_cost:.2f}x; the rest is reading shards, "
                 "writing samples and the summary.", **details),
        measured("bald_fraction", bald_fractions,
                 f"acquisition.score('bald') over predict's {T} samples of {len(images)} galaxies (dirichlet, "
                 f"{manifest.schema['name']} tree, 40 volunteers) / that predict() call's time."),
    ]


# -- 2 and 3: training input and tracking overhead ---------------------------------------------------


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch, validation and the other callbacks' epoch-end work included."""

        def __init__(self):
            super().__init__()
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.durations.append(time.perf_counter() - self._start)

    return EpochTimer()


def _steady_epoch(durations: list[float]) -> float:
    """The first epoch traces the training function; later ones are the steady state."""
    return statistics.median(durations[1:] if len(durations) > 1 else durations)


def training_figures(shards: Path, sizes: Sizes, root: Path, seed: int) -> list[Figure]:
    import keras

    from zoobot import tracking
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig, build_model
    from zoobot.model.train import Checkpoint, TrainConfig, compile_model, train

    manifest = Manifest.read(shards)
    schema = manifest.schema_obj
    model_config = ModelConfig(filters=sizes.filters, dense_units=sizes.dense_units)
    train_config = TrainConfig(shards=str(shards), epochs=sizes.train_epochs, batch_size=sizes.batch_size,
                               patience=sizes.train_epochs + 1, augment=True, seed=seed)
    x, y = _split_arrays(manifest, "train")
    val_split = "validation" if manifest.counts.get("validation") else "train"
    x_val, y_val = _split_arrays(manifest, val_split)
    runs = iter(range(10_000))

    def plain_train(epochs: int = train_config.epochs):
        timer = _epoch_timer()
        config = replace(train_config, epochs=epochs)
        seconds, _ = _seconds(train, config, model_config, manifest, Checkpoint(root / f"checkpoint_{next(runs)}"),
                              callbacks=[timer])
        return seconds, timer.durations

    def logged_train():
        timer = _epoch_timer()
        params = asdict(train_config) | asdict(model_config)

        def work():
            result = train(train_config, model_config, manifest, Checkpoint(root / f"checkpoint_{next(runs)}"),
                           callbacks=[tracking.metrics_logger(), timer])
            tracking.log_training(result, manifest, train_config, model_config)

        seconds, _ = _seconds(tracking.run_apart, work, "train", params, experiment_id)
        return seconds, timer.durations

    def fit_in_memory():
        timer = _epoch_timer()
        keras.utils.set_random_seed(seed)
        model = build_model(model_config, schema, x.shape[1:])
        compile_model(model, train_config, model_config, schema)
        model.fit(x, y, batch_size=train_config.batch_size, epochs=train_config.epochs,
                  validation_data=(x_val, y_val), shuffle=True, verbose=0, callbacks=[timer])
        return timer.durations

    with tracking.scratch_store(root / "scratch_tracking") as experiment_id, _quiet():
        if sizes.warm_up:
            plain_train(epochs=1)  # first tf.data pipelines, first Keras model of the process
        logged, plain, in_memory = [], [], []
        for repeat in range(sizes.repeats):
            for variant in _rotated(["logged", "plain", "in_memory"], repeat):
                if variant == "logged":
                    logged.append(logged_train())
                elif variant == "plain":
                    plain.append(plain_train())
                else:
                    in_memory.append(fit_in_memory())
    n_train = len(x)
    input_ratios = [_steady_epoch(m) / _steady_epoch(lg[1]) for lg, m in zip(logged, in_memory)]
    overheads = [lg[0] / pl[0] for lg, pl in zip(logged, plain)]
    per_epoch_logged = statistics.median(_steady_epoch(lg[1]) for lg in logged)
    per_epoch_plain = statistics.median(_steady_epoch(pl[1]) for pl in plain)
    details = {"n_train": n_train, "epochs": train_config.epochs, "image_size": sizes.image_size,
               "train_images_per_s": n_train / per_epoch_logged,
               "fit_numpy_images_per_s": n_train / statistics.median(_steady_epoch(m) for m in in_memory),
               "logged_run_seconds": statistics.median(lg[0] for lg in logged),
               "plain_run_seconds": statistics.median(pl[0] for pl in plain)}
    return [
        measured("train_input_ratio", input_ratios,
                 f"steady-state epochs (the first, which traces, left out) of train() on {n_train} galaxies from "
                 "TFRecords with flips/rotation/zoom, checkpoints and per-epoch MLflow metrics, against model.fit "
                 "on the same float32 images in memory; validation included in both.", **details),
        measured("tracking_overhead", overheads,
                 f"a {train_config.epochs}-epoch run: train() with step run, per-epoch metrics, logged pyfunc model "
                 "and curves (SQLite store in a temp folder) over the same train() with no logging: "
                 f"{details['logged_run_seconds']:.1f} s vs {details['plain_run_seconds']:.1f} s in all, "
                 f"{per_epoch_logged:.2f} s vs {per_epoch_plain:.2f} s per steady epoch. Opening the run and "
                 "logging the model are a fixed cost, so the ratio falls as runs grow longer.", **details),
    ]


# -- 4: conversion -----------------------------------------------------------------------------------


def conversion_figures(catalog_path: Path, sizes: Sizes, root: Path) -> list[Figure]:
    from zoobot.data import shards  # noqa: F401  (TensorFlow loaded before anything is timed)
    from zoobot.data.catalog import load_catalog
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.images import ImageSpec, read_image

    paths = load_catalog(catalog_path, "decals").galaxies["image_path"].tolist()
    spec = ImageSpec(size=64, channels=3)
    outputs = iter(range(10_000))

    def bare():
        for path in paths:
            read_image(path, spec)

    def converted(workers: int):
        out = root / f"convert_{next(outputs)}"
        convert(ConvertConfig(catalog=str(catalog_path), output_dir=str(out), image_size=64, workers=workers))
        return out

    if sizes.warm_up:
        bare()  # file cache, PIL's codecs
    rates = {"bare": [], 1: [], 2: []}
    for repeat in range(sizes.repeats):
        for variant in _rotated(["bare", 1, 2], repeat):
            if variant == "bare":
                seconds, _ = _seconds(bare)
            else:
                seconds, out = _seconds(converted, variant)
                shutil.rmtree(out)
            rates[variant].append(len(paths) / seconds)
    bare_rates = np.array(rates["bare"])
    details = {"n_images": len(paths), "source_size": sizes.convert_source_size, "output_size": 64,
               "bare_images_per_s": statistics.median(rates["bare"]),
               "convert_1_images_per_s": statistics.median(rates[1]),
               "convert_2_images_per_s": statistics.median(rates[2]), "cpu_count": os.cpu_count()}
    note = (f"{len(paths)} PNGs of {sizes.convert_source_size}x{sizes.convert_source_size} to 64x64 raw shards, "
            "whole convert() call (catalog checks, splits, TFRecord writing, manifest) against read_image alone "
            "in one process.")
    return [measured("convert_2_workers", np.array(rates[2]) / bare_rates, note, **details),
            measured("convert_1_worker", np.array(rates[1]) / bare_rates, note, **details)]


# -- 5: memory ---------------------------------------------------------------------------------------


def write_pool_shards(folder: Path, n: int, image_size: int, seed: int, shard_size: int = 2048) -> Path:
    """An unlabelled 'pool' split of n random images, written directly (no catalog, no image files)."""
    from datetime import datetime, timezone

    import zoobot
    from zoobot.data.manifest import Manifest, Split
    from zoobot.core.schema import load_schema
    from zoobot.data.shards import ShardWriter, serialize_example

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, "pool", shard_size)
    shape = (image_size, image_size, 3)
    for i in range(n):
        writer.write(serialize_example(f"pool-{i:07d}", rng.integers(0, 256, shape, dtype=np.uint8).tobytes(), None))
    files = tuple(writer.close())
    Manifest(schema=load_schema("decals").to_dict(), image_shape=shape, image_encoding="raw",
             splits={"pool": Split("pool", False, n, files)},
             catalog={"path": "", "sha256": "", "rows": n, "rejected": 0}, config={"synthetic": True},
             created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
             zoobot_version=zoobot.__version__).write(folder)
    return folder


def memory_child(arguments: str) -> None:
    """Runs in a fresh process: predict over a pool, then print the process's peak RSS as JSON."""
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import load_bundle
    from zoobot.model.predict import PredictConfig, predict

    args = json.loads(arguments)
    model, meta = load_bundle(args["model"])
    manifest = Manifest.read(args["shards"])
    result = predict(PredictConfig(model=args["model"], shards=args["shards"], output_dir=args["output_dir"],
                                   n_samples=args["n_samples"], overwrite=True), model, meta, manifest)
    print(json.dumps({"peak_mb": _peak_rss_mb(), "n_galaxies": result.n_galaxies, "seconds": result.seconds}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory.

    Linux's ru_maxrss survives exec: a child forked from a parent holding 1.5 GB reports 1.5 GB
    whatever it does itself. VmHWM belongs to the process image after exec, so it is read first.
    """
    import resource

    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def _run_children(jobs: list[dict]) -> list[dict]:
    """The children run at the same time: peak memory is per process, whatever the CPU contention."""
    import zoobot

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(zoobot.__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from zoobot.bench.benchmark import memory_child; memory_child(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, json.dumps(job)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for job in jobs]
    results = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"The memory benchmark's predict process failed ({process.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def memory_figure(root: Path, sizes: Sizes, seed: int) -> Figure:
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig, build_model, save_bundle

    small, large = sizes.memory_pool, sizes.memory_pool * MEMORY_SCALE
    folders = {n: write_pool_shards(root / f"pool_{n}", n, sizes.memory_image_size, seed) for n in (small, large)}
    manifest = Manifest.read(folders[small])
    model = build_model(ModelConfig(filters="8,16", dense_units=32), manifest.schema_obj, manifest.image_shape)
    bundle = save_bundle(model, root / "memory_model", {"schema": manifest.schema, "output": "dirichlet",
                                                        "question": None})
    ratios, peaks = [], {small: [], large: []}
    for repeat in range(sizes.repeats):
        jobs = [{"model": str(bundle / "model.keras"), "shards": str(folders[n]), "n_samples": sizes.n_samples,
                 "output_dir": str(root / f"memory_predictions_{n}")} for n in (small, large)]
        small_result, large_result = _run_children(jobs)
        peaks[small].append(small_result["peak_mb"])
        peaks[large].append(large_result["peak_mb"])
        ratios.append(large_result["peak_mb"] / small_result["peak_mb"])
    samples_mb = (large - small) * manifest.schema_obj.n_answers * sizes.n_samples * 4 / 2**20
    return measured(
        "predict_memory_ratio", ratios,
        f"peak RSS (VmHWM) of a fresh process running predict() over {large} vs {small} galaxies "
        f"({sizes.memory_image_size}x{sizes.memory_image_size} random images, small model, T={sizes.n_samples}). "
        f"Holding all samples in memory would add ~{samples_mb:.0f} MB to the larger pool.",
        small_pool=small, large_pool=large, small_peak_mb=statistics.median(peaks[small]),
        large_peak_mb=statistics.median(peaks[large]))


# -- 7, 8, 9: science on a simulated survey -----------------------------------------------------------


def recovery(predictions, catalog) -> dict[str, float]:
    """RMSE of predicted and of observed smooth-or-featured fractions against the simulator's truth."""
    truth = catalog.set_index(catalog.columns[0]).loc[predictions.id_str]
    columns = predictions.answer_columns(QUESTION)
    true = truth[[f"true_{c}" for c in columns]].to_numpy(float)
    observed = truth[[f"{c}_fraction" for c in columns]].to_numpy(float)
    predicted = predictions.mean_fractions(QUESTION)
    return {"rmse_predicted": float(np.sqrt(np.nanmean((predicted - true) ** 2))),
            "rmse_observed": float(np.sqrt(np.nanmean((observed - true) ** 2)))}


def _coverage_errors(predictions, counts) -> tuple[float, float]:
    from zoobot.core.coverage import coverage_errors, coverage_table

    errors = coverage_errors(coverage_table(predictions, counts, question=QUESTION))
    return errors[f"{QUESTION}_coverage_error_w5"], errors[f"{QUESTION}_coverage_error_w10"]


def science_figures(root: Path, sizes: Sizes, seed: int, say=print) -> list[Figure]:
    flag = "" if sizes.mode == "full" else f" Measured at {sizes.mode} sizes: not comparable with the paper."
    survey = simulate(root / "science_survey", sizes.science_galaxies, sizes.science_image_size, seed + 1)
    say("  calibration and recovery: training a model on the survey ...")
    calibration = calibration_figures(root, survey, sizes, seed, flag)
    say("  label efficiency: BALD and random campaigns ...")
    return [label_efficiency_figure(root, survey, sizes, seed, flag), *calibration]


def calibration_figures(root: Path, survey, sizes: Sizes, seed: int, flag: str, n_bootstrap: int = 100) -> list[Figure]:
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig
    from zoobot.model.predict import predict_split
    from zoobot.model.train import Checkpoint, TrainConfig, train

    manifest = Manifest.read(convert(ConvertConfig(
        catalog=str(survey.catalog_path), output_dir=str(root / "science_shards"),
        image_size=sizes.science_image_size, seed=seed)).manifest.root)
    with _quiet():
        trained = train(TrainConfig(shards=str(manifest.root), epochs=sizes.science_epochs, batch_size=64, patience=4,
                                    seed=seed), ModelConfig(), manifest, Checkpoint(root / "science_checkpoint"))
    meta = {"schema": manifest.schema, "output": "dirichlet", "question": None}
    predictions, _, counts, _ = predict_split(trained.model, meta, manifest, "test", sizes.n_samples)
    w5, w10 = _coverage_errors(predictions, counts)
    scores = recovery(predictions, survey.catalog)
    # One trained model: the spread is over bootstrap resamples of the test galaxies.
    rng = np.random.default_rng(seed)
    boot = {"w5": [], "w10": [], "rmse": []}
    for _ in range(n_bootstrap):
        index = rng.integers(0, len(predictions.id_str), len(predictions.id_str))
        subset = predictions.subset(index)
        b5, b10 = _coverage_errors(subset, counts[index])
        b = recovery(subset, survey.catalog)
        boot["w5"].append(b5)
        boot["w10"].append(b10)
        boot["rmse"].append(b["rmse_predicted"] / b["rmse_observed"])
    details = {"n_galaxies": sizes.science_galaxies, "n_test": len(predictions.id_str),
               "epochs_run": trained.epochs_run, "best_val_loss": trained.best_val_loss,
               "image_size": sizes.science_image_size, **scores}
    common = (f"vgg dirichlet model trained on {manifest.counts['train']} simulated galaxies, tested on "
              f"{len(predictions.id_str)}, T={sizes.n_samples}; spread: 5-95% of {n_bootstrap} bootstrap resamples "
              "of the test set (one training).")

    def figure(key, value, values, notes):
        low, high = np.nanpercentile(values, [5, 95])
        return Figure(key, float(value), (float(low), float(high)), (float(value),), notes + flag, details)

    return [
        figure("coverage_error_w5", w5, boot["w5"], "Paper's bar model: 10.6%. " + common),
        figure("coverage_error_w10", w10, boot["w10"], "Paper's bar model: 2.9%. " + common),
        figure("recovery_rmse_ratio", scores["rmse_predicted"] / scores["rmse_observed"], boot["rmse"],
               f"RMSE of the posterior-mean fractions against the simulator's true probabilities "
               f"({scores['rmse_predicted']:.3f}) over that of the volunteers' own vote fractions "
               f"({scores['rmse_observed']:.3f}, the noise floor of one galaxy's votes). " + common),
    ]


def label_efficiency_figure(root: Path, survey, sizes: Sizes, seed: int, flag: str) -> Figure:
    from zoobot.active.loop import ALConfig, labels_needed, run_iteration
    from zoobot.active.campaign import create_state, learning_curve, real_steps
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig

    manifest = Manifest.read(convert(ConvertConfig(
        catalog=str(survey.catalog_path), output_dir=str(root / "al_shards"), image_size=sizes.science_image_size,
        labelled_size=sizes.al_initial, seed=seed)).manifest.root)
    model_config = ModelConfig()
    curves = {}
    for arm in ("bald", "random"):
        config = ALConfig(state=str(root / "al" / arm / "state.db"), acquisition=arm, n_acquire=sizes.al_acquire,
                          n_samples=sizes.al_samples, epochs=sizes.al_epochs, patience=3, seed=seed)
        state = create_state(Path(config.state), manifest, {"arm": arm, "acquisition": arm, "seed": seed})
        try:
            steps = real_steps(state, manifest, config, model_config)
            while state.current_iteration() <= sizes.al_iterations:
                with _quiet():
                    run_iteration(state, steps, config)
            curves[arm] = learning_curve(state)
        finally:
            state.close()
    saving, reason = labels_needed(curves)
    value = float(1.0 - saving) if np.isfinite(saving) else None
    curve_text = "; ".join(f"{arm}: " + ", ".join(f"{int(n)}->{loss:.3f}" for n, loss in
                                                  zip(c["n_labelled"], c["test_loss"])) for arm, c in curves.items())
    notes = (f"Paper: 0.40-0.65. One campaign per arm from the same {sizes.al_initial} labelled galaxies, "
             f"{sizes.al_iterations} iterations of {sizes.al_acquire} acquired (T={sizes.al_samples}); test loss by "
             f"labelled count: {curve_text}." + (f" Not computed: {reason}." if value is None else "") + flag)
    return Figure("label_efficiency", value, None, () if value is None else (value,), notes,
                  {arm: c.to_dict(orient="list") for arm, c in curves.items()})


# -- the report --------------------------------------------------------------------------------------


def environment() -> dict:
    """Machine and versions, for the report's params."""
    from importlib.metadata import PackageNotFoundError, version

    import zoobot

    versions = {"python": platform.python_version(), "zoobot": zoobot.__version__}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy", "pillow", "pyarrow"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    machine = {"cpu": cpu, "cores": cores, "system": platform.platform(),
               "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    return {"machine": machine, "versions": versions}


def report(figures: list[Figure], config: BenchmarkConfig, seconds: float) -> dict:
    return {"mode": config.mode, "seconds": round(seconds, 1), "config": asdict(config),
            "sizes": asdict(resolve_sizes(config)), **environment(),
            "figures": {f.key: f.to_dict() for f in figures}}


def write_report(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def format_table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "spread (min-max)", "target", "pass")]
    for f in figures:
        value = "-" if f.value is None else f"{f.value:.3g}"
        spread = "-" if f.spread is None else f"{f.spread[0]:.3g}-{f.spread[1]:.3g}"
        verdict = {True: "yes", False: "NO", None: "n/a"}[f.passed]
        rows.append((f.title, value, spread, f"{f.comparison} {f.target:g}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
