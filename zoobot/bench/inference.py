"""Figure 12, end-to-end inference: `predict` at T=30 from shards (reading, the trunk once, the head T
times, the samples file and the summary) against one deterministic in-memory `model.predict` of the
same network over the same galaxies, for the default CNN at the speed figures' size and
EfficientNetB0 at 224 px. A user predicting a survey gets 30 posterior samples per galaxy at this
fraction of the speed of Keras' own single pass over images already in memory.

The fixed start-up cost of a `zoobot predict` process (imports, model load, tracing, its MLflow run)
does not grow with the survey, so it is measured apart: one cold CLI process per network, less the
steady-state time of the same prediction.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from zoobot.bench import timing
from zoobot.bench.config import Sizes
from zoobot.bench.data import split_arrays
from zoobot.bench.measurement import Measurement, measured

BATCH = 256  # predict's default batch, and Keras' for the reference
MAX_REPEATS = 3  # EfficientNetB0 at 224 px takes most of a minute per pass on 2 cores


def inference_figures(catalog_path: Path, sizes: Sizes, root: Path, seed: int) -> list[Measurement]:
    networks = {"inference_ratio_cnn": ("vgg", sizes.image_size),
                "inference_ratio_efficientnetb0": ("efficientnetb0", sizes.efficientnet_size)}
    return [inference_figure(key, architecture, image_size, catalog_path, sizes, root / key, seed)
            for key, (architecture, image_size) in networks.items()]


def inference_figure(key: str, architecture: str, image_size: int, catalog_path: Path, sizes: Sizes, root: Path,
                     seed: int) -> Measurement:
    import keras

    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import BUNDLE_KERAS, ModelConfig, build_model, save_bundle
    from zoobot.model.precision import model_precision
    from zoobot.model.predict import PredictConfig, predict

    manifest = Manifest.read(convert(ConvertConfig(catalog=str(catalog_path), output_dir=str(root / "shards"),
                                                   image_size=image_size, seed=seed)).manifest.root)
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(architecture=architecture), manifest.schema_obj, manifest.image_shape)
    meta = ModelMeta(manifest.schema, "dirichlet")
    bundle = save_bundle(model, root / "model", meta)
    images = np.concatenate([split_arrays(manifest, split)[0] for split in manifest.splits])
    n, T = len(images), sizes.n_samples
    config = PredictConfig(model=str(bundle / BUNDLE_KERAS), shards=str(manifest.root),
                           output_dir=str(root / "predictions"), n_samples=T, batch_size=BATCH, overwrite=True)

    def in_memory():
        seconds, _ = timing.seconds(model.predict, images, batch_size=BATCH, verbose=0)
        return n / seconds

    def predicted():
        seconds, result = timing.seconds(predict, config, model, meta, manifest)
        return result.n_galaxies / seconds

    model.predict(images[:BATCH], batch_size=BATCH, verbose=0)  # traces Keras' predict function
    if sizes.warm_up:
        predict(config, model, meta, manifest)  # and predict's trunk and head functions
    rates = timing.interleaved({"in_memory": in_memory, "predict": predicted}, min(sizes.repeats, MAX_REPEATS))
    predict_rate = statistics.median(rates["predict"])
    cold_seconds = cold_predict_seconds(config, root)
    startup = cold_seconds - n / predict_rate
    details = {"architecture": architecture, "image_size": image_size, "n_galaxies": n, "n_samples": T,
               "batch_size": BATCH, "precision": model_precision(model),
               "predict_galaxies_per_s": predict_rate,
               "model_predict_galaxies_per_s": statistics.median(rates["in_memory"]),
               "cold_process_seconds": cold_seconds, "startup_seconds": startup}
    return measured(
        key, np.array(rates["predict"]) / np.array(rates["in_memory"]),
        f"predict() at T={T} from shards to samples.parquet + summary.csv over {n} galaxies ({architecture}, "
        f"{image_size} px, {details['precision']}, untrained weights) against Keras' model.predict of the same "
        f"network once over the same images in memory: {predict_rate:.0f} against "
        f"{details['model_predict_galaxies_per_s']:.0f} galaxies/s. Start-up apart: a cold `zoobot predict` "
        f"process took {cold_seconds:.1f} s, {startup:.1f} s of it fixed (imports, model load, tracing, the "
        "MLflow run).", **details)


def cold_predict_seconds(config, root: Path) -> float:
    """Wall time of `zoobot predict` as a user runs it, in a process of its own (its run logged to a
    throwaway SQLite store)."""
    from dataclasses import replace

    output = replace(config, output_dir=str(root / "cold_predictions"))
    command = [sys.executable, "-m", "zoobot.cli", "predict", "--model", output.model, "--shards", output.shards,
               "--output-dir", output.output_dir, "--n-samples", str(output.n_samples),
               "--batch-size", str(output.batch_size), "--overwrite", "true"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'cold_tracking.db'}",
           "MLFLOW_EXPERIMENT_NAME": "benchmark-inference", "TF_CPP_MIN_LOG_LEVEL": "2"}
    seconds, done = timing.seconds(subprocess.run, command, env=env, capture_output=True, text=True,
                                   cwd=Path(__file__).resolve().parents[2])
    if done.returncode:
        raise RuntimeError(f"`{' '.join(command)}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds
