#!/usr/bin/env bash
# Install what the project needs on a Debian machine (bookworm or later), then
# the Python packages into .venv. Idempotent and quick when nothing is missing;
# used by `make up` and `make test`, so a fresh clone needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: the broker, the database, Redis (optional at run time), gpsd
# and gpsfake (GPS tests), Chromium (dashboard tests), venv support, faketime
# (device clock-jump fault tests, tests/faults).
packages=(mosquitto mosquitto-clients postgresql redis-server gpsd gpsd-clients chromium
          python3-venv ca-certificates faketime openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PostgreSQL: running, and a superuser role for this OS user over the Unix
# socket (peer auth), which is how the tests and `make up` connect.
if ! pg_isready -q -h /var/run/postgresql; then
  say "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root pg_ctlcluster "$version" main start
  for _ in $(seq 50); do pg_isready -q -h /var/run/postgresql && break; sleep 0.2; done
fi
me=$(id -un)
if ! psql -h /var/run/postgresql -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  say "creating PostgreSQL role $me"
  if [ "$(id -u)" = 0 ]; then su postgres -c "createuser --superuser $me"; else sudo -u postgres createuser --superuser "$me"; fi
fi

# Python: 3.11 or newer (what Raspberry Pi OS Bookworm ships).
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Python >= 3.11 required (found $("$python" --version))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing Python packages into .venv"
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[all]'; } \
       >.venv/pip.log 2>&1; then
    tail -n 30 .venv/pip.log >&2
    echo "pip install failed; full log in .venv/pip.log" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
