#!/usr/bin/env bash
# scripts/cluster-netcheck.sh NAMESPACE POD TARGET PORT [TIMEOUT]
#
# Can pod POD open a TCP connection to TARGET:PORT? Runs the connection attempt inside the pod's
# own network namespace (found through the node's containerd), so the kernel sees the pod's IP
# as the source, exactly as NetworkPolicy enforcement does; the pod needs no shell or tools.
# TARGET is an IP, `svc/NAME` (its ClusterIP, in NAMESPACE) or `pod/NAME` (its IP).
#
# Exit status: 0 connected, 1 refused or timed out (printed), 2 usage or lookup error.
# For NetworkPolicy tests (issue 13): `! scripts/cluster-netcheck.sh ns demo-booking-... svc/demo-postgres 5432`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
SOCK=$STATE/containerd/containerd.sock
export KUBECONFIG=${KUBECONFIG:-$STATE/pki/admin.kubeconfig}
(($# >= 4)) || { sed -n '2,11p' "$0" >&2; exit 2; }
ns=$1 pod=$2 target=$3 port=$4 timeout=${5:-3}
kc() { "$K8S_BIN/kubectl" -n "$ns" "$@"; }

case $target in
  svc/*) ip=$(kc get svc "${target#svc/}" -o 'jsonpath={.spec.clusterIP}') ;;
  pod/*) ip=$(kc get pod "${target#pod/}" -o 'jsonpath={.status.podIP}') ;;
  *) ip=$target ;;
esac
[[ -n $ip && $ip != None ]] || { echo "netcheck: $target has no IP (headless Service? use pod/NAME)" >&2; exit 2; }
uid=$(kc get pod "$pod" -o 'jsonpath={.metadata.uid}') || exit 2
sandbox=$(ctr --address "$SOCK" -n k8s.io containers ls -q "labels.\"io.kubernetes.pod.uid\"==$uid,labels.\"io.cri-containerd.kind\"==sandbox" 2>/dev/null | tail -n 1)
netns=
[[ -n $sandbox ]] && netns=$(ctr --address "$SOCK" -n k8s.io containers info "$sandbox" | python3 -c 'import json,sys
paths = [n.get("path", "") for n in json.load(sys.stdin).get("Spec", {}).get("linux", {}).get("namespaces", []) if n.get("type") == "network"]
print(paths[0] if paths else "")')
[[ -n $netns ]] || { echo "netcheck: no network namespace found for pod $ns/$pod (uid $uid)" >&2; exit 2; }
if nsenter --net="$netns" timeout "$timeout" bash -c "exec 3<>/dev/tcp/$ip/$port" 2>/dev/null; then
  echo "netcheck: $ns/$pod -> $target ($ip:$port): connected"
else
  echo "netcheck: $ns/$pod -> $target ($ip:$port): refused or timed out"
  exit 1
fi
