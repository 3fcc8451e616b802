#!/usr/bin/env bash
# A private certificate authority for the lab, and the broker's TLS certificate signed by it
# (the 8883 listener of mosquitto.conf). Needs only openssl.
#
#   bash deploy/mosquitto/make-certs.sh lab-server.lab.lan 10.0.0.5   # every name and address the Pis use
#   bash deploy/mosquitto/make-certs.sh --out DIR NAME...             # elsewhere than ./secrets
#
# Writes, under --out (default: ./secrets, which git and the image ignore):
#   tls-ca/ca.key          the CA's private key (0600): keep it off the broker; it signs new certificates
#   tls-ca/ca.crt          the CA certificate: copy it to each Pi as /etc/chamber-bridge/ca.crt
#   mosquitto-tls/server.key, server.crt, ca.crt
#                          the broker's key (0600) and certificate (mounted at /mosquitto/certs)
# An existing CA is reused, so running it again (new names, renewal) needs no change on the Pis.
# The certificate names every NAME (an IP address or a host name) plus `mosquitto` and
# `localhost`; a client checks the host it connects to against them. Valid 825 days; the CA 10 years.
set -euo pipefail

out=secrets
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    --*) echo "make-certs.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "make-certs.sh: name the broker's host names / IP addresses the Pis connect to (try --help)" >&2
  exit 2
fi

umask 077
ca="$out/tls-ca"
server="$out/mosquitto-tls"
mkdir -p "$ca" "$server"

if [ ! -s "$ca/ca.key" ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
    -subj "/CN=chamber-bridge lab CA" -keyout "$ca/ca.key" -out "$ca/ca.crt" 2>/dev/null
  echo "new CA: $ca/ca.crt"
else
  echo "CA kept: $ca/ca.crt"
fi

san=""
for name in "$@" mosquitto localhost; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then kind=IP; else kind=DNS; fi
  case ",$san," in *",$kind:$name,"*) continue ;; esac
  san="${san:+$san,}$kind:$name"
done

openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -subj "/CN=$1" \
  -keyout "$server/server.key" -out "$server/server.csr" 2>/dev/null
extensions="$server/server.ext"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyAgreement" \
  "extendedKeyUsage=serverAuth" "subjectAltName=$san" "subjectKeyIdentifier=hash" \
  "authorityKeyIdentifier=keyid,issuer" > "$extensions"
openssl x509 -req -in "$server/server.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -sha256 -days 825 -extfile "$extensions" -out "$server/server.crt" 2>/dev/null
rm -f "$server/server.csr" "$extensions"
cp "$ca/ca.crt" "$server/ca.crt"
chmod 0644 "$ca/ca.crt" "$server/server.crt" "$server/ca.crt"
chmod 0755 "$server"
echo "broker certificate: $server/server.crt for $san"
echo "next: sudo chown 1883:1883 $server/server.key (the broker's uid), docker compose up -d"
