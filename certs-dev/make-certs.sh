#!/bin/sh
# Make a local development CA and `localhost` certificates (ECDSA P-256 and
# RSA 2048) signed by it, for conf/dev.ini and the tests. Keys are
# git-ignored. Re-running keeps existing files; FORCE=1 makes new ones.
set -eu
cd "$(dirname "$0")"
[ "${FORCE:-0}" = 1 ] && rm -f ca.key ca.crt localhost*.key localhost*.crt
if [ -f ca.crt ] && [ -f localhost.crt ] && [ -f localhost-rsa.crt ]; then
    exit 0
fi
command -v openssl >/dev/null || { echo "make-certs: openssl is missing (apt-get install openssl)" >&2; exit 1; }
umask 077
ext=$(mktemp)
trap 'rm -f "$ext" localhost.csr localhost-rsa.csr' EXIT
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n' > "$ext"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=proxyd dev CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt
openssl ecparam -name prime256v1 -genkey -noout -out localhost.key 2>/dev/null
openssl req -new -key localhost.key -subj "/CN=localhost" -out localhost.csr
openssl x509 -req -in localhost.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile "$ext" -out localhost.crt 2>/dev/null
openssl genrsa -out localhost-rsa.key 2048 2>/dev/null
openssl req -new -key localhost-rsa.key -subj "/CN=localhost" -out localhost-rsa.csr
openssl x509 -req -in localhost-rsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
    -extfile "$ext" -out localhost-rsa.crt 2>/dev/null
chmod 644 ca.crt localhost.crt localhost-rsa.crt
echo "certs-dev: made ca.crt, localhost.{crt,key} (ECDSA) and localhost-rsa.{crt,key} (RSA)"
