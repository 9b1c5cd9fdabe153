#!/usr/bin/env bash
# System packages the tests drive for real: PostgreSQL 15 (a team tracking server's backend store)
# and Chromium (the MLflow UI checked in a browser). Debian/Ubuntu only; installs what is missing,
# with sudo when not root. Skip with ZOOBOT_SKIP_SYSTEM_DEPS=1 (the tests that need them then skip,
# saying why).
set -euo pipefail
[ "${ZOOBOT_SKIP_SYSTEM_DEPS:-0}" = 1 ] && exit 0
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Not installing ${missing[*]}: no apt-get here. Install them with your package manager;" >&2
  echo "the tests that need them skip until then." >&2
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "Installing system packages: ${missing[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
