#!/bin/sh
# Create the dynamic-security plugin's JSON file on a broker's first start,
# holding only the admin account; the cloud creates every other account and
# role over MQTT (`fleet-cloud broker-init`, fleet_cloud.broker_admin).
#   mosquitto/dynsec-init.sh DATA_DIR
# The admin password comes from FLEET_BROKER_ADMIN_PASSWORD (or the cloud's
# FLEET_MQTT_ADMIN_PASSWORD, so compose needs it in one env file only), else
# from DATA_DIR/admin.secret, else a random one is written there (mode 0600).
# An existing JSON file is never touched (the accounts live there), so this
# is safe on every start. POSIX sh: it also runs in the eclipse-mosquitto image.
set -eu
data=${1:?usage: dynsec-init.sh DATA_DIR}
user=${FLEET_BROKER_ADMIN_USER:-${FLEET_MQTT_ADMIN_USERNAME:-fleet-admin}}
json=$data/dynamic-security.json
secret=$data/admin.secret
[ -s "$json" ] && exit 0
if [ -n "${FLEET_BROKER_ADMIN_PASSWORD:-${FLEET_MQTT_ADMIN_PASSWORD:-}}" ]; then
  pw=${FLEET_BROKER_ADMIN_PASSWORD:-$FLEET_MQTT_ADMIN_PASSWORD}
elif [ -s "$secret" ]; then
  pw=$(cat "$secret")
else
  pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && printf '%s\n' "$pw" >"$secret")
fi
(umask 077 && mosquitto_ctrl dynsec init "$json" "$user" "$pw" >/dev/null)
echo "dynsec-init: created $json with admin account $user"
