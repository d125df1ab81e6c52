#!/bin/sh
# Entrypoint of MovieBook's PostgreSQL STAND-IN image (Debian bookworm's postgresql-15, not the
# official postgres image). It honours the part of the official image's contract that
# MovieBook's operator relies on (operator/src/build/stores.rs): POSTGRES_USER (superuser),
# POSTGRES_PASSWORD (required), POSTGRES_DB (created), PGDATA, port 5432 on every address,
# password (scram-sha-256) authentication over TCP, extra arguments passed to postgres.
# The first initialisation happens in a side directory renamed into place at the end, so a
# crash half-way leaves nothing that a restart would take for a finished database.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ "${1:-postgres}" = postgres ]; then [ $# -gt 0 ] && shift; else exec "$@"; fi
sock=/var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "postgres stand-in: POSTGRES_PASSWORD must be set" >&2; exit 1; }
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  init="$PGDATA.init"
  rm -rf "$init"
  mkdir -p "$init" && chmod 700 "$init"
  pw="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" >"$pw"
  initdb -D "$init" -U "$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$init/pg_hba.conf"
  pg_ctl -D "$init" -o "-c listen_addresses='' -c unix_socket_directories=$sock" -w -s start
  if [ "$db" != postgres ]; then
    psql -q -v ON_ERROR_STOP=1 -h "$sock" -U "$user" -d postgres -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
  fi
  pg_ctl -D "$init" -m fast -w -s stop
  if [ -e "$PGDATA" ]; then
    rmdir "$PGDATA" || { echo "postgres stand-in: $PGDATA exists, is not empty and holds no database" >&2; exit 1; }
  fi
  mv "$init" "$PGDATA"
  echo "postgres stand-in: initialised $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$sock" "$@"
