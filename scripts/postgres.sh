#!/usr/bin/env bash
# Makes sure the local PostgreSQL the tests use (127.0.0.1:5432, trust auth, database `test`)
# is up: starts the Debian cluster if it is installed but stopped.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if [ -d /etc/postgresql ]; then
  echo "postgres.sh: starting the local PostgreSQL cluster"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 0.2; done
fi
echo "postgres.sh: no PostgreSQL on 127.0.0.1:5432; the Postgres tests will fail (set DVSP_TEST_PG to another server)" >&2
exit 1
