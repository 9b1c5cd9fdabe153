"""The tracking package's shape: one concern per module, no process-wide side effects on import,
one set of tag names, every name its callers use still on `zoobot.tracking`, registered models
still loading, and the benchmark's scratch store leaving the caller's tracking URI as it found it."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import mlflow
import pytest

from tests.conftest import ROOT

MAX_MODULE_LINES = 400
CALLER_FOLDERS = ("zoobot", "entrypoints", "benchmarks", "tests")
# Imported before the snapshot: scipy.special adds a filter of its own on import, which is not ours to judge.
THIRD_PARTY = ("numpy", "pandas", "yaml", "scipy.special", "matplotlib.pyplot", "mlflow", "mlflow.pyfunc",
               "mlflow.tracking")
ADVICE = ("Add type hints to the `predict` method", "An input example was not provided", "CloudPickle")


def python(code: str, *args, cwd=ROOT, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_importing_tracking_leaves_the_warning_filters_alone():
    code = f"""
import importlib, json, warnings
for name in {THIRD_PARTY!r}:
    importlib.import_module(name)
before = [repr(f) for f in warnings.filters]
import zoobot.tracking
print(json.dumps([f for f in map(repr, warnings.filters) if f not in before]))
"""
    done = python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_every_tracking_module_is_under_400_lines():
    lengths = {path.name: len(path.read_text().splitlines()) for path in (ROOT / "zoobot" / "tracking").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n >= MAX_MODULE_LINES} == {}
    assert {"runs.py", "artifacts.py", "registry.py", "pyfunc.py", "step_logs.py", "scratch.py"} <= set(lengths)


def test_tag_names_import_without_mlflow():
    done = python("import sys, zoobot.core.tags; print(sorted(m for m in ('mlflow', 'tensorflow', 'keras') "
                  "if m in sys.modules))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_tag_names_are_one_set():
    from zoobot import tracking
    from zoobot.core import tags as tag_names

    names = {name: value for name, value in vars(tag_names).items() if name.isupper()}
    assert len(set(names.values())) == len(names)  # no two constants for one tag
    on_facade = [name for name in dir(tracking) if name.startswith("TAG_")]
    assert len(on_facade) >= 5
    assert {name: getattr(tracking, name) for name in on_facade} == \
        {name: names[name.removeprefix("TAG_")] for name in on_facade}


def test_every_name_callers_use_is_on_the_facade():
    import zoobot.tracking as tracking

    used = set()
    for folder in CALLER_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "from zoobot import tracking" in text:
                used |= set(re.findall(r"(?<![\w.])tracking\.([A-Za-z_]\w*)", text))
    assert len(used) > 20
    missing = [name for name in sorted(used) if not hasattr(tracking, name)
               and importlib.util.find_spec(f"zoobot.tracking.{name}") is None]
    assert missing == []


def test_the_served_class_is_pickled_under_its_public_name():
    import cloudpickle

    import zoobot.tracking
    import zoobot.tracking.mlflow_io

    data = cloudpickle.dumps(zoobot.tracking.ZoobotPyfunc())
    assert b"zoobot.tracking" in data and b"zoobot.tracking.pyfunc" not in data
    assert len(data) < 500  # by reference, not the class's code by value
    assert zoobot.tracking.mlflow_io.ZoobotPyfunc is zoobot.tracking.ZoobotPyfunc  # models logged at the move


LOG_A_MODEL = """
import inspect
import sys
from types import SimpleNamespace
import mlflow
from zoobot import tracking
from zoobot.core.schema import load_schema
from zoobot.model.network import ModelConfig, build_model

schema = load_schema("decals")
config = ModelConfig(filters="4", dense_units=8)
model = build_model(config, schema, (16, 16, 3))
mlflow.set_experiment("layout")
with mlflow.start_run():
    print("logging", file=sys.stderr)
    manifest = SimpleNamespace(schema=schema.to_dict(), schema_obj=schema, image_shape=(16, 16, 3),
                               counts={"train": 8}, catalog={"path": "catalog.csv"}, root="shards")
    # an older package (test_a_model_registered_at_the_move...) has no model card and no `training`
    card = {"training": "a test"} if "training" in inspect.signature(tracking.log_model).parameters else {}
    tracking.log_model(model, manifest, SimpleNamespace(registered_model_name=sys.argv[1], champion_alias="champion"),
                       config, 1.0, **card)
"""


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONWARNINGS": "always", **extra}


def test_importing_and_logging_a_model_prints_no_mlflow_advice(tmp_path):
    done = python(LOG_A_MODEL, "layout", cwd=tmp_path, env=_env(tmp_path, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [advice for advice in ADVICE if advice in done.stderr] == []


@pytest.mark.slow
def test_a_model_registered_at_the_move_still_loads_after_import(tmp_path):
    """Models logged between the move into subpackages and the split of mlflow_io name the class
    `zoobot.tracking.mlflow_io.ZoobotPyfunc`; in a process that has already imported the current
    package (the CLI, Spark workers) that name must resolve in the current package."""
    move_commit = _commit_that_made_mlflow_io()
    if not move_commit:
        pytest.skip("no commit with zoobot/tracking/mlflow_io.py in this clone (a shallow clone?): fetch the history")
    old = tmp_path / "old_zoobot"
    old.mkdir()
    archive = subprocess.run(["git", "archive", move_commit, "zoobot"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    logged = python(LOG_A_MODEL, "moved", cwd=tmp_path, env=_env(tmp_path, PYTHONPATH=str(old)))
    assert logged.returncode == 0, logged.stderr[-3000:]
    load = """
import sys
import numpy as np
import mlflow
import zoobot.tracking  # the current package, before the model arrives
model = mlflow.pyfunc.load_model("models:/moved@champion")
assert type(model.unwrap_python_model()).__module__ == "zoobot.tracking", type(model.unwrap_python_model())
images = np.full((2, 16, 16, 3), 128.0, dtype="float32")
first, second = (model.predict(images, params={"n_samples": 4}) for _ in range(2))
assert first.shape == (2, 34, 4) and not np.allclose(first, second)
"""
    loaded = python(load, cwd=tmp_path, env=_env(tmp_path, PYTHONPATH=str(ROOT)))
    assert loaded.returncode == 0, loaded.stderr[-3000:]


def _commit_that_made_mlflow_io() -> str:
    """The move into subpackages: the first commit with zoobot/tracking/mlflow_io.py, found by path
    rather than by hash, which a rebase changes."""
    log = subprocess.run(["git", "log", "--reverse", "--format=%H", "--", "zoobot/tracking/mlflow_io.py"], cwd=ROOT,
                         capture_output=True, text=True)
    commits = log.stdout.split()
    if not commits:
        return ""
    text = subprocess.run(["git", "show", f"{commits[0]}:zoobot/tracking/mlflow_io.py"], cwd=ROOT,
                          capture_output=True, text=True).stdout
    return commits[0] if "class ZoobotPyfunc" in text else ""


# -- the benchmark's scratch store -----------------------------------------------------------------------


def test_scratch_store_leaves_a_uri_from_the_environment_unpinned(tmp_path, monkeypatch):
    from zoobot import tracking

    users = f"sqlite:///{tmp_path}/users.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)
    monkeypatch.setenv("MLFLOW_RUN_ID", "a-run-of-the-caller")
    with tracking.scratch_store(tmp_path / "scratch") as experiment_id:
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'scratch' / 'mlflow.db'}"
        assert mlflow.get_experiment(experiment_id).name == "benchmark-scratch"
        assert "MLFLOW_RUN_ID" not in os.environ
    assert mlflow.get_tracking_uri() == users
    assert os.environ["MLFLOW_RUN_ID"] == "a-run-of-the-caller"
    later = f"sqlite:///{tmp_path}/later.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", later)
    assert mlflow.get_tracking_uri() == later  # still read from the environment, not pinned


def test_scratch_store_restores_a_uri_pinned_with_set_tracking_uri(tmp_path, monkeypatch):
    from zoobot import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pinned = f"sqlite:///{tmp_path}/pinned.db"
    mlflow.set_tracking_uri(pinned)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/ignored.db")  # the pin outranks it
    with tracking.scratch_store(tmp_path / "scratch"):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'scratch' / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == pinned
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/ignored.db"
