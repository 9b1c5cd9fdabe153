#!/usr/bin/env bash
# Create the project's virtual environment in .venv and install Zoobot into it (editable), with
# the test tools. Safe to run again: it reinstalls only when pyproject.toml changed.
# PYTHON=/path/to/python3.11 picks the interpreter (Python 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system_deps.sh

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Zoobot needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
  echo "Install one and run again with PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.zoobot-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing Zoobot and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test,server,spark]"
  echo "$want" > "$stamp"
fi
