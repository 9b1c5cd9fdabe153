"""Real services for the team-server tests, started by the project's own scripts: a throwaway
PostgreSQL cluster (scripts/postgres_local.sh) and `mlflow server` processes on it
(scripts/tracking_server.sh), with and without MLflow's basic-auth app.

Test modules import the fixtures they use from here. Every process started here is stopped at
teardown: the servers by killing their process group, PostgreSQL with `pg_ctl stop`.
"""

from __future__ import annotations

import inspect
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, VENV_BIN, free_port, wait_for_http

PG_SCRIPT = ROOT / "scripts" / "postgres_local.sh"
SERVER_SCRIPT = ROOT / "scripts" / "tracking_server.sh"
INSTALL_HINT = "install them with `bash scripts/system_deps.sh` (Debian/Ubuntu) or set PG_BIN to their folder"


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl, found the way scripts/postgres_local.sh finds it."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
                         key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()], reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any MLFLOW_* setting of the calling shell, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    uri: str  # postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow
    folder: Path
    bin: Path

    def query(self, sql: str, *args) -> list[tuple]:
        """Rows straight from the database, bypassing MLflow."""
        import psycopg2

        dsn = self.uri.replace("postgresql+psycopg2://", "postgresql://")
        with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute(sql, args)
            rows = cursor.fetchall()
        connection.close()
        return rows


def run_pg_script(*args: str, env: dict) -> str:
    result = subprocess.run(["bash", str(PG_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"postgres_local.sh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster (initdb, pg_ctl start on a free port, createdb), stopped at the end."""
    pg_bin = postgres_bin()
    if pg_bin is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}.")
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install -e '.[server]'")
    if os.geteuid() == 0:
        # The cluster then runs as `postgres`, which cannot enter pytest's private (0700) tmp folders.
        folder = Path(tempfile.mkdtemp(prefix="zoobot-pg-"))
    else:
        folder = tmp_path_factory.mktemp("postgres")
    env = clean_env(PG_BIN=str(pg_bin))
    try:
        for attempt in range(3):  # another process may take the free port before PostgreSQL binds it
            try:
                uri = run_pg_script("start", str(folder), str(free_port()), env=env)
                break
            except RuntimeError as e:
                if "already in use" not in str(e) or attempt == 2:
                    raise
        yield Postgres(uri=uri, folder=folder, bin=pg_bin)
    finally:
        try:
            run_pg_script("stop", str(folder), env=env)
        finally:
            _kill_postmaster_if_alive(folder / "data")
            if os.geteuid() == 0:
                shutil.rmtree(folder, ignore_errors=True)


def _kill_postmaster_if_alive(data: Path) -> None:
    """Last resort when `pg_ctl stop` failed: no test may leave a PostgreSQL server behind."""
    pid_file = data / "postmaster.pid"
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return  # gone (or no /proc to check it by: then leave it rather than kill a stranger)
    if "postgres" not in command or str(data) not in command:
        return  # a stale pid file; that number now belongs to another process
    try:
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
    except ProcessLookupError:
        return
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


# -- mlflow server -------------------------------------------------------------------------------


@dataclass
class TrackingServer:
    uri: str  # http://127.0.0.1:PORT
    root: Path  # its working folder: log, artifacts, (with auth) basic_auth.ini and basic_auth.db
    artifacts: Path
    process: subprocess.Popen
    admin_password: str = ""

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # uvicorn's workers share the group; make sure none outlived the supervisor
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) PEM files of a fresh self-signed certificate for `host` (and localhost),
    made with the `cryptography` package, as `openssl req -x509` would."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def start_tracking_server(root: Path, backend_uri: str, auth: bool = False,
                          tls: tuple[Path, Path] | None = None) -> TrackingServer:
    """`scripts/tracking_server.sh` with one worker, in its own process group, logging to root/server.log;
    with `tls` (certificate, key) it serves https."""
    for attempt in range(3):  # another process may take the free port before the server binds it
        try:
            return _start_tracking_server(root, backend_uri, auth, tls)
        except RuntimeError as e:
            if "already in use" not in str(e).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_tracking_server(root: Path, backend_uri: str, auth: bool, tls: tuple[Path, Path] | None) -> TrackingServer:
    import ssl

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = ["--backend-store-uri", backend_uri, "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if tls:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    env = clean_env()
    admin_password = ""
    if auth:
        admin_password = secrets.token_urlsafe(18)
        args.append("--auth")
        env.update(MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32), MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
                   ZOOBOT_AUTH_DATABASE_URI=f"sqlite:///{root}/basic_auth.db")
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(["bash", str(SERVER_SCRIPT), *args], cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    scheme = "https" if tls else "http"
    server = TrackingServer(f"{scheme}://127.0.0.1:{port}", root, root / "artifacts", process, admin_password)
    try:
        wait_for_http(f"{server.uri}/health", process, timeout=180,
                      context=ssl.create_default_context(cafile=str(tls[0])) if tls else None)
    except (RuntimeError, TimeoutError) as e:
        server.stop()
        raise RuntimeError(f"{e}; the end of {server.log}:\n{server.log.read_text()[-3000:]}") from e
    return server


@pytest.fixture(scope="session")
def pg_server(postgres, tmp_path_factory):
    """`mlflow server` on the PostgreSQL cluster, artifacts proxied into a tmp folder."""
    server = start_tracking_server(tmp_path_factory.mktemp("pg_server"), postgres.uri)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_auth_server(postgres, pg_server, tmp_path_factory):
    """The same server behind MLflow's basic-auth app (users in a SQLite file in its tmp folder).

    It shares the PostgreSQL database with `pg_server`, which has already created MLflow's tables
    (two servers on one store is also how a team scales out); its runs use their own experiments.
    """
    pytest.importorskip("flask_wtf", reason="MLflow's auth extra is missing: pip install -e '.[server]'")
    server = start_tracking_server(tmp_path_factory.mktemp("pg_auth_server"), postgres.uri, auth=True)
    try:
        yield server
    finally:
        server.stop()


# -- running zoobot as a user does -----------------------------------------------------------------


def run_zoobot(args: list[str], env: dict, cwd: Path, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess:
    """`zoobot ARGS` from the venv, as a user types it."""
    result = subprocess.run([str(VENV_BIN / "zoobot"), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"zoobot {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-5000:]}")
    return result


# A worker of the concurrency test: a real zoobot step (simulate, tiny), then, once every worker is
# ready, a burst into that step's run: half of the metric's steps as single log_metric calls (one
# request or transaction each), the other half in log_batch calls, and params and tags both ways.
# Values encode (worker, step) so that a lost or misplaced one shows.
BURST_WORKER = r"""
import json, sys, time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag

from zoobot.cli import main

worker, n_steps, n_workers = (int(x) for x in sys.argv[1:4])
output_dir, barrier = Path(sys.argv[4]), Path(sys.argv[5])

main(["simulate", "--n_galaxies", "8", "--image_size", "32", "--output_dir", str(output_dir),
      "--seed", str(worker), "--workers", "1"], standalone_mode=False)
run_id = mlflow.last_active_run().info.run_id

(barrier / f"ready-{worker}").touch()
deadline = time.time() + 180
while len(list(barrier.glob("ready-*"))) < n_workers and time.time() < deadline:
    time.sleep(0.05)

client = mlflow.MlflowClient()
with mlflow.start_run(run_id=run_id):
    half = n_steps // 2
    for step in range(half):
        mlflow.log_metric("burst", burst_value(worker, step), step=step)
        if step % 10 == 0:
            mlflow.log_param(f"param_{step // 10}", f"{worker}/{step}")
            mlflow.set_tag(f"tag_{step // 10}", f"{worker}/{step}")
    now = int(time.time() * 1000)
    for start in range(half, n_steps, 50):
        client.log_batch(run_id, metrics=[Metric("burst", burst_value(worker, step), now, step)
                                          for step in range(start, min(start + 50, n_steps))])
    client.log_batch(run_id, params=[Param(f"batch_param_{k}", f"{worker}-{k}") for k in range(10)],
                     tags=[RunTag(f"batch_tag_{k}", f"{worker}-{k}") for k in range(10)])
print(json.dumps({"worker": worker, "run_id": run_id}))
"""


def burst_value(worker: int, step: int) -> float:
    return worker * 100000 + step


def start_burst_workers(n_workers: int, n_steps: int, env: dict, folder: Path) -> list[subprocess.Popen]:
    barrier = folder / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    source = inspect.getsource(burst_value) + BURST_WORKER
    return [subprocess.Popen([sys.executable, "-c", source, str(worker), str(n_steps), str(n_workers),
                              str(folder / f"survey{worker}"), str(barrier)],
                             cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for worker in range(n_workers)]
