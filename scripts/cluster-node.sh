#!/usr/bin/env bash
# scripts/cluster-node.sh build|up|down|status|env: a real one-node Kubernetes on this machine,
# without Docker (docs/cluster.md).
#
#   build   the binaries: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#           kube-proxy, kubectl, etcd, helm (scripts/k8s-testenv.sh build, one `go build`),
#           CoreDNS and local-path-provisioner from their Go modules, the pause program; the
#           runtime (containerd, runc, CNI plugins, iptables) from Debian's packages.
#   up      starts containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#           kubelet and kube-proxy, imports the infrastructure images, deploys CoreDNS and
#           local-path-provisioner (the default StorageClass `local-path`), and waits until the
#           node is Ready and DNS answers. A no-op when the node already runs.
#   down    stops every process it started (by recorded pid, checked against its command
#           line), removes its pods' network namespaces, its mounts (all under the state
#           folder), its iptables chains (KUBE-*, the kubelet's, kube-router's), cni0 and the
#           node interface, restores the sysctls it changed, removes its cgroups and state.
#   status  exits 0 when the API server answers and the node is Ready.
#   env     prints `export KUBECONFIG=...`.
#
# Isolation from everything else on the machine: every component listens on the node address
# NODE_IP (default 10.245.0.1, on a dummy interface `mbnode0` this script creates), never on
# 127.0.0.1 or 0.0.0.0, so no port of `make dev`, the test stores or the test control plane can
# collide; NodePorts open on NODE_IP only. The kubelet's cgroups live under /moviebook-node.
# State: $MOVIEBOOK_CLUSTER_STATE (default /var/lib/moviebook/cluster). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/kind-tools.sh
. scripts/kind-tools.sh

CACHE=${MOVIEBOOK_CACHE:-$HOME/.cache/moviebook}
STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
NODE_IF=${MOVIEBOOK_NODE_IF:-mbnode0}
NODE_IP=${MOVIEBOOK_NODE_IP:-10.245.0.1}
NODE_NAME=${MOVIEBOOK_NODE_NAME:-moviebook-node}
POD_CIDR=10.244.0.0/24 SERVICE_CIDR=10.96.0.0/12 API_SERVICE_IP=10.96.0.1 DNS_IP=10.96.0.10
API_PORT=6443 ETCD_PORT=2379 ETCD_PEER_PORT=2380
CGROUP_ROOT=/moviebook-node
BRIDGE=cni0
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-v0.0.30}
KUBE_ROUTER_VERSION=${KUBE_ROUTER_VERSION:-v2.1.0}
# NetworkPolicies enforced by kube-router's firewall (issue 13); MOVIEBOOK_NODE_NETPOL=0 leaves
# them unenforced, as the bridge CNI alone does.
NETPOL=${MOVIEBOOK_NODE_NETPOL:-1}
TOOLS=$CACHE/node-tools          # CoreDNS, local-path-provisioner, pause, kube-router, decK
IMAGES=$CACHE/images
SOCK=$STATE/containerd/containerd.sock
KUBECONFIG_ADMIN=$STATE/pki/admin.kubeconfig
# Every sysctl the node (kubelet, the bridge, kube-proxy) may change; `up` saves the values it
# found, `down` writes them back.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)
# Processes in start order; `down` stops them in reverse.
PROCS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "cluster-node: $*" >&2; }
die() { echo "cluster-node: ERROR: $*" >&2; exit 1; }
need_root() { [[ $(id -u) == 0 ]] || die "the node needs root (containerd, iptables, mounts)"; }
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---- build --------------------------------------------------------------------------------
install_runtime() {
  local p missing=()
  for p in containerd runc containernetworking-plugins iptables conntrack ipset busybox-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing from Debian's packages: ${missing[*]}"
  local i
  for i in 1 2 3 4 5 6; do   # another engineer's apt may hold dpkg's lock: wait and retry
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && return 0
    sleep 15
  done
  die "apt-get install ${missing[*]} failed"
}

# go build of one main package from a module, in a wrapper module (like k8s-testenv.sh), into
# $TOOLS/<name>. Shares GOMODCACHE/GOCACHE with the Kubernetes build.
go_tool() { # name module version package
  local name=$1 mod=$2 ver=$3 pkg=$4 dir=$K8S_CACHE/src/$1-$3 tmp
  [[ -x $TOOLS/$name ]] && return 0
  log "building $name $ver from $mod (once)"
  mkdir -p "$dir" "$TOOLS"
  printf 'module local/%s\n\ngo 1.26.0\n\nrequire %s %s\n\ntool %s\n' "$name" "$mod" "$ver" "$pkg" >"$dir/go.mod"
  tmp=$(mktemp -d "$TOOLS/.build.XXXXXX")
  (cd "$dir" && _go_env && go mod tidy && go build -trimpath -ldflags "${5:--s -w}" -o "$tmp/$name" "$pkg") \
    || { rm -rf "$tmp"; die "building $name failed"; }
  mv "$tmp/$name" "$TOOLS/$name"; rmdir "$tmp"
}

build_pause() {
  [[ -x $TOOLS/pause ]] && return 0
  mkdir -p "$TOOLS"
  # The sandbox's one process: sleeps until SIGTERM/SIGINT, reaps children (it is PID 1).
  cat >"$TOOLS/pause.c" <<'C'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void done(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, done); signal(SIGINT, done); signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -static -Os -o "$TOOLS/pause.new" "$TOOLS/pause.c" && strip "$TOOLS/pause.new" && mv "$TOOLS/pause.new" "$TOOLS/pause"
}

build() {
  install_runtime
  command -v go >/dev/null || die "go is not installed"
  "$ROOT/scripts/k8s-testenv.sh" build >&2
  ensure_kubectl
  (
    mkdir -p "$K8S_CACHE"; exec 9>"$K8S_CACHE/.build.lock"; flock 9
    _go_env
    go_tool coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns \
      "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
    go_tool local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" \
      github.com/rancher/local-path-provisioner
    if [[ $NETPOL == 1 ]]; then
      go_tool kube-router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION" \
        github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
    fi
  )
  build_pause
}

# ---- PKI and kubeconfigs ------------------------------------------------------------------
gen_pki() {
  local d=$STATE/pki
  [[ -f $d/ca.crt && -f $KUBECONFIG_ADMIN ]] && return 0
  mkdir -p "$d"; chmod 700 "$d"
  cat >"$d/openssl.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$NODE_NAME
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
EOF
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  key "$d/ca.key"
  openssl req -x509 -new -key "$d/ca.key" -days 3650 -config "$d/openssl.cnf" -extensions ca \
    -subj /CN=moviebook-node-ca -out "$d/ca.crt"
  sign() { # name subject extension
    key "$d/$1.key"
    openssl req -new -key "$d/$1.key" -config "$d/openssl.cnf" -subj "$2" -out "$d/$1.csr"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 365 \
      -extfile "$d/openssl.cnf" -extensions "$3" -out "$d/$1.crt" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver server
  sign kubelet-serving "/CN=system:node:$NODE_NAME/O=system:nodes" server
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  sign admin "/O=system:masters/CN=moviebook-node-admin" client
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" client
  sign controller-manager /CN=system:kube-controller-manager client
  sign scheduler /CN=system:kube-scheduler client
  sign kube-proxy /CN=system:kube-proxy client
  sign kube-router /CN=system:kube-router client
  key "$d/sa.key"; openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local n
  for n in admin kubelet controller-manager scheduler kube-proxy kube-router; do
    cat >"$d/$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: moviebook-node
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$d/$n.crt")
    client-key-data: $(base64 -w0 "$d/$n.key")
contexts:
- name: moviebook-node
  context: {cluster: moviebook-node, user: $n}
current-context: moviebook-node
EOF
  done
}

# ---- host network, sysctls, cgroups -------------------------------------------------------
save_sysctls() {
  [[ -f $STATE/sysctl.saved ]] && return 0
  local k f
  for k in "${SYSCTLS[@]}"; do
    f=/proc/sys/${k//.//}
    [[ -r $f ]] && echo "$k=$(cat "$f")"
  done >"$STATE/sysctl.saved"
}
restore_sysctls() {
  [[ -f $STATE/sysctl.saved ]] || return 0
  local line k v
  while IFS= read -r line; do
    k=${line%%=*} v=${line#*=}
    echo "$v" >"/proc/sys/${k//.//}" 2>/dev/null || log "could not restore $k=$v"
  done <"$STATE/sysctl.saved"
  rm -f "$STATE/sysctl.saved"
}

host_network() {
  if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
    # a dummy interface where the kernel has them, else an empty bridge (works the same here)
    ip link add "$NODE_IF" type dummy 2>/dev/null || ip link add "$NODE_IF" type bridge
    echo "$NODE_IF" >"$STATE/created-interface"
  fi
  ip addr replace "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  # Pod-to-Service traffic between two pods on the bridge must traverse iptables (kube-proxy).
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  fence
}

# Nothing of the node leaves the machine: pods may talk to each other and to this host only
# (forwarding from the pod network anywhere but the bridge is refused), and a Service IP that
# kube-proxy did not translate is refused instead of being routed out of the default route.
# Our own chains, named MOVIEBOOK-NODE-*, hooked first into FORWARD and OUTPUT.
fence() {
  local t
  for t in MOVIEBOOK-NODE-FWD MOVIEBOOK-NODE-OUT; do iptables -N "$t" 2>/dev/null || iptables -F "$t"; done
  iptables -A MOVIEBOOK-NODE-FWD -s "$POD_CIDR" -o "$BRIDGE" -j RETURN
  iptables -A MOVIEBOOK-NODE-FWD -s "$POD_CIDR" -j REJECT
  iptables -A MOVIEBOOK-NODE-FWD -d "$SERVICE_CIDR" -j REJECT
  iptables -A MOVIEBOOK-NODE-OUT -d "$SERVICE_CIDR" -j REJECT
  # first in line, before the kube-proxy's and the kubelet's rules (called again once they run)
  while iptables -D FORWARD -j MOVIEBOOK-NODE-FWD 2>/dev/null; do :; done
  while iptables -D OUTPUT -j MOVIEBOOK-NODE-OUT 2>/dev/null; do :; done
  iptables -I FORWARD 1 -j MOVIEBOOK-NODE-FWD
  iptables -I OUTPUT 1 -j MOVIEBOOK-NODE-OUT
}

# cgroup v1 hierarchies (plus the v2 one) mounted under /sys/fs/cgroup: the kubelet's tree
# goes under $CGROUP_ROOT in each, so `down` removes exactly that.
cgroup_dirs() { local m; for m in /sys/fs/cgroup/*/; do [[ -d $m ]] && echo "${m%/}$CGROUP_ROOT"; done; }
make_cgroups() {
  local c
  for c in $(cgroup_dirs); do
    mkdir -p "$c"
    if [[ -f $c/cpuset.cpus ]]; then   # cpuset v1 does not inherit: copy the parent's
      [[ -s $c/cpuset.cpus ]] || cat "$(dirname "$c")/cpuset.cpus" >"$c/cpuset.cpus"
      [[ -s $c/cpuset.mems ]] || cat "$(dirname "$c")/cpuset.mems" >"$c/cpuset.mems"
    fi
  done
}
remove_cgroups() {
  local c d
  for c in $(cgroup_dirs); do
    [[ -d $c ]] || continue
    # depth first; a cgroup with tasks left cannot be removed (then it is reported)
    while IFS= read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$c" -depth -type d)
    [[ -d $c ]] && log "cgroup $c still has processes"
  done
  return 0
}

# ---- processes ----------------------------------------------------------------------------
launch() { # name cmd...
  local n=$1; shift
  setsid nohup "$@" >>"$STATE/logs/$n.log" 2>&1 </dev/null &
  echo $! >"$STATE/run/$n.pid"
}
# Is the recorded pid still the process we started (its executable path matches)?
ours() { # name binary
  local f=$STATE/run/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' '\n' <"/proc/$pid/cmdline" | head -1 | grep -qxF -- "$2"
}
bin_of() {
  case $1 in
    containerd) command -v containerd ;;
    kube-router) echo "$TOOLS/kube-router" ;;
    etcd|kube-*|kubelet) echo "$K8S_BIN/$1" ;;
  esac
}
stop_proc() { # name
  local n=$1 pid
  [[ -f $STATE/run/$n.pid ]] || return 0
  pid=$(cat "$STATE/run/$n.pid")
  if ours "$n" "$(bin_of "$n")"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $n (pid $pid)"
  fi
  rm -f "$STATE/run/$n.pid"
}
wait_for() { # name seconds cmd...
  local n=$1 s=$2; shift 2
  local deadline=$((SECONDS + s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "$n not ready after ${s}s; last log lines:"; tail -n 30 "$STATE/logs/$n.log" >&2 2>/dev/null; return 1; }
    sleep 0.5
  done
}
api_ok() { curl -fsS --max-time 3 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" --key "$STATE/pki/admin.key" "https://$NODE_IP:$API_PORT/readyz" >/dev/null 2>&1; }
node_ready() { [[ $(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; }

write_configs() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/kubelet" "$STATE/pod-logs" "$STATE/volumes"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "moviebook.local/pause:1"
  # root lacks CAP_SYS_RESOURCE here: without this every sandbox fails (docs/cluster.md)
  restrict_oom_score_adj = true
  stream_server_address = "$NODE_IP"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  # No ipMasq: pods only talk to each other and to this node, never to the outside.
  cat >"$STATE/cni/net.d/10-moviebook.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "moviebook",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$POD_CIDR" }]],
                "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": "$STATE/cni/ipam" }
    }
  ]
}
EOF
  # Pods with dnsPolicy Default (CoreDNS itself) get this: nothing beyond the cluster.
  printf 'nameserver %s\n' "$DNS_IP" >"$STATE/resolv.conf"
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
podLogsDir: $STATE/pod-logs
resolvConf: $STATE/resolv.conf
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
podCIDR: $POD_CIDR
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
EOF
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/pki/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: $NODE_IP:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

start_processes() {
  local d=$STATE/pki
  if ! ours containerd "$(bin_of containerd)"; then
    log "starting containerd ($SOCK)"
    launch containerd "$(bin_of containerd)" --config "$STATE/containerd/config.toml"
    wait_for containerd 60 ctr --address "$SOCK" version
  fi
  if ! ours etcd "$K8S_BIN/etcd"; then
    log "starting etcd on $NODE_IP:$ETCD_PORT"
    launch etcd "$K8S_BIN/etcd" --name=node --data-dir="$STATE/etcd" \
      --listen-client-urls="http://$NODE_IP:$ETCD_PORT" --advertise-client-urls="http://$NODE_IP:$ETCD_PORT" \
      --listen-peer-urls="http://$NODE_IP:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://$NODE_IP:$ETCD_PEER_PORT" \
      --initial-cluster="node=http://$NODE_IP:$ETCD_PEER_PORT" --listen-metrics-urls= --log-level=warn
    wait_for etcd 60 curl -fsS "http://$NODE_IP:$ETCD_PORT/health"
  fi
  if ! ours kube-apiserver "$K8S_BIN/kube-apiserver"; then
    log "starting kube-apiserver on https://$NODE_IP:$API_PORT"
    launch kube-apiserver "$K8S_BIN/kube-apiserver" \
      --etcd-servers="http://$NODE_IP:$ETCD_PORT" \
      --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
      --cert-dir="$d" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
      --client-ca-file="$d/ca.crt" \
      --kubelet-client-certificate="$d/apiserver-kubelet-client.crt" --kubelet-client-key="$d/apiserver-kubelet-client.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
      --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
      --enable-admission-plugins=NodeRestriction --allow-privileged=true --profiling=false \
      --kubelet-preferred-address-types=InternalIP
    wait_for kube-apiserver 120 api_ok
  fi
  if ! ours kube-controller-manager "$K8S_BIN/kube-controller-manager"; then
    log "starting kube-controller-manager"
    launch kube-controller-manager "$K8S_BIN/kube-controller-manager" \
      --kubeconfig="$d/controller-manager.kubeconfig" --authentication-kubeconfig="$d/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$d/controller-manager.kubeconfig" \
      --bind-address="$NODE_IP" --secure-port=10257 --cert-dir="$STATE/kcm" --leader-elect=false \
      --controllers='*' --use-service-account-credentials=true \
      --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
      --cluster-signing-cert-file="$d/ca.crt" --cluster-signing-key-file="$d/ca.key" \
      --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  fi
  if ! ours kube-scheduler "$K8S_BIN/kube-scheduler"; then
    log "starting kube-scheduler"
    launch kube-scheduler "$K8S_BIN/kube-scheduler" \
      --kubeconfig="$d/scheduler.kubeconfig" --authentication-kubeconfig="$d/scheduler.kubeconfig" \
      --authorization-kubeconfig="$d/scheduler.kubeconfig" \
      --bind-address="$NODE_IP" --secure-port=10259 --cert-dir="$STATE/scheduler" --leader-elect=false --profiling=false
  fi
  if ! ours kubelet "$K8S_BIN/kubelet"; then
    log "starting kubelet ($NODE_NAME, $NODE_IP)"
    launch kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
      --kubeconfig="$d/kubelet.kubeconfig" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
      --node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
  fi
  if ! ours kube-proxy "$K8S_BIN/kube-proxy"; then
    log "starting kube-proxy"
    launch kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE/kube-proxy.yaml"
  fi
  wait_for kubelet 120 node_ready
  wait_for kube-proxy 60 iptables -t nat -S KUBE-SERVICES
  fence
}

start_netpol() {
  local d=$STATE/pki
  if [[ $NETPOL == 1 ]] && ! ours kube-router "$TOOLS/kube-router"; then
    # NetworkPolicy enforcement only (iptables + ipsets); routing stays the bridge's and
    # Services kube-proxy's. Health and metrics servers off: nothing listens on 0.0.0.0.
    log "starting kube-router $KUBE_ROUTER_VERSION (NetworkPolicy enforcement)"
    launch kube-router "$TOOLS/kube-router" --kubeconfig="$d/kube-router.kubeconfig" \
      --hostname-override="$NODE_NAME" --run-router=false --run-service-proxy=false --run-firewall=true \
      --run-loadbalancer=false --health-port=0 --metrics-port=0 --enable-cni=false --enable-ipv6=false \
      --service-cluster-ip-range="$SERVICE_CIDR"
    wait_for kube-router 60 iptables -S KUBE-ROUTER-FORWARD
  fi
}

# ---- infrastructure images and add-ons ----------------------------------------------------
import_infra_images() {
  "$ROOT/scripts/cluster-images.sh" infra >&2
}

deploy_addons() {
  local manifest=$STATE/addons.yaml
  sed -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@VOLUMES@|$STATE/volumes|g" \
      -e "s|@COREDNS_TAG@|${COREDNS_VERSION#v}|g" -e "s|@LOCAL_PATH_TAG@|${LOCAL_PATH_VERSION#v}|g" \
      "$ROOT/scripts/cluster/addons.yaml" >"$manifest"
  kc apply --server-side --force-conflicts --field-manager=moviebook-node -f "$manifest" >/dev/null
  kc -n kube-system rollout status deploy/coredns --timeout=180s >&2
  kc -n local-path-storage rollout status deploy/local-path-provisioner --timeout=180s >&2
}

dns_ok() { # a Service name resolves through CoreDNS
  local ip
  ip=$(kc -n kube-system get pod -l k8s-app=kube-dns -o 'jsonpath={.items[0].status.podIP}')
  [[ -n $ip ]] && python3 - "$DNS_IP" <<'PY'
import socket, struct, sys
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
for part in b"kubernetes.default.svc.cluster.local".split(b"."):
    q += bytes([len(part)]) + part
q += b"\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
assert struct.unpack(">H", r[6:8])[0] >= 1 and r[-4:] == socket.inet_aton("10.96.0.1"), r
PY
}

print_env() { echo "export KUBECONFIG=$KUBECONFIG_ADMIN"; }

up() {
  need_root
  local t0=$SECONDS
  build
  mkdir -p "$STATE/logs" "$STATE/run"
  save_sysctls
  gen_pki
  write_configs
  host_network
  make_cgroups
  trap 'log "up failed: the node stays up for inspection (logs in $STATE/logs); make cluster-down removes it"' ERR
  start_processes
  import_infra_images
  deploy_addons
  start_netpol
  fence
  wait_for coredns 60 dns_ok || die "CoreDNS does not resolve kubernetes.default"
  trap - ERR
  log "node $NODE_NAME Ready, CoreDNS and the local-path StorageClass up in $((SECONDS - t0))s (state in $STATE)"
  print_env
}

# ---- down ---------------------------------------------------------------------------------
# Removes every pod sandbox through the kubelet (so containerd runs the CNI DEL and unmounts),
# then whatever a crash left behind, identified as ours by path or recorded id.
delete_pods() {
  api_ok || return 0
  ours kubelet "$K8S_BIN/kubelet" || return 0
  # no new pods: stop the controllers and the scheduler first
  stop_proc kube-controller-manager; stop_proc kube-scheduler
  log "deleting every pod (the kubelet stops them and releases their network)"
  kc delete pods --all -A --grace-period=5 --timeout=90s --wait=true >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    [[ -z $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null) ]] && break; sleep 1
  done
}

netns_of_sandboxes() {
  local id
  for id in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io containers info "$id" 2>/dev/null \
      | python3 -c 'import json,sys
for n in json.load(sys.stdin).get("Spec",{}).get("linux",{}).get("namespaces",[]):
    if n.get("type")=="network" and n.get("path","").startswith("/var/run/netns/"): print(n["path"])' 2>/dev/null || true
  done
}

kill_shims() { # containerd-shim-runc-v2 processes of OUR containerd (its socket is on their command line)
  local p
  for p in $(pgrep -f containerd-shim-runc-v2 || true); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-address $SOCK " && kill -9 "$p" 2>/dev/null
  done
  return 0
}

iptables_cleanup() {
  [[ -x $K8S_BIN/kube-proxy ]] && { "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; }
  local cmd table chain rule ours='^(KUBE-|MOVIEBOOK-NODE-)'
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle; do
      # the jumps from the built-in chains into our chains, then our chains themselves
      while IFS= read -r rule; do
        [[ -n $rule ]] && eval "$cmd -t $table ${rule/#-A/-D}" 2>/dev/null
      done < <("$cmd" -t "$table" -S 2>/dev/null | awk -v re="$ours" '$1 == "-A" && $2 !~ re { for (i = 3; i < NF; i++) if ($i == "-j" && $(i+1) ~ re) { print; break } }')
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk -v re="$ours" '$1 == "-N" && $2 ~ re {print $2}'); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk -v re="$ours" '$1 == "-N" && $2 ~ re {print $2}'); do
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  return 0
}

down() {
  need_root
  [[ -d $STATE ]] || { log "not running (no $STATE)"; return 0; }
  local netns n m
  delete_pods
  netns=$(netns_of_sandboxes)
  for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
    n=${PROCS[i]}
    [[ $n == containerd ]] && continue
    stop_proc "$n"
  done
  if [[ -f $STATE/run/kube-router.pid ]]; then
    stop_proc kube-router
    "$TOOLS/kube-router" --cleanup-config >/dev/null 2>&1 || true
  fi
  stop_proc containerd
  kill_shims
  for n in $netns; do
    mountpoint -q "$n" 2>/dev/null && umount "$n"; rm -f "$n"
  done
  # every mount under the state folder, deepest first
  while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r)
  iptables_cleanup
  # kube-router's ipsets (all named KUBE-*), once no rule references them
  if command -v ipset >/dev/null; then
    for n in $(ipset list -n 2>/dev/null | grep '^KUBE-' || true); do ipset destroy "$n" 2>/dev/null || true; done
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  if [[ -f $STATE/created-interface ]]; then ip link delete "$NODE_IF" 2>/dev/null || true; fi
  restore_sysctls
  remove_cgroups
  if awk -v s="$STATE/" 'index($2, s) == 1' /proc/mounts | grep -q .; then
    die "mounts under $STATE remain; not removing it"
  fi
  rm -rf "$STATE"
  log "down: processes stopped, mounts, iptables chains, $BRIDGE and $NODE_IF removed, sysctls restored"
}

status() {
  api_ok && node_ready && { log "node $NODE_NAME Ready at https://$NODE_IP:$API_PORT"; return 0; }
  log "not running"; return 1
}

case ${1:-} in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env) api_ok && print_env ;;
  *) echo "usage: $0 build|up|down|status|env" >&2; exit 2 ;;
esac
