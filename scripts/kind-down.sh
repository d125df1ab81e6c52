#!/usr/bin/env bash
# scripts/kind-down.sh (`make kind-down`): deletes the kind cluster and with it everything in it,
# data included (the node's volumes go with the node container).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
require_docker || { echo "make kind-down needs Docker" >&2; exit 1; }
ensure_kind
"$KIND" delete cluster --name moviebook
rm -f "${KUBECONFIG_KIND:-$HOME/.cache/moviebook/kind/kubeconfig}"
