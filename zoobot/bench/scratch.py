"""The workflows the benchmark runs for real (run_training, run_campaign) open MLflow runs of their
own. Here those runs go to a throwaway store, not the user's, and are neither children of nor
written into the benchmark's own run."""

from __future__ import annotations

import contextlib
import os

from zoobot.tracking.scratch import in_own_thread  # noqa: F401  (what the figures run their workflows in)

EXPERIMENT_VARIABLE = "MLFLOW_EXPERIMENT_ID"


@contextlib.contextmanager
def scratch_experiment(folder):
    """tracking.scratch_store(folder), with its experiment made the default one for the block.

    The workflows start their runs in MLflow's default experiment, which MLFLOW_EXPERIMENT_ID names;
    scratch_store saved the caller's value of it and puts it back afterwards.
    """
    from zoobot import tracking

    with tracking.scratch_store(folder) as experiment_id:
        os.environ[EXPERIMENT_VARIABLE] = experiment_id
        yield experiment_id
