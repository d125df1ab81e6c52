#!/usr/bin/env bash
# scripts/cluster.sh up|env|down|status: the whole MovieBook system on a real one-node
# Kubernetes on this machine, no Docker (`make cluster-up`, `make cluster-env`,
# `make cluster-down`; docs/cluster.md).
#
#   up      the node (scripts/cluster-node.sh up), the images (scripts/cluster-images.sh:
#           stand-in stores + the services and the operator from the workspace's binaries),
#           `helm upgrade --install` of charts/moviebook with the operator running as a pod and
#           a MovieBookingSystem with sample data (scripts/cluster/values.yaml); returns when the
#           resource is Ready and prints how to reach it. Idempotent.
#   env     prints only `export` lines: KUBECONFIG, MOVIEBOOK_GRAPHQL_URL, MOVIEBOOK_USER_URL,
#           MOVIEBOOK_CATALOGUE_URL, reachable from this host (node ports on 10.245.0.1).
#   down    removes everything (scripts/cluster-node.sh down): processes, mounts, iptables
#           chains, cni0, sysctls, the node's state. Caches (binaries, images) stay.
#   status  exits 0 when the MovieBookingSystem is Ready.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/kind-tools.sh
. scripts/kind-tools.sh

STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
NODE_IP=${MOVIEBOOK_NODE_IP:-10.245.0.1}
NS=${MOVIEBOOK_NAMESPACE:-moviebook}
RELEASE=moviebook SYSTEM=moviebook
TIMEOUT=${MOVIEBOOK_READY_TIMEOUT:-900}
SECANTUS_VERSION=${SECANTUS_VERSION:-0.7.0b3}
export KUBECONFIG=$STATE/pki/admin.kubeconfig

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }
kc() { "$K8S_BIN/kubectl" "$@"; }

values_file() {
  local v=$STATE/values.yaml
  sed "s|@SECANTUS_VERSION@|$SECANTUS_VERSION|g" scripts/cluster/values.yaml >"$v"
  echo "$v"
}

# Waits for the MovieBookingSystem's Ready condition; prints progress while it waits.
wait_ready() { # namespace name seconds
  local ns=$1 name=$2 secs=$3 deadline last="" now
  deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if [[ $(kc -n "$ns" get mbs "$name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; then
      return 0
    fi
    now=$(kc -n "$ns" get mbs "$name" -o 'jsonpath={.status.phase} {.status.readyComponents}' 2>/dev/null || true)
    [[ $now != "$last" ]] && { log "  $name: ${now:-(no status yet)} ($((deadline - SECONDS))s left)"; last=$now; }
    sleep 3
  done
  kc -n "$ns" get mbs,pods,jobs,pvc -o wide >&2 || true
  kc -n "$ns" get mbs "$name" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
  return 1
}

# Node port of a Service's first port, or nothing.
node_port() { # service
  kc -n "$NS" get svc "$1" -o 'jsonpath={.spec.ports[0].nodePort}' 2>/dev/null || true
}

print_env() {
  [[ -f $KUBECONFIG ]] || die "no cluster (run make cluster-up)"
  echo "export KUBECONFIG=$KUBECONFIG"
  local graphql user catalogue
  # gateway type None: the public Services' node ports on the node address
  graphql=$(node_port "$SYSTEM-public-graphql"); user=$(node_port "$SYSTEM-public-user")
  catalogue=$(node_port "$SYSTEM-public-catalogue")
  [[ -n $graphql ]] && echo "export MOVIEBOOK_GRAPHQL_URL=http://$NODE_IP:$graphql/graphql"
  [[ -n $user ]] && echo "export MOVIEBOOK_USER_URL=http://$NODE_IP:$user"
  [[ -n $catalogue ]] && echo "export MOVIEBOOK_CATALOGUE_URL=http://$NODE_IP:$catalogue"
  return 0
}

up() {
  local t0=$SECONDS tag
  scripts/cluster-node.sh up >/dev/null
  log "node up after $((SECONDS - t0))s; images"
  scripts/cluster-images.sh stores
  scripts/cluster-images.sh services
  log "images imported after $((SECONDS - t0))s"
  tag=$(moviebook_version)
  ensure_helm
  # Helm installs a chart's CRD only when it is absent: apply this tree's (an older checkout's
  # CRD would drop the fields this operator knows).
  kc apply --server-side --force-conflicts --field-manager=moviebook-node -f charts/moviebook/crds/ >/dev/null
  kc wait --for=condition=Established --timeout=60s crd/moviebookingsystems.moviebook.io >/dev/null
  log "helm upgrade --install $RELEASE charts/moviebook (namespace $NS, version $tag)"
  "$HELM" upgrade --install "$RELEASE" charts/moviebook -n "$NS" --create-namespace \
    -f "$(values_file)" --set "operator.image.tag=$tag" --set-string "system.spec.version=$tag" \
    --set "operator.watchNamespace=$NS" \
    --wait --timeout 5m >"$STATE/logs/helm.log" 2>&1 || { cat "$STATE/logs/helm.log" >&2; die "helm upgrade --install failed"; }
  log "waiting for MovieBookingSystem $SYSTEM to be Ready (up to ${TIMEOUT}s)"
  wait_ready "$NS" "$SYSTEM" "$TIMEOUT" || die "MovieBookingSystem $SYSTEM is not Ready (see above; logs: kubectl -n $NS logs deploy/$RELEASE-operator)"
  kc -n "$NS" get mbs "$SYSTEM" >&2
  log "MovieBook is up on the node in $((SECONDS - t0))s:"
  print_env | sed 's/^/  /' >&2
  cat >&2 <<MSG

  eval "\$(make -s cluster-env)"     # then: curl \$MOVIEBOOK_CATALOGUE_URL/api/v1/movies
  kubectl: $K8S_BIN/kubectl (KUBECONFIG above);  stop and remove everything: make cluster-down
MSG
}

status() {
  [[ -f $KUBECONFIG ]] || { log "no cluster"; return 1; }
  [[ $(kc -n "$NS" get mbs "$SYSTEM" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] \
    && { log "MovieBookingSystem $NS/$SYSTEM Ready"; return 0; }
  log "MovieBookingSystem $NS/$SYSTEM not Ready"; return 1
}

case ${1:-} in
  up) up ;;
  env) print_env ;;
  down) scripts/cluster-node.sh down ;;
  status) status ;;
  wait-ready) wait_ready "$2" "$3" "${4:-$TIMEOUT}" ;;
  *) echo "usage: $0 up|env|down|status" >&2; exit 2 ;;
esac
