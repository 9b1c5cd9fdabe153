"""Training a Zoobot model on shards, resumable from its last epoch.

Read top to bottom: the strategy, the model, then fit, one epoch at a time (the batches of each from
`zoobot.model.inputs`), saving the checkpoint (`zoobot.model.checkpoint`) after each; a process killed at any moment restarts from the
last finished epoch with nothing lost or repeated.

No MLflow here: the caller passes Keras callbacks (the tracking one among them) and a `meta` dict
that the checkpoint keeps (the MLflow run id, so a restart logs into the same run).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import tensorflow as tf

from zoobot.core.calibration import Calibration
from zoobot.data.manifest import Manifest
from zoobot.model.checkpoint import Checkpoint, CheckpointCallback
from zoobot.model.losses import fraction_rmse_metric, make_loss, question_loss_metrics
from zoobot.model.inputs import DataForEpoch, epoch_seed, shard_data, steps_per_epoch, validation_batches
from zoobot.model.network import ModelConfig, build_model
from zoobot.model.optimizers import LayerwiseAdam
from zoobot.model.sampling import reseed

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    shards: str = field(metadata={
        "help": "Shards to train on: the output_dir of `convert`, or its run URI (runs:/<id> or runs:/<id>/shards)."})
    epochs: int = field(default=30, metadata={"help": "Maximum number of epochs (the schedule's length)."})
    batch_size: int = field(default=32, metadata={"help": "Galaxies per batch (global, over all replicas)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (the peak, with a schedule)."})
    schedule: str = field(default="cosine", metadata={
        "help": "Learning rate over training: 'constant', or 'cosine' (linear warm-up over warmup_epochs, then "
                "cosine decay to 1% of learning_rate at the last epoch)."})
    warmup_epochs: int = field(default=1, metadata={"help": "cosine only: epochs of linear warm-up from 0."})
    weight_decay: float = field(default=0.0, metadata={
        "help": "Decoupled weight decay (AdamW) per step, as a fraction of the learning rate; 0 = plain Adam."})
    patience: int = field(default=8, metadata={
        "help": "Early stopping: epochs without a better validation loss before training stops."})
    min_epochs: int = field(default=10, metadata={
        "help": "Early stopping never stops before this epoch: a model still on its first plateau (loss at "
                "chance) is given time to leave it."})
    augment: bool = field(default=True, metadata={
        "help": "Random flips, rotations and zoom of training images (never at evaluation)."})
    greyscale: bool = field(default=False, metadata={"help": "Train on greyscale versions of colour shards."})
    seed: int = field(default=0, metadata={"help": "Seed of weights initialisation, shuffling and augmentation."})
    checkpoint_dir: str = field(default="", metadata={
        "help": "Folder for checkpoints (default: data/checkpoints/<hash of data and settings>); a rerun with "
                "the same settings resumes from it."})
    distribution: str = field(default="none", metadata={
        "help": "none; mirrored (tf.distribute.MirroredStrategy over local GPUs, or logical CPUs); "
                "multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG)."})
    logical_cpus: int = field(default=0, metadata={
        "help": "mirrored on a machine without GPUs: split the CPU into this many logical devices (0: 2)."})
    registered_model_name: str = field(default="", metadata={
        "help": "Register the trained model under this name in the MLflow registry ('' = do not register)."})
    champion_alias: str = field(default="champion", metadata={
        "help": "Alias the new version takes when its validation loss beats the current holder's ('' = none)."})
    calibrate: bool = field(default=True, metadata={
        "help": "Dirichlet models: after training, fit each question's concentration scale on the validation split "
                "so the posteriors' widths match the errors (zoobot.core.calibration); false: leave them at 1."})
    system_metrics: bool = field(default=True, metadata={
        "help": "Log the machine's CPU, memory, disk and network use (and GPU, with pynvml) during training as "
                "system/* metrics, by MLflow's system-metrics monitor every 10 s; false: off."})

    def __post_init__(self):
        problems = []
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.patience < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.min_epochs < 0:
            problems.append(f"min_epochs must be >= 0, got {self.min_epochs}")
        if self.distribution not in DISTRIBUTIONS:
            problems.append(f"distribution must be one of {list(DISTRIBUTIONS)}, got {self.distribution!r}")
        if problems:
            raise ValueError("Invalid train settings: " + "; ".join(problems) + ".")


@dataclass
class TrainResult:
    model: keras.Model  # with the best validation weights
    history: dict[str, list[float]]  # per epoch, from the first epoch (also across restarts)
    best_val_loss: float
    best_epoch: int  # 1-based
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int  # 0 when it started fresh
    checkpoint: Path
    calibration: Calibration | None = None  # the scales fitted on held-out galaxies (Dirichlet models)
    calibration_note: str = ""  # what was calibrated, or why not


# -- distribution ------------------------------------------------------------------------------------


def make_strategy(config: TrainConfig) -> tf.distribute.Strategy:
    """Call before anything else touches TensorFlow: logical CPUs must be set up first."""
    if config.distribution == "none":
        return tf.distribute.get_strategy()
    if config.distribution == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("distribution=multi_worker needs TF_CONFIG describing the cluster and this worker's "
                             "task.")
        # Workers find each other through TF_CONFIG; the job starts once all have connected.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    n = config.logical_cpus or 2
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        pass  # already initialised with logical devices (e.g. a second call in one process)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief worker writes checkpoints and logs; the other workers' copies go to scratch."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def model_image_shape(manifest: Manifest, config: TrainConfig) -> tuple[int, int, int]:
    height, width, channels = manifest.image_shape
    return height, width, 1 if config.greyscale else channels


# -- training ----------------------------------------------------------------------------------------


def compile_model(model: keras.Model, config: TrainConfig, model_config: ModelConfig, schema,
                  steps_per_epoch: int = 1, multipliers: dict[str, float] | None = None) -> None:
    output, question = model_config.output, model_config.question or None
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch, multipliers),
        loss=make_loss(output, schema, question),
        metrics=[*question_loss_metrics(output, schema, question), fraction_rmse_metric(output, schema, question)],
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int,
                   multipliers: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """Adam, or AdamW with weight decay; the learning rate constant or warm-up + cosine by step;
    with `multipliers` (layer name -> factor on the learning rate), Adam per layer (a finetune).

    The schedule is a function of the optimizer's step counter, which the checkpoint keeps, so a
    resumed job continues the schedule where it stopped.
    """
    rate = config.learning_rate
    if config.schedule == "cosine":
        warmup = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
        total = config.epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else config.learning_rate, decay_steps=max(total - warmup, 1), alpha=0.01,
            warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    if multipliers:
        return LayerwiseAdam(multipliers, learning_rate=rate, weight_decay=config.weight_decay or None)
    if config.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(rate)


def train(
    config: TrainConfig,
    model_config: ModelConfig,
    manifest: Manifest,
    checkpoint: Checkpoint,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    data: DataForEpoch | None = None,
    initial_weights: Path | None = None,
    calibration_data: tf.data.Dataset | None = None,
) -> TrainResult:
    """Fit on the 'train' split, validating on 'validation' (or on `data(epoch)`: that epoch's
    (train, validation) Keras batches); `initial_weights` warm-starts a fresh job (not a resumed one).
    Then a Dirichlet model is calibrated on the 'validation' split (with `data`: on `calibration_data`,
    batches of held-out galaxies, or not at all when None).

    One epoch at a time: before each, the dropout masks, shuffle and augmentation are seeded from
    (seed, epoch), so a job resumed from its checkpoint replays exactly the epochs it lost.
    """
    strategy = strategy or tf.distribute.get_strategy()
    schema = manifest.schema_obj
    shape = model_image_shape(manifest, config)
    custom_data = data is not None
    data = data or shard_data(config, manifest, strategy, shape[-1])

    keras.utils.set_random_seed(config.seed)
    steps = steps_per_epoch(data(0)[0], manifest, config)
    with strategy.scope():
        model = build_model(model_config, schema, shape)
        compile_model(model, config, model_config, schema, steps)
        resumed_from = checkpoint.epoch
        if resumed_from:
            checkpoint.restore(model)
        elif initial_weights is not None:
            model.load_weights(initial_weights)

    chief = is_chief(strategy)
    saver = CheckpointCallback(checkpoint, config.patience, write=chief, min_epochs=config.min_epochs)
    fit_epochs(model, strategy, data, config, checkpoint, [saver, *callbacks])
    held_out = calibration_data if custom_data else validation_batches(manifest, config, shape[-1])
    return finish(model, checkpoint, config, chief, resumed_from, held_out, strategy, schema)


def finish(model: keras.Model, checkpoint: Checkpoint, config: TrainConfig, chief: bool,
           resumed_from: int, held_out: tf.data.Dataset | None = None,
           strategy: tf.distribute.Strategy | None = None, schema=None) -> TrainResult:
    """The end of a job: the best epoch's weights into the model, a Dirichlet model calibrated on the
    held-out galaxies, the checkpoint marked finished (a job killed before that calibrates on restart)."""
    state = checkpoint.state
    if (checkpoint.folder / "best.weights.h5").is_file():
        model.load_weights(checkpoint.folder / "best.weights.h5")
    calibration, note = _calibrate(model, config, held_out, strategy, schema) if chief else (None, "")
    state["finished"] = True
    if chief:
        checkpoint.save_state()
    return TrainResult(
        model=model,
        history=state["history"],
        best_val_loss=float(state["best_val_loss"]),
        best_epoch=int(state["best_epoch"]),
        epochs_run=int(state["epoch"]),
        stopped_early=state["epoch"] < config.epochs and state["wait"] >= config.patience,
        resumed_from_epoch=resumed_from,
        checkpoint=checkpoint.folder,
        calibration=calibration,
        calibration_note=note,
    )


def _calibrate(model: keras.Model, config: TrainConfig, held_out, strategy, schema) -> tuple[Calibration | None, str]:
    from zoobot.model.calibrate import calibrate, calibration_layer

    if calibration_layer(model) is None:
        return None, ""  # binomial: nothing to scale
    if not config.calibrate:
        return None, "Not calibrated (calibrate=false): concentration scales left at 1."
    if held_out is None:
        return None, ("Not calibrated: no validation split to fit the concentration scales on (fitting them on "
                      "the training galaxies would make the model look surer than it is). Convert with a "
                      "validation fraction > 0 to calibrate.")
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, ("Not calibrated: a multi-worker job cannot sample its model on the chief alone; concentration "
                      "scales left at 1.")
    calibration = calibrate(model, held_out, schema, seed=config.seed)
    return calibration, calibration.summary()


def fit_epochs(model: keras.Model, strategy: tf.distribute.Strategy, data: DataForEpoch, config: TrainConfig,
                checkpoint: Checkpoint, callbacks: list[keras.callbacks.Callback]) -> None:
    """From the checkpoint's epoch to the last, or until early stopping; each epoch seeded afresh."""
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    fit_epoch = _distributed_epoch_runner(model, strategy) if multi_worker else None
    for epoch in range(checkpoint.epoch, config.epochs):
        if checkpoint.state["wait"] >= config.patience and epoch >= config.min_epochs:
            break  # stopped early before the crash
        reseed(model, epoch_seed(config.seed, epoch))
        train_data, val_data = data(epoch)
        started = time.perf_counter()
        if fit_epoch is None:
            # one epoch per fit call (seeded afresh), so Keras' own counter would say "Epoch 3/3": it is quiet,
            # and the line below counts against the whole run
            history = model.fit(train_data, validation_data=val_data, epochs=epoch + 1, initial_epoch=epoch,
                                callbacks=callbacks, shuffle=False, verbose=0)  # the tf.data pipeline shuffles
            logs = {k: v[-1] for k, v in history.history.items() if v}
            print(epoch_line(epoch, config.epochs, logs, time.perf_counter() - started), flush=True)
        else:
            logs = fit_epoch(train_data, val_data)
            print(epoch_line(epoch, config.epochs, logs, time.perf_counter() - started), flush=True)
            for callback in callbacks:
                callback.set_model(model)
                callback.on_epoch_end(epoch, logs)
        if model.stop_training:  # a callback asked to stop (each fit call starts by clearing the flag)
            break


def epoch_line(epoch: int, epochs: int, logs: dict, seconds: float) -> str:
    """'Epoch 3/30 - 12s - loss: ... - val_loss: ...' (0-based `epoch`); the per-question losses are
    left to the tracking server, where they are charted."""
    shown = {k: v for k, v in logs.items() if not k.startswith(("loss_", "val_loss_"))}
    return f"Epoch {epoch + 1}/{epochs} - {seconds:.0f}s - " + " - ".join(f"{k}: {float(v):.4f}" for k, v in shown.items())


def _distributed_epoch_runner(model: keras.Model, strategy: tf.distribute.Strategy):
    """One epoch over distributed datasets with Keras' own train/test steps run on every replica.

    Keras 3's `fit` cannot consume MultiWorkerMirroredStrategy's per-replica batches
    (keras-team/keras#20585), but its `train_step` runs fine under `strategy.run`: the loss is
    scaled for the replicas, the optimizer all-reduces the gradients, and the metrics' variables
    aggregate over workers when read.
    """
    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    @tf.function
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    def run_epoch(train_data, val_data) -> dict[str, float]:
        model.reset_metrics()
        for batch in train_data:
            train_step(batch)
        logs = {k: float(v) for k, v in model.get_metrics_result().items()}
        model.reset_metrics()
        for batch in val_data:
            test_step(batch)
        logs.update({f"val_{k}": float(v) for k, v in model.get_metrics_result().items()})
        return logs

    return run_epoch
