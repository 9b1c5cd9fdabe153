"""The speed figures: prediction and acquisition (1, 6), training input and tracking (2, 3),
conversion (4). Each is a ratio against a reference run side by side with it, in this process,
on the same images."""

from __future__ import annotations

import os
import shutil
import statistics
from dataclasses import replace
from itertools import count
from pathlib import Path

import numpy as np

from zoobot.bench import timing
from zoobot.bench.config import Sizes
from zoobot.bench.data import speed_model, speed_model_config, split_arrays
from zoobot.bench.measurement import Measurement, measured
from zoobot.bench.scratch import in_own_thread, scratch_experiment

PREDICT_BATCH = 256
CONVERT_SIZE = 64  # figure 4's output images


# -- 1 and 6: prediction and acquisition speed --------------------------------------------------------


def prediction_figures(shards: Path, sizes: Sizes, root: Path, seed: int) -> list[Measurement]:
    from zoobot.data.manifest import Manifest

    manifest = Manifest.read(shards)
    model = speed_model(manifest, sizes, seed)
    images = np.concatenate([split_arrays(manifest, split)[0] for split in manifest.splits])
    rates, bald_fractions = _prediction_rates(model, manifest, images, sizes, root / "predictions")
    T, n_naive = sizes.n_samples, min(sizes.naive_images, len(images))
    predict_rates = np.array(rates["predict"])
    details = {f"{k}_galaxies_per_s": statistics.median(v) for k, v in rates.items()}
    details.update(n_galaxies=len(images), naive_galaxies=n_naive, n_samples=T, image_size=sizes.image_size)
    in_memory = statistics.median(np.array(rates["mc_in_memory"]) / np.array(rates["naive"]))
    in_memory_cost = statistics.median(np.array(rates["single"]) / np.array(rates["mc_in_memory"]))
    return [
        measured("mc_speedup", predict_rates / np.array(rates["naive"]),
                 f"predict() from shards to parquet+summary over {len(images)} galaxies; reference: {T} full passes "
                 f"(mc_predict_naive) over the first {n_naive} of the same images in memory. "
                 f"mc_predict alone, in memory: {in_memory:.1f}x.", **details),
        measured("mc_cost_vs_single_pass", np.array(rates["single"]) / predict_rates,
                 "predict() time over one pass of the model on the same images in memory (dropout costs the same "
                 f"on or off). mc_predict alone, in memory: {in_memory_cost:.2f}x; the rest is reading shards, "
                 "writing samples and the summary.", **details),
        measured("bald_fraction", bald_fractions,
                 f"acquisition.score('bald') over predict's {T} samples of {len(images)} galaxies (dirichlet, "
                 f"{manifest.schema['name']} tree, 40 volunteers) / that predict() call's time."),
    ]


def _prediction_rates(model, manifest, images: np.ndarray, sizes: Sizes, output_dir: Path):
    """Galaxies per second of each way to get T samples (and of one plain pass), and the time of
    BALD over each predict() call's samples as a fraction of that call's."""
    from zoobot.core import acquisition
    from zoobot.core.model_meta import ModelMeta
    from zoobot.model.sampling import mc_predict, mc_predict_naive, split_trunk_head
    from zoobot.model.predict import PredictConfig, predict, read_predictions

    meta = ModelMeta(manifest.schema, "dirichlet")
    T, batch, naive_images = sizes.n_samples, PREDICT_BATCH, images[:sizes.naive_images]
    config = PredictConfig(model="benchmark", shards=str(manifest.root), output_dir=str(output_dir), n_samples=T,
                           batch_size=batch, overwrite=True)
    trunk_head = split_trunk_head(model)
    bald_fractions = []

    def naive():
        seconds, _ = timing.seconds(mc_predict_naive, model, naive_images, T, batch_size=batch)
        return len(naive_images) / seconds

    def predicted():
        seconds, result = timing.seconds(predict, config, model, meta, manifest)
        bald_seconds, _ = timing.seconds(acquisition.score, "bald", read_predictions(result.samples_path))
        bald_fractions.append(bald_seconds / seconds)
        return result.n_galaxies / seconds

    def one_pass():
        for start in range(0, len(images), batch):
            model.predict_on_batch(images[start:start + batch])

    def single():
        seconds, _ = timing.seconds(one_pass)
        return len(images) / seconds

    def mc_in_memory():
        seconds, _ = timing.seconds(mc_predict, model, images, T, trunk_head=trunk_head, batch_size=batch)
        return len(images) / seconds

    # Warm-up: the first call of each path traces its TensorFlow functions.
    mc_predict_naive(model, images[:8], 2, batch_size=batch)
    mc_predict(model, images[:8], 2, trunk_head=trunk_head, batch_size=batch)
    if sizes.warm_up:
        predict(config, model, meta, manifest)
    variants = {"naive": naive, "predict": predicted, "single": single, "mc_in_memory": mc_in_memory}
    return timing.interleaved(variants, sizes.repeats), bald_fractions


# -- 2 and 3: training input and tracking overhead ---------------------------------------------------


def training_figures(shards: Path, sizes: Sizes, root: Path, seed: int) -> list[Measurement]:
    """Three ways to train the same model on the same galaxies, interleaved: the real training job
    (zoobot.workflows.training.run_training, its MLflow run and all), plain train() with no MLflow,
    and model.fit on the images in memory."""
    from zoobot.data.manifest import Manifest
    from zoobot.model.train import TrainConfig

    manifest = Manifest.read(shards)
    train_config = TrainConfig(shards=str(shards), epochs=sizes.train_epochs, batch_size=sizes.batch_size,
                               patience=sizes.train_epochs + 1, augment=True, seed=seed, registered_model_name="")
    variants = _training_variants(manifest, train_config, speed_model_config(sizes), root, seed)
    with scratch_experiment(root / "scratch_tracking"), timing.quiet():
        if sizes.warm_up:
            _plain_train(manifest, replace(train_config, epochs=1), speed_model_config(sizes), root / "warm_up")
        runs = timing.interleaved(variants, sizes.repeats)
    return _training_measurements(runs, manifest.counts["train"], train_config.epochs, sizes.image_size)


def _training_variants(manifest, train_config, model_config, root: Path, seed: int) -> dict:
    """name -> a call returning (wall seconds, durations of its epochs)."""
    import keras

    from zoobot.model.network import build_model
    from zoobot.model.train import compile_model
    from zoobot.workflows.training import run_training

    x, y = split_arrays(manifest, "train")
    val_split = "validation" if manifest.counts.get("validation") else "train"
    x_val, y_val = split_arrays(manifest, val_split)
    runs = count()  # a checkpoint folder per run: a finished one would be cleared, a half-done one resumed

    def logged():
        config = replace(train_config, checkpoint_dir=str(root / f"checkpoint_{next(runs)}"))
        seconds, _ = timing.seconds(in_own_thread, run_training, config, model_config, say=lambda text: None)
        return seconds, []  # run_training takes no extra callbacks: its epochs are not timed

    def plain():
        return _plain_train(manifest, train_config, model_config, root / f"checkpoint_{next(runs)}")

    def in_memory():
        timer = timing.epoch_timer()
        keras.utils.set_random_seed(seed)
        model = build_model(model_config, manifest.schema_obj, x.shape[1:])
        compile_model(model, train_config, model_config, manifest.schema_obj)
        seconds, _ = timing.seconds(model.fit, x, y, batch_size=train_config.batch_size, epochs=train_config.epochs,
                                    validation_data=(x_val, y_val), shuffle=True, verbose=0, callbacks=[timer])
        return seconds, timer.durations

    return {"logged": logged, "plain": plain, "in_memory": in_memory}


def _plain_train(manifest, train_config, model_config, checkpoint_dir: Path) -> tuple[float, list[float]]:
    from zoobot.model.train import Checkpoint, train

    timer = timing.epoch_timer()
    seconds, _ = timing.seconds(train, train_config, model_config, manifest, Checkpoint(checkpoint_dir),
                                callbacks=[timer])
    return seconds, timer.durations


def _training_measurements(runs: dict, n_train: int, epochs: int, image_size: int) -> list[Measurement]:
    steady = {name: [timing.steady_epoch(durations) for _, durations in runs[name]] for name in ("plain", "in_memory")}
    total = {name: statistics.median(seconds for seconds, _ in runs[name]) for name in ("logged", "plain")}
    per_epoch_plain = statistics.median(steady["plain"])
    details = {"n_train": n_train, "epochs": epochs, "image_size": image_size,
               "train_images_per_s": n_train / per_epoch_plain,
               "fit_numpy_images_per_s": n_train / statistics.median(steady["in_memory"]),
               "logged_run_seconds": total["logged"], "plain_run_seconds": total["plain"]}
    return [
        measured("train_input_ratio", np.array(steady["in_memory"]) / np.array(steady["plain"]),
                 f"steady-state epochs (the first, which traces, left out) of train() on {n_train} galaxies from "
                 "TFRecords with flips/rotation/zoom and checkpoints, against model.fit on the same float32 images "
                 "in memory; validation included in both. The MLflow logging of the real job is figure 3's.",
                 **details),
        measured("tracking_overhead", [lg[0] / pl[0] for lg, pl in zip(runs["logged"], runs["plain"])],
                 f"a {epochs}-epoch job: the whole of zoobot.workflows.training.run_training (resolving the shards, "
                 "naming the checkpoint, opening the 'train' run, train() with per-epoch metrics, curves and the "
                 "pyfunc model logged; SQLite store in a temp folder, in a thread of its own) over plain train() "
                 f"on the same shards with no MLflow at all: {total['logged']:.1f} s vs {total['plain']:.1f} s "
                 f"({per_epoch_plain:.2f} s per steady epoch of train()). Opening the run and logging the model are a "
                 "fixed cost, so the ratio falls as runs grow longer.", **details),
    ]


# -- 4: conversion -----------------------------------------------------------------------------------


def conversion_figures(catalog_path: Path, sizes: Sizes, root: Path) -> list[Measurement]:
    from zoobot.data import shards  # noqa: F401  (TensorFlow loaded before anything is timed)
    from zoobot.data.catalog import load_catalog
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.images import ImageSpec, read_image

    paths = load_catalog(catalog_path, "decals").galaxies["image_path"].tolist()
    spec = ImageSpec(size=CONVERT_SIZE, channels=3)
    outputs = count()

    def read_all():
        for path in paths:
            read_image(path, spec)

    def bare():
        seconds, _ = timing.seconds(read_all)
        return len(paths) / seconds

    def converted(workers: int):
        out = root / f"convert_{next(outputs)}"
        seconds, _ = timing.seconds(convert, ConvertConfig(catalog=str(catalog_path), output_dir=str(out),
                                                           image_size=CONVERT_SIZE, workers=workers))
        shutil.rmtree(out)
        return len(paths) / seconds

    if sizes.warm_up:
        read_all()  # file cache, PIL's codecs
    rates = timing.interleaved({"bare": bare, 1: lambda: converted(1), 2: lambda: converted(2)}, sizes.repeats)
    bare_rates = np.array(rates["bare"])
    details = {"n_images": len(paths), "source_size": sizes.convert_source_size, "output_size": CONVERT_SIZE,
               "bare_images_per_s": statistics.median(rates["bare"]),
               "convert_1_images_per_s": statistics.median(rates[1]),
               "convert_2_images_per_s": statistics.median(rates[2]), "cpu_count": os.cpu_count()}
    note = (f"{len(paths)} PNGs of {sizes.convert_source_size}x{sizes.convert_source_size} to {CONVERT_SIZE}x"
            f"{CONVERT_SIZE} raw shards, whole convert() call (catalog checks, splits, TFRecord writing, manifest) "
            "against read_image alone in one process.")
    return [measured("convert_2_workers", np.array(rates[2]) / bare_rates, note, **details),
            measured("convert_1_worker", np.array(rates[1]) / bare_rates, note, **details)]
