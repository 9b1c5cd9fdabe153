"""A team tracking server, for real: PostgreSQL started by scripts/postgres_local.sh, `mlflow server`
started by scripts/tracking_server.sh on it, with and without basic auth, and zoobot steps logging
to it from their own processes through MLFLOW_TRACKING_URI. Then four processes logging at once to
one store, SQLite and PostgreSQL, must lose nothing.

The first tests check the scripts' own messages and start nothing (fast); the rest are slow.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, VENV_BIN
from tests.servers import (  # noqa: F401  (fixtures)
    PG_SCRIPT,
    SERVER_SCRIPT,
    burst_value,
    clean_env,
    pg_auth_server,
    pg_server,
    postgres,
    run_zoobot,
    self_signed_certificate,
    start_burst_workers,
    start_tracking_server,
)

slow = pytest.mark.slow


# -- the scripts say what is missing ----------------------------------------------------------------


def run_script(script, args, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], cwd=tmp_path, env=clean_env(**env), capture_output=True,
                          text=True, timeout=60)


def test_tracking_server_script_explains_what_auth_needs(tmp_path):
    missing_key = run_script(SERVER_SCRIPT, ["--auth"], tmp_path)
    assert missing_key.returncode == 1
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in missing_key.stderr
    short = run_script(SERVER_SCRIPT, ["--auth"], tmp_path, MLFLOW_FLASK_SERVER_SECRET_KEY="k" * 32,
                       MLFLOW_AUTH_ADMIN_PASSWORD="short")
    assert short.returncode == 1 and "at least 12" in short.stderr
    no_password = run_script(SERVER_SCRIPT, ["--auth"], tmp_path, MLFLOW_FLASK_SERVER_SECRET_KEY="k" * 32)
    assert no_password.returncode == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in no_password.stderr
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_tracking_server_script_refuses_to_serve_other_machines_unsafely(tmp_path):
    open_to_all = run_script(SERVER_SCRIPT, ["--host", "0.0.0.0"], tmp_path)
    assert open_to_all.returncode == 1
    message = open_to_all.stderr
    assert "--host 0.0.0.0 serves other machines" in message
    assert "--auth (without it" in message and "--tls-cert FILE --tls-key FILE" in message
    assert "--allowed-hosts NAMES" in message and "add --insecure" in message
    cert, key = self_signed_certificate(tmp_path / "tls")
    almost = run_script(SERVER_SCRIPT, ["--host", "0.0.0.0", "--tls-cert", cert, "--tls-key", key,
                                        "--allowed-hosts", "mlflow.example.org"], tmp_path)
    assert almost.returncode == 1 and "--auth (without it" in almost.stderr and "--tls-cert FILE" not in almost.stderr
    one_half = run_script(SERVER_SCRIPT, ["--tls-cert", cert], tmp_path)
    assert one_half.returncode == 1 and "needs both --tls-cert" in one_half.stderr
    other_cert, _ = self_signed_certificate(tmp_path / "other")
    mismatched = run_script(SERVER_SCRIPT, ["--tls-cert", other_cert, "--tls-key", key], tmp_path)
    assert mismatched.returncode == 1 and "do not make a usable pair" in mismatched.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was made


def test_tracking_server_script_rejects_bad_stores(tmp_path):
    not_a_uri = run_script(SERVER_SCRIPT, ["--backend-store-uri", "./mlflow.db"], tmp_path)
    assert not_a_uri.returncode == 1 and "sqlite:///" in not_a_uri.stderr
    pytest.importorskip("psycopg2")
    closed = run_script(SERVER_SCRIPT, ["--backend-store-uri", "postgresql+psycopg2://zoo:secret@127.0.0.1:1/mlflow"],
                        tmp_path)
    assert closed.returncode == 1
    assert "cannot connect" in closed.stderr and "postgres_local.sh" in closed.stderr
    assert "secret" not in closed.stderr  # the password is masked


def test_postgres_script_explains_usage_and_missing_binaries(tmp_path):
    usage = run_script(PG_SCRIPT, [], tmp_path)
    assert usage.returncode == 2 and "start DIR" in usage.stderr
    no_folder = run_script(PG_SCRIPT, ["start"], tmp_path)
    assert no_folder.returncode == 1 and "folder" in no_folder.stderr
    bad_bin = run_script(PG_SCRIPT, ["start", str(tmp_path / "pg")], tmp_path, PG_BIN=str(tmp_path / "nowhere"))
    assert bad_bin.returncode == 1 and "initdb" in bad_bin.stderr


# -- a zoobot step on the PostgreSQL-backed server ----------------------------------------------------


@slow
def test_train_logs_to_the_postgres_backed_server(pg_server, postgres, tiny_shards, tmp_path):
    env = clean_env(MLFLOW_TRACKING_URI=pg_server.uri, MLFLOW_EXPERIMENT_NAME="team-train")
    run_zoobot(["train", "--shards", tiny_shards, "--epochs", 1, "--batch_size", 8, "--checkpoint_dir",
                tmp_path / "ckpt", "--registered_model_name", "team-galaxies",
                *[f"--{k}={v}" for k, v in TINY_MODEL.items()]], env, cwd=tmp_path)

    client = MlflowClient(pg_server.uri)
    experiment = client.get_experiment_by_name("team-train")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.step = 'train'")
    assert run.info.status == "FINISHED"
    assert {k: run.data.params[k] for k in ("epochs", "batch_size", "filters", "dense_units")} == {
        "epochs": "1", "batch_size": "8", "filters": "4,8", "dense_units": "16"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert run.data.metrics["epochs_run"] == 1
    assert {"config.json", "training_curves.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    # artifacts went through the server into its --artifacts-destination, the model's included
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(pg_server.artifacts.rglob("training_curves.png"))
    assert list(pg_server.artifacts.rglob("model.keras"))

    version = client.get_model_version_by_alias("team-galaxies", "champion")
    assert (version.version, version.run_id) == ("1", run.info.run_id)

    # and the record is in PostgreSQL itself, not in some fallback store
    assert postgres.query("SELECT status FROM runs WHERE run_uuid = %s", run.info.run_id) == [("FINISHED",)]
    assert postgres.query("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'val_loss'",
                          run.info.run_id) == [(1,)]
    assert postgres.query("SELECT version FROM model_versions WHERE name = 'team-galaxies'") == [(1,)]


# -- basic auth ----------------------------------------------------------------------------------------


def http_status(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def status_of(call) -> int:
    """The HTTP status of an MLflow client call: 200, or the error's."""
    try:
        call()
    except MlflowException as e:
        return e.get_http_status_code()
    return 200


@slow
def test_basic_auth_refuses_strangers_and_read_only_users(pg_auth_server, tmp_path, monkeypatch):
    from mlflow.server import get_app_client

    uri = pg_auth_server.uri
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search) == 401
    assert http_status(search, "admin", "not-the-password") == 401
    assert http_status(search, "admin", pg_auth_server.admin_password) == 200
    ini = (pg_auth_server.root / "basic_auth.ini").read_text()  # written by tracking_server.sh
    assert f"sqlite:///{pg_auth_server.root}/basic_auth.db" in ini and "default_permission = READ" in ini

    def login(user, password):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(uri)

    passwords = {name: f"{name}-password-123" for name in ("alice", "bob", "carol")}
    login("admin", pg_auth_server.admin_password)
    users = get_app_client("basic-auth", tracking_uri=uri)
    for name, password in passwords.items():
        users.create_user(name, password)

    # the same zoobot step, without and with credentials, at the same time
    env = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="alice-survey")
    step = ["simulate", "--n_galaxies", 4, "--image_size", 32, "--workers", 1]
    stranger = subprocess.Popen([str(VENV_BIN / "zoobot"), *map(str, step), "--output_dir", tmp_path / "s"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_zoobot([*step, "--output_dir", tmp_path / "survey"],
               {**env, "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": passwords["alice"]},
               cwd=tmp_path)
    out, err = stranger.communicate(timeout=120)
    assert stranger.returncode != 0 and "401" in out + err, err[-2000:]
    assert not (tmp_path / "s" / "catalog.csv").exists()

    alice = login("alice", passwords["alice"])
    experiment = alice.get_experiment_by_name("alice-survey")
    (run,) = alice.search_runs([experiment.experiment_id])
    assert run.data.tags["step"] == "simulate" and run.data.metrics["n_galaxies"] == 4
    assert run.info.user_id == "alice"

    login("admin", pg_auth_server.admin_password)
    users.grant_user_permission("bob", "experiment", experiment.experiment_id, "READ")
    users.grant_user_permission("carol", "experiment", experiment.experiment_id, "EDIT")

    bob = login("bob", passwords["bob"])
    assert bob.get_experiment(experiment.experiment_id).name == "alice-survey"  # reading is allowed
    assert len(bob.search_runs([experiment.experiment_id])) == 1
    assert status_of(lambda: bob.create_run(experiment.experiment_id)) == 403
    assert status_of(lambda: bob.log_metric(run.info.run_id, "tampered", 1.0)) == 403
    assert status_of(lambda: bob.set_experiment_tag(experiment.experiment_id, "owner", "bob")) == 403
    assert status_of(lambda: bob.delete_experiment(experiment.experiment_id)) == 403
    assert http_status(f"{uri}/api/2.0/mlflow/runs/create", "bob", passwords["bob"],
                       {"experiment_id": experiment.experiment_id}) == 403
    own = bob.create_experiment("bob-own")  # bob is refused only what is not his
    assert status_of(lambda: bob.create_run(own)) == 200

    carol = login("carol", passwords["carol"])  # EDIT was granted: she may log into alice's experiment
    carol_run = carol.create_run(experiment.experiment_id)
    carol.log_metric(carol_run.info.run_id, "checked", 1.0)

    alice = login("alice", passwords["alice"])
    assert "tampered" not in alice.get_run(run.info.run_id).data.metrics
    assert alice.get_run(carol_run.info.run_id).data.metrics["checked"] == 1.0
    assert alice.get_experiment(experiment.experiment_id).lifecycle_stage == "active"


# -- concurrency ---------------------------------------------------------------------------------------

N_WORKERS, N_STEPS = 4, 200


@slow
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_four_concurrent_runs_lose_nothing(store, request, tmp_path):
    if store == "sqlite":
        uri = f"sqlite:///{tmp_path}/mlflow.db"  # a store file shared by processes, no server
    else:
        uri = request.getfixturevalue("pg_server").uri  # the team server on PostgreSQL
    # The store and experiment exist before the workers start, as on a team's server.
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"concurrent-{store}", artifact_location=(
        (tmp_path / "artifacts").as_uri() if store == "sqlite" else None))
    env = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_ID=experiment_id)

    workers = start_burst_workers(N_WORKERS, N_STEPS, env, tmp_path)
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-4000:]
        for symptom in ("database is locked", "OperationalError", "deadlock", "Traceback"):
            assert symptom not in err, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    runs = {r.info.run_id: r for r in client.search_runs([experiment_id])}
    assert len(runs) == N_WORKERS and {r["run_id"] for r in results} == set(runs)
    for result in results:
        worker, run = result["worker"], runs[result["run_id"]]
        # the zoobot step itself
        assert run.data.tags["step"] == "simulate" and run.data.params["n_galaxies"] == "8"
        assert run.data.metrics["n_galaxies"] == 8
        assert "survey/catalog.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "survey")}
        # the burst: every value at its step, whether logged singly or in batches
        history = client.get_metric_history(run.info.run_id, "burst")
        assert sorted((m.step, m.value) for m in history) == [(s, burst_value(worker, s)) for s in range(N_STEPS)]
        assert run.data.metrics["burst"] == burst_value(worker, N_STEPS - 1)
        for k in range(N_STEPS // 20):
            assert run.data.params[f"param_{k}"] == run.data.tags[f"tag_{k}"] == f"{worker}/{10 * k}"
        for k in range(10):
            assert run.data.params[f"batch_param_{k}"] == run.data.tags[f"batch_tag_{k}"] == f"{worker}-{k}"
        assert run.info.status == "FINISHED"


@slow
def test_a_team_server_over_https_with_a_password(tmp_path):
    """TLS with a self-signed certificate and basic auth: the password never crosses in clear, clients
    trust the certificate through MLFLOW_TRACKING_SERVER_CERT_PATH, and a zoobot step logs over https."""
    import os
    import ssl

    cert, key = self_signed_certificate(tmp_path / "tls")
    server = start_tracking_server(tmp_path / "server", f"sqlite:///{tmp_path}/mlflow.db", auth=True, tls=(cert, key))
    try:
        assert server.uri.startswith("https://")
        health = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(health, timeout=10)  # an unknown certificate is refused by default
        trusted = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(health)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=trusted)
        assert refused.value.code == 401
        token = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10, context=trusted) as answer:
            assert answer.status == 200
        with pytest.raises(OSError):  # plain http is not served at all (the connection is dropped)
            urllib.request.urlopen(server.uri.replace("https://", "http://") + "/health", timeout=10)

        env = clean_env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_TRACKING_SERVER_CERT_PATH=str(cert),
                        MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=server.admin_password)
        run_zoobot(["simulate", "--experiment", "over-tls", "--n-galaxies", "4", "--image-size", "16", "--workers", "1",
                    "--output-dir", tmp_path / "survey"], env, cwd=tmp_path)
        without_ca = subprocess.run([str(VENV_BIN / "zoobot"), "simulate", "--n-galaxies", "4", "--output-dir",
                                     str(tmp_path / "nope")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                    env={k: v for k, v in env.items() if k != "MLFLOW_TRACKING_SERVER_CERT_PATH"})
        assert without_ca.returncode == 1 and "certificate" in without_ca.stderr.lower(), without_ca.stderr[-2000:]
        assert "Traceback" not in without_ca.stderr

        os.environ.update(MLFLOW_TRACKING_SERVER_CERT_PATH=str(cert), MLFLOW_TRACKING_USERNAME="admin",
                          MLFLOW_TRACKING_PASSWORD=server.admin_password)
        try:
            client = MlflowClient(server.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("over-tls").experiment_id])
            assert run.data.tags["step"] == "simulate" and run.info.user_id == "admin"
        finally:
            for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(name, None)
    finally:
        server.stop()
