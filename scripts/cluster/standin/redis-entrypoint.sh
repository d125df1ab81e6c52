#!/bin/sh
# Entrypoint of MovieBook's Redis STAND-IN image (Debian bookworm's redis-server 7.0, not the
# official redis image): like the official one, `redis-server ARGS` or bare `--flags` run the
# server (the operator passes `redis-server --appendonly yes --dir /data --requirepass ...`).
set -eu
case "${1:-}" in
  ""|-*) set -- redis-server "$@" ;;
esac
exec "$@"
