"""End to end: `mlflow run` convert -> train -> predict -> evaluate against a real `mlflow server`;
the registered champion loaded with mlflow.pyfunc in a fresh process stays Bayesian; and
`mlflow models serve` scores two images over HTTP with different MC samples each call."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, VENV_BIN, free_port, mlflow_run, wait_for_http
from zoobot.model.predict import read_predictions

pytestmark = pytest.mark.slow
EXPERIMENT = "e2e-model"


def latest_run(client, step):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.step = '{step}'",
                              order_by=["attributes.start_time DESC"])
    return runs[0]


def test_train_predict_evaluate_serve(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)
    mlflow_run("simulate", {"n_galaxies": 60, "image_size": 32, "output_dir": tmp_path / "survey"},
               mlflow_server, tmp_path, EXPERIMENT)
    mlflow_run("convert", {"catalog": tmp_path / "survey" / "catalog.csv", "output_dir": tmp_path / "shards",
                           "image_size": 32}, mlflow_server, tmp_path, EXPERIMENT)
    convert_run = latest_run(client, "convert")

    # train from the convert run's URI, registering the model
    trained = mlflow_run("train", {"shards": f"runs:/{convert_run.info.run_id}", "epochs": 2, "batch_size": 8,
                                   "registered_model_name": "e2e-galaxies", "checkpoint_dir": tmp_path / "ckpt",
                                   **TINY_MODEL}, mlflow_server, tmp_path, EXPERIMENT)
    assert "CloudPickle" not in trained.stdout + trained.stderr  # the model is logged as code
    assert "Add type hints" not in trained.stdout + trained.stderr
    train_run = latest_run(client, "train")
    history = client.get_metric_history(train_run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert "training_curves.png" in {a.path for a in client.list_artifacts(train_run.info.run_id)}
    assert train_run.data.params["architecture"] == "vgg" and train_run.data.tags["step"] == "train"
    champion = client.get_model_version_by_alias("e2e-galaxies", "champion")
    assert champion.run_id == train_run.info.run_id
    from zoobot import tracking

    assert tracking.local_model_path(f"runs:/{train_run.info.run_id}").name == "model.keras"  # by run URI too

    model_uri = "models:/e2e-galaxies@champion"
    mlflow_run("predict", {"model": model_uri, "shards": tmp_path / "shards", "output_dir": tmp_path / "pred",
                           "n_samples": 5}, mlflow_server, tmp_path, EXPERIMENT)
    predictions = read_predictions(tmp_path / "pred" / "samples.parquet")
    assert predictions.samples.shape == (60, 34, 5)

    mlflow_run("evaluate", {"model": model_uri, "shards": tmp_path / "shards", "n_samples": 10},
               mlflow_server, tmp_path, EXPERIMENT)
    evaluate_run = latest_run(client, "evaluate")
    metrics = evaluate_run.data.metrics
    for key in ("test_rmse", "test_smooth-or-featured_rmse", "test_smooth-or-featured_accuracy",
                "test_coverage_error_w5", "test_coverage_error_w10", "test_loglik_gain"):
        assert key in metrics, key
    assert {"coverage_votes.png", "calibration.png", "posterior_examples.png", "coverage.json"} <= {
        a.path for a in client.list_artifacts(evaluate_run.info.run_id)}

    # a fresh process loads the registered champion and gets different MC samples on two calls
    code = (
        "import mlflow, numpy as np, json;"
        f"m = mlflow.pyfunc.load_model('{model_uri}');"
        "x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype('float32');"
        "a = m.predict(x, params={'n_samples': 4}); b = m.predict(x, params={'n_samples': 4});"
        "print(json.dumps({'shape': list(a.shape), 'differ': bool(not np.allclose(a, b)),"
        " 'spread': float(a.std(axis=-1).mean())}))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["shape"] == [2, 34, 4] and answer["differ"] and answer["spread"] > 0

    # and the same model served over REST
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env={**env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).round().tolist()

        def score(images=images, **params):
            body = json.dumps({"inputs": images, "params": {"n_samples": 3, **params}}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["predictions"]

        first, second = np.asarray(score()), np.asarray(score())
        assert first.shape == (2, 34, 3)
        assert not np.allclose(first, second)

        # named vote fractions on request, one row per galaxy, and a warning for images scaled to [0, 1]
        rows = score(output="fractions")
        assert len(rows) == 2 and rows[0]["warning"] == ""
        assert 0 <= rows[0]["smooth-or-featured_smooth_low"] <= rows[0]["smooth-or-featured_smooth_high"] <= 1
        assert abs(sum(rows[1][f"smooth-or-featured_{a}_mean"] for a in ("smooth", "featured-or-disk", "artifact"))
                   - 1) < 1e-4
        scaled = (np.asarray(images) / 255).tolist()
        assert "multiply by 255" in score(scaled, output="fractions")[0]["warning"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
