#!/usr/bin/env bash
# scripts/kind-up.sh (`make kind-up`): a kind cluster with the whole system in it.
#   1. creates the kind cluster `moviebook` from kind-config.yaml (node port 30080 -> localhost:8080)
#   2. builds the six images (scripts/kind-images.sh) and loads them into the node
#   3. installs charts/moviebook with ci/kind-values.yaml (operator + a MovieBookingSystem)
#   4. waits until the MovieBookingSystem is Ready, then prints where to go
# Needs Docker. Re-running it is safe: an existing cluster is reused, the release upgraded.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
CLUSTER=moviebook NS=${MOVIEBOOK_NAMESPACE:-moviebook} RELEASE=moviebook
REGISTRY=moviebook.local TAG=${IMAGE_TAG:-$(moviebook_version)}
TIMEOUT=${KIND_READY_TIMEOUT:-20m}

require_docker || { echo "make kind-up needs Docker (see the Kubernetes section of README.md)" >&2; exit 1; }
ensure_kind; ensure_helm; ensure_kubectl
export KUBECONFIG=${KUBECONFIG_KIND:-$HOME/.cache/moviebook/kind/kubeconfig}
mkdir -p "$(dirname "$KUBECONFIG")"

if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "==> kind cluster $CLUSTER exists; reusing it"
  "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
  echo "==> creating kind cluster $CLUSTER"
  "$KIND" create cluster --config kind-config.yaml --kubeconfig "$KUBECONFIG" --wait 120s
fi

echo "==> building images"
IMAGE_REGISTRY=$REGISTRY IMAGE_TAG=$TAG scripts/kind-images.sh
echo "==> loading images into the node"
for entry in "${IMAGES[@]}"; do
  read -r _ name <<<"$entry"
  "$KIND" load docker-image "$REGISTRY/$name:$TAG" --name "$CLUSTER"
done

echo "==> installing charts/moviebook (release $RELEASE, namespace $NS)"
"$HELM" upgrade --install "$RELEASE" charts/moviebook -n "$NS" --create-namespace \
  -f charts/moviebook/ci/kind-values.yaml --set "operator.image.tag=$TAG" \
  --set-string "system.spec.version=$TAG" --wait --timeout 5m

echo "==> waiting for MovieBookingSystem moviebook to be Ready (stores, migrations, services, Kong; up to $TIMEOUT)"
if ! "$KUBECTL" -n "$NS" wait mbs/moviebook --for=condition=Ready --timeout="$TIMEOUT"; then
  "$KUBECTL" -n "$NS" get mbs,pods,jobs -o wide >&2 || true
  "$KUBECTL" -n "$NS" describe mbs moviebook | tail -n 30 >&2 || true
  exit 1
fi
"$KUBECTL" -n "$NS" get mbs moviebook
cat <<MSG

MovieBook is up:
  GraphQL:   http://localhost:8080/graphql
  REST:      http://localhost:8080/api/v1/register, /api/v1/login, ...
  kubectl:   export KUBECONFIG=$KUBECONFIG
  smoke:     make kind-smoke      stop: make kind-down
MSG
