#!/usr/bin/env bash
# k8s-testenv.sh build|start|stop|status|env
#
# A real, one-node Kubernetes control plane for tests, envtest-style: etcd, kube-apiserver and
# kube-controller-manager (garbage collection, Deployment -> ReplicaSet -> Pod, namespace
# deletion, PVC protection) on 127.0.0.1, with no kubelet, scheduler or container runtime. Tests act as the
# kubelet themselves (they patch Pod, Job and StatefulSet status).
#
#   build   builds etcd, kube-apiserver, kube-controller-manager and helm from the Go module
#           proxy into $K8S_TESTENV_CACHE/bin/$K8S_VERSION (cached: a no-op once built), with
#           kube-scheduler, kubelet and kube-proxy for the real node (scripts/cluster-node.sh).
#   start   starts the control plane (a no-op if this instance already runs and answers) and
#           prints `export KUBECONFIG=...` on stdout, so `eval "$(k8s-testenv.sh start)"`
#           exports it. Progress goes to stderr.
#   stop    stops it and removes its state (a no-op if it is not running).
#   status  exits 0 when the API server answers.
#   env     prints the export lines again.
#
# Ports default to 23790/23800 (etcd), 26443 (API) and 20257 (controller manager) so tests do
# not collide with a dev cluster; override ETCD_PORT, ETCD_PEER_PORT, API_PORT, KCM_PORT to run
# several instances side by side (each gets its own state directory).
#
# Facts behind the build: k8s.io/kubernetes requires its staging modules at v0.0.0, so the
# wrapper go.mod replaces every one of them with v0.<minor>.<patch>; Debian's etcd is too old
# for kube-apiserver >= 1.31, and the etcd server module root is package main; helm needs -X
# ldflags for its default Kubernetes version.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}          # k8s.io/kubernetes tag; staging modules = v0.<minor>.<patch>
HELM_VERSION=${HELM_VERSION:-v3.22.0}
ETCD_VERSION=${ETCD_VERSION:-}               # empty: the etcd client version k8s.io/kubernetes pins
CACHE=${K8S_TESTENV_CACHE:-$HOME/.cache/moviebook/k8s}
BIN=${K8S_TESTENV_BIN:-$CACHE/bin/$K8S_VERSION}
# MOVIEBOOK_TEST_SLOT=N shifts the default ports by 10*N (as scripts/stack.sh does for the stores).
SLOT_OFFSET=$(( ${MOVIEBOOK_TEST_SLOT:-0} * 10 ))
ETCD_PORT=${ETCD_PORT:-$((23790 + 2 * SLOT_OFFSET))} ETCD_PEER_PORT=${ETCD_PEER_PORT:-$((23800 + 2 * SLOT_OFFSET))}
API_PORT=${API_PORT:-$((26443 + SLOT_OFFSET))}   KCM_PORT=${KCM_PORT:-$((20257 + SLOT_OFFSET))}
RUN=${K8S_TESTENV_RUN:-${TMPDIR:-/tmp}/moviebook-k8s-testenv-$API_PORT}
# pvc protection: lets deleted PVCs (dataOnDelete: Delete, namespace teardown) actually go away.
# What `build` compiles from k8s.io/kubernetes, in one `go build` (shared packages compile once):
# the test control plane's two, the node's three (scripts/cluster-node.sh) and kubectl.
K8S_CMDS=${K8S_CMDS:-kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl}
KCM_CONTROLLERS=${KCM_CONTROLLERS:-garbage-collector-controller,deployment-controller,replicaset-controller,namespace-controller,persistentvolumeclaim-protection-controller}

export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0
export GOMODCACHE=${GOMODCACHE:-$CACHE/gomod} GOCACHE=${GOCACHE:-$CACHE/gobuild}

log() { echo "k8s-testenv: $*" >&2; }

# Path of the cached go.mod of MODULE@VERSION (downloads the module outside any main module).
modfile() { (cd "$(mktemp -d)" && GOFLAGS= go mod download -json "$1" \
  | sed -n 's/^[[:space:]]*"GoMod": "\([^"]*\)".*/\1/p'); }

build_k8s() {
  local c missing=()
  for c in $K8S_CMDS; do [[ -x $BIN/$c ]] || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  log "building ${missing[*]} $K8S_VERSION (once; takes a while)"
  local rest=${K8S_VERSION#v1.} minor stg m kmod ldf p tmp
  minor=${rest%%.*}; stg="v0.$rest"
  m=$CACHE/src/k8s-$K8S_VERSION; mkdir -p "$m" "$BIN"
  kmod=$(modfile "k8s.io/kubernetes@$K8S_VERSION")
  {
    printf 'module local/k8s-testenv\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    printf 'tool (\n'; for c in $K8S_CMDS; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done; printf ')\n\nreplace (\n'
    # every k8s.io module that k8s.io/kubernetes requires at v0.0.0 or maps to ./staging
    awk '($1 ~ /^k8s\.io\// && $2 == "v0.0.0") || ($2 == "=>" && $3 ~ /^\.\/staging\//) {print $1}' "$kmod" \
      | sort -u | while read -r p; do printf '\t%s => %s %s\n' "$p" "$p" "$stg"; done
    printf ')\n'
  } > "$m/go.mod"
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  # Build into a temporary directory and move into place, so an interrupted build never
  # leaves a half-written binary that the cache check above would accept.
  tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$m" && go mod tidy && go build -trimpath -tags notest,grpcnotrace -ldflags "$ldf" \
     -o "$tmp/" "${missing[@]/#/k8s.io/kubernetes/cmd/}")
  for c in "${missing[@]}"; do mv "$tmp/$c" "$BIN/"; done; rmdir "$tmp"
}

build_etcd() {
  [[ -x $BIN/etcd ]] && return 0
  log "building etcd (once)"
  local v=$ETCD_VERSION e tmp
  [[ -n $v ]] || v=$(cd "$CACHE/src/k8s-$K8S_VERSION" && go list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)
  e=$CACHE/src/etcd-$v; mkdir -p "$e"
  printf 'module local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' "$v" > "$e/go.mod"
  tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$e" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  mv "$tmp/etcd" "$BIN/etcd"; rmdir "$tmp"
}

build_helm() {
  [[ -x $BIN/helm ]] && return 0
  log "building helm $HELM_VERSION (once)"
  local cg minor p=helm.sh/helm/v3 tmp
  cg=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$(modfile "$p@$HELM_VERSION")")   # e.g. v0.36.3
  minor=$(cut -d. -f2 <<<"$cg")
  tmp=$(mktemp -d "$BIN/.build.XXXXXX")
  GOBIN=$tmp GOFLAGS= go install -trimpath -ldflags "-s -w -X $p/internal/version.version=$HELM_VERSION \
    -X $p/internal/version.gitTreeState=clean \
    -X $p/pkg/chartutil.k8sVersionMajor=1 -X $p/pkg/chartutil.k8sVersionMinor=$minor \
    -X $p/pkg/lint/rules.k8sVersionMajor=1 -X $p/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$p/cmd/helm@$HELM_VERSION"
  mv "$tmp/helm" "$BIN/helm"; rmdir "$tmp"
}

build() {
  command -v go >/dev/null || { log "go is not installed"; return 1; }
  mkdir -p "$CACHE" "$BIN"
  # One build at a time per cache (concurrent `make test` runs share it).
  exec 9>"$CACHE/.build.lock"
  flock 9
  build_k8s; build_etcd; build_helm
  ls -l "$BIN" >&2
}

gen_pki() {
  local d=$RUN/pki; mkdir -p "$d"
  cat > "$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default.svc
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
EOF
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -config "$d/openssl.cnf" -extensions ca \
    -subj /CN=k8s-testenv-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  sign() { # name subject extension
    openssl req -new -nodes -newkey rsa:2048 -config "$d/openssl.cnf" -subj "$2" \
      -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 365 \
      -extfile "$d/openssl.cnf" -extensions "$3" -out "$d/$1.crt" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver server
  sign admin "/O=system:masters/CN=admin" client
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  cat > "$RUN/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$d/admin.crt")
    client-key-data: $(base64 -w0 "$d/admin.key")
contexts:
- name: testenv
  context: {cluster: testenv, user: admin}
current-context: testenv
EOF
}

api_ok() {
  [[ -f $RUN/pki/admin.crt ]] || return 1
  curl -fsS --max-time 3 --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

wait_for() { # name cmd...
  local n=$1; shift
  for _ in $(seq 1 240); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$n not ready; last log lines:"; tail -n 40 "$RUN/logs/$n.log" >&2; return 1
}

# Starts a process in its own session so that `stop` can end it (and only it) by pid.
launch() { # name cmd...
  local n=$1; shift
  setsid nohup "$@" >"$RUN/logs/$n.log" 2>&1 </dev/null &
  echo $! >"$RUN/$n.pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

print_env() {
  echo "export KUBECONFIG=$RUN/admin.kubeconfig"
  echo "export MOVIEBOOK_K8S_TESTENV=1"
}

start() {
  if [[ -e $RUN/etcd.pid ]]; then
    if api_ok; then log "already running on https://127.0.0.1:$API_PORT"; print_env; return 0; fi
    log "stale state in $RUN; cleaning up"; stop
  fi
  for b in etcd kube-apiserver; do
    [[ -x $BIN/$b ]] || { log "$BIN/$b is missing: run '$0 build' first"; return 1; }
  done
  local p
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$KCM_PORT"; do
    port_free "$p" || { log "port $p is in use (set ETCD_PORT/ETCD_PEER_PORT/API_PORT/KCM_PORT)"; return 1; }
  done
  mkdir -p "$RUN/logs" "$RUN/etcd" "$RUN/kcm"; gen_pki
  # If anything below fails, do not leave half a control plane running.
  trap 'log "start failed; stopping"; stop' ERR
  local d=$RUN/pki api=https://127.0.0.1:$API_PORT
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  launch etcd "$BIN/etcd" --name=default --data-dir="$RUN/etcd" \
    --listen-client-urls=http://127.0.0.1:$ETCD_PORT --advertise-client-urls=http://127.0.0.1:$ETCD_PORT \
    --listen-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT \
    --initial-cluster=default=http://127.0.0.1:$ETCD_PEER_PORT --unsafe-no-fsync=true --log-level=warn
  wait_for etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  log "starting kube-apiserver on $api"
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:$ETCD_PORT \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$d" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --client-ca-file="$d/ca.crt" \
    --service-account-issuer="$api" --service-account-key-file="$d/sa.pub" \
    --service-account-signing-key-file="$d/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC \
    --disable-admission-plugins=ServiceAccount --allow-privileged=true \
    --endpoint-reconciler-type=none
  wait_for kube-apiserver api_ok
  if [[ -x $BIN/kube-controller-manager && $KCM_CONTROLLERS != none ]]; then
    log "starting kube-controller-manager on 127.0.0.1:$KCM_PORT ($KCM_CONTROLLERS)"
    launch kube-controller-manager "$BIN/kube-controller-manager" \
      --kubeconfig="$RUN/admin.kubeconfig" --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
      --cert-dir="$RUN/kcm" --leader-elect=false --use-service-account-credentials=false \
      --controllers="$KCM_CONTROLLERS"
    wait_for kube-controller-manager curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
  fi
  trap - ERR
  log "ready: https://127.0.0.1:$API_PORT (state in $RUN)"
  print_env
}

stop() {
  local n pid
  for n in kube-controller-manager kube-apiserver etcd; do
    [[ -f $RUN/$n.pid ]] || continue
    pid=$(cat "$RUN/$n.pid")
    # Only signal the process if it still is the one we started (pids get reused).
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$BIN/$n"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$n.pid"
  done
  # Remove only a state directory this script made (guards against RUN=/ or similar).
  if [[ -d $RUN && ( -f $RUN/admin.kubeconfig || -d $RUN/logs ) ]]; then rm -rf "$RUN"; fi
  log "stopped"
}

case ${1:-} in
  build)  build ;;
  start)  start ;;
  stop)   stop ;;
  status) api_ok && { log "running on https://127.0.0.1:$API_PORT"; exit 0; } || { log "not running"; exit 1; } ;;
  env)    api_ok && print_env ;;
  *) echo "usage: $0 build|start|stop|status|env" >&2; exit 2 ;;
esac
