"""The tracking server going away mid-run: the local work is kept, the error says what happened,
and the same command run again once the server is back resumes instead of starting over."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY_MODEL, free_port, start_mlflow_server, stop_process_group

pytestmark = pytest.mark.slow


def start_server(root, port) -> subprocess.Popen:
    return start_mlflow_server(root, port)[0]


def stop(process, sig=signal.SIGKILL):
    stop_process_group(process, grace=0 if sig == signal.SIGKILL else 5)


def test_training_survives_the_server_going_away_and_resumes_when_it_is_back(tiny_shards, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    checkpoint = tmp_path / "ckpt"
    command = [sys.executable, str(ROOT / "entrypoints" / "step.py"), "train", "--shards", str(tiny_shards),
               "--batch-size", "8", "--epochs", "10", "--patience", "100", "--checkpoint-dir", str(checkpoint),
               "--filters", TINY_MODEL["filters"], "--dense-units", str(TINY_MODEL["dense_units"])]
    # fail fast instead of MLflow's default minutes of retries, so the test is short
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    try:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        state = checkpoint / "state.json"
        deadline = time.time() + 300
        while time.time() < deadline:
            if state.is_file() and json.loads(state.read_text())["epoch"] >= 2:
                break
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.1)
        stop(server)  # the server vanishes mid-training
        out, err = process.communicate(timeout=300)
        assert process.returncode != 0
        assert "Lost the MLflow tracking server at " + uri in err, err[-3000:]
        assert "rerun the same command" in err and "Traceback" not in err
        kept = json.loads(state.read_text())
        assert 2 <= kept["epoch"] < 10 and (checkpoint / "last.weights.h5").is_file()

        server = start_server(tmp_path, port)  # back, same store
        rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        run_id = kept["meta"]["run_id"]
        assert f"Resuming run {run_id} from epoch" in rerun.stdout
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "loss")]
        assert sorted(steps) == list(range(1, 11))  # the epochs logged before, after, and the one lost in between
    finally:
        stop(server, signal.SIGTERM)
