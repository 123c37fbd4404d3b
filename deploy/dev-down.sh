#!/usr/bin/env bash
# `make down`: stop everything `make up` started (data in .run/ and the database stay).
set -uo pipefail
cd "$(dirname "$0")/.."
pids=.run/pids
[ -d "$pids" ] || { echo "nothing running"; exit 0; }
# Simulators and agents first, the broker last, so agents can flush and say goodbye.
for f in $(ls "$pids"/*.pid 2>/dev/null | sort -t/ -k3 | grep -v -e cloud.pid -e mosquitto.pid) \
         "$pids/cloud.pid" "$pids/mosquitto.pid"; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped $(basename "$f" .pid)"
  fi
  rm -f "$f"
done
