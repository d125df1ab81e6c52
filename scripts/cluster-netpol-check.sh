#!/usr/bin/env bash
# scripts/cluster-netpol-check.sh: proves that the node enforces NetworkPolicies (kube-router's
# firewall, scripts/cluster-node.sh). In a namespace of its own: a Redis stand-in pod as the
# server, two client pods; without a policy both connect; with a policy admitting only
# `role: allowed`, the other one is refused and the allowed one still connects; removing the
# policy lets it in again. Run by scripts/cluster-e2e.sh; needs the node and the stand-in images.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
export KUBECONFIG=${KUBECONFIG:-$STATE/pki/admin.kubeconfig}
NS=netpol-check-$$
k() { "$K8S_BIN/kubectl" -n "$NS" "$@"; }
fail() { echo "netpol-check: FAIL: $*" >&2; exit 1; }
trap '"$K8S_BIN/kubectl" delete ns "$NS" --wait=false >/dev/null 2>&1' EXIT
check() { scripts/cluster-netcheck.sh "$NS" "$1" pod/server 6379 2 >/dev/null; }
until_() { # seconds cmd...: true once cmd succeeds within the time
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 1; done
}

"$K8S_BIN/kubectl" create ns "$NS" >/dev/null
k apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 999, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: redis
    image: moviebook.local/redis-standin:7
    imagePullPolicy: Never
    args: [redis-server, --protected-mode, "no", --save, ""]
    readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 1}
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {role: other}}
spec:
  containers: [{name: pause, image: "moviebook.local/pause:1", imagePullPolicy: Never}]
---
apiVersion: v1
kind: Pod
metadata: {name: allowed, labels: {role: allowed}}
spec:
  containers: [{name: pause, image: "moviebook.local/pause:1", imagePullPolicy: Never}]
EOF
k wait --for=condition=Ready pod/server pod/other pod/allowed --timeout=120s >/dev/null || fail "the test pods did not start"
check other || fail "without a policy, 'other' cannot reach the server"
check allowed || fail "without a policy, 'allowed' cannot reach the server"
echo "    ok: without a NetworkPolicy both clients connect"
k apply -f - >/dev/null <<'EOF'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-allowed}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {role: allowed}}}], ports: [{port: 6379}]}]
EOF
until_ 30 bash -c "! scripts/cluster-netcheck.sh $NS other pod/server 6379 2 >/dev/null" || fail "the NetworkPolicy is not enforced: 'other' still connects"
check allowed || fail "the NetworkPolicy refuses the pod it admits"
echo "    ok: with the policy 'other' is refused, 'allowed' connects"
k delete networkpolicy only-allowed >/dev/null
until_ 30 check other || fail "after the policy was deleted 'other' is still refused"
echo "    ok: policy deleted, 'other' connects again"
