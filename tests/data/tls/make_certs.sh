#!/usr/bin/env bash
# Makes the TLS material shoal's tests use: a test CA and a server certificate for
# localhost / 127.0.0.1 signed by it, valid for 100 years. TEST ONLY: the private keys are
# committed. Run from this folder: ./make_certs.sh
set -euo pipefail
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=shoal test CA" \
  -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile server.ext -out server.pem
rm -f server.csr server.ext ca.srl
# An unrelated CA, to check that a client trusting it is refused.
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=shoal other CA" \
  -keyout other-ca.key -out other-ca.pem -addext "basicConstraints=critical,CA:TRUE"
rm -f other-ca.key
# The namespace-cluster tests' hosts (engine/tests/harness/netns.rs): 10.77.0.10-29, each
# host presenting this one certificate (a real deployment gives each its own).
openssl req -newkey rsa:2048 -nodes -subj "/CN=shoal netns hosts" -keyout netns.key -out netns.csr
{
  echo "basicConstraints=CA:FALSE"
  echo "keyUsage=critical,digitalSignature,keyEncipherment"
  echo "extendedKeyUsage=serverAuth"
  printf "subjectAltName=DNS:localhost"
  for i in $(seq 10 29); do printf ",IP:10.77.0.%s" "$i"; done
  echo
} > netns.ext
openssl x509 -req -in netns.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile netns.ext -out netns.pem
rm -f netns.csr netns.ext ca.srl
