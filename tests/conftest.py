"""Shared fixtures: tiny catalogs laid out like the published Galaxy Zoo releases, and tiny images.

Everything is written under pytest's tmp_path; nothing outside it is touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoobot.core.schema import GZ2, GZ_DECALS, Schema

# Keep TensorFlow quiet and on the CPU in every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REAL_DATA = Path(__file__).parent / "data" / "real"
HART16_SUFFIXES = ("count", "weight", "fraction", "weighted_fraction", "debiased", "flag")


def cascade_counts(schema: Schema, n: int, rng: np.random.Generator, first: int = 40) -> np.ndarray:
    """Vote counts that respect the tree: each question is answered by those who gave its parent answer."""
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    index = {c: i for i, c in enumerate(schema.label_cols)}
    groups = dict(zip(schema.question_names, schema.question_index_groups))
    for q in schema.ordered_questions():
        a, b = groups[q.name]
        totals = np.full(n, first) if q.follows is None else counts[:, index[q.follows]]
        for i in range(n):
            counts[i, a:b] = rng.multinomial(totals[i], rng.dirichlet(np.ones(b - a)))
    return counts


def write_pngs(folder: Path, names: list[str], size: int = 24, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def decals_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Columns as in the GZ DECaLS DR5 volunteer catalogue: iauname, ra, dec, per question
    `{question}_total-votes`, per answer the count, `_fraction` and `_debiased`."""
    rng = np.random.default_rng(seed)
    counts = cascade_counts(GZ_DECALS, n, rng)
    frame = {
        "iauname": [f"J{10 + i:02d}0000.00+0{i % 10}0000.0" for i in range(n)],
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-10, 30, n),
    }
    fractions = GZ_DECALS.vote_fractions(counts)
    for q, (a, b) in zip(GZ_DECALS.questions, GZ_DECALS.question_index_groups):
        frame[f"{q.name}_total-votes"] = counts[:, a:b].sum(axis=1)
        for j, column in enumerate(q.columns, start=a):
            frame[column] = counts[:, j]
            frame[f"{column}_fraction"] = fractions[:, j]
            frame[f"{column}_debiased"] = fractions[:, j]
    return pd.DataFrame(frame)


def hart16_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """The Hart et al. 2016 GZ2 table's column set: dr7objid, ra, dec, rastring, decstring, sample,
    gz2_class, total_classifications, total_votes, and per answer _count, _weight, _fraction,
    _weighted_fraction, _debiased, _flag."""
    rng = np.random.default_rng(seed)
    counts = cascade_counts(GZ2, n, rng)
    fractions = np.nan_to_num(GZ2.vote_fractions(counts))
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-10, 60, n)
    frame = {
        "dr7objid": 587722981741363294 + np.arange(n, dtype=np.int64) * 1000003,
        "ra": ra,
        "dec": dec,
        "rastring": [f"{r / 15:02.0f}:00:00.00" for r in ra],
        "decstring": [f"{d:+03.0f}:00:00.0" for d in dec],
        "sample": "original",
        "gz2_class": rng.choice(["Er", "Ei", "Sc", "SBb", "Ser"], n),
        "total_classifications": counts[:, :3].sum(axis=1),
        "total_votes": counts.sum(axis=1),
    }
    for j, column in enumerate(GZ2.label_cols):
        stem = column[: -len("_count")]
        frame[f"{stem}_count"] = counts[:, j]
        frame[f"{stem}_weight"] = counts[:, j].astype(float)
        frame[f"{stem}_fraction"] = fractions[:, j]
        frame[f"{stem}_weighted_fraction"] = fractions[:, j]
        frame[f"{stem}_debiased"] = fractions[:, j]
        frame[f"{stem}_flag"] = (fractions[:, j] > 0.8).astype(int)
    return pd.DataFrame(frame)


@pytest.fixture
def decals_catalog(tmp_path) -> Path:
    """A 12-galaxy GZ DECaLS catalog CSV with relative image paths to real PNG files."""
    frame = decals_frame(12)
    write_pngs(tmp_path / "images", list(frame["iauname"]))
    frame["file_loc"] = [f"images/{name}.png" for name in frame["iauname"]]
    path = tmp_path / "gz_decals_volunteers.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def hart16_catalog(tmp_path) -> Path:
    frame = hart16_frame(8)
    write_pngs(tmp_path / "gz2_images", [str(i) for i in frame["dr7objid"]])
    frame["file_loc"] = [f"gz2_images/{i}.png" for i in frame["dr7objid"]]
    path = tmp_path / "gz2_hart16.csv"
    frame.to_csv(path, index=False)
    return path


# -- real services -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 90, context=None) -> None:
    """Until `url` answers 200 (`context`: the ssl.SSLContext for an https server's certificate)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_mlflow_server(root: Path, port: int | None = None, backend_store_uri: str | None = None,
                        extra_args: tuple[str, ...] = (), env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` process on localhost (SQLite store and served artifacts in `root`
    unless told otherwise), its output appended to root/server.log; returns (process, uri) once
    /health answers."""
    port = port or free_port()
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri",
             backend_store_uri or f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # no GenAI job runner (a job consumer per core) for a tracking-only test server
            env={**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", process)
    except BaseException:
        stop_process_group(process, grace=0)
        raise
    return process, uri


def stop_process_group(process: subprocess.Popen, grace: float = 5, sig=signal.SIGTERM) -> None:
    """Stop a server started with start_new_session and all its workers: `sig`, then SIGKILL to the
    whole group after `grace` s (MLflow's workers and job consumers outlive their parent otherwise;
    they hold nothing unsaved, as the stores commit every write)."""
    for signal_ in ((sig, signal.SIGKILL) if grace else (signal.SIGKILL,)):
        try:
            os.killpg(process.pid, signal_)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace or 30)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` process on localhost with a SQLite store and served artifacts."""
    process, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield uri
    finally:
        stop_process_group(process)


def mlflow_run(entry_point: str, params: dict, tracking_uri: str | None, cwd: Path, experiment: str,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`mlflow run` of this project, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    command = [str(VENV_BIN / "mlflow"), "run", str(ROOT), "-e", entry_point, "--env-manager", "local",
               "--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"mlflow run -e {entry_point} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def kill_after_epoch(process: subprocess.Popen, state: Path, epoch: int, timeout: float = 240) -> int:
    """SIGKILL a training process (started with start_new_session) once its checkpoint has finished
    `epoch`; the epoch the checkpoint holds after the kill."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= epoch:
            break
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return json.loads(state.read_text())["epoch"]


# -- tiny shards for model tests -------------------------------------------------------------------

TINY_MODEL = {"filters": "4,8", "dense_units": 16}


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """48 simulated galaxies at 32x32, converted: train 34 / validation 5 / test 9 (split by seed)."""
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.simulate import SimulateConfig, simulate_survey

    root = tmp_path_factory.mktemp("tiny")
    survey = simulate_survey(SimulateConfig(output_dir=str(root / "survey"), n_galaxies=48, image_size=32,
                                            seed=5, workers=1))
    convert(ConvertConfig(catalog=str(survey.catalog_path), output_dir=str(root / "shards"), image_size=32,
                          shard_size=16, workers=1))
    return root / "shards"


@pytest.fixture(scope="session", autouse=True)
def zoobot_cache_dir(tmp_path_factory):
    """Shard verification remembers hashed files in a cache folder; the tests get their own."""
    folder = tmp_path_factory.mktemp("zoobot_cache")
    os.environ["ZOOBOT_CACHE_DIR"] = str(folder)  # inherited by `zoobot` and `mlflow run` subprocesses too
    yield folder


@pytest.fixture(autouse=True)
def mlflow_state_does_not_leak():
    """Each test starts from the process's MLflow state: no tracking URI pinned by a previous test,
    no MLFLOW_* variable it exported, no open run. Later tests start subprocesses that inherit the
    environment, so a leak breaks them, not the culprit.

    Public API only: `mlflow.set_tracking_uri(None)` returns MLflow to "read the URI from the
    environment", the state a test process starts in. (Tests never call `mlflow.set_experiment`
    in-process: it pins the experiment for the rest of the process, with no public way back;
    they create experiments with MlflowClient instead.)"""
    import mlflow

    environment = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in environment]:
        del os.environ[key]
    os.environ.update(environment)


@pytest.fixture
def sqlite_tracking(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store for this test, and the artifacts beside it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; it must not outlive the test (later
    # subprocesses would look for that experiment in their own stores)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    monkeypatch.chdir(tmp_path)  # ./mlruns artifacts and data/ defaults land in tmp_path
    return uri
