"""The resumable training job: what `zoobot train`, `mlflow run -e train`, the `main` pipeline and the
benchmark all run.

Read top to bottom: the strategy (first: logical CPUs must be set before TensorFlow starts), the
shards, the checkpoint folder named after the data and settings, then either a worker's share of a
multi-worker job or, on the chief, the MLflow run (resumed when a killed job left one), the training
and its logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zoobot.core import tags as tag_names
from zoobot.model.network import ModelConfig
from zoobot.model.train import TrainConfig


@dataclass(frozen=True)
class TrainingOutcome:
    result: object | None  # zoobot.model.train.TrainResult; None on a non-chief worker
    logged: dict  # model_uri, registered_version, champion (empty on a non-chief worker)
    checkpoint: Path
    resumed_run: str | None  # the interrupted run this job logged into, if any


def run_training(config: TrainConfig, model_config: ModelConfig, say: Callable[[str], None] = print) -> TrainingOutcome:
    from zoobot import tracking
    from zoobot.data.manifest import Manifest
    from zoobot.model import train as training
    from zoobot.model.checkpoint import Checkpoint, checkpoint_key, default_checkpoint_dir
    from zoobot.model.precision import config_precision

    strategy = training.make_strategy(config)
    shards = tracking.resolve_local(config.shards, "shards")
    manifest = Manifest.read(shards)
    key = checkpoint_key(tracking.file_digest(shards / "manifest.json"), config, model_config)
    checkpoint = Checkpoint(Path(config.checkpoint_dir) if config.checkpoint_dir else default_checkpoint_dir(key))
    chief = training.is_chief(strategy)
    if checkpoint.state["finished"]:
        # A finished job run again is a new training, not a resume; the chief clears the folder, the
        # other workers of a multi-worker job (sharing it) just start from epoch 0 as well.
        checkpoint.reset() if chief else checkpoint.forget()
    if not chief:  # other workers compute their share and leave the record to the chief
        training.train(config, model_config, manifest, checkpoint, strategy)
        return TrainingOutcome(None, {}, checkpoint.folder, None)

    resume = checkpoint.meta.get("run_id") if checkpoint.epoch else None
    tags = {tag_names.ARCHITECTURE: model_config.architecture, tag_names.OUTPUT: model_config.output,
            tag_names.PRECISION: config_precision(model_config),
            tag_names.SCHEMA: manifest.schema["name"]}
    params = dataclasses.asdict(config) | dataclasses.asdict(model_config)
    with tracking.resume_or_start("train", params, resume, tags, system_metrics=config.system_metrics) as run:
        checkpoint.meta["run_id"] = run.info.run_id
        if resume:
            say(f"Resuming run {resume} from epoch {checkpoint.epoch} ({checkpoint.folder})")
            tracking.backfill_history(checkpoint.state["history"])
        tracking.log_splits(manifest, {"train": "training", "validation": "validation"})
        result = training.train(config, model_config, manifest, checkpoint, strategy,
                                callbacks=[tracking.metrics_logger()])
        logged = tracking.log_training(result, manifest, config, model_config, strategy.num_replicas_in_sync)
    return TrainingOutcome(result, logged, checkpoint.folder, resume)
