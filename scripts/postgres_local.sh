#!/usr/bin/env bash
# A throwaway PostgreSQL cluster in one folder: a backend store for a tracking server on one machine
# (a demo, a laptop, the tests). It trusts every local connection, so it is not for a shared machine;
# a team's real server takes its PostgreSQL URI from whoever runs the database.
#
#   bash scripts/postgres_local.sh start DIR [PORT]   # create the cluster on first use, start it, create
#                                                     # the database; prints its URI on stdout:
#                                                     # postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow
#   bash scripts/postgres_local.sh uri DIR            # the URI again
#   bash scripts/postgres_local.sh status DIR         # running or not (exit 0 when running)
#   bash scripts/postgres_local.sh stop DIR           # stop it; the data stays in DIR (delete DIR to discard)
#
# PORT defaults to ZOOBOT_PG_PORT or 5433 (5432 is left to a system PostgreSQL), the database name to
# ZOOBOT_PG_DB or mlflow. PG_BIN is the folder of initdb and pg_ctl when they are not found by
# themselves (install them with `bash scripts/system_deps.sh` on Debian/Ubuntu).
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` system user (via su),
# which must be able to reach DIR (/tmp/pg or /srv/pg, not a folder under /root). As any other user it
# runs as that user. The server listens on 127.0.0.1 only, with its socket in DIR.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "postgres_local.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0 ;; start|stop|status|uri) ;; *) echo "Unknown command '$1'." >&2; usage ;; esac
command=$1
[ $# -ge 2 ] || die "'$command' needs the cluster's folder, e.g. bash scripts/postgres_local.sh $command /tmp/zoobot-pg"
case "$2" in *[[:space:]\'\"\\]*) die "the folder '$2' contains a space, quote or backslash; pick a plain path." ;; esac

find_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && { echo "$PG_BIN"; return; }
    die "PG_BIN=$PG_BIN has no initdb and pg_ctl."
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return; fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them with
  bash scripts/system_deps.sh        (Debian/Ubuntu: the postgresql package)
or your package manager (macOS: brew install postgresql@15), or set PG_BIN to the folder that holds them."
}

if [ "$command" = start ]; then mkdir -p "$2"; fi
[ -d "$2" ] || die "no cluster folder '$2' (start one with: bash scripts/postgres_local.sh start $2)"
DIR=$(cd "$2" && pwd)
DATA=$DIR/data
BIN=$(find_pg_bin)
DB=${ZOOBOT_PG_DB:-mlflow}
case "$DB" in ''|*[!A-Za-z0-9_]*) die "the database name must be letters, digits and underscores, not '$DB'." ;; esac

# Every PostgreSQL command runs as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/bash -c "cd $(printf %q "$DIR") && $(printf '%q ' "$@")"
  else
    "$@"
  fi
}

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
port_of() { cat "$DIR/port" 2>/dev/null || die "no port recorded in $DIR/port: was the cluster started with this script?"; }
uri() { echo "postgresql+psycopg2://postgres@127.0.0.1:$(port_of)/$(cat "$DIR/database" 2>/dev/null || echo "$DB")"; }

case "$command" in
  uri)
    running || die "the cluster in $DIR is not running (start it with: bash scripts/postgres_local.sh start $DIR)"
    uri ;;
  status)
    if running; then echo "running: $(uri)"; else echo "not running ($DIR)"; exit 3; fi ;;
  stop)
    if running; then
      as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
      echo "Stopped the PostgreSQL cluster in $DIR (its data stays there)." >&2
    else
      echo "The PostgreSQL cluster in $DIR is not running." >&2
    fi ;;
  start)
    if running; then
      echo "Already running." >&2
      uri
      exit 0
    fi
    PORT=${3:-${ZOOBOT_PG_PORT:-5433}}
    case "$PORT" in ''|*[!0-9]*) die "the port must be a number, not '$PORT'." ;; esac
    socket="$DIR/.s.PGSQL.$PORT"
    [ ${#socket} -le 100 ] || die "the socket path $socket is too long for a Unix socket; pick a shorter folder."
    if [ "$(id -u)" = 0 ]; then
      getent passwd postgres >/dev/null || die "running as root needs a 'postgres' system user (PostgreSQL refuses
  to run as root); create one, or run this script as a normal user."
      chown postgres "$DIR"
      as_owner test -w "$DIR" 2>/dev/null || die "the postgres user cannot reach $DIR (a parent folder is private,
  like /root or pytest's own tmp folders); pick a folder such as /tmp/zoobot-pg."
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
      echo "Creating a PostgreSQL cluster in $DATA" >&2
      as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
        || die "initdb failed; its output is in $DIR/initdb.log:
$(tail -n 20 "$DIR/initdb.log")"
    fi
    echo "$PORT" > "$DIR/port"
    echo "$DB" > "$DIR/database"
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
        -o "-p $PORT -k '$DIR' -c listen_addresses=127.0.0.1" start >/dev/null; then
      die "PostgreSQL did not start (is port $PORT taken? give another as the third argument). From $DIR/postgres.log:
$(tail -n 15 "$DIR/postgres.log")"
    fi
    exists=$(as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'")
    [ "$exists" = 1 ] || as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
    echo "PostgreSQL is running on 127.0.0.1:$PORT (log $DIR/postgres.log); stop it with:" >&2
    echo "  bash scripts/postgres_local.sh stop $DIR" >&2
    uri ;;
esac
