#!/bin/sh
# Makes a private CA and a TLS server certificate for the Fluentd receiver of compose.yaml
# (subject alternative names: fluentd, localhost, 127.0.0.1) in DIR (default ./certs).
# For a real deployment, use certificates from your own PKI instead.
set -eu
dir=${1:-certs}
days=${DAYS:-825}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days "$days" -nodes \
  -subj "/CN=openai-audit-forwarder example CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -subj "/CN=fluentd" \
  -keyout fluentd.key -out fluentd.csr 2>/dev/null
printf '%s\n' \
  "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" \
  "subjectAltName=DNS:fluentd,DNS:localhost,IP:127.0.0.1" > fluentd.ext
openssl x509 -req -sha256 -days "$days" -in fluentd.csr -CA ca.pem -CAkey ca.key \
  -CAcreateserial -extfile fluentd.ext -out fluentd.crt 2>/dev/null
rm -f fluentd.csr fluentd.ext ca.srl
# The fluent user inside the Fluentd image must read its key from this bind mount.
chmod 0644 ca.pem fluentd.crt fluentd.key
echo "wrote $(pwd)/ca.pem, fluentd.crt, fluentd.key (ca.key stays private)"
