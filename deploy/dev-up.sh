#!/usr/bin/env bash
# `make up`: the whole system on this machine, with a simulated fleet.
#   broker (project config, own port) -> cloud (ingest + API + dashboard) ->
#   3 full agents reading NMEA from fleet-sim ptys + 50 lightweight simulated vans.
# Idempotent: what already runs is left alone. State, logs and pids live in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

MQTT_PORT=${FLEET_MQTT_PORT:-18830}
MQTT_TLS_PORT=${FLEET_MQTT_TLS_PORT:-18831}
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

say "Mosquitto on 127.0.0.1:$MQTT_PORT, TLS on $MQTT_TLS_PORT (config: mosquitto/conf.d)"
# The project CA and a server certificate for the TLS listener (kept across runs).
[ -f "$run/certs/server.crt" ] || mosquitto/make-ca.sh "$run/certs" 127.0.0.1 localhost >/dev/null
FLEET_BROKER_TLS_PORT=$MQTT_TLS_PORT FLEET_BROKER_CERT_DIR=$run/certs \
  start mosquitto mosquitto/run-broker.sh "$MQTT_PORT" "$run/mosquitto"
wait_for "Mosquitto" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT"

# Broker accounts (docs/security.md): the dynsec admin password was made by
# run-broker.sh on first start; the cloud's service passwords are made here once.
secret() {  # secret NAME: .run/NAME.secret, created (0600) on first use
  [ -s "$run/$1.secret" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$run/$1.secret")
  cat "$run/$1.secret"
}
wait_for "the broker's dynamic-security file" 10 test -s "$run/mosquitto/dynamic-security.json"
admin_password=${FLEET_MQTT_ADMIN_PASSWORD:-$(cat "$run/mosquitto/admin.secret")}
export FLEET_MQTT_HOST=127.0.0.1 FLEET_MQTT_PORT=$MQTT_PORT \
       FLEET_MQTT_USERNAME=fleet-ingest FLEET_MQTT_PASSWORD=$(secret mqtt-ingest) \
       FLEET_MQTT_CONTROL_USERNAME=fleet-control FLEET_MQTT_CONTROL_PASSWORD=$(secret mqtt-control) \
       FLEET_MQTT_ADMIN_USERNAME=fleet-admin FLEET_MQTT_ADMIN_PASSWORD=$admin_password \
       FLEET_PUBLIC_MQTT_TLS_PORT=$MQTT_TLS_PORT FLEET_BROKER_CA_FILE=$run/certs/ca.crt
fleet-cloud broker-init
devices=()
for i in $(seq -f '%02g' 1 "$AGENTS"); do devices+=("agent-$i"); done
for i in $(seq 0 $((SIMS - 1))); do devices+=("$(printf 'sim-%04d' "$i")"); done
fleet-cloud broker-devices --password-file "$run/device-passwords.json" "${devices[@]}"
device_password() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$run/device-passwords.json" "$1"
}

say "PostgreSQL database $DB_NAME"
dsn="postgresql:///$DB_NAME?host=/var/run/postgresql"
psql -h /var/run/postgresql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
  || createdb -h /var/run/postgresql "$DB_NAME"
fleet-cloud migrate --dsn "$dsn"
fleet-cloud seed-demo --dsn "$dsn" --agents "$AGENTS" --sims "$SIMS" --email "$LOGIN" --password "$PASSWORD"

# The JWT key survives restarts so open dashboards stay logged in.
[ -f "$run/jwt_secret" ] || (umask 077; head -c 32 /dev/urandom | base64 >"$run/jwt_secret")
# The key that signs remote configs (docs/remote-config.md); the agents trust its public half.
[ -f "$run/config-signing.key" ] || fleet-cloud config-keygen --file "$run/config-signing.key" >/dev/null
config_public_key=$(python3 -c 'import sys; from fleet_wire.remote import public_key_b64
print(public_key_b64(open(sys.argv[1], "rb").read()))' "$run/config-signing.key")
export FLEET_CONFIG_SIGNING_KEY_FILE=$run/config-signing.key
export FLEET_DATABASE_URL=$dsn \
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
  # It holds the device's broker password: readable by this user only.
  (umask 077; cat >"$run/agent-$i.toml") <<TOML
device_id = "agent-$i"
[broker]
host = "127.0.0.1"
port = $MQTT_PORT
password = "$(device_password "agent-$i")"
[gps]
port = "$run/gps-$i"
[outbox]
path = "$run/outbox-agent-$i.sqlite"
[remote]
public_key = "$config_public_key"
state_dir = "$run/state-agent-$i"
TOML
  start "agent-$i" fleet-agent run --config "$run/agent-$i.toml"
done
start fleet fleet-sim fleet --count "$SIMS" --prefix sim --broker "127.0.0.1:$MQTT_PORT" --hz 1 \
  --password-file "$run/device-passwords.json"

cat <<MSG

  Dashboard:  http://127.0.0.1:$HTTP_PORT/
  Login:      $LOGIN / $PASSWORD
  API docs:   http://127.0.0.1:$HTTP_PORT/api/docs
  MQTT:       127.0.0.1:$MQTT_PORT, TLS 127.0.0.1:$MQTT_TLS_PORT (CA .run/certs/ca.crt)
              accounts: .run/*.secret, .run/device-passwords.json (docs/security.md)
  Logs: .run/log/   Stop: make down

MSG
