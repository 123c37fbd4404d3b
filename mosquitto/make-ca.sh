#!/usr/bin/env bash
# The project's broker CA and a server certificate for the TLS listeners.
#   mosquitto/make-ca.sh OUT_DIR HOST [HOST...]
# Writes OUT_DIR/ca.crt + ca.key (the CA: give ca.crt to devices, keep ca.key
# offline) and OUT_DIR/server.crt + server.key with every HOST as a
# subjectAltName (IP addresses as IP SANs, names as DNS SANs). An existing CA
# is reused, so re-running only re-issues the server certificate (e.g. for a
# new host name) and devices keep trusting the same CA.
#   mosquitto/make-ca.sh OUT_DIR --client NAME
# issues a client certificate OUT_DIR/NAME.crt + NAME.key with CN=NAME, for the
# mTLS listener (use_identity_as_username: the CN is the device id).
# ECDSA P-256 keys: small handshakes on cellular links, fast on a Pi.
set -euo pipefail
out=${1:?usage: make-ca.sh OUT_DIR HOST [HOST...] | make-ca.sh OUT_DIR --client NAME}
shift
[ $# -ge 1 ] || { echo "make-ca.sh: give at least one HOST for the server certificate" >&2; exit 2; }
mkdir -p "$out"
umask 077
days=${FLEET_CERT_DAYS:-825}

if [ ! -s "$out/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/CN=fleet telemetry broker CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"
fi

issue() {  # issue NAME SUBJECT EXTFILE
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/$1.key"
  openssl req -new -key "$out/$1.key" -subj "$2" -out "$out/$1.csr"
  openssl x509 -req -in "$out/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$3" -out "$out/$1.crt" 2>/dev/null
  rm -f "$out/$1.csr"
}

ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
if [ "$1" = "--client" ]; then
  name=${2:?make-ca.sh OUT_DIR --client NAME}
  case $name in */*|*+*|*'#'*) echo "make-ca.sh: client name $name must not contain / + #" >&2; exit 2;; esac
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$ext"
  issue "$name" "/CN=$name" "$ext"
  echo "client certificate: $out/$name.crt ($out/$name.key)"
  exit 0
fi

sans=""
for h in "$@"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then sans+="IP:$h,"; else sans+="DNS:$h,"; fi
done
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
  "${sans%,}" >"$ext"
issue server "/CN=$1" "$ext"
# The broker reads the key as its own user; the CA key never leaves this dir.
chmod 0644 "$out/ca.crt" "$out/server.crt"
echo "CA: $out/ca.crt   server certificate for ${*}: $out/server.crt"
