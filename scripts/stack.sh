#!/usr/bin/env bash
# The local backing servers of MovieBook: PostgreSQL, MongoDB (SecantusDB, or a real mongod on
# PATH), Redis and RabbitMQ, each on 127.0.0.1 with its data under one state folder outside the
# source tree.
#
#   scripts/stack.sh PROFILE up|down|status|env|install
#   scripts/stack.sh PROFILE rabbit-stop|rabbit-start   (tests: a real broker outage)
#   scripts/stack.sh PROFILE rabbitmqctl ARGS...        (tests: load users and grants)
#
# PROFILE is `dev` (standard ports: what `make dev` uses) or `test` (its own port range and
# state folder, so `make test` never touches a running `make dev`). MOVIEBOOK_TEST_SLOT=N (0-9)
# shifts the test profile's ports by 10*N and gives it its own state folder (`test-N`), so
# several test runs (e.g. in separate worktrees) can run side by side.
#
# A server whose URL is already given in the environment (DATABASE_URL, MONGODB_URL, REDIS_URL,
# RABBITMQ_URL) is used as it is and not started. Idempotent: `up` twice starts nothing twice;
# a port held by someone else is reported clearly.
set -euo pipefail

PROFILE=${1:-}
CMD=${2:-}
case $PROFILE in
  dev)  PG_PORT=5432  MONGO_PORT=27017 REDIS_PORT=6379  RABBIT_PORT=5672  RABBIT_DIST=25672 EPMD_PORT=4369 ;;
  test)
    SLOT=${MOVIEBOOK_TEST_SLOT:-0}
    [[ $SLOT =~ ^[0-9]$ ]] || { echo "MOVIEBOOK_TEST_SLOT must be a digit, got '$SLOT'" >&2; exit 2; }
    o=$((SLOT * 10))
    PG_PORT=$((55432 + o)) MONGO_PORT=$((57017 + o)) REDIS_PORT=$((56379 + o))
    RABBIT_PORT=$((55672 + o)) RABBIT_DIST=$((55673 + o)) EPMD_PORT=$((54369 + o))
    ((SLOT == 0)) || PROFILE=test-$SLOT ;;
  *) echo "usage: $0 dev|test up|down|status|env|install|rabbit-stop|rabbit-start|rabbitmqctl ARGS..." >&2; exit 2 ;;
esac

CACHE=${MOVIEBOOK_CACHE:-$HOME/.cache/moviebook}
if [[ $(id -u) == 0 ]]; then DEFAULT_STATE=/var/lib/moviebook; else DEFAULT_STATE=$HOME/.local/state/moviebook; fi
STATE=${MOVIEBOOK_STATE_DIR:-$DEFAULT_STATE}/$PROFILE
VENV=$CACHE/venv
SECANTUS_VERSION=${SECANTUS_VERSION:-}   # empty: newest from PyPI at first install
PG_USER=moviebook PG_PASSWORD=moviebook PG_DB=moviebook_cinema
RABBIT_NODE=moviebook-$PROFILE@localhost

log() { printf '[stack:%s] %s\n' "$PROFILE" "$*" >&2; }
die() { printf '[stack:%s] ERROR: %s\n' "$PROFILE" "$*" >&2; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
SECANTUS_RS=$CACHE/secantus-rs/bin/secantusd-rs
# Which MongoDB-compatible server to run: MOVIEBOOK_MONGO_SERVER=mongod|secantus-rs|secantus
# forces one; otherwise a real mongod on PATH; otherwise, for `dev`, the faster Rust SecantusDB
# if `make mongo-rs` has built it; otherwise the Python SecantusDB from PyPI (seconds to install,
# and what `make test` uses so every machine tests against the same server).
mongo_kind() {
  if [[ -n ${MOVIEBOOK_MONGO_SERVER:-} ]]; then echo "$MOVIEBOOK_MONGO_SERVER"
  elif command -v mongod >/dev/null 2>&1; then echo mongod
  elif [[ $PROFILE == dev && -x $SECANTUS_RS ]]; then echo secantus-rs
  else echo secantus; fi
}

# ---- install -------------------------------------------------------------------------------
install() {
  local missing=()
  [[ -n $(pg_bin) ]] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    log "installing from Debian's packages: ${missing[*]}"
    local sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    # Debian's maintainer scripts would start system-wide servers on the standard ports; we run
    # our own instances, so keep those from starting (policy-rc.d 101 = "action forbidden").
    local policy=/usr/sbin/policy-rc.d created=""
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null; $sudo chmod +x $policy; created=1; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ -n $created ]] && $sudo rm -f $policy
  fi
  if [[ $(mongo_kind) == secantus && ! -x $VENV/bin/secantusd-py ]]; then
    log "installing SecantusDB (MongoDB-compatible server) from PyPI into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "SecantusDB${SECANTUS_VERSION:+==$SECANTUS_VERSION}"
  fi
}

# ---- helpers -------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_owner() { ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\),pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n 1; }
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Refuses to start on a port someone else holds.
check_free() { # name port pidfile
  if port_open "$2"; then
    if pid_alive "$3"; then return 1; fi   # ours, already running
    die "port $2 for $1 is taken by $(port_owner "$2" || echo 'another process'); stop it, or point the matching *_URL variable at it"
  fi
  return 0
}

wait_until() { # name seconds cmd...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "$name did not come up in ${secs}s; its log:"; tail -n 30 "$STATE/logs/$name.log" >&2 || true; exit 1; }
    sleep 0.3
  done
}

as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---- PostgreSQL ----------------------------------------------------------------------------
pg_up() {
  [[ -z ${DATABASE_URL:-} ]] || { log "PostgreSQL: using DATABASE_URL as given"; return; }
  local bin data=$STATE/postgres run=$STATE/run/postgres
  bin=$(pg_bin)
  check_free postgres "$PG_PORT" "$STATE/run/postgres.pid" || { log "PostgreSQL already running on $PG_PORT"; return; }
  mkdir -p "$run" "$STATE/logs" "$STATE/run"
  [[ $(id -u) == 0 ]] && chown postgres "$run" "$STATE/logs"
  if [[ ! -s $data/PG_VERSION ]]; then
    mkdir -p "$data"; [[ $(id -u) == 0 ]] && chown postgres "$data"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $PG_PORT"
      echo "unix_socket_directories = '$run'"
      echo "max_connections = 400"
      echo "shared_buffers = 256MB"
      if [[ $PROFILE == test* ]]; then echo "fsync = off"; echo "synchronous_commit = off"; echo "full_page_writes = off"; fi
    } >> "$data/postgresql.conf"
  fi
  as_pg "$bin/pg_ctl" -D "$data" -l "$STATE/logs/postgres.log" -w -t 60 start >/dev/null
  head -n 1 "$data/postmaster.pid" > "$STATE/run/postgres.pid"
  wait_until postgres 30 as_pg "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
  as_pg "$bin/psql" -h "$run" -p "$PG_PORT" -U postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
  log "PostgreSQL up on 127.0.0.1:$PG_PORT"
}
pg_down() {
  local data=$STATE/postgres
  [[ -f $data/postmaster.pid ]] || return 0
  as_pg "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$STATE/run/postgres.pid"
  log "PostgreSQL stopped"
}

# ---- MongoDB -------------------------------------------------------------------------------
mongo_up() {
  [[ -z ${MONGODB_URL:-} ]] || { log "MongoDB: using MONGODB_URL as given"; return; }
  local pidf=$STATE/run/mongo.pid data=$STATE/mongo
  check_free mongo "$MONGO_PORT" "$pidf" || { log "MongoDB already running on $MONGO_PORT"; return; }
  mkdir -p "$data" "$STATE/run" "$STATE/logs"
  case $(mongo_kind) in
  mongod)
    nohup mongod --bind_ip 127.0.0.1 --port "$MONGO_PORT" --dbpath "$data" --replSet rs0 \
      >"$STATE/logs/mongo.log" 2>&1 </dev/null & ;;
  secantus-rs)
    [[ -x $SECANTUS_RS ]] || die "MOVIEBOOK_MONGO_SERVER=secantus-rs but $SECANTUS_RS is missing: run make mongo-rs"
    data=$STATE/mongo-rs; mkdir -p "$data"
    nohup "$SECANTUS_RS" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$data" \
      >"$STATE/logs/mongo.log" 2>&1 </dev/null & ;;
  *)
    nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$data" \
      --log-level WARNING >"$STATE/logs/mongo.log" 2>&1 </dev/null & ;;
  esac
  echo $! > "$pidf"
  wait_until mongo 60 port_open "$MONGO_PORT"
  if [[ $(mongo_kind) == mongod ]]; then  # transactions need the replica set initiated
    if command -v mongosh >/dev/null; then
      mongosh --quiet --port "$MONGO_PORT" --eval 'try { rs.status() } catch (e) { rs.initiate() }' >/dev/null
    else
      log "WARNING: mongosh not found; initiate replica set rs0 yourself (transactions need it)"
    fi
  fi
  log "MongoDB ($(mongo_kind)) up on 127.0.0.1:$MONGO_PORT"
}
mongo_down() { stop_pidfile mongo "$STATE/run/mongo.pid"; }

stop_pidfile() { # name pidfile
  local pid
  [[ -f $2 ]] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "$1 stopped"
  fi
  rm -f "$2"
}

# ---- Redis ---------------------------------------------------------------------------------
redis_up() {
  [[ -z ${REDIS_URL:-} ]] || { log "Redis: using REDIS_URL as given"; return; }
  local pidf=$STATE/run/redis.pid
  check_free redis "$REDIS_PORT" "$pidf" || { log "Redis already running on $REDIS_PORT"; return; }
  mkdir -p "$STATE/redis" "$STATE/run" "$STATE/logs"
  local persist=(--appendonly yes); [[ $PROFILE == test* ]] && persist=(--save "" --appendonly no)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE/redis" --daemonize yes \
    --pidfile "$pidf" --logfile "$STATE/logs/redis.log" "${persist[@]}" >/dev/null
  wait_until redis 20 redis-cli -p "$REDIS_PORT" ping
  log "Redis up on 127.0.0.1:$REDIS_PORT"
}
redis_down() {
  [[ -f $STATE/run/redis.pid ]] || return 0
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  stop_pidfile redis "$STATE/run/redis.pid"
}

# ---- RabbitMQ ------------------------------------------------------------------------------
rabbit_env() {
  export HOME=$STATE/rabbitmq   # the Erlang cookie lives here, shared by server and rabbitmqctl
  export RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=$RABBIT_DIST ERL_EPMD_PORT=$EPMD_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia RABBITMQ_LOG_BASE=$STATE/logs/rabbitmq
  export RABBITMQ_ENABLED_PLUGINS_FILE=$STATE/rabbitmq/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$STATE/rabbitmq/rabbitmq
  export RABBITMQ_PID_FILE=$STATE/run/rabbitmq.pid
  export ERL_CRASH_DUMP=$STATE/logs/rabbitmq/erl_crash.dump   # never into the current directory
}
rabbitmqctl_() { (rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" "$@"); }
rabbit_up() {
  [[ -z ${RABBITMQ_URL:-} ]] || { log "RabbitMQ: using RABBITMQ_URL as given"; return; }
  check_free rabbitmq "$RABBIT_PORT" "$STATE/run/rabbitmq.pid" || { log "RabbitMQ already running on $RABBIT_PORT"; return; }
  mkdir -p "$STATE/rabbitmq" "$STATE/run" "$STATE/logs/rabbitmq"
  echo "[]." > "$STATE/rabbitmq/enabled_plugins"
  # Allow the default guest user over 127.0.0.1 only (the listener binds nothing else).
  printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$RABBIT_PORT" > "$STATE/rabbitmq/rabbitmq.conf"
  (rabbit_env; nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$STATE/logs/rabbitmq.log" 2>&1 </dev/null &)
  wait_until rabbitmq 90 rabbitmqctl_ await_startup --timeout 5
  wait_until rabbitmq 30 port_open "$RABBIT_PORT"
  log "RabbitMQ up on 127.0.0.1:$RABBIT_PORT"
}
rabbit_down() {
  [[ -f $STATE/run/rabbitmq.pid ]] || port_open "$RABBIT_PORT" || return 0
  rabbitmqctl_ shutdown >/dev/null 2>&1 || true
  if [[ -f $STATE/run/rabbitmq.pid ]]; then stop_pidfile rabbitmq "$STATE/run/rabbitmq.pid"; fi
  # epmd on the profile's own port is ours too.
  pkill -f "epmd.*-port $EPMD_PORT" 2>/dev/null || true
  log "RabbitMQ stopped"
}

# ---- commands ------------------------------------------------------------------------------
urls() {
  echo "DATABASE_URL=${DATABASE_URL:-postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB}"
  echo "MONGODB_URL=${MONGODB_URL:-mongodb://127.0.0.1:$MONGO_PORT}"
  echo "REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
  echo "RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:$RABBIT_PORT/%2f}"
}

case $CMD in
  install) install ;;
  up)
    install
    mkdir -p "$STATE"
    pg_up; redis_up; mongo_up; rabbit_up
    log "state under $STATE"
    ;;
  down) rabbit_down; mongo_down; redis_down; pg_down ;;
  env) urls | sed 's/^/export /' ;;
  status)
    for s in "postgres $PG_PORT" "mongo $MONGO_PORT" "redis $REDIS_PORT" "rabbitmq $RABBIT_PORT"; do
      set -- $s; if port_open "$2"; then echo "$1 up on $2"; else echo "$1 down ($2)"; fi
    done ;;
  rabbit-stop) rabbitmqctl_ stop_app >/dev/null; log "RabbitMQ application stopped (node kept)";;
  rabbit-start) rabbitmqctl_ start_app >/dev/null; wait_until rabbitmq 30 port_open "$RABBIT_PORT"; log "RabbitMQ application started";;
  rabbitmqctl) shift 2; rabbitmqctl_ "$@" ;;
  *) echo "usage: $0 dev|test up|down|status|env|install|rabbit-stop|rabbit-start|rabbitmqctl ARGS..." >&2; exit 2 ;;
esac
