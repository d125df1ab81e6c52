#!/usr/bin/env bash
# `make bench-booking`: createBooking and processPayment at full speed, with the cost of each.
#
# Starts everything it needs on its own ports and data, so it neither needs nor touches a
# running `make dev` or `make test`: the backing servers (scripts/stack.sh, test profile, slot
# MOVIEBOOK_BENCH_SLOT, default 9, state under <state>/bench, wiped at every run), the five
# services as release builds on ports 18101-18190, the schema and the sample catalogue. Then
# `booking-bench` (services/booking/src/bin/booking-bench.rs) loads them and prints, last, one line
#   bench-booking: createBooking=<N>/s p99=<X>ms processPayment=<M>/s p99=<Y>ms cpu_per_booking=<C>ms
# Everything it started is stopped on exit. Knobs: BENCH_USERS (64), BENCH_CONCURRENCY (32),
# BENCH_CREATE_SECS (10), BENCH_PAY_SECS (10), MOVIEBOOK_MONGO_SERVER (see scripts/stack.sh; the
# Rust SecantusDB of `make mongo-rs` when it is built).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}
if [[ $(id -u) == 0 ]]; then DEFAULT_STATE=/var/lib/moviebook; else DEFAULT_STATE=$HOME/.local/state/moviebook; fi
export MOVIEBOOK_STATE_DIR=${MOVIEBOOK_BENCH_STATE:-$DEFAULT_STATE/bench}
export MOVIEBOOK_TEST_SLOT=${MOVIEBOOK_BENCH_SLOT:-9}
STACK="scripts/stack.sh test"
STATE=$MOVIEBOOK_STATE_DIR/test-$MOVIEBOOK_TEST_SLOT
RUN=$MOVIEBOOK_STATE_DIR/services
BIN=$CARGO_TARGET_DIR/release
log() { printf '[bench-booking] %s\n' "$*" >&2; }

if [[ -z ${MOVIEBOOK_MONGO_SERVER:-} ]]; then
  if [[ -x ${MOVIEBOOK_CACHE:-$HOME/.cache/moviebook}/secantus-rs/bin/secantusd-rs ]]; then
    export MOVIEBOOK_MONGO_SERVER=secantus-rs
  else
    # The Python server is far slower than the Rust one and bounds every number: say so (on
    # stderr, so the result line stays the last line of the output).
    log "warning: the MongoDB-compatible server is the Python SecantusDB (no \`make mongo-rs\` build found); it bounds these numbers, which are not comparable with docs/performance.md"
  fi
fi

# name  binary  http-port (providers first)
SERVICES=(
  "cinema cinema-service 18102"
  "user user-service 18101"
  "payment payment-service 18103"
  "notification notification-service 18104"
  "booking booking-service 18110"
)
CINEMA_GRPC_PORT=18190

stop_services() {
  local pidf pid
  for pidf in "$RUN"/*.pid; do
    [[ -f $pidf ]] || continue
    pid=$(cat "$pidf")
    # Only a process this script started: its binary is one of ours from $BIN.
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$BIN/"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  done
}
cleanup() {
  stop_services
  $STACK down >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "release build of the five services and the load generator"
cargo build --release --locked --quiet -p booking-service -p cinema-service -p user-service \
  -p payment-service -p notification-service --bins

log "fresh backing servers (state: $STATE)"
stop_services
$STACK down >/dev/null 2>&1 || true
rm -rf "$STATE" "$RUN"
mkdir -p "$RUN/logs"
$STACK up
eval "$($STACK env)"
export DATABASE_URL MONGODB_URL REDIS_URL RABBITMQ_URL

export RUST_LOG=${RUST_LOG:-warn} BIND_ADDR=127.0.0.1 USER_MUTATIONS_PER_MINUTE=0
export GRPC_PORT=$CINEMA_GRPC_PORT CINEMA_GRPC_URL=http://127.0.0.1:$CINEMA_GRPC_PORT
export USER_SERVICE_URL=http://127.0.0.1:18101 PAYMENT_SERVICE_URL=http://127.0.0.1:18103

for s in "${SERVICES[@]}"; do
  set -- $s
  "$BIN/$2" migrate >>"$RUN/logs/$1.log" 2>&1 || { log "$2 migrate failed:"; tail -n 20 "$RUN/logs/$1.log" >&2; exit 1; }
done
"$BIN/cinema-service" seed >>"$RUN/logs/cinema.log" 2>&1 || { log "seed failed:"; tail -n 20 "$RUN/logs/cinema.log" >&2; exit 1; }

for s in "${SERVICES[@]}"; do
  set -- $s
  if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then log "port $3 for $1 is taken by another process"; exit 1; fi
  PORT=$3 nohup "$BIN/$2" >>"$RUN/logs/$1.log" 2>&1 </dev/null &
  echo $! >"$RUN/$1.pid"
done
for s in "${SERVICES[@]}"; do
  set -- $s
  deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$3/ready" >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || ! kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; then
      log "$1 is not ready; its log:"; tail -n 30 "$RUN/logs/$1.log" >&2; exit 1
    fi
    sleep 0.3
  done
done

procs=()
for s in "${SERVICES[@]}"; do set -- $s; procs+=(--process "$1=$(cat "$RUN/$1.pid")"); done
for p in postgres mongo rabbitmq redis; do
  [[ -f $STATE/run/$p.pid ]] && procs+=(--process "$p=$(cat "$STATE/run/$p.pid")")
done
log "machine: $(nproc) CPU(s),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(free -g | awk '/Mem:/{print $2}') GiB; MongoDB server: ${MOVIEBOOK_MONGO_SERVER:-secantus (Python)}"
"$BIN/booking-bench" --graphql http://127.0.0.1:18110/graphql --user-url http://127.0.0.1:18101 \
  --users "${BENCH_USERS:-64}" --concurrency "${BENCH_CONCURRENCY:-32}" \
  --create-secs "${BENCH_CREATE_SECS:-10}" --pay-secs "${BENCH_PAY_SECS:-10}" \
  --mongo-url "$MONGODB_URL" --postgres-url "$DATABASE_URL" \
  --redis-addr "$(sed -E 's#^redis://([^/]*).*#\1#' <<<"$REDIS_URL")" "${procs[@]}"
