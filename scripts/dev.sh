#!/usr/bin/env bash
# `make dev` / `make dev-down`: the whole local system in the background, like
# `docker compose up -d`: backing servers (scripts/stack.sh dev), migrations and sample data,
# then the five services on their default ports. Returns once everything answers.
#
#   scripts/dev.sh up|down|status|logs SERVICE
#
# MOVIEBOOK_PROFILE=release builds and runs optimised binaries (what `make bench-booking`
# numbers should be measured on); the default dev profile shares its build with the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}
if [[ $(id -u) == 0 ]]; then DEFAULT_STATE=/var/lib/moviebook; else DEFAULT_STATE=$HOME/.local/state/moviebook; fi
STATE=${MOVIEBOOK_STATE_DIR:-$DEFAULT_STATE}/dev
PROFILE=${MOVIEBOOK_PROFILE:-dev}
case $PROFILE in
  dev) BIN=$CARGO_TARGET_DIR/debug ;;
  release) BIN=$CARGO_TARGET_DIR/release ;;
  *) echo "MOVIEBOOK_PROFILE must be dev or release, not '$PROFILE'" >&2; exit 2 ;;
esac

# name  binary  http-port  (start order: providers before their callers; the dev gateway is
# what Kong is in a cluster: one origin for the storefront, the APIs and the WebSocket)
SERVICES=(
  "cinema cinema-service 8002"
  "user user-service 8001"
  "payment payment-service 8003"
  "notification notification-service 8004"
  "booking booking-service 8010"
  "gateway dev-gateway 8000"
)

log() { printf '[dev] %s\n' "$*" >&2; }

up() {
  scripts/stack.sh dev up
  eval "$(scripts/stack.sh dev env)"
  log "building the services ($PROFILE profile)"
  cargo build --profile "$PROFILE" --workspace --bins --quiet
  log "building the web assets (storefront, GraphQL IDE)"
  scripts/web.sh build
  export WEB_DIR=$PWD/web/dist
  mkdir -p "$STATE/run" "$STATE/logs"
  for s in "${SERVICES[@]}"; do
    set -- $s
    [[ $1 == gateway ]] && continue
    log "migrating $1"
    "$BIN/$2" migrate >>"$STATE/logs/$1.log" 2>&1 || { log "$2 migrate failed:"; tail -n 20 "$STATE/logs/$1.log" >&2; exit 1; }
  done
  log "loading sample data"
  "$BIN/cinema-service" seed >>"$STATE/logs/cinema.log" 2>&1 || { log "seed failed:"; tail -n 20 "$STATE/logs/cinema.log" >&2; exit 1; }
  for s in "${SERVICES[@]}"; do
    set -- $s
    local pidf=$STATE/run/$1.pid
    if [[ -f $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then log "$1 already running"; continue; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
      log "ERROR: port $3 for $1 is taken by another process"; exit 1
    fi
    # USER_MUTATIONS_PER_MINUTE=0: no per-user limit locally, so `make bench-booking` measures
    # the service, not the limiter (its load users book far faster than a person)
    USER_MUTATIONS_PER_MINUTE=${USER_MUTATIONS_PER_MINUTE:-0} BIND_ADDR=127.0.0.1 PORT=$3 \
      nohup "$BIN/$2" >>"$STATE/logs/$1.log" 2>&1 </dev/null &
    echo $! > "$pidf"
  done
  for s in "${SERVICES[@]}"; do
    set -- $s
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://127.0.0.1:$3/ready" >/dev/null 2>&1; do
      if ((SECONDS > deadline)) || ! kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; then
        log "$1 is not ready; its log:"; tail -n 30 "$STATE/logs/$1.log" >&2; exit 1
      fi
      sleep 0.3
    done
  done
  cat <<MSG

MovieBook is running (logs: $STATE/logs, stop with: make dev-down)

  Storefront:                 http://127.0.0.1:8000/

  GraphQL (IDE in a browser): http://127.0.0.1:8000/graphql  (booking itself: 8010)
  live seat map (WebSocket):  ws://127.0.0.1:8000/graphql/ws
  user service:               http://127.0.0.1:8001/api/v1
  cinema REST / gRPC:         http://127.0.0.1:8002/api/v1/movies   grpc://127.0.0.1:9090
  payment service:            http://127.0.0.1:8003/payments
  notification health:        http://127.0.0.1:8004/health
  every service:              /health /ready /metrics
MSG
}

down() {
  for s in "${SERVICES[@]}"; do
    set -- $s
    local pidf=$STATE/run/$1.pid
    [[ -f $pidf ]] || continue
    local pid; pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      log "$1 stopped"
    fi
    rm -f "$pidf"
  done
  scripts/stack.sh dev down
}

status() {
  for s in "${SERVICES[@]}"; do
    set -- $s
    if curl -fsS "http://127.0.0.1:$3/ready" >/dev/null 2>&1; then echo "$1 ready on $3"; else echo "$1 not ready ($3)"; fi
  done
  scripts/stack.sh dev status
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  logs) tail -n 100 -f "$STATE/logs/${2:?service}.log" ;;
  *) echo "usage: $0 up|down|status|logs SERVICE" >&2; exit 2 ;;
esac
