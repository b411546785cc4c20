#!/usr/bin/env bash
# Makes the machine's PostgreSQL ready for the suite, which runs every queue and
# API test on it as well as on SQLite: installs Debian's package when it is
# missing (as root), starts the cluster if it is not answering, and lets the
# tests sign in as postgres/postgres over TCP (the default TEST_POSTGRES_URL).
set -euo pipefail
host=127.0.0.1
if [ -n "${TEST_POSTGRES_URL:-}" ]; then exit 0; fi
is_root() { [ "$(id -u)" -eq 0 ]; }

if ! pg_isready -q -h "$host" -p 5432 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
      echo "PostgreSQL is not answering on $host:5432 and is not installed:" \
           "run 'sudo apt-get install postgresql', or set TEST_POSTGRES_URL" >&2
      exit 1
    fi
    echo "installing Debian's postgresql" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 50); do
    pg_isready -q -h "$host" -p 5432 && break
    sleep 0.2
  done
  if ! pg_isready -q -h "$host" -p 5432; then
    echo "PostgreSQL did not come up on $host:5432" >&2
    exit 1
  fi
fi

signs_in() { PGPASSWORD=postgres psql -h "$host" -U postgres -d postgres -qtAc 'SELECT 1' >/dev/null 2>&1; }
if ! signs_in; then
  if is_root && command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
  fi
  if ! signs_in; then
    echo "cannot sign in to PostgreSQL as postgres/postgres on $host:5432:" \
         "give the postgres role that password, or set TEST_POSTGRES_URL" >&2
    exit 1
  fi
fi
