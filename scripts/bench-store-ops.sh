#!/usr/bin/env bash
# `make bench-store-ops`: the server CPU of single MongoDB and Redis operations (see
# scripts/bench-store-ops.py). Starts its own servers (scripts/stack.sh, test profile, slot
# MOVIEBOOK_STORE_OPS_SLOT, default 8, wiped each run; the Rust SecantusDB of `make mongo-rs`
# when it is built) and stops them on exit. Knob: STORE_OPS_N (3000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) == 0 ]]; then DEFAULT_STATE=/var/lib/moviebook; else DEFAULT_STATE=$HOME/.local/state/moviebook; fi
export MOVIEBOOK_STATE_DIR=${MOVIEBOOK_STORE_OPS_STATE:-$DEFAULT_STATE/store-ops}
export MOVIEBOOK_TEST_SLOT=${MOVIEBOOK_STORE_OPS_SLOT:-8}
CACHE=${MOVIEBOOK_CACHE:-$HOME/.cache/moviebook}
if [[ -z ${MOVIEBOOK_MONGO_SERVER:-} && -x $CACHE/secantus-rs/bin/secantusd-rs ]]; then
  export MOVIEBOOK_MONGO_SERVER=secantus-rs
fi
STACK="scripts/stack.sh test"
STATE=$MOVIEBOOK_STATE_DIR/test-$MOVIEBOOK_TEST_SLOT
trap '$STACK down >/dev/null 2>&1 || true' EXIT
$STACK down >/dev/null 2>&1 || true
rm -rf "$STATE"
$STACK up >&2
eval "$($STACK env)"
export MONGODB_URL
MONGO_PID=$(cat "$STATE/run/mongo.pid") REDIS_PID=$(cat "$STATE/run/redis.pid") \
  REDIS_PORT=${REDIS_URL##*:} LUA_DIR=services/notification/src/lua \
  MONGO_KIND=${MOVIEBOOK_MONGO_SERVER:-secantus} \
  "$CACHE/venv/bin/python" scripts/bench-store-ops.py
