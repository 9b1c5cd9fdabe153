#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv if needed, then runs the `main` entry point
# (a simulated survey through the pipeline) against the local SQLite tracking store ./mlflow.db.
# Extra arguments go to `mlflow run`, e.g. -P n_galaxies=2000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # the entry points run `python`: the project's own
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
mlflow run . --env-manager local --experiment-name zoobot-default "$@"
echo
echo "Done. Browse the runs with:"
echo "  .venv/bin/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI --port 5000"
echo "then open http://127.0.0.1:5000 (switch the toggle at the top left to 'Model training')."
