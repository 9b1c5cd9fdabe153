"""Zoobot's benchmarks in one command: a table on screen, a JSON report, and an MLflow run.

    .venv/bin/python benchmarks/run.py --quick true        # speed and memory figures, < 10 min on 2 cores
    .venv/bin/python benchmarks/run.py                     # everything, science figures included (55 min on two quiet cores)
    .venv/bin/python benchmarks/run.py --tiny true         # smallest sizes: checks the harness runs

The same as `zoobot benchmark ...` and `mlflow run . -e benchmark --env-manager local -P quick=true`.
The run is logged to MLFLOW_TRACKING_URI (default: ./mlflow.db); `--help` lists every option.
"""

import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoobot.cli.benchmark import build  # noqa: E402

if __name__ == "__main__":
    build()(prog_name="benchmarks/run.py")
