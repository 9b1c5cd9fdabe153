"""Models registered by an earlier Zoobot keep loading, predicting and staying stochastic after the
package's modules move: users' registries hold such models for years.

The earlier Zoobot is the package as it was at LEGACY_COMMIT, taken from this repository's own
history, which logs and registers a tiny model in a subprocess; the current code then loads it."""

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
LEGACY_COMMIT = "fbec657"  # the last commit with the flat package (before the subpackages)

# Written against the flat package's module names, as they were at LEGACY_COMMIT.
LOG_A_MODEL = """
from types import SimpleNamespace
import mlflow
from zoobot import tracking
from zoobot.model import ModelConfig, build_model
from zoobot.schema import load_schema

schema = load_schema("decals")
config = ModelConfig(filters="4", dense_units=8)
model = build_model(config, schema, (16, 16, 3))
mlflow.set_experiment("legacy")
with mlflow.start_run():
    tracking.log_model(model, SimpleNamespace(schema=schema.to_dict()),
                       SimpleNamespace(registered_model_name="legacy", champion_alias="champion"), config, 1.0)
"""

LOAD_AND_PREDICT = """
import sys
import numpy as np
import mlflow
if sys.argv[1] == "after-import":
    import zoobot.tracking  # the current package already loaded when the old model arrives
model = mlflow.pyfunc.load_model("models:/legacy@champion")
images = np.full((2, 16, 16, 3), 128.0, dtype="float32")
np.save(sys.argv[2], np.stack([model.predict(images, params={"n_samples": 4}) for _ in range(2)]))
"""


@pytest.fixture(scope="module")
def legacy_store(tmp_path_factory):
    has_commit = subprocess.run(["git", "cat-file", "-e", f"{LEGACY_COMMIT}^{{commit}}"], cwd=ROOT,
                                capture_output=True).returncode == 0
    if not has_commit:
        pytest.skip(f"this clone has no commit {LEGACY_COMMIT} (a shallow clone?): fetch the full history")
    root = tmp_path_factory.mktemp("legacy")
    old = root / "old_zoobot"
    old.mkdir()
    archive = subprocess.run(["git", "archive", LEGACY_COMMIT, "zoobot"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    env = _env(root, PYTHONPATH=str(old))
    logged = subprocess.run([sys.executable, "-c", LOG_A_MODEL], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert logged.returncode == 0, logged.stderr[-3000:]
    return root


@pytest.mark.parametrize("when", ["fresh-process", "after-import"])
def test_a_model_registered_by_the_flat_package_still_loads_and_samples(legacy_store, when):
    out = legacy_store / f"samples-{when}.npy"
    loaded = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, when, str(out)], cwd=legacy_store,
                            env=_env(legacy_store), capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    first, second = np.load(out)
    assert first.shape == (2, 34, 4) and np.isfinite(first).all()
    assert not np.allclose(first, second)  # MC dropout is still on in the old model's pyfunc


def _env(root, **extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
