"""MLflow entry points for single steps: `python entrypoints/step.py STEP --option value ...`.

MLproject runs each step through this file; it is the `zoobot` command itself (see
`zoobot STEP --help`), so a step behaves the same under `mlflow run` and on the command line: the
package's click command parses the parameters, opens the run (resuming the one `mlflow run`
created), calls the package and logs the outputs.
"""

import sys
from pathlib import Path

# `mlflow run` starts this script from the project folder; make the package importable even
# when the project was not pip-installed into the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoobot.cli import main  # noqa: E402

if __name__ == "__main__":
    main(prog_name="zoobot")
