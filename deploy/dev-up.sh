#!/usr/bin/env bash
# `make up`: the whole system on this machine, with a simulated fleet.
#   broker (project config, own port) -> cloud (ingest + API + dashboard) ->
#   3 full agents reading NMEA from fleet-sim ptys + 50 lightweight simulated vans.
# Idempotent: what already runs is left alone. State, logs and pids live in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

MQTT_PORT=${FLEET_MQTT_PORT:-18830}
HTTP_PORT=${FLEET_HTTP_PORT:-8080}
DB_NAME=${FLEET_DB_NAME:-fleet}
AGENTS=${FLEET_AGENTS:-3}
SIMS=${FLEET_SIMS:-50}
LOGIN=admin@fleet.local
PASSWORD=${FLEET_DEMO_PASSWORD:-fleet-demo}
run=$root/.run
mkdir -p "$run/pids" "$run/log"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
alive() { [ -f "$run/pids/$1.pid" ] && kill -0 "$(cat "$run/pids/$1.pid")" 2>/dev/null; }
# start NAME CMD...: run CMD in its own session, logging to .run/log/NAME.log
start() {
  local name=$1; shift
  if alive "$name"; then return 0; fi
  setsid "$@" >>"$run/log/$name.log" 2>&1 < /dev/null &
  echo $! >"$run/pids/$name.pid"
}
wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what; see $run/log/" >&2
  exit 1
}

bash deploy/bootstrap.sh
export PATH=$root/.venv/bin:$PATH

say "Mosquitto on 127.0.0.1:$MQTT_PORT (config: mosquitto/conf.d)"
start mosquitto mosquitto/run-broker.sh "$MQTT_PORT" "$run/mosquitto"
wait_for "Mosquitto" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT"

say "PostgreSQL database $DB_NAME"
dsn="postgresql:///$DB_NAME?host=/var/run/postgresql"
psql -h /var/run/postgresql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
  || createdb -h /var/run/postgresql "$DB_NAME"
fleet-cloud migrate --dsn "$dsn"
fleet-cloud seed-demo --dsn "$dsn" --agents "$AGENTS" --sims "$SIMS" --email "$LOGIN" --password "$PASSWORD"

# The JWT key survives restarts so open dashboards stay logged in.
[ -f "$run/jwt_secret" ] || (umask 077; head -c 32 /dev/urandom | base64 >"$run/jwt_secret")
export FLEET_DATABASE_URL=$dsn FLEET_MQTT_HOST=127.0.0.1 FLEET_MQTT_PORT=$MQTT_PORT \
       FLEET_HTTP_HOST=${FLEET_HTTP_HOST:-127.0.0.1} FLEET_HTTP_PORT=$HTTP_PORT \
       FLEET_JWT_SECRET=$(cat "$run/jwt_secret")

say "cloud (ingest + API + dashboard) on http://$FLEET_HTTP_HOST:$HTTP_PORT"
start cloud fleet-cloud serve
wait_for "the cloud API" 30 curl -sf "http://127.0.0.1:$HTTP_PORT/api/v1/health"

say "simulated fleet: $AGENTS agents on GPS ptys + $SIMS lightweight vans"
for i in $(seq -f '%02g' 1 "$AGENTS"); do
  start "gps-$i" fleet-sim gps --pty --link "$run/gps-$i" --hz 1 --seed "$((10#$i))" \
    --oracle "$run/oracle-agent-$i.jsonl"
  wait_for "GPS pty $i" 10 test -e "$run/gps-$i"
  cat >"$run/agent-$i.toml" <<TOML
device_id = "agent-$i"
[broker]
host = "127.0.0.1"
port = $MQTT_PORT
[gps]
port = "$run/gps-$i"
[outbox]
path = "$run/outbox-agent-$i.sqlite"
TOML
  start "agent-$i" fleet-agent run --config "$run/agent-$i.toml"
done
start fleet fleet-sim fleet --count "$SIMS" --prefix sim --broker "127.0.0.1:$MQTT_PORT" --hz 1

cat <<MSG

  Dashboard:  http://127.0.0.1:$HTTP_PORT/
  Login:      $LOGIN / $PASSWORD
  API docs:   http://127.0.0.1:$HTTP_PORT/api/docs
  MQTT:       127.0.0.1:$MQTT_PORT   Logs: .run/log/   Stop: make down

MSG
