"""The resumable finetuning job: what `zoobot finetune` and `mlflow run -e finetune` run.

As `run_training`, with a base model: it is resolved first (a bad reference fails before anything
starts), its file's digest joins the checkpoint's key (a moved alias is a new job, not a resume),
and the run and the registered version record what it pointed at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from zoobot.core import tags as tag_names
from zoobot.model.finetune import FinetuneConfig
from zoobot.workflows.training import TrainingOutcome


def run_finetune(config: FinetuneConfig, say: Callable[[str], None] = print) -> TrainingOutcome:
    from zoobot import tracking
    from zoobot.tracking.references import describe_model_reference, resolve_model

    base_path = resolve_model(config.base_model)  # before TensorFlow starts: a bad reference fails fast
    base_text = describe_model_reference(config.base_model)

    from zoobot.data.manifest import Manifest
    from zoobot.model import train as training
    from zoobot.model.checkpoint import Checkpoint, checkpoint_key, default_checkpoint_dir
    from zoobot.model.finetune import architecture_of, finetune
    from zoobot.model.network import load_bundle
    from zoobot.model.precision import model_precision

    strategy = training.make_strategy(config)
    shards = tracking.resolve_local(config.shards, "shards")
    manifest = Manifest.read(shards)
    with strategy.scope():  # loaded once, where finetune builds on it
        base, base_meta = load_bundle(base_path)
    head = config.head_config(architecture_of(base), model_precision(base))
    data_key = tracking.file_digest(shards / "manifest.json") + tracking.file_digest(base_path)
    key = checkpoint_key(data_key, config, head)
    checkpoint = Checkpoint(Path(config.checkpoint_dir) if config.checkpoint_dir else default_checkpoint_dir(key))
    chief = training.is_chief(strategy)
    if checkpoint.state["finished"]:
        checkpoint.reset() if chief else checkpoint.forget()
    if not chief:
        finetune(config, base, manifest, checkpoint, strategy)
        return TrainingOutcome(None, {}, checkpoint.folder, None)

    resume = checkpoint.meta.get("run_id") if checkpoint.epoch else None
    base_schema = base_meta.schema.get("name", "?")
    tags = {tag_names.ARCHITECTURE: head.architecture, tag_names.OUTPUT: head.output,
            tag_names.PRECISION: head.precision, tag_names.SCHEMA: manifest.schema["name"],
            tag_names.BASE_MODEL: base_text[:5000]}
    params = dataclasses.asdict(config) | {"architecture": head.architecture, "base_schema": base_schema}
    with tracking.resume_or_start("finetune", params, resume, tags, system_metrics=config.system_metrics) as run:
        checkpoint.meta["run_id"] = run.info.run_id
        if resume:
            say(f"Resuming run {resume} from epoch {checkpoint.epoch} ({checkpoint.folder})")
            tracking.backfill_history(checkpoint.state["history"])
        tracking.log_splits(manifest, {"train": "training", "validation": "validation"})
        result = finetune(config, base, manifest, checkpoint, strategy, callbacks=[tracking.metrics_logger()])
        question = f", question '{config.question}'" if config.question else ""
        description = (
            f"Finetuned from {base_text} (trained on the '{base_schema}' schema) on the '{manifest.schema['name']}' "
            f"schema ({config.output} head{question}; {manifest.counts.get('train', 0)} training galaxies): "
            f"{config.plan()}. Best validation loss "
            f"{result.best_val_loss:.4f} at epoch {result.best_epoch}. Finetune run {run.info.run_id}.")
        logged = tracking.log_training(result, manifest, config, head, strategy.num_replicas_in_sync,
                                       description=description, version_tags={tag_names.BASE_MODEL: base_text[:5000]})
    return TrainingOutcome(result, logged, checkpoint.folder, resume)
