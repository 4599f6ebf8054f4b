#!/usr/bin/env bash
# Databases and roles of the compose deployment. The postgres image runs this once, when its data volume is
# empty (mounted into /docker-entrypoint-initdb.d). Passwords come from the environment of the postgres
# service (infra/.env); changing one later needs `ALTER ROLE ... PASSWORD ...` as well.
#
#   database   owner      who else connects
#   dagster    dagster    -
#   mlflow     mlflow     -
#   logstore   logstore   pipeline (SELECT, INSERT on agent_calls), gateway (INSERT on agent_calls)
#
# `logstore` owns the log store's tables: the one-shot `init` service migrates the schema as that role, then
# grants the least privileges with `slm-pipeline db-roles --gateway-role gateway --pipeline-role pipeline`
# (the tables do not exist yet while this script runs).
set -euo pipefail

: "${DAGSTER_DB_PASSWORD:?set DAGSTER_DB_PASSWORD}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${LOGSTORE_DB_PASSWORD:?set LOGSTORE_DB_PASSWORD}"
: "${PIPELINE_DB_PASSWORD:?set PIPELINE_DB_PASSWORD}"
: "${GATEWAY_DB_PASSWORD:?set GATEWAY_DB_PASSWORD}"

# psql quotes the passwords itself (:'var'), so any character is safe here.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v dagster_pw="$DAGSTER_DB_PASSWORD" \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
    -v logstore_pw="$LOGSTORE_DB_PASSWORD" \
    -v pipeline_pw="$PIPELINE_DB_PASSWORD" \
    -v gateway_pw="$GATEWAY_DB_PASSWORD" <<'SQL'
CREATE ROLE dagster  LOGIN PASSWORD :'dagster_pw';
CREATE ROLE mlflow   LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE logstore LOGIN PASSWORD :'logstore_pw';
CREATE ROLE pipeline LOGIN PASSWORD :'pipeline_pw';
CREATE ROLE gateway  LOGIN PASSWORD :'gateway_pw';

CREATE DATABASE dagster  OWNER dagster;
CREATE DATABASE mlflow   OWNER mlflow;
CREATE DATABASE logstore OWNER logstore;

-- Only the roles that need a database may connect to it.
REVOKE ALL ON DATABASE dagster, mlflow, logstore FROM PUBLIC;
GRANT CONNECT ON DATABASE logstore TO pipeline, gateway;
SQL
