#!/usr/bin/env bash
# scripts/cluster-e2e.sh (`make cluster-e2e`, part of `make test`): MovieBook end to end on the
# real one-node Kubernetes of scripts/cluster-node.sh: real pods, images, probes, volumes,
# migration Jobs. Every check can fail and stops the run with what it saw.
#
#   1. images: the stand-in stores and the services + operator from this workspace's binaries
#      (tags <version>-e2e.1/.2/.3: the version bumps below), checked against the Dockerfile;
#      NetworkPolicies enforced (scripts/cluster-netpol-check.sh)
#   2. helm install of charts/moviebook in its own namespace: the operator runs as a pod; the
#      MovieBookingSystem (stand-in stores, gateway none, sample data) becomes Ready
#   3. the documented flow over the wire from the host (scripts/flow_check.py flow); each
#      MongoDB service in its own database; the operator's NetworkPolicies enforced: a pod of
#      no MovieBook component reaches no store and no internal API, booking reaches what it calls
#   4. booking scaled to 3 replicas through the resource: 3 Ready pods
#   5. `paused: true` stops changes (a replica change is not applied), unpausing applies it
#   6. a version bump runs every service's new migration Job to success before its rollout, and
#      requests running through the rolling update (login, GraphQL, REST catalogue) all succeed
#   7. a failing migration (data breaking the user service's unique index) blocks the user
#      rollout with a MigrationsComplete=False condition naming it; fixed data + a spec change
#      retries it and the rollout completes
#   8. a service pod is killed during bookings: nothing acknowledged is lost (flow_check verify);
#      booking's gRPC connections reach every cinema pod (the kernel's connection table)
#   9. delete with dataOnDelete: Retain keeps the volumes; a reinstall finds the user of step 3
#      still able to log in, with its booking
#
# The node is brought up when it is not running (and taken down at the end, unless
# MOVIEBOOK_E2E_KEEP_NODE=1); a running node (`make cluster-up`) is reused: this test uses its
# own namespace and release and leaves the rest alone. One e2e run at a time per machine (lock).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/kind-tools.sh
. scripts/kind-tools.sh

STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
NODE_IP=${MOVIEBOOK_NODE_IP:-10.245.0.1}
NS=moviebook-e2e REL=mbe2e SYS=e2e
SECANTUS_VERSION=${SECANTUS_VERSION:-0.7.0b3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}
V=$(moviebook_version)
T1=$V-e2e.1 T2=$V-e2e.2 T3=$V-e2e.3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cluster-e2e.XXXXXX")
OWN_NODE= T0=$SECONDS

step() { printf '\n--> %s (%s, +%ss)\n' "$*" "$(date +%T)" "$((SECONDS - T0))"; }
fail() { printf '\ncluster-e2e: FAIL: %s\n' "$*" >&2; diagnose >&2; exit 1; }
ok() { printf '    ok: %s\n' "$*"; }
kc() { "$K8S_BIN/kubectl" "$@"; }
k() { kc -n "$NS" "$@"; }
mbs() { k get mbs "$SYS" -o "jsonpath=$1"; }
cond() { mbs "{.status.conditions[?(@.type==\"$1\")].$2}"; }
secret_key() { k get secret "$SYS-secrets" -o "go-template={{index .data \"$1\" | base64decode}}"; }
mongo_py() { # python code run in the MongoDB stand-in pod (pymongo ships with SecantusDB), with
  # ADMIN_URL: the installation's administrator (the services' users see only their database)
  local pw; pw=$(secret_key mongodb-password) || fail "no mongodb-password in $SYS-secrets"
  k exec "$SYS-mongodb-0" -c mongodb -- python3 -c "ADMIN_URL = 'mongodb://moviebook:$pw@127.0.0.1:27017/?authSource=admin&directConnection=true'
$1"
}

diagnose() {
  [[ -f ${KUBECONFIG:-/nonexistent} ]] || return 0
  echo "--- state of $NS:"
  k get mbs,deploy,sts,pods,jobs,pvc -o wide 2>/dev/null | head -60
  mbs '{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' 2>/dev/null
  echo "--- operator log (last 20 lines):"
  k logs "deploy/$REL-moviebook-operator" --tail=20 2>/dev/null || true
  echo "(files kept in $WORK)"
}

# Removes this test's namespace: the resources first, while their operator still runs to remove
# its finalizer, then the namespace; an operator deleted with the namespace before it finished
# leaves its finalizer behind, which is then removed here (the namespace is this test's own).
purge_ns() {
  kc get ns "$NS" >/dev/null 2>&1 || return 0
  kc -n "$NS" delete mbs --all --wait=true --timeout=120s >/dev/null 2>&1
  "$HELM" uninstall "$REL" -n "$NS" --wait --timeout 120s >/dev/null 2>&1
  kc delete ns "$NS" --wait=false >/dev/null 2>&1
  local m
  for _ in $(seq 1 90); do
    kc get ns "$NS" >/dev/null 2>&1 || return 0
    for m in $(kc -n "$NS" get mbs -o name 2>/dev/null); do
      kc -n "$NS" patch "$m" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
    done
    sleep 2
  done
  return 1
}

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)) && [[ ${MOVIEBOOK_E2E_KEEP:-} == 1 ]]; then
    echo "cluster-e2e: MOVIEBOOK_E2E_KEEP=1: leaving $NS and the node as they are" >&2; exit $rc
  fi
  if [[ -f ${KUBECONFIG:-/nonexistent} ]]; then
    purge_ns
  fi
  if [[ -n $OWN_NODE && ${MOVIEBOOK_E2E_KEEP_NODE:-} != 1 ]]; then scripts/cluster-node.sh down >&2; fi
  ((rc == 0)) && rm -rf "$WORK"
  exit $rc
}

# ---- 0. the node ------------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || { echo "cluster-e2e: needs root (the node runs containerd, iptables, mounts)" >&2; exit 1; }
exec 7>/run/lock/moviebook-node-e2e.lock
flock -w 3600 7 || { echo "cluster-e2e: another e2e run holds the node for over an hour" >&2; exit 1; }
trap cleanup EXIT
step "the node"
if scripts/cluster-node.sh status 2>/dev/null; then
  ok "reusing the running node"
else
  scripts/cluster-node.sh up >/dev/null
  OWN_NODE=1
  ok "node up"
fi
export KUBECONFIG=$STATE/pki/admin.kubeconfig
ensure_helm
purge_ns || fail "a leftover $NS does not go away"   # of an interrupted run

# ---- 1. images --------------------------------------------------------------------------------
step "images: stand-in stores, then the services and the operator from $CARGO_TARGET_DIR/debug"
scripts/cluster-images.sh infra >/dev/null
scripts/cluster-images.sh stores
IMAGE_VERSION=$T1 EXTRA_TAGS="$T2 $T3" scripts/cluster-images.sh services
# The list is read whole first: `ctr ... | grep -q` under pipefail fails when grep stops at the
# first match and ctr, still writing, dies of SIGPIPE (seen once in CI on 2026-12-07).
node_images=$(ctr --address "$STATE/containerd/containerd.sock" -n k8s.io images ls -q)
for t in "$T1" "$T2" "$T3"; do
  grep -qx "moviebook.local/booking-service:$t" <<<"$node_images" \
    || fail "moviebook.local/booking-service:$t is not in the node's containerd"
done
ok "imported: moviebook.local/<service>:{$T1,$T2,$T3}, the four stand-in stores"
IMAGE_VERSION=$T1 EXTRA_TAGS="$T2 $T3" scripts/cluster-images.sh check || fail "the node images and the Dockerfile disagree"

step "NetworkPolicies are enforced on the node (kube-router)"
scripts/cluster-netpol-check.sh || fail "NetworkPolicy enforcement"

# ---- 2. install -------------------------------------------------------------------------------
step "helm install $REL (operator as a pod, MovieBookingSystem $SYS)"
sed "s|@SECANTUS_VERSION@|$SECANTUS_VERSION|g" scripts/cluster/values.yaml >"$WORK/values.yaml"
cat >"$WORK/e2e-values.yaml" <<EOF
operator:
  watchNamespace: $NS
system:
  name: $SYS
  spec:
    # its own node ports, so it runs beside make cluster-up (30080-30082)
    gateway: { type: None, direct: { nodePorts: { graphql: 31080, user: 31081, catalogue: 31082 } } }
    services:
      # the load step's clients book and pay as fast as they can (about 4 mutations a second
      # each): above the default per-user limit of 120 a minute
      booking: { replicas: 2, env: [{ name: USER_MUTATIONS_PER_MINUTE, value: "1200" }] }
      cinema: { replicas: 2 }
EOF
# Helm installs a chart's CRD only when it is absent: apply this tree's, so a node that an older
# checkout set up validates the fields this operator knows.
kc apply --server-side --force-conflicts --field-manager=moviebook-node -f charts/moviebook/crds/ >/dev/null || fail "applying the CRD"
# Polled, not `kubectl wait`: right after the apply the CRD may have no status yet, and kubectl
# v1.37's wait then stops with ".status.conditions accessor error" instead of waiting (seen).
established() { [[ $(kc get crd moviebookingsystems.moviebook.io -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]; }
for _ in $(seq 1 60); do established && break; sleep 1; done
established || fail "the CRD is not Established 60 s after applying it"
install() {
  "$HELM" upgrade --install "$REL" charts/moviebook -n "$NS" --create-namespace \
    -f "$WORK/values.yaml" -f "$WORK/e2e-values.yaml" --set "operator.image.tag=$T1" \
    --set-string "system.spec.version=$T1" --wait --timeout 5m >"$WORK/helm.log" 2>&1 \
    || { cat "$WORK/helm.log" >&2; fail "helm upgrade --install"; }
}
install
[[ $(k get deploy "$REL-moviebook-operator" -o 'jsonpath={.status.readyReplicas}') == 1 ]] || fail "the operator pod is not Ready"
ok "operator pod Ready ($(k get pods -l "app.kubernetes.io/name=moviebook-operator,app.kubernetes.io/instance=$REL" -o name | head -1))"
scripts/cluster.sh wait-ready "$NS" "$SYS" 900 || fail "$SYS did not become Ready"
ok "MovieBookingSystem $SYS Ready after $((SECONDS - T0))s: $(mbs '{.status.readyComponents}')"
for s in postgres mongodb redis rabbitmq; do
  img=$(k get sts "$SYS-$s" -o 'jsonpath={.spec.template.spec.containers[0].image}')
  [[ $img == moviebook.local/*-standin* ]] || fail "$s runs $img, not the stand-in"
done
ok "the four stores run their stand-in images"

# The URLs from the host: the public Services' node ports (gateway None) on the node address;
# the notification API is not public, so it is read at a notification pod's IP (pod IPs are
# reachable from the node, never from elsewhere).
urls() {
  local p svc ip
  for svc in graphql user catalogue; do
    p=$(k get svc "$SYS-public-$svc" -o 'jsonpath={.spec.ports[0].nodePort}')
    [[ -n $p ]] || fail "Service $SYS-public-$svc has no node port (gateway type None)"
    eval "PORT_${svc}=$p"
  done
  [[ $PORT_graphql == 31080 && $PORT_user == 31081 && $PORT_catalogue == 31082 ]] \
    || fail "node ports $PORT_graphql/$PORT_user/$PORT_catalogue, the resource asked for 31080/31081/31082"
  ip=$(k get pods -l "app.kubernetes.io/name=notification,app.kubernetes.io/instance=$SYS" --field-selector=status.phase=Running -o 'jsonpath={.items[0].status.podIP}')
  [[ -n $ip ]] || fail "no running notification pod"
  GRAPHQL=http://$NODE_IP:$PORT_graphql/graphql USERS=http://$NODE_IP:$PORT_user
  CATALOGUE=http://$NODE_IP:$PORT_catalogue NOTIFY=http://$ip:8004
  FLOW=(python3 scripts/flow_check.py --graphql "$GRAPHQL" --users "$USERS" --notifications "$NOTIFY")
}
urls

# Ready should mean serving; measure the gap (booking resolves cinema's pods every 5 s).
serving() { # seconds: GraphQL browses the catalogue (booking -> cinema gRPC) within the time
  local deadline=$((SECONDS + $1)) t=$SECONDS
  until curl -fsS -m 5 -H 'Content-Type: application/json' -d '{"query":"{ movies { id showtimes { id } } }"}' "$GRAPHQL" 2>/dev/null | grep -q '"showtimes"'; do
    ((SECONDS < deadline)) || return 1; sleep 1
  done
  echo $((SECONDS - t))
}

# ---- 3. the documented flow -------------------------------------------------------------------
step "the documented flow over the wire from the host ($GRAPHQL)"
gap=$(serving 60) || fail "Ready, but GraphQL cannot browse the catalogue within 60 s"
ok "GraphQL serves the catalogue ${gap}s after Ready"
curl -fsS "$CATALOGUE/api/v1/movies" >"$WORK/movies.json" || fail "GET $CATALOGUE/api/v1/movies"
n=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d = d if isinstance(d, list) else next((v for v in d.values() if isinstance(v, list)), []); print(len(d))' "$WORK/movies.json")
((n > 0)) || fail "GET $CATALOGUE/api/v1/movies lists no movies: $(head -c 300 "$WORK/movies.json")"
ok "GET /api/v1/movies (REST catalogue, public node port): $n movies"
"${FLOW[@]}" flow >"$WORK/flow.json" || fail "the documented flow"
FLOW_EMAIL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["email"])' "$WORK/flow.json")
FLOW_PASSWORD=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$WORK/flow.json")
FLOW_USER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["user_id"])' "$WORK/flow.json")
FLOW_BOOKING=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["booking_id"])' "$WORK/flow.json")

step "each MongoDB service has its own database (booking and payment do not share an outbox)"
mongo_py "
import pymongo
c = pymongo.MongoClient(ADMIN_URL)
names = set(c.list_database_names())
want = {'moviebook_user', 'moviebook_booking', 'moviebook_payment', 'moviebook_notification'}
assert want <= names, 'databases: %s, want %s' % (sorted(names), sorted(want))
assert c['moviebook_user']['users'].find_one({'email': '$FLOW_EMAIL'}), 'the flow user is not in moviebook_user'
owners = [d for d in names if c[d]['users'].estimated_document_count() and d != 'moviebook_user']
assert not owners, 'users also in %s' % owners
print(sorted(names))
" >"$WORK/dbs.log" 2>&1 || { cat "$WORK/dbs.log" >&2; fail "the services share MongoDB databases"; }
ok "databases: $(tail -n 1 "$WORK/dbs.log")"

step "MongoDB authenticates: no anonymous reads; booking's user sees only booking's database"
booking_mongo=$(secret_key booking.MONGODB_URL) || fail "no booking.MONGODB_URL in $SYS-secrets"
[[ $(k get deploy "$SYS-booking" -o 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="MONGODB_URL")].valueFrom.secretKeyRef.key}') == booking.MONGODB_URL ]] \
  || fail "booking's pods do not read their own MongoDB URL from the Secret"
mongo_py "
import re, pymongo
from pymongo.errors import OperationFailure
def refused(what, f):
    try:
        f()
    except OperationFailure as e:
        assert e.code in (13, 18), (what, e.code, str(e))
        return what
    raise AssertionError(what + ' was allowed')
anon = pymongo.MongoClient('mongodb://127.0.0.1:27017/?directConnection=true')
url = re.sub('@[^/]+/', '@127.0.0.1:27017/', '$booking_mongo').replace('replicaSet=rs0', 'directConnection=true')
booking = pymongo.MongoClient(url)
assert booking['moviebook_booking'].list_collection_names(), 'booking cannot read its own database'
probe = booking['moviebook_booking']['e2e_probe']
probe.insert_one({'_id': 'e2e'})
assert probe.delete_one({'_id': 'e2e'}).deleted_count == 1, 'booking cannot write its own database'
print(', '.join([
    refused('anonymous find', lambda: anon['moviebook_user']['users'].find_one()),
    refused('booking reads moviebook_user', lambda: booking['moviebook_user']['users'].find_one()),
    refused('booking writes moviebook_payment', lambda: booking['moviebook_payment']['payments'].insert_one({'e2e': 1})),
    refused('booking creates a user', lambda: booking['moviebook_booking'].command('createUser', 'e2e', pwd='x', roles=['root'])),
    refused('a wrong password', lambda: pymongo.MongoClient(re.sub('^(mongodb://[^:]+:)', r'\\1x', url))['moviebook_booking'].list_collection_names()),
]) + ' refused')
" >"$WORK/mongo-auth.log" 2>&1 || { cat "$WORK/mongo-auth.log" >&2; fail "MongoDB lets a client past its users"; }
ok "$(tail -n 1 "$WORK/mongo-auth.log"); booking reads and writes moviebook_booking"

step "the operator's NetworkPolicies (kube-router enforces them): a stranger pod reaches no store and no internal API"
[[ $(k get networkpolicy -l "app.kubernetes.io/instance=$SYS" -o name | wc -l) -ge 8 ]] \
  || fail "the operator created no NetworkPolicies: $(k get networkpolicy -o name | tr '\n' ' ')"
k apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: e2e-stranger, labels: {app: e2e-stranger}}
spec:
  containers: [{name: pause, image: "moviebook.local/pause:1", imagePullPolicy: Never}]
EOF
k wait --for=condition=Ready pod/e2e-stranger --timeout=120s >/dev/null || fail "the stranger pod did not start"
netcheck() { # expected-exit pod target port: 0 connected, 1 refused (2, a lookup error, never passes)
  local want=$1 rc=0; shift
  scripts/cluster-netcheck.sh "$NS" "$@" 2 >/dev/null || rc=$?
  [[ $rc == "$want" ]]
}
booking_pod=$(k get pods -l "app.kubernetes.io/name=booking,app.kubernetes.io/instance=$SYS" --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}')
notification_pod=$(k get pods -l "app.kubernetes.io/name=notification,app.kubernetes.io/instance=$SYS" --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}')
for target in "pod/$SYS-postgres-0 5432" "pod/$SYS-mongodb-0 27017" "pod/$SYS-redis-0 6379" \
  "pod/$SYS-rabbitmq-0 5672" "svc/$SYS-cinema 9090" "svc/$SYS-payment 8003" "svc/$SYS-notification 8004"; do
  set -- $target
  netcheck 1 e2e-stranger "$1" "$2" || fail "a pod of no MovieBook component reaches $1:$2 (or it could not be looked up)"
done
netcheck 0 e2e-stranger "svc/$SYS-public-graphql" 80 || fail "the public GraphQL Service refuses a pod"
netcheck 0 "$booking_pod" "svc/$SYS-cinema" 9090 || fail "booking cannot reach cinema's gRPC port"
netcheck 0 "$booking_pod" "svc/$SYS-payment" 8003 || fail "booking cannot reach the payment service"
netcheck 1 "$booking_pod" "pod/$SYS-postgres-0" 5432 || fail "booking reaches PostgreSQL (only cinema may)"
netcheck 1 "$notification_pod" "svc/$SYS-payment" 8003 || fail "notification reaches the payment service"
netcheck 0 "$notification_pod" "pod/$SYS-redis-0" 6379 || fail "notification cannot reach Redis"
k delete pod e2e-stranger --wait=false >/dev/null
ok "stranger: no store, no cinema gRPC, no payment, no notification; public GraphQL yes; booking -> cinema gRPC and payment yes, -> PostgreSQL no; notification -> Redis yes, -> payment no"

# Store users: the flow above ran with each service's own RabbitMQ and Redis user; here, what
# those users may not do is refused by the servers themselves (moviebook-grants' rules).
secret_key() { k get secret "$SYS-secrets" -o "go-template={{index .data \"$1\" | base64decode}}"; }
redis_as() { k exec "$SYS-redis-0" -c redis -- redis-cli --no-auth-warning "$@" 2>&1; }
redis_as ping | grep -q NOAUTH || fail "Redis answers a client without credentials"
npw=$(secret_key redis-password-notification)
[[ $(redis_as --user notification --pass "$npw" set notification:e2e-acl x) == OK ]] || fail "notification cannot write its own keys"
redis_as --user notification --pass "$npw" keys '*' | grep -q NOPERM || fail "notification may list every key"
redis_as --user notification --pass "$npw" get moviebook:other | grep -q NOPERM || fail "notification may read keys outside its prefix"
users=$(k exec "$SYS-rabbitmq-0" -c rabbitmq -- rabbitmqctl -q --no-table-headers list_users 2>&1 | awk '{print $1}' | sort | tr '\n' ' ')
[[ $users == "booking moviebook notification payment " ]] || fail "RabbitMQ users: $users"
topics=$(k exec "$SYS-rabbitmq-0" -c rabbitmq -- rabbitmqctl -q --no-table-headers list_topic_permissions 2>&1)
grep -Eq '^payment[[:space:]]+movie_app_events[[:space:]]+\^payment' <<<"$topics" || fail "payment may publish other events: $topics"
conns=$(k exec "$SYS-rabbitmq-0" -c rabbitmq -- rabbitmqctl -q --no-table-headers list_connections user 2>&1 | sort -u | tr '\n' ' ')
[[ $conns != *moviebook* ]] || fail "a service connects to RabbitMQ as the administrator: $conns"
# The shared topology is the broker's (its definitions): no service may configure (declare or
# delete) a shared name, and the services only check it (RABBITMQ_TOPOLOGY=existing).
perms=$(k exec "$SYS-rabbitmq-0" -c rabbitmq -- rabbitmqctl -q --no-table-headers list_permissions 2>&1)
if awk '$1 != "moviebook" && $2 ~ /movie_app_events/' <<<"$perms" | grep -q .; then fail "a service may configure the shared topology: $perms"; fi
k exec "$SYS-rabbitmq-0" -c rabbitmq -- rabbitmqctl -q --no-table-headers list_exchanges name arguments 2>&1 \
  | grep -E '^movie_app_events[[:space:]].*alternate-exchange.*movie_app_events\.unrouted' >/dev/null \
  || fail "the broker did not declare movie_app_events with its alternate exchange"
[[ $(k get deploy "$SYS-booking" -o 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="RABBITMQ_TOPOLOGY")].value}') == existing ]] \
  || fail "booking's pods declare the topology themselves"
ok "stores: Redis refuses anonymous clients, notification only its own keys; RabbitMQ users $users, connected as: $conns; the topology is the broker's, no service may configure it"

# Token keys: each private key reaches the pods of the one service that signs with it, no Job
# gets one, and no pod holds the old shared JWT secret (the flow above ran on these keys).
keyrefs=$(k get deploy,job -l "app.kubernetes.io/instance=$SYS" -o 'jsonpath={range .items[*]}{.kind}/{.metadata.name}{":"}{range .spec.template.spec.containers[*].env[*]}{.valueFrom.secretKeyRef.key}{" "}{end}{"\n"}{end}')
holders() { grep -E "(^|[: ])$1( |$)" <<<"$keyrefs" | cut -d: -f1 | tr '\n' ' '; }
[[ -z $(holders jwt-secret) ]] || fail "pods still get the shared JWT secret: $(holders jwt-secret)"
[[ $(holders service-token-signing-key) == "Deployment/$SYS-booking " ]] || fail "booking's service-token key is in: $(holders service-token-signing-key)"
[[ $(holders user-token-signing-key) == "Deployment/$SYS-user " ]] || fail "the user-token key is in: $(holders user-token-signing-key)"
[[ $(holders service-token-public-keys | tr ' ' '\n' | grep -c '^Deployment/') == 2 ]] || fail "the services booking calls lack its public key: $(holders service-token-public-keys)"
for svc in user booking payment notification; do
  h=$(holders "$svc.MONGODB_URL")
  [[ $h == *"Deployment/$SYS-$svc "* ]] || fail "the $svc pods do not read $svc.MONGODB_URL (held by: $h)"
  for o in $h; do
    [[ $o == "Deployment/$SYS-$svc" || $o == "Job/$SYS-$svc-"* ]] || fail "$o reads $svc's MongoDB URL"
  done
done
[[ -z $(holders mongodb-password) ]] || fail "a service pod or Job holds MongoDB's administrator password: $(holders mongodb-password)"
ok "MongoDB: each service's URL (its own user) only in its own Deployment and Jobs; the administrator password in none"
ok "token keys: service-token key only in $(holders service-token-signing-key), user-token key only in $(holders user-token-signing-key), no JWT secret in any pod or Job"

# ---- 4. scale ---------------------------------------------------------------------------------
ready_pods() { # component -> number of Ready pods
  k get pods -l "app.kubernetes.io/name=$1,app.kubernetes.io/instance=$SYS" \
    -o 'jsonpath={range .items[*]}{.metadata.deletionTimestamp}{"|"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    | grep -cx '|True' || true
}
wait_pods() { # component count seconds
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    [[ $(ready_pods "$1") == "$2" && $(k get deploy "$SYS-$1" -o 'jsonpath={.status.replicas}') == "$2" ]] && return 0
    sleep 2
  done
  return 1
}
step "scale booking to 3 replicas through the resource"
k patch mbs "$SYS" --type merge -p '{"spec":{"services":{"booking":{"replicas":3}}}}' >/dev/null
wait_pods booking 3 240 || fail "booking did not reach 3 Ready pods (have $(ready_pods booking))"
ok "3 booking pods Ready"

# ---- 5. paused --------------------------------------------------------------------------------
step "paused: true stops changes"
k patch mbs "$SYS" --type merge -p '{"spec":{"paused":true}}' >/dev/null
sleep 5
k patch mbs "$SYS" --type merge -p '{"spec":{"services":{"booking":{"replicas":2}}}}' >/dev/null
sleep 20
[[ $(k get deploy "$SYS-booking" -o 'jsonpath={.spec.replicas}') == 3 ]] || fail "paused, yet the booking Deployment changed to $(k get deploy "$SYS-booking" -o 'jsonpath={.spec.replicas}') replicas"
ok "paused: the replica change was not applied (still 3)"
k patch mbs "$SYS" --type merge -p '{"spec":{"paused":false}}' >/dev/null
wait_pods booking 2 180 || fail "unpaused, but booking did not go to 2 pods"
ok "unpaused: booking went to 2 pods"

# ---- 6. version bump ----------------------------------------------------------------------------
SERVICES=(user cinema payment notification booking)
image_of() { k get deploy "$SYS-$1" -o 'jsonpath={.spec.template.spec.containers[0].image}'; }
step "version bump $T1 -> $T2: the migration Jobs run to success before the rollout; no request dropped"
"${FLOW[@]}" watch --duration 150 --catalogue "$CATALOGUE" --email "$FLOW_EMAIL" --password "$FLOW_PASSWORD" \
  >"$WORK/watch.json" 2>"$WORK/watch.err" &
watcher=$!
sleep 3
k patch mbs "$SYS" --type merge -p "{\"spec\":{\"version\":\"$T2\"}}" >/dev/null
deadline=$((SECONDS + 600))
while ((SECONDS < deadline)); do
  done_all=1
  for s in "${SERVICES[@]}"; do
    job=$(k get jobs -l "app.kubernetes.io/component=$s-migration,app.kubernetes.io/instance=$SYS" -o json \
      | python3 -c 'import json,sys; v=sys.argv[1]; js=[j for j in json.load(sys.stdin)["items"] if j["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":"+v)]; print(js[0]["metadata"]["name"] if js else "")' "$T2")
    img=$(image_of "$s")
    if [[ $img == *":$T2" ]]; then
      # rolled out: its Job must exist and have succeeded, and have completed before the
      # Deployment's new ReplicaSet was created
      [[ -n $job ]] || fail "$s rolled out to $T2 without a migration Job for $T2"
      [[ $(k get job "$job" -o 'jsonpath={.status.succeeded}') == 1 ]] || fail "$s rolled out to $T2 while its Job $job had not succeeded"
      rs_created=$(k get rs -l "app.kubernetes.io/name=$s,app.kubernetes.io/instance=$SYS" -o json \
        | python3 -c 'import json,sys; v=sys.argv[1]; print(min(r["metadata"]["creationTimestamp"] for r in json.load(sys.stdin)["items"] if r["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":"+v)))' "$T2")
      job_done=$(k get job "$job" -o 'jsonpath={.status.completionTime}')
      [[ -n $job_done && ! $rs_created < $job_done ]] || fail "$s: its $T2 ReplicaSet ($rs_created) is older than its migration's completion ($job_done)"
    else
      done_all=
    fi
  done
  [[ -n $done_all ]] && break
  sleep 3
done
[[ -n $done_all ]] || fail "not every service rolled out to $T2 within 10 minutes"
scripts/cluster.sh wait-ready "$NS" "$SYS" 300 || fail "$SYS not Ready after the bump to $T2"
ok "every service ran its $T2 migration Job to success, then rolled out; Ready again"
wait "$watcher" || { cat "$WORK/watch.err" >&2; fail "requests failed during the rolling update (preStop/readiness)"; }
tail -n 1 "$WORK/watch.err"
"${FLOW[@]}" login --email "$FLOW_EMAIL" --password "$FLOW_PASSWORD" --user-id "$FLOW_USER" --booking-id "$FLOW_BOOKING" >/dev/null \
  || fail "after the bump the user of step 3 cannot log in or lost the booking"

# ---- 7. failing migration ---------------------------------------------------------------------
# Real data that breaks the user service's migration: its unique index on email is dropped and a
# second account with an existing email written straight into the store (as an older version
# without the index could have), so `user-service migrate` of the next version fails with E11000.
step "a failing migration blocks the rollout ($T2 -> $T3) and recovers once fixed"
mongo_py "
import pymongo
client = pymongo.MongoClient(ADMIN_URL)
dbs = [d for d in client.list_database_names() if client[d]['users'].find_one({'email': '$FLOW_EMAIL'})]
assert len(dbs) == 1, 'the user database is not unique: ' + str(dbs)
users = client[dbs[0]]['users']
names = [i['name'] for i in users.list_indexes() if i.get('unique')]
assert names, 'no unique index on users: ' + str(list(users.list_indexes()))
for n in names: users.drop_index(n)
u = users.find_one({'email': '$FLOW_EMAIL'})
u.pop('_id'); u['id'] = u.get('id', '') + '-dup'; u['_e2e_duplicate'] = True
users.insert_one(u)
print('in', dbs[0], 'dropped', names, 'and inserted a duplicate of', '$FLOW_EMAIL')
" >"$WORK/break.log" 2>&1 || { cat "$WORK/break.log" >&2; fail "could not prepare the breaking data"; }
k patch mbs "$SYS" --type merge -p "{\"spec\":{\"version\":\"$T3\"}}" >/dev/null
deadline=$((SECONDS + 300)) seen=
while ((SECONDS < deadline)); do
  if [[ $(cond MigrationsComplete status) == False && $(cond MigrationsComplete message) == *user* && $(cond MigrationsComplete reason) == *Fail* ]]; then seen=1; break; fi
  sleep 3
done
[[ -n $seen ]] || fail "no MigrationsComplete=False condition naming the user migration (got: $(cond MigrationsComplete status) $(cond MigrationsComplete reason): $(cond MigrationsComplete message))"
ok "MigrationsComplete=False: $(cond MigrationsComplete reason): $(cond MigrationsComplete message)"
[[ $(image_of user) == *":$T2" ]] || fail "the user Deployment rolled out to $(image_of user) despite the failed migration"
[[ $(cond Ready status) != True ]] || fail "Ready=True while a migration failed"
ok "the user rollout is held at $T2"
"${FLOW[@]}" login --email "$FLOW_EMAIL" --password "$FLOW_PASSWORD" --user-id "$FLOW_USER" >/dev/null || fail "the held-back user service does not serve logins"
mongo_py "
import pymongo
client = pymongo.MongoClient(ADMIN_URL)
n = sum(client[d]['users'].delete_many({'_e2e_duplicate': True}).deleted_count for d in client.list_database_names())
assert n == 1, n
print('removed', n)
" >"$WORK/fix.log" 2>&1 || { cat "$WORK/fix.log" >&2; fail "could not remove the breaking data"; }
# The operator retries a failed migration once the spec changes (operator/README.md).
limit=$(mbs '{.spec.migrations.backoffLimit}'); limit=${limit:-3}
k patch mbs "$SYS" --type merge -p "{\"spec\":{\"migrations\":{\"backoffLimit\":$((limit + 1))}}}" >/dev/null
deadline=$((SECONDS + 300))
while ((SECONDS < deadline)); do [[ $(image_of user) == *":$T3" ]] && break; sleep 3; done
[[ $(image_of user) == *":$T3" ]] || fail "after the fix the user service did not roll out to $T3"
scripts/cluster.sh wait-ready "$NS" "$SYS" 300 || fail "$SYS not Ready after the fixed migration"
ok "fixed: the migration succeeded on retry, user rolled out to $T3, Ready again"

# ---- 8. kill a pod during bookings ------------------------------------------------------------
step "kill a booking pod and a cinema pod during bookings: nothing acknowledged is lost"
urls   # the rollouts above replaced the notification pod (its IP is read again)
"${FLOW[@]}" bookings --clients 4 --duration 40 >"$WORK/load.jsonl" 2>"$WORK/load.err" &
load=$!
sleep 12
victim=$(k get pods -l "app.kubernetes.io/name=booking,app.kubernetes.io/instance=$SYS" -o 'jsonpath={.items[0].metadata.name}')
k delete pod "$victim" --wait=false >/dev/null
sleep 8
victim2=$(k get pods -l "app.kubernetes.io/name=cinema,app.kubernetes.io/instance=$SYS" -o 'jsonpath={.items[0].metadata.name}')
k delete pod "$victim2" --wait=false >/dev/null
ok "deleted $victim and $victim2 while 4 clients booked and paid"
wait "$load" || { tail -n 5 "$WORK/load.err" >&2; fail "the booking load itself failed"; }
wait_pods booking 2 180 || fail "booking did not come back to 2 Ready pods"
urls   # a notification pod that answers, after the kills
"${FLOW[@]}" verify --results "$WORK/load.jsonl" >"$WORK/verify.json" || fail "data was lost or inconsistent after the pod kills"

step "booking's gRPC connections reach every cinema pod (not pinned to one)"
wait_pods cinema 2 180 || fail "cinema did not come back to 2 Ready pods"
"${FLOW[@]}" bookings --clients 2 --duration 15 >"$WORK/load2.jsonl" 2>>"$WORK/load.err" || fail "second booking load"
cinema_ips=$(k get pods -l "app.kubernetes.io/name=cinema,app.kubernetes.io/instance=$SYS" --field-selector=status.phase=Running -o 'jsonpath={.items[*].status.podIP}')
booking_ips=$(k get pods -l "app.kubernetes.io/name=booking,app.kubernetes.io/instance=$SYS" --field-selector=status.phase=Running -o 'jsonpath={.items[*].status.podIP}')
# the kernel's connection table: established TCP connections to port 9090, by source and destination
conntrack -L -p tcp --dport 9090 --state ESTABLISHED 2>/dev/null >"$WORK/conntrack.txt" || true
for c in $cinema_ips; do
  n=0
  for b in $booking_ips; do grep -q "src=$b dst=$c sport=[0-9]* dport=9090" "$WORK/conntrack.txt" && n=$((n + 1)); done
  ((n > 0)) || fail "no booking pod holds a gRPC connection to cinema pod $c (booking pins one cinema pod?): $(grep -c dport=9090 "$WORK/conntrack.txt") connections to :9090"
done
ok "every cinema pod ($cinema_ips) has gRPC connections from booking"
wait_pods booking 2 180 || fail "booking did not come back to 2 Ready pods"

# ---- 9. delete with Retain, reinstall ---------------------------------------------------------
step "delete the MovieBookingSystem (dataOnDelete: Retain), reinstall, log in again"
[[ $(mbs '{.spec.dataOnDelete}') == Retain ]] || fail "dataOnDelete is $(mbs '{.spec.dataOnDelete}'), want Retain"
k get pvc -l "app.kubernetes.io/instance=$SYS" -o 'jsonpath={range .items[*]}{.metadata.name}={.spec.volumeName}{"\n"}{end}' | sort >"$WORK/pvc-before"
[[ $(wc -l <"$WORK/pvc-before") -ge 4 ]] || fail "expected a PVC per store, have: $(cat "$WORK/pvc-before")"
k delete mbs "$SYS" --wait=true --timeout=180s >/dev/null || fail "deleting the MovieBookingSystem"
deadline=$((SECONDS + 180))
while ((SECONDS < deadline)); do [[ -z $(k get sts,deploy -l "app.kubernetes.io/instance=$SYS" -o name) ]] && break; sleep 2; done
[[ -z $(k get sts,deploy -l "app.kubernetes.io/instance=$SYS" -o name) ]] || fail "workloads left after the delete"
k get pvc -l "app.kubernetes.io/instance=$SYS" -o 'jsonpath={range .items[*]}{.metadata.name}={.spec.volumeName}{"\n"}{end}' | sort >"$WORK/pvc-after"
cmp -s "$WORK/pvc-before" "$WORK/pvc-after" || fail "the volumes changed on delete: $(diff "$WORK/pvc-before" "$WORK/pvc-after" | tr '\n' ' ')"
ok "workloads gone, the $(wc -l <"$WORK/pvc-before") PVCs and their volumes kept"
install
scripts/cluster.sh wait-ready "$NS" "$SYS" 600 || fail "the reinstalled $SYS did not become Ready"
k get pvc -l "app.kubernetes.io/instance=$SYS" -o 'jsonpath={range .items[*]}{.metadata.name}={.spec.volumeName}{"\n"}{end}' | sort >"$WORK/pvc-again"
cmp -s "$WORK/pvc-before" "$WORK/pvc-again" || fail "the reinstall did not reuse the volumes"
urls
serving 60 >/dev/null || fail "reinstalled and Ready, but GraphQL does not serve within 60 s"
"${FLOW[@]}" login --email "$FLOW_EMAIL" --password "$FLOW_PASSWORD" --user-id "$FLOW_USER" --booking-id "$FLOW_BOOKING" >/dev/null \
  || fail "after the reinstall the user of step 3 cannot log in"
ok "reinstalled on the same volumes: $FLOW_EMAIL logs in, its booking is still CONFIRMED"

# the retained volumes of this test go with its namespace
k delete mbs "$SYS" --wait=true --timeout=180s >/dev/null || true
k delete pvc -l "app.kubernetes.io/instance=$SYS" --wait=false >/dev/null || true
printf '\ncluster-e2e: all node checks passed in %ss\n' "$((SECONDS - T0))"
