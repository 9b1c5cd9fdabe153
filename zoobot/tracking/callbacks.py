"""Training's metrics into the active run: a plain Keras callback the entry point hands to `train`,
and the catch-up after a restart."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient


def metrics_logger():
    """A Keras callback logging every epoch's metrics to the active run, at step = epoch (1-based)."""
    import keras

    class MetricsLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    return MetricsLogger()


def backfill_history(history: dict[str, list[float]]) -> int:
    """Log the epochs a killed process finished but did not get to log; returns how many.

    The checkpoint's history is the truth; MLflow gets whatever steps it lacks, so a restart leaves
    the run's curves without gaps or duplicates.
    """
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    missing = 0
    for key, values in history.items():
        logged = {m.step for m in client.get_metric_history(run_id, key)}
        for step, value in enumerate(values, start=1):
            if step not in logged:
                mlflow.log_metric(key, value, step=step)
                missing += 1
    return missing
