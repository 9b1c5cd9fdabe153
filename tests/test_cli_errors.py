"""What a command is pointed at is checked before the work starts: a tracking server nobody runs
fails in seconds (not after minutes of retries and a "lost mid-run" message), and a model reference
that leads nowhere (no such registered model, alias, version, logged model, run or path; a run that
failed) is one line naming the reference, the reason and what to give instead, not an MLflow
traceback."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, write_pngs
from tests.servers import run_zoobot
from zoobot.cli import main
from zoobot.tracking.references import ModelReferenceError, TrackingServerError, check_tracking_server, resolve_model

# -- (7) a tracking server that was never there ---------------------------------------------------------


def test_simulate_against_a_server_nobody_runs_fails_in_seconds_and_says_how_to_fix_it(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # a free port: nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    result = run_zoobot(["simulate", "--n-galaxies", "4", "--image-size", "16", "--output-dir", tmp_path / "survey"],
                        env=env, cwd=tmp_path, timeout=90, check=False)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert elapsed < 20, f"took {elapsed:.0f} s"
    assert f"cannot reach the tracking server at {uri}" in output.lower(), output[-3000:]
    assert "MLFLOW_TRACKING_URI" in output and "scripts/tracking_server.sh" in output
    assert "Traceback" not in output and "mid-run" not in output and "checkpoints" not in output
    assert not (tmp_path / "survey").exists()  # checked before the work started
    # asking for help needs no server
    helped = CliRunner().invoke(main, ["simulate", "--help"], env={"MLFLOW_TRACKING_URI": uri})
    assert helped.exit_code == 0 and "--n-galaxies" in helped.output


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Start a localhost HTTP server answering every GET with a chosen status; yields a function
    status -> URI."""
    servers = []

    def start(status: int) -> str:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_server_check_accepts_any_answer_but_an_error_and_skips_local_stores(http_server, tmp_path):
    for status in (200, 401, 403):  # 401/403: a server behind MLflow's basic-auth app, asked without a login
        check_tracking_server(http_server(status), timeout=2)
    with pytest.raises(TrackingServerError, match=r"at http://127\.0\.0\.1:\d+ \(/health answered HTTP 503"):
        check_tracking_server(http_server(503), timeout=2, retries=0)
    with pytest.raises(TrackingServerError, match="Connection refused.*unset MLFLOW_TRACKING_URI"):
        check_tracking_server(f"http://127.0.0.1:{free_port()}", retries=0)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.perf_counter()
        with pytest.raises(TrackingServerError, match=r"no answer within 0\.5 s"):
            check_tracking_server(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5, retries=1)
        assert time.perf_counter() - start < 5
    with pytest.raises(TrackingServerError) as raised:
        check_tracking_server(f"http://admin:secret@127.0.0.1:{free_port()}", retries=0)
    assert "secret" not in str(raised.value) and "admin:***@" in str(raised.value)
    for local in (f"sqlite:///{tmp_path}/mlflow.db", f"file://{tmp_path}/mlruns", "postgresql://u@127.0.0.1:1/db"):
        check_tracking_server(local)  # not checked: no network wait to save


# -- (8) model references that lead nowhere ---------------------------------------------------------------

MISSING_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def store(sqlite_tracking, tmp_path) -> dict[str, str]:
    """A tracking store with a registered model 'galaxies' (v1 = @champion), a run that FAILED and a
    finished run that logged no model; returns those references, and the inputs predict needs."""
    client = MlflowClient()
    with mlflow.start_run() as source:
        mlflow.log_text("placeholder", "model/MLmodel")
    client.create_registered_model("galaxies")
    version = client.create_model_version("galaxies", source=f"{source.info.artifact_uri}/model",
                                          run_id=source.info.run_id)
    client.set_registered_model_alias("galaxies", "champion", version.version)
    failed = mlflow.start_run()
    mlflow.end_run("FAILED")
    with mlflow.start_run() as simulate:
        mlflow.set_tag("step", "simulate")
    write_pngs(tmp_path / "images", ["galaxy"])
    (tmp_path / "shards").mkdir()
    return {"failed": f"runs:/{failed.info.run_id}", "no model": f"runs:/{simulate.info.run_id}",
            "images": str(tmp_path / "images"), "shards": str(tmp_path / "shards")}


CASES = {  # reference -> what the one line must say
    "models:/nope@champion": ["no registered model named 'nope'", "registered models: galaxies",
                              "models:/NAME@ALIAS"],
    "models:/galaxies@nope": ["registered model 'galaxies' has no alias 'nope'", "@champion = v1", "versions: 1",
                              "Give models:/galaxies@champion"],
    "models:/galaxies/7": ["registered model 'galaxies' has no version 7", "versions: 1"],
    f"models:/m-{MISSING_ID}": [f"no logged model with id 'm-{MISSING_ID}'"],
    f"runs:/{MISSING_ID}": [f"no run with id '{MISSING_ID}'", "sqlite:///"],
    "no/such/model.keras": ["there is no file or folder", "no/such/model.keras"],
    "failed": ["FAILED and logged no model", "Give a finished train run", "models:/NAME@champion"],
    "no model": ["(a simulate run) logged no model named 'model'"],
}


def one_line_error(result) -> str:
    """The command's error, checked to be a clean one-line click error (no traceback)."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("reference", list(CASES))
def test_predict_with_a_bad_model_reference_says_which_and_why_in_one_line(store, reference):
    ref = store.get(reference, reference)
    result = CliRunner().invoke(main, ["predict", "--model", ref, "--images", store["images"]])
    line = one_line_error(result)
    assert f"Model '{ref}'" in line
    for expected in CASES[reference]:
        assert expected in line, line


def test_evaluate_with_a_bad_model_reference_says_which_and_why_in_one_line(store):
    result = CliRunner().invoke(main, ["evaluate", "--model", "models:/galaxies@nope", "--shards", store["shards"]])
    assert "no alias 'nope'" in one_line_error(result)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_failed_run_as_the_model_is_one_line_from_the_real_command(store, tmp_path, command):
    inputs = ["--images", store["images"]] if command == "predict" else ["--shards", store["shards"]]
    result = run_zoobot([command, "--model", store["failed"], *inputs], env=dict(os.environ), cwd=tmp_path,
                        timeout=120, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert f"Error: Model '{store['failed']}' not found: run " in result.stderr
    assert "FAILED and logged no model" in result.stderr
    assert not (tmp_path / "data" / "predictions").exists()  # nothing was written


def test_a_reference_that_exists_but_holds_no_keras_model_is_a_model_reference_error(tmp_path):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ModelReferenceError, match="No model.keras found"):
        resolve_model(str(empty))


def test_only_errors_zoobot_raised_itself_lose_their_traceback():
    """A ValueError from inside numpy (or pandas, TensorFlow, MLflow) is a bug of Zoobot's and keeps
    its traceback; one Zoobot raised about what it was given is shown as one paragraph."""
    import numpy as np

    from zoobot.cli.options import is_user_error
    from zoobot.data.convert import ConvertConfig

    with pytest.raises(ValueError) as bug:
        np.zeros(4).reshape(3)
    assert not is_user_error(bug.value)
    with pytest.raises(ValueError) as mistake:
        ConvertConfig(catalog="c.csv", shard_size=0)
    assert is_user_error(mistake.value)


def test_no_tensorflow_start_up_lines_on_the_console(tmp_path):
    """TensorFlow's absl/oneDNN start-up lines go straight to fd 2 and ignore TF_CPP_MIN_LOG_LEVEL; the
    package imports it with fd 2 silenced (zoobot._tf), so neither `--help` nor a step that loads a
    model shows them, while Python's own stderr still works after the import."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ZOOBOT_TF_VERBOSE")}
    code = "import sys, zoobot.model.network, keras; print('after', file=sys.stderr)"
    for command in ([sys.executable, "-m", "zoobot.cli", "train", "--help"], [sys.executable, "-c", code]):
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "oneDNN" not in done.stderr and "absl" not in done.stderr, done.stderr
    assert done.stderr.strip() == "after"


# -- experiments by name ---------------------------------------------------------------------------------


def test_experiment_names_the_experiment_of_a_commands_run_and_under_mlflow_run_must_agree(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": uri}
    run_zoobot(["simulate", "--experiment", "my-survey", "--n-galaxies", "4", "--image-size", "16", "--workers", "1",
                "--output-dir", tmp_path / "survey"], env=env, cwd=tmp_path, timeout=300)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("my-survey")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["step"] == "simulate" and run.info.status == "FINISHED"

    # as under `mlflow run`, whose run is already in an experiment: another name is an error saying where to put it
    other = client.create_run(client.create_experiment("elsewhere")).info.run_id
    result = run_zoobot(["simulate", "--experiment", "my-survey", "--n-galaxies", "4", "--image-size", "16",
                         "--output-dir", tmp_path / "again"], env=env | {"MLFLOW_RUN_ID": other}, cwd=tmp_path,
                        timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "already made its run in experiment 'elsewhere'" in output
    assert "--experiment-name my-survey" in output
    assert not (tmp_path / "again").exists()
