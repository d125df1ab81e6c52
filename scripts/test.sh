#!/usr/bin/env bash
# `make test`: formatting, lints, then every test of the workspace against real servers started
# here (the `test` profile of scripts/stack.sh: its own ports and state, so a running `make dev`
# is never touched) and a real kube-apiserver (scripts/k8s-testenv.sh). Everything it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moviebook/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }
t0=$SECONDS

# The real one-node Kubernetes e2e (scripts/cluster-e2e.sh) runs by default: it needs root
# (containerd, iptables, mounts), so as another user it is skipped and the summary says so.
# MOVIEBOOK_NODE_E2E=0 skips it (e.g. a quick local run), 1 insists on it (fails if not root).
# In the default (auto) mode it also has a time budget: CI stops a run at 90 minutes and the
# node e2e takes 10-17 minutes, so when everything before it already took longer than
# MOVIEBOOK_NODE_E2E_BUDGET_MIN minutes (50; a cold first run on a slow machine) it is skipped
# with that reason in the summary instead of risking the whole run. `make cluster-e2e` runs it
# alone; MOVIEBOOK_NODE_E2E=1 runs it whatever the time.
NODE_E2E=${MOVIEBOOK_NODE_E2E:-auto}
NODE_E2E_WHY= NODE_E2E_AUTO=
NODE_E2E_BUDGET_MIN=${MOVIEBOOK_NODE_E2E_BUDGET_MIN:-50}
if [[ $NODE_E2E == auto ]]; then
  NODE_E2E_AUTO=1
  if [[ $(id -u) == 0 ]]; then NODE_E2E=1; else NODE_E2E=0 NODE_E2E_WHY="not root"; fi
fi
[[ $NODE_E2E == 0 && -z $NODE_E2E_WHY ]] && NODE_E2E_WHY="MOVIEBOOK_NODE_E2E=0"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/moviebook-test.XXXXXX")

step "toolchain"
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

# What the node e2e needs besides the workspace (Go builds of the node's binaries, Debian's
# packages, the stand-in store images: mostly downloads and single-threaded phases) is prepared in
# the background while cargo compiles, instead of after it. Its log is shown if it fails.
PREP_PID= WEB_PREP_PID= STACK_STARTED=
cleanup() {
  set +e
  [[ -n $PREP_PID ]] && kill -- "-$PREP_PID" 2>/dev/null   # its own process group (setsid)
  [[ -n $WEB_PREP_PID ]] && kill -- "-$WEB_PREP_PID" 2>/dev/null
  [[ -n ${K8S_STARTED:-} ]] && scripts/k8s-testenv.sh stop >/dev/null 2>&1
  [[ -n $STACK_STARTED ]] && scripts/stack.sh test down
}
trap cleanup EXIT
# A signal (a CI timeout, Ctrl-C) would end bash without its EXIT trap: turn it into an exit so
# the servers this run started are stopped either way.
trap 'exit 130' INT
trap 'exit 143' TERM
# start_bg VAR LOG CMD...: CMD in its own process group (so cleanup can end all of it), PID in VAR.
start_bg() { local -n pid_=$1; local log=$2; shift 2; setsid "$@" >"$log" 2>&1 & pid_=$!; }
# await_bg VAR LOG: waits for that job; if it failed, shows its log and stops the run.
await_bg() {
  local -n pid_=$1; local log=$2 rc=0
  wait "$pid_" || rc=$?
  pid_=
  ((rc == 0)) || { tail -n 40 "$log"; echo "preparing failed (log above: $log)" >&2; exit 1; }
}
if [[ $NODE_E2E == 1 ]]; then
  step "in the background: the node's binaries and the stand-in store images ($LOGS/prepare.log)"
  start_bg PREP_PID "$LOGS/prepare.log" bash -c 'scripts/cluster-node.sh build && scripts/cluster-images.sh stores'
fi
# The browser tests' downloads (Node.js, npm packages, Debian's chromium) likewise.
if [[ -x scripts/web.sh ]]; then
  step "in the background: the web build and chromium ($LOGS/web-prepare.log)"
  start_bg WEB_PREP_PID "$LOGS/web-prepare.log" scripts/web.sh prepare
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "backing servers (test profile)"
STACK_STARTED=1
scripts/stack.sh test up
eval "$(scripts/stack.sh test env)"
export MOVIEBOOK_STACK_SCRIPT="$PWD/scripts/stack.sh test"

step "kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, helm)"
scripts/k8s-testenv.sh build >/dev/null
eval "$(scripts/k8s-testenv.sh start | grep '^export ')"
K8S_STARTED=1
export MOVIEBOOK_K8S_TESTENV=1

step "cargo test --workspace"
cargo test --workspace --locked --no-fail-fast

if [[ -x scripts/chart-test.sh ]]; then
  step "helm chart"
  scripts/chart-test.sh
fi

if [[ -x scripts/web.sh ]]; then
  step "the storefront in a real browser (scripts/web.sh test)"
  await_bg WEB_PREP_PID "$LOGS/web-prepare.log"
  scripts/web.sh test
fi

step "images: the Dockerfile and the node images agree"
scripts/cluster-images.sh check

elapsed_min=$(((SECONDS - t0) / 60))
if [[ $NODE_E2E == 1 && -n $NODE_E2E_AUTO ]] && ((elapsed_min > NODE_E2E_BUDGET_MIN)); then
  NODE_E2E=0
  NODE_E2E_WHY="the run already took ${elapsed_min} min, over MOVIEBOOK_NODE_E2E_BUDGET_MIN=${NODE_E2E_BUDGET_MIN}, and CI stops at 90; run it with 'make cluster-e2e' or MOVIEBOOK_NODE_E2E=1"
fi
if [[ $NODE_E2E == 1 ]]; then
  step "the system on a real node (scripts/cluster-e2e.sh)"
  await_bg PREP_PID "$LOGS/prepare.log"
  # The images are made from the binaries `cargo test` built. A plain `cargo build --bins`
  # would compile the libraries again (without the dev-dependencies' features they are other
  # units: ~9 min instead of ~3 for the e2e's image step on a cold run); with `--tests` the
  # features are the test build's, so this only makes sure every binary is there.
  cargo build --workspace --bins --tests --locked --quiet
  MOVIEBOOK_IMAGE_NO_BUILD=1 scripts/cluster-e2e.sh
else
  step "SKIPPED: the system on a real node ($NODE_E2E_WHY; as root it runs by default)"
fi

rm -rf "$LOGS"
printf '\nall checks passed in %ss\n' "$((SECONDS - t0))"
