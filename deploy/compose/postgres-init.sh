#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d): the same objects
# as deploy/local/postgres.sh creates for the local stack. Database $POSTGRES_DB (owned by the admin
# role $POSTGRES_USER), and per service a login role and a schema of the same name, with that schema
# as the role's search_path. Every service role gets the password $MLOOP_DB_PASSWORD.
set -euo pipefail

: "${MLOOP_DB_PASSWORD:?set MLOOP_DB_PASSWORD}"
SERVICES=(ingest trainer validator registry drift)  # serving has no database

sql="REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
for svc in "${SERVICES[@]}"; do
    sql+="
CREATE ROLE $svc WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE SCHEMA $svc AUTHORIZATION $svc;
ALTER ROLE $svc IN DATABASE $POSTGRES_DB SET search_path = $svc;"
done

psql -X -q -v ON_ERROR_STOP=1 -v password="$MLOOP_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<<"$sql"
echo "mloop: roles and schemas ${SERVICES[*]} created in database $POSTGRES_DB"
