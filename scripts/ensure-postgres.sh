#!/usr/bin/env bash
# Starts the machine's PostgreSQL cluster if it is not answering; the suite
# runs every queue and API test on it as well as on SQLite.
set -euo pipefail
host=127.0.0.1
if [ -n "${TEST_POSTGRES_URL:-}" ]; then exit 0; fi
if pg_isready -q -h "$host" -p 5432 2>/dev/null; then exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not answering on $host:5432 and pg_ctlcluster is missing;" \
       "install PostgreSQL or set TEST_POSTGRES_URL" >&2
  exit 1
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 50); do
  pg_isready -q -h "$host" -p 5432 && exit 0
  sleep 0.2
done
echo "PostgreSQL did not come up on $host:5432" >&2
exit 1
