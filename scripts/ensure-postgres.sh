#!/usr/bin/env bash
# Make sure the test Postgres exists: a server on 127.0.0.1:5432, a role `slm_pipeline`
# that may create databases and roles (each test session makes its own and drops them), and a database
# of the same name. Idempotent; safe to run on every `make test`.
set -euo pipefail
HOST=${PGHOST_TEST:-127.0.0.1}
PORT=${PGPORT_TEST:-5432}
ADMIN=${PGADMIN_USER:-postgres}
ROLE=slm_pipeline
psql_admin() { psql -h "$HOST" -p "$PORT" -U "$ADMIN" -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }

if ! pg_isready -h "$HOST" -p "$PORT" -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting the local Postgres cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h "$HOST" -p "$PORT" -q && break; sleep 1; done
fi
pg_isready -h "$HOST" -p "$PORT" -q || { echo "no Postgres answers on $HOST:$PORT" >&2; exit 1; }

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
  psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB"
  echo "created role $ROLE"
fi
# CREATEROLE: the access tests create the gateway's and the pipeline's roles (and drop them after).
if [ "$(psql_admin -c "SELECT rolcreaterole FROM pg_roles WHERE rolname = '$ROLE'")" != "t" ]; then
  psql_admin -c "ALTER ROLE $ROLE CREATEROLE"
  echo "role $ROLE may now create roles"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$ROLE'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE $ROLE OWNER $ROLE"
  echo "created database $ROLE"
fi
