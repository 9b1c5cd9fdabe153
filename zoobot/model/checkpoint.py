"""The checkpoint folder of a training job: state.json (epoch, history, early-stopping counters,
meta such as the MLflow run id) and the weight files (last.weights.h5 with the optimizer state,
best.weights.h5), each replaced atomically at the end of every epoch, so a job killed at any moment
restarts from its last finished epoch with nothing lost or repeated.

Also the guard that stops a job whose loss is no longer finite, before anything of that epoch is
saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import numpy as np

from zoobot.core.staging import atomic_write_text
from zoobot.model.network import ModelConfig


def checkpoint_key(manifest_digest: str, train, model: ModelConfig) -> str:
    """Identifies one training job (`train`: its TrainConfig): same shards and settings -> same key -> resume."""
    settings = {k: v for k, v in asdict(train).items()
                if k not in ("checkpoint_dir", "registered_model_name", "champion_alias", "shards", "system_metrics")}
    payload = json.dumps({"data": manifest_digest, "train": settings, "model": asdict(model)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Checkpoint:
    """The checkpoint folder: state.json (epoch, history, early stopping, meta) and weight files
    (last.weights.h5 with the optimizer state, best.weights.h5)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "state.json"
        self.state = json.loads(path.read_text()) if path.is_file() else self.fresh_state()

    @staticmethod
    def fresh_state() -> dict:
        return {"epoch": 0, "history": {}, "best_val_loss": None, "best_epoch": 0, "wait": 0,
                "finished": False, "meta": {}}

    def forget(self) -> None:
        """Start from epoch 0 without touching the folder (a non-chief worker's view of a reset)."""
        self.state = self.fresh_state()

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def meta(self) -> dict:
        return self.state["meta"]

    def reset(self) -> None:
        shutil.rmtree(self.folder)
        self.__init__(self.folder)

    def save_state(self) -> None:
        atomic_write_text(self.folder / "state.json", json.dumps(self.state, indent=1))

    def save_model(self, model: keras.Model, name: str) -> None:
        tmp = self.folder / f"{name}.tmp.weights.h5"
        model.save_weights(tmp)
        os.replace(tmp, self.folder / f"{name}.weights.h5")

    def restore(self, model: keras.Model) -> None:
        """The last epoch's weights and, since the weights file carries them, the optimizer's moments."""
        model.optimizer.build(model.trainable_variables)  # so the saved optimizer variables have a home
        model.load_weights(self.folder / "last.weights.h5")


class CheckpointCallback(keras.callbacks.Callback):
    """Saves the epoch, then decides on early stopping; state.json is written last, so a kill
    between the weight files and it just repeats the epoch."""

    def __init__(self, checkpoint: Checkpoint, patience: int, write: bool = True, min_epochs: int = 0):
        super().__init__()
        self.checkpoint, self.patience, self.write, self.min_epochs = checkpoint, patience, write, min_epochs

    def on_epoch_end(self, epoch, logs=None):
        state = self.checkpoint.state
        logs = {k: float(v) for k, v in (logs or {}).items()}
        check_finite(logs, epoch + 1)  # before anything is saved: a NaN model is never checkpointed
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(value)
        val_loss = logs.get("val_loss", logs.get("loss"))
        improved = state["best_val_loss"] is None or val_loss < state["best_val_loss"]
        if improved:
            state["best_val_loss"], state["best_epoch"], state["wait"] = val_loss, epoch + 1, 0
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        if self.write:
            if improved:
                self.checkpoint.save_model(self.model, "best")
            self.checkpoint.save_model(self.model, "last")
            self.checkpoint.save_state()
        if state["wait"] >= self.patience and epoch + 1 >= self.min_epochs:
            self.model.stop_training = True


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message names the epoch and the likely causes."""


def check_finite(logs: dict[str, float], epoch: int) -> None:
    bad = {k: v for k, v in logs.items() if k in ("loss", "val_loss") and not np.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingDiverged(
            f"Training stopped at epoch {epoch}: the loss is not finite ({shown}); no model was registered. Likely "
            "causes: vote counts that are wrong (look at the conversion's rejected.csv and the catalog's largest "
            "counts), or a learning rate too high for this model (try learning_rate 10x lower). The checkpoint "
            "keeps the last finite epoch.")


def default_checkpoint_dir(key: str) -> Path:
    return Path("data") / "checkpoints" / key
