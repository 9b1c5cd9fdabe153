#!/usr/bin/env bash
# Start the team's MLflow tracking server: runs and the model registry in a database (PostgreSQL for
# a team; SQLite by default), artifacts stored by the server itself in a folder or a bucket, and
# optionally MLflow's basic-auth app in front. It runs in the foreground (Ctrl-C stops it). Point
# every entry point at it with MLFLOW_TRACKING_URI=http://HOST:PORT.
#
#   bash scripts/tracking_server.sh          # SQLite ./mlflow.db, artifacts ./mlartifacts, http://127.0.0.1:5000
#   bash scripts/tracking_server.sh --backend-store-uri postgresql+psycopg2://USER:PASSWORD@DBHOST/mlflow \
#       --artifacts-destination /srv/zoobot/artifacts --host 0.0.0.0 --port 5000 --auth \
#       --tls-cert /etc/zoobot/server.crt --tls-key /etc/zoobot/server.key --allowed-hosts mlflow.example.org
#
# Serving other machines (a --host other than 127.0.0.1, localhost or ::1) needs --auth (else anyone
# on the network may read, change and delete every run), TLS (else passwords and data cross the
# network in clear) and --allowed-hosts; the script refuses to start without them unless --insecure
# says you know why (a closed lab network; TLS ended by a reverse proxy on another machine).
#
# Options, and the environment variables that set their defaults:
#   --backend-store-uri URI       ZOOBOT_BACKEND_STORE_URI      sqlite:///$PWD/mlflow.db
#   --artifacts-destination URI   ZOOBOT_ARTIFACTS_DESTINATION  $PWD/mlartifacts (or s3://..., gs://...)
#   --host HOST                   ZOOBOT_SERVER_HOST            127.0.0.1 (0.0.0.0 serves other machines)
#   --port PORT                   ZOOBOT_SERVER_PORT            5000
#   --workers N                   ZOOBOT_SERVER_WORKERS         2
#   --auth                        ZOOBOT_SERVER_AUTH=1          MLflow's basic-auth app (mlflow[auth]). Needs
#         MLFLOW_FLASK_SERVER_SECRET_KEY (signs the UI's sessions; keep it across restarts) and
#         MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters; sets the `admin` user's password on first start)
#   --auth-database-uri URI       ZOOBOT_AUTH_DATABASE_URI      sqlite:///$PWD/basic_auth.db (users, permissions)
#   --default-permission P        ZOOBOT_AUTH_DEFAULT_PERMISSION READ: what users may do with experiments
#                                 they did not create (READ, EDIT, MANAGE or NO_PERMISSIONS)
#   --auth-cache-seconds N        ZOOBOT_AUTH_CACHE_SECONDS     60: how long a worker trusts a checked
#         password. Checking one costs ~0.3 s of CPU (scrypt), on every request without the cache; the
#         price is that a changed password or deleted user may still work on another worker for N s.
#         0 turns the cache off (MLflow's own default).
#   --tls-cert FILE --tls-key FILE  ZOOBOT_TLS_CERT, ZOOBOT_TLS_KEY: serve https with this certificate
#         (PEM, the chain first) and its private key (uvicorn's --ssl-certfile/--ssl-keyfile). Clients of a
#         self-signed or private-CA certificate set MLFLOW_TRACKING_SERVER_CERT_PATH to the CA's PEM file.
#   --allowed-hosts LIST          ZOOBOT_ALLOWED_HOSTS           the Host headers the server answers
#         (comma-separated, e.g. mlflow.example.org,10.0.0.5:5000); MLflow's default is localhost and
#         private IPs. Needed with a non-local --host.
#   --insecure                    ZOOBOT_SERVER_INSECURE=1      start on a non-local host without auth or TLS
#   -- ARGS...                    passed on to `mlflow server`, e.g. -- --cors-allowed-origins https://x.org
#
# With --auth the script writes ./basic_auth.ini from the last three options, unless
# MLFLOW_AUTH_CONFIG_PATH names a configuration file of your own. Clients then log in with
# MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "tracking_server.sh: $*" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

backend=${ZOOBOT_BACKEND_STORE_URI:-sqlite:///$PWD/mlflow.db}
artifacts=${ZOOBOT_ARTIFACTS_DESTINATION:-$PWD/mlartifacts}
host=${ZOOBOT_SERVER_HOST:-127.0.0.1}
port=${ZOOBOT_SERVER_PORT:-5000}
workers=${ZOOBOT_SERVER_WORKERS:-2}
auth=${ZOOBOT_SERVER_AUTH:-0}
auth_db=${ZOOBOT_AUTH_DATABASE_URI:-sqlite:///$PWD/basic_auth.db}
default_permission=${ZOOBOT_AUTH_DEFAULT_PERMISSION:-READ}
auth_cache=${ZOOBOT_AUTH_CACHE_SECONDS:-60}
tls_cert=${ZOOBOT_TLS_CERT:-}
tls_key=${ZOOBOT_TLS_KEY:-}
allowed_hosts=${ZOOBOT_ALLOWED_HOSTS:-}
insecure=${ZOOBOT_SERVER_INSECURE:-0}
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --auth) auth=1; shift; continue ;;
    --insecure) insecure=1; shift; continue ;;
    --) shift; extra=("$@"); break ;;
    --backend-store-uri|--artifacts-destination|--host|--port|--workers|--auth-database-uri|--default-permission|\
    --auth-cache-seconds|--tls-cert|--tls-key|--allowed-hosts)
      [ $# -ge 2 ] || die "$1 needs a value."
      case "$1" in
        --backend-store-uri) backend=$2 ;;
        --artifacts-destination) artifacts=$2 ;;
        --host) host=$2 ;;
        --port) port=$2 ;;
        --workers) workers=$2 ;;
        --auth-database-uri) auth_db=$2 ;;
        --default-permission) default_permission=$2 ;;
        --auth-cache-seconds) auth_cache=$2 ;;
        --tls-cert) tls_cert=$2 ;;
        --tls-key) tls_key=$2 ;;
        --allowed-hosts) allowed_hosts=$2 ;;
      esac
      shift 2 ;;
    *) echo "Unknown option '$1' (options after -- go to mlflow server)." >&2; usage ;;
  esac
done

# The project's environment, made by scripts/setup.sh; else whatever mlflow is on the PATH.
if [ -x "$ROOT/.venv/bin/mlflow" ]; then
  BIN=$ROOT/.venv/bin
elif command -v mlflow >/dev/null 2>&1; then
  BIN=$(dirname "$(command -v mlflow)")
else
  die "mlflow is not installed: run bash scripts/setup.sh (it creates .venv), or activate an environment that has it."
fi
PYTHON=$BIN/python
[ -x "$PYTHON" ] || PYTHON=python3

case "$port" in ''|*[!0-9]*) die "--port must be a number, not '$port'." ;; esac
case "$workers" in ''|*[!0-9]*) die "--workers must be a number, not '$workers'." ;; esac
case "$backend" in
  sqlite:///*|postgresql://*|postgresql+psycopg2://*|mysql*://*|mssql*://*) ;;
  *) die "--backend-store-uri '$backend' is not a database URI. Give sqlite:///ABSOLUTE/PATH.db or
  postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE (a local one: bash scripts/postgres_local.sh start DIR)." ;;
esac
# TLS: both files or neither, readable, and a key that belongs to the certificate.
tls=0
if [ -n "$tls_cert$tls_key" ]; then
  [ -n "$tls_cert" ] && [ -n "$tls_key" ] || die "TLS needs both --tls-cert (the certificate, PEM) and --tls-key (its
  private key, PEM); only --tls-$([ -n "$tls_cert" ] && echo cert || echo key) was given."
  for f in "$tls_cert" "$tls_key"; do
    [ -r "$f" ] || die "cannot read '$f' (TLS certificate or key): check the path and its permissions."
  done
  if ! error=$("$PYTHON" - "$tls_cert" "$tls_key" 2>&1 <<'EOF'
import ssl
import sys
try:
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(sys.argv[1], sys.argv[2])
except (ssl.SSLError, OSError, ValueError) as e:
    sys.exit(str(e) or type(e).__name__)
EOF
  ); then
    die "--tls-cert $tls_cert and --tls-key $tls_key do not make a usable pair: $error
  Give the PEM certificate (its chain first) and the unencrypted private key it was issued for."
  fi
  tls=1
fi
scheme=$([ "$tls" = 1 ] && echo https || echo http)

# Serving other machines: logins, encryption and the host names to answer, or a deliberate --insecure.
case "$host" in 127.0.0.1|localhost|::1|'[::1]') local_host=1 ;; *) local_host=0 ;; esac
if [ "$local_host" = 0 ] && [ "$insecure" != 1 ]; then
  missing=()
  [ "$auth" = 1 ] || missing+=("--auth (without it anyone who reaches $host:$port may read, change and delete every run and model)")
  [ "$tls" = 1 ] || missing+=("--tls-cert FILE --tls-key FILE (without TLS, passwords and data cross the network in clear;
    or put a TLS reverse proxy on this machine in front of a server on --host 127.0.0.1)")
  [ -n "$allowed_hosts" ] || missing+=("--allowed-hosts NAMES (the host names clients use, e.g. mlflow.example.org;
    MLflow otherwise answers only localhost and private IPs)")
  if [ ${#missing[@]} -gt 0 ]; then
    message="--host $host serves other machines, so the server needs:"
    for m in "${missing[@]}"; do message+=$'\n'"  - $m"; done
    die "$message
  To start anyway (a closed network, or TLS ended by a proxy elsewhere), add --insecure."
  fi
fi

# Never echo a database password.
shown_backend=$(printf '%s' "$backend" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#')

if [[ $backend == postgresql* ]]; then
  "$PYTHON" -c 'import psycopg2' 2>/dev/null || die "a PostgreSQL backend needs psycopg2: $BIN/pip install -e '$ROOT[server]'"
  # A clear message now instead of a traceback from every worker later.
  if ! error=$("$PYTHON" - "$backend" 2>&1 <<'EOF'
import sys
import sqlalchemy
try:
    with sqlalchemy.create_engine(sys.argv[1]).connect():
        pass
except Exception as e:  # report any failure to connect, whatever the driver raises
    sys.exit(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
EOF
  ); then
    die "cannot connect to the backend store $shown_backend: $error
  Is PostgreSQL running and does the database exist? A throwaway one: bash scripts/postgres_local.sh start /tmp/zoobot-pg"
  fi
fi

app=()
if [ "$auth" = 1 ]; then
  "$PYTHON" -c 'import flask_wtf' 2>/dev/null || die "--auth needs MLflow's auth extra: $BIN/pip install -e '$ROOT[server]'"
  [ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] || die "--auth needs MLFLOW_FLASK_SERVER_SECRET_KEY: a long random string that signs
  the UI's login sessions (keep the same one across restarts), e.g.
  export MLFLOW_FLASK_SERVER_SECRET_KEY=\$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || die "--auth needs MLFLOW_AUTH_ADMIN_PASSWORD: the password of the 'admin' user that
  MLflow creates on the first start (at least 12 characters), e.g. export MLFLOW_AUTH_ADMIN_PASSWORD='...'"
  [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 12 ] || die "MLFLOW_AUTH_ADMIN_PASSWORD is ${#MLFLOW_AUTH_ADMIN_PASSWORD} characters long; MLflow needs at least 12."
  case "$default_permission" in READ|EDIT|MANAGE|NO_PERMISSIONS) ;;
    *) die "--default-permission must be READ, EDIT, MANAGE or NO_PERMISSIONS, not '$default_permission'." ;; esac
  case "$auth_cache" in ''|*[!0-9]*) die "--auth-cache-seconds must be a number of seconds, not '$auth_cache'." ;; esac
  if [ -n "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
    [ -f "$MLFLOW_AUTH_CONFIG_PATH" ] || die "MLFLOW_AUTH_CONFIG_PATH=$MLFLOW_AUTH_CONFIG_PATH is not a file."
    echo "Basic auth configured by $MLFLOW_AUTH_CONFIG_PATH" >&2
  else
    export MLFLOW_AUTH_CONFIG_PATH=$PWD/basic_auth.ini
    cat > "$MLFLOW_AUTH_CONFIG_PATH" <<EOF
# Written by scripts/tracking_server.sh at each start with --auth. To keep your own settings, copy
# this file elsewhere and set MLFLOW_AUTH_CONFIG_PATH to it.
[mlflow]
default_permission = $default_permission
database_uri = $auth_db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $auth_cache
EOF
    echo "Basic auth: users and permissions in $(printf '%s' "$auth_db" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#'), default permission $default_permission ($MLFLOW_AUTH_CONFIG_PATH)" >&2
  fi
  app=(--app-name basic-auth)
fi

if [[ $backend == sqlite:///* ]]; then
  db_file=${backend#sqlite:///}
  mkdir -p "$(dirname "$db_file")" 2>/dev/null || die "cannot create the folder of $db_file."
fi
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" || die "cannot create the artifacts folder $artifacts." ;; esac

# MLflow's job runner serves GenAI features (LLM judges, trace rollups) that Zoobot does not use, and
# would start eight more Python processes beside the server; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true
# brings it back.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

serving=()
if [ "$tls" = 1 ]; then
  serving+=(--uvicorn-opts "--ssl-certfile $(printf '%q' "$tls_cert") --ssl-keyfile $(printf '%q' "$tls_key")")
fi
[ -z "$allowed_hosts" ] || serving+=(--allowed-hosts "$allowed_hosts")
if [ "$insecure" = 1 ] && [ "$local_host" = 0 ]; then
  echo "WARNING: --insecure: serving $host:$port$([ "$auth" = 1 ] || echo ' without logins')$([ "$tls" = 1 ] || echo ' without TLS')." >&2
fi

shown_host=$([ "$host" = 0.0.0.0 ] && hostname || echo "$host")
echo "MLflow tracking server on $scheme://$host:$port: backend store $shown_backend, artifacts $artifacts" >&2
echo "Point the entry points at it with: export MLFLOW_TRACKING_URI=$scheme://$shown_host:$port" >&2
if [ "$tls" = 1 ]; then
  echo "With a self-signed or private-CA certificate, clients also set MLFLOW_TRACKING_SERVER_CERT_PATH=<the CA's PEM file>" >&2
fi
exec "$BIN/mlflow" server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" --workers "$workers" ${app[@]+"${app[@]}"} ${serving[@]+"${serving[@]}"} \
  ${extra[@]+"${extra[@]}"}
