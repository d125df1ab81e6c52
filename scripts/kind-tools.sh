#!/usr/bin/env bash
# Sourced by scripts/kind-*.sh and scripts/chart-test.sh: where the Kubernetes tools come from.
#
#   helm, kubectl   built from their Go modules at the test control plane's version and cached
#                   in $K8S_BIN (scripts/k8s-testenv.sh builds helm; kubectl is built here)
#   kind            go install sigs.k8s.io/kind@$KIND_VERSION into $TOOLS_BIN, unless on PATH
#   docker          must be installed AND its daemon reachable; nothing here can replace it
K8S_VERSION=${K8S_VERSION:-v1.37.2}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
K8S_CACHE=${K8S_TESTENV_CACHE:-$HOME/.cache/moviebook/k8s}
K8S_BIN=${K8S_TESTENV_BIN:-$K8S_CACHE/bin/$K8S_VERSION}
TOOLS_BIN=${MOVIEBOOK_TOOLS_BIN:-$HOME/.cache/moviebook/bin}
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_go_env() {
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 GOFLAGS=
  export GOMODCACHE=${GOMODCACHE:-$K8S_CACHE/gomod} GOCACHE=${GOCACHE:-$K8S_CACHE/gobuild}
}

ensure_helm() {
  [[ -x $K8S_BIN/helm ]] || "$_root/scripts/k8s-testenv.sh" build >&2
  [[ -x $K8S_BIN/helm ]] || { echo "helm is missing in $K8S_BIN after scripts/k8s-testenv.sh build" >&2; return 1; }
  HELM=$K8S_BIN/helm
}

# kubectl has no main package in a module of its own: a three-line main around
# k8s.io/kubectl/pkg/cmd, the same one k8s.io/kubernetes/cmd/kubectl has.
ensure_kubectl() {
  KUBECTL=$K8S_BIN/kubectl
  [[ -x $KUBECTL ]] && return 0
  command -v go >/dev/null || { echo "go is not installed: cannot build kubectl" >&2; return 1; }
  mkdir -p "$K8S_CACHE" "$K8S_BIN"
  (
    exec 8>"$K8S_CACHE/.kubectl.lock"; flock 8
    [[ -x $KUBECTL ]] && exit 0
    echo "building kubectl $K8S_VERSION (once)" >&2
    rest=${K8S_VERSION#v1.}; minor=${rest%%.*}; m=$K8S_CACHE/src/kubectl-$K8S_VERSION; mkdir -p "$m"
    cat > "$m/main.go" <<'GO'
// kubectl, as k8s.io/kubernetes/cmd/kubectl builds it.
package main

import (
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
    printf 'module local/kubectl\n\ngo 1.26.0\n\nrequire k8s.io/kubectl v0.%s\n' "$rest" > "$m/go.mod"
    ldf="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    _go_env
    cd "$m" && go mod tidy && go build -trimpath -ldflags "$ldf" -o "$m/kubectl.new" . \
      && mv "$m/kubectl.new" "$KUBECTL"
  )
}

ensure_kind() {
  if command -v kind >/dev/null; then KIND=$(command -v kind); return 0; fi
  KIND=$TOOLS_BIN/kind
  [[ -x $KIND ]] && return 0
  echo "building kind $KIND_VERSION (once)" >&2
  mkdir -p "$TOOLS_BIN"
  (_go_env; GOBIN=$TOOLS_BIN go install "sigs.k8s.io/kind@$KIND_VERSION")
}

# Fails with a plain explanation when no container engine can be used.
require_docker() {
  if ! command -v docker >/dev/null; then
    echo "docker is not installed: building images and running kind need a container engine" >&2
    return 1
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "docker is installed but its daemon is not reachable ('docker info' fails):" >&2
    echo "building images and running kind need a running container engine" >&2
    return 1
  fi
}

# Version of the workspace (the image tag and the chart's appVersion).
moviebook_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$_root/Cargo.toml" | head -1
}

# The images: <docker target> <image name> (the same), from the one list scripts/images.tsv.
mapfile -t IMAGES < <(python3 "$_root/scripts/images.py" list | awk '{print $1, $1}')
