#!/usr/bin/env bash
# The web part (web/): the storefront and the GraphQL IDE's vendored assets.
#
#   scripts/web.sh deps    Node.js + npm (Debian's packages when absent), then `npm ci` when
#                          package-lock.json changed since the last install
#   scripts/web.sh build   deps, then the static files into web/dist (what the booking service
#                          serves: WEB_DIR), skipped when web/ did not change since the last build
#   scripts/web.sh prepare build, and Debian's chromium when absent (what `test` downloads;
#                          make test runs it in the background while cargo compiles)
#   scripts/web.sh test    build, Debian's chromium, then the browser tests (web/test/e2e)
#                          against servers of their own: the backing servers of the stack.sh test
#                          profile (MOVIEBOOK_TEST_SLOT; started if not up, stopped again if it
#                          started them), fresh databases named web_e2e_*, and the services and
#                          the dev gateway on free ephemeral ports. Never touches `make dev`.
#                          WEB_E2E_HOLD_SECONDS (default 15) is the hold the expiry test waits out.
#
# npm's cache lives outside the clone (~/.cache/moviebook/npm); node_modules and dist are in
# .gitignore. Versions are pinned for Node >= 18.19 (Debian 12 ships 18.20): Vite 5, not 6/7.
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_cache=${npm_config_cache:-$HOME/.cache/moviebook/npm}
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
log() { printf '[web] %s\n' "$*" >&2; }

apt_install() {
  local sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing $* from Debian's packages"
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >&2 \
    || { $sudo apt-get -o DPkg::Lock::Timeout=600 update >&2 \
         && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >&2; }
}

node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null || return 1
  # 18.19 is the oldest Node that Vite 5 and the rest of package.json accept
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>18||(a==18&&b>=19)?0:1)'
}

deps() {
  node_ok || apt_install nodejs npm
  node_ok || { log "Node.js >= 18.19 with npm is needed (found: $(node --version 2>/dev/null || echo none))"; exit 1; }
  local stamp=web/node_modules/.moviebook-lock.sha256 want
  want=$(cat web/package-lock.json web/package.json | sha256sum | cut -d' ' -f1)
  if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    log "npm ci (node $(node --version), cache $npm_config_cache)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
  fi
}

build() {
  deps
  local stamp=web/dist/.moviebook-src.sha256 want
  want=$(find web -path web/node_modules -prune -o -path web/dist -prune -o -path web/test-results -prune \
           -o -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [[ $(cat "$stamp" 2>/dev/null) == "$want" && -f web/dist/ide/index.html ]]; then
    return 0
  fi
  log "building web/dist"
  rm -rf web/dist
  (cd web && npm run --silent build >&2)
  echo "$want" >"$stamp"
}

chromium_path() {
  local c
  for c in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

E2E_PIDS=() E2E_STACK_STARTED=
e2e_cleanup() {
  local pid
  for pid in "${E2E_PIDS[@]}"; do
    # only our own children, by PID
    [[ $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) == *"$CARGO_TARGET_DIR"* ]] && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${E2E_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  [[ -n $E2E_STACK_STARTED ]] && scripts/stack.sh test down >/dev/null 2>&1
  return 0
}

wait_ready() {  # name url pid log
  local deadline=$((SECONDS + 90))
  until curl -fsS "$2" >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || ! kill -0 "$3" 2>/dev/null; then
      log "$1 did not become ready; its log:"; tail -n 30 "$4" >&2; return 1
    fi
    sleep 0.3
  done
}

test_() {
  build
  chromium_path >/dev/null || apt_install chromium
  CHROMIUM=$(chromium_path) || { log "no chromium found"; exit 1; }
  export CHROMIUM
  (cd web && npm run --silent test)

  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}
  # the binaries as `cargo test` builds them (same features as make test's build: no rebuild)
  log "building the service binaries"
  cargo test --workspace --locked --quiet --no-run
  local bin=$CARGO_TARGET_DIR/debug
  trap e2e_cleanup EXIT
  # `status` lists each server as up or down (its exit code says nothing): stop them again at
  # the end only if this run had to start one
  if scripts/stack.sh test status 2>/dev/null | grep -q ' down '; then E2E_STACK_STARTED=1; fi
  scripts/stack.sh test up
  eval "$(scripts/stack.sh test env)"
  local logs; logs=$(mktemp -d "${TMPDIR:-/tmp}/moviebook-web-e2e.XXXXXX")
  local run; run=web_e2e_$(date +%s)_$$
  local pg_admin=${DATABASE_URL%/*}/postgres
  local psql; psql=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/psql
  "$psql" -q "$pg_admin" -c "CREATE DATABASE ${run}_cinema" >/dev/null
  local user=$(free_port) cinema=$(free_port) grpc=$(free_port) payment=$(free_port) booking=$(free_port) gateway=$(free_port)
  export BIND_ADDR=127.0.0.1 RUST_LOG=${RUST_LOG:-info,lapin=warn}
  start() {  # name port binary [env...]
    local name=$1 port=$2 exe=$3; shift 3
    env PORT="$port" "$@" "$bin/$exe" >>"$logs/$name.log" 2>&1 </dev/null &
    E2E_PIDS+=($!)
  }
  local cinema_env=(DATABASE_URL="${DATABASE_URL%/*}/${run}_cinema" GRPC_PORT="$grpc")
  env "${cinema_env[@]}" "$bin/cinema-service" migrate >>"$logs/cinema.log" 2>&1
  env "${cinema_env[@]}" "$bin/cinema-service" seed >>"$logs/cinema.log" 2>&1
  # the same migrations a rollout runs (unique indexes: one account per email, one charge per
  # idempotency key, one hold per booking)
  env MONGODB_URL="$MONGODB_URL/${run}_user" "$bin/user-service" migrate >>"$logs/user.log" 2>&1
  env MONGODB_URL="$MONGODB_URL/${run}_payment" "$bin/payment-service" migrate >>"$logs/payment.log" 2>&1
  env MONGODB_URL="$MONGODB_URL/${run}_booking" "$bin/booking-service" migrate >>"$logs/booking.log" 2>&1
  start cinema "$cinema" cinema-service "${cinema_env[@]}"
  start user "$user" user-service MONGODB_URL="$MONGODB_URL/${run}_user"
  start payment "$payment" payment-service MONGODB_URL="$MONGODB_URL/${run}_payment"
  wait_ready cinema "http://127.0.0.1:$cinema/ready" "${E2E_PIDS[0]}" "$logs/cinema.log"
  wait_ready user "http://127.0.0.1:$user/ready" "${E2E_PIDS[1]}" "$logs/user.log"
  wait_ready payment "http://127.0.0.1:$payment/ready" "${E2E_PIDS[2]}" "$logs/payment.log"
  # Two booking replicas behind the gateway's one address would need a balancer; instead the
  # second replica serves its own port and the live test watches through it, so a change made
  # by one replica reaching the other's subscribers is what the test sees.
  local booking2=$(free_port)
  local booking_env=(MONGODB_URL="$MONGODB_URL/${run}_booking" CINEMA_GRPC_URL="http://127.0.0.1:$grpc"
    USER_SERVICE_URL="http://127.0.0.1:$user" PAYMENT_SERVICE_URL="http://127.0.0.1:$payment"
    BOOKING_HOLD_SECONDS="${WEB_E2E_HOLD_SECONDS:-15}" SWEEP_INTERVAL_SECONDS=1 LOOKUP_CACHE_SECONDS=0
    WEB_DIR="$PWD/web/dist")
  start booking "$booking" booking-service "${booking_env[@]}"
  wait_ready booking "http://127.0.0.1:$booking/ready" "${E2E_PIDS[3]}" "$logs/booking.log"
  start booking2 "$booking2" booking-service "${booking_env[@]}" SWEEPER_ENABLED=false
  start gateway "$gateway" dev-gateway USER_SERVICE_URL="http://127.0.0.1:$user" CINEMA_REST_URL="http://127.0.0.1:$cinema" \
    PAYMENT_SERVICE_URL="http://127.0.0.1:$payment" BOOKING_URL="http://127.0.0.1:$booking"
  local gateway2=$(free_port)
  start gateway2 "$gateway2" dev-gateway USER_SERVICE_URL="http://127.0.0.1:$user" CINEMA_REST_URL="http://127.0.0.1:$cinema" \
    PAYMENT_SERVICE_URL="http://127.0.0.1:$payment" BOOKING_URL="http://127.0.0.1:$booking2"
  wait_ready booking2 "http://127.0.0.1:$booking2/ready" "${E2E_PIDS[4]}" "$logs/booking2.log"
  wait_ready gateway "http://127.0.0.1:$gateway/graphql/ide/ide.js" "${E2E_PIDS[5]}" "$logs/gateway.log"
  wait_ready gateway2 "http://127.0.0.1:$gateway2/graphql/ide/ide.js" "${E2E_PIDS[6]}" "$logs/gateway2.log"
  log "servers up (logs: $logs); the page: http://127.0.0.1:$gateway/ (second replica: $gateway2)"
  local rc=0
  (cd web && BASE_URL="http://127.0.0.1:$gateway" BASE_URL_2="http://127.0.0.1:$gateway2" \
     HOLD_SECONDS="${WEB_E2E_HOLD_SECONDS:-15}" SCREENSHOTS="${WEB_E2E_SCREENSHOTS:-}" npm run --silent e2e) || rc=$?
  if ((rc != 0)); then
    for f in "$logs"/*.log; do log "--- $(basename "$f") (last lines)"; tail -n 15 "$f" >&2; done
  fi
  e2e_cleanup; trap - EXIT
  "$psql" -q "$pg_admin" -c "DROP DATABASE IF EXISTS ${run}_cinema WITH (FORCE)" >/dev/null 2>&1 || true
  ((rc == 0)) && rm -rf "$logs"
  return "$rc"
}

case ${1:-} in
  deps) deps ;;
  build) build ;;
  prepare) build; chromium_path >/dev/null || apt_install chromium ;;
  test) test_ ;;
  *) echo "usage: $0 deps|build|prepare|test" >&2; exit 2 ;;
esac
