#!/usr/bin/env bash
# Run the test suite: sets up .venv if needed, then pytest. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not slow"     # the fast tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/python -m pytest "$@"
