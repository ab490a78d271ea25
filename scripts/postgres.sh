#!/usr/bin/env bash
# Makes sure the local PostgreSQL the tests use (127.0.0.1:5432, trust auth, database `test`)
# is up, with TLS: starts the Debian cluster if it is installed but stopped, and serves a
# certificate for localhost/127.0.0.1 issued by a local CA (made once with openssl under
# ~/.cache/dvsp/pg-tls; tests/tls.rs connects with sslmode=verify-full and sslrootcert=ca.pem).
# Idempotent: a cluster already serving that certificate is left alone; otherwise the
# configuration is written to conf.d and reloaded (restarted only if TLS is still not up).
set -euo pipefail
TLS=${DVSP_PG_TLS:-$HOME/.cache/dvsp/pg-tls}

if [ ! -d /etc/postgresql ]; then
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
  echo "postgres.sh: no PostgreSQL on 127.0.0.1:5432; the Postgres tests will fail (set DVSP_TEST_PG to another server)" >&2
  exit 1
fi
VERSION=$(ls /etc/postgresql | head -n1)
CONF=/etc/postgresql/$VERSION/main

# The CA and the server certificate (renewed when within 30 days of expiry).
mkdir -p "$TLS"
if [ ! -f "$TLS/server.pem" ] || ! openssl x509 -checkend 2592000 -noout -in "$TLS/server.pem" >/dev/null; then
  echo "postgres.sh: making a CA and a server certificate in $TLS"
  ( umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=dvsp test PostgreSQL CA" -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$TLS/server.ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
      -CAcreateserial -days 825 -extfile "$TLS/server.ext" -out "$TLS/server.pem" 2>/dev/null
    rm -f "$TLS/server.csr" "$TLS/server.ext" )
  chmod 644 "$TLS/ca.pem"
fi

# The server's copy: readable by postgres only (it refuses a key others can read).
install -o postgres -g postgres -m 0644 "$TLS/server.pem" "$CONF/dvsp-server.pem"
install -o postgres -g postgres -m 0600 "$TLS/server.key" "$CONF/dvsp-server.key"
cat > "$CONF/conf.d/91-dvsp-tls.conf" <<CONFEOF
# Written by dvsp's scripts/postgres.sh: TLS with the local test CA's certificate.
ssl = on
ssl_cert_file = '$CONF/dvsp-server.pem'
ssl_key_file = '$CONF/dvsp-server.key'
CONFEOF
chown postgres:postgres "$CONF/conf.d/91-dvsp-tls.conf"

tls_up() {
  psql "host=localhost port=5432 user=postgres dbname=test sslmode=verify-full sslrootcert=$TLS/ca.pem" \
    -tAc "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>/dev/null | grep -q t
}
ready() {
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.2; done
  return 1
}

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  tls_up && exit 0
  echo "postgres.sh: reloading the PostgreSQL cluster with TLS"
  pg_ctlcluster --skip-systemctl-redirect "$VERSION" main reload
  sleep 0.5
  tls_up && exit 0
  echo "postgres.sh: restarting the PostgreSQL cluster with TLS"
  pg_ctlcluster --skip-systemctl-redirect "$VERSION" main restart
else
  echo "postgres.sh: starting the local PostgreSQL cluster"
  pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start
fi
if ready && tls_up; then exit 0; fi
echo "postgres.sh: PostgreSQL on 127.0.0.1:5432 is not serving TLS with $TLS/ca.pem; the TLS tests will fail" >&2
exit 1
