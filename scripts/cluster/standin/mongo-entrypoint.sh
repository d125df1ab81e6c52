#!/bin/sh
# Entrypoint of MovieBook's MongoDB STAND-IN image: SecantusDB (PyPI `SecantusDB`), a
# MongoDB-wire-compatible server on WiredTiger, NOT mongod. It takes the mongod flags a plain
# single server needs (--bind_ip_all, --bind_ip, --port, --dbpath) and refuses the rest
# clearly: SecantusDB always runs as its own single-node replica set (named `secantus`), so it
# cannot be initiated as `--replSet rs0`; clients connect with directConnection=true. --auth is
# SecantusDB's too (SCRAM-SHA-256); the users come from `moviebook-mongo-users` (mongo-users.py),
# which the operator's init container runs before this.
set -eu
host=0.0.0.0 port=27017 dbpath=/data/db auth=
[ "${1:-}" = mongod ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --bind_ip_all) host=0.0.0.0 ;;
    --bind_ip) host=$2; shift ;;
    --port) port=$2; shift ;;
    --dbpath) dbpath=$2; shift ;;
    --auth) auth=1 ;;
    --replSet|--replSet=*)
      echo "mongo stand-in (SecantusDB): cannot run as replica set '${2:-${1#*=}}': SecantusDB is its own single-node set; give the MovieBookingSystem the MongoDB choice without replica-set initiation (docs/cluster.md)" >&2
      exit 64 ;;
    *) echo "mongo stand-in (SecantusDB): unsupported mongod argument '$1'" >&2; exit 64 ;;
  esac
  shift
done
# WiredTiger's cache (SecantusDB's default is 1G): a quarter of the container's memory limit,
# at least 64 MiB, as mongod sizes its cache from the memory it may use.
cache=${SECANTUS_CACHE_SIZE:-}
if [ -z "$cache" ]; then
  limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo max)
  case "$limit" in
    ''|max|*[!0-9]*) cache=1G ;;
    *) mb=$((limit / 4 / 1048576)); [ "$mb" -lt 64 ] && mb=64; [ "$mb" -gt 1024 ] && mb=1024; cache=${mb}M ;;
  esac
fi
exec python3 -m secantus --host "$host" --port "$port" --storage-path "$dbpath" --cache-size "$cache" \
  --log-level "${SECANTUS_LOG_LEVEL:-WARNING}" ${auth:+--auth}
