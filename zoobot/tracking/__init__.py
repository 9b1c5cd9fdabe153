"""The MLflow side of Zoobot: runs, artifacts, the registry, the served model, and one logging
function per step. `from zoobot import tracking` gives the whole API."""

from zoobot.tracking.mlflow_io import *  # noqa: F401,F403
from zoobot.tracking.mlflow_io import ZoobotPyfunc  # noqa: F401  (models logged before the move name it here)
