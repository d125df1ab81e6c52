#!/usr/bin/env bash
# scripts/cluster-images.sh infra|stores|services|all|check|list: the node's container images,
# built without Docker and imported into the node's containerd (`ctr -n k8s.io images import`).
#
#   infra     pause, CoreDNS, local-path-provisioner (binaries from scripts/cluster-node.sh build)
#   stores    the STAND-IN store images, built from Debian bookworm's packages (debootstrap
#             --variant=minbase, then apt-get in a chroot) and SecantusDB from PyPI; one shared
#             package layer plus one small layer per store (its user uid 999 and entrypoint):
#               moviebook.local/postgres-standin:15         PostgreSQL 15
#               moviebook.local/redis-standin:7             Redis 7.0
#               moviebook.local/rabbitmq-standin:3          RabbitMQ 3.10
#               moviebook.local/mongo-standin-secantusdb:V  SecantusDB V (MongoDB-compatible)
#   services  moviebook.local/<name>:<version> for every image of scripts/images.tsv, from the
#             binaries the test build made ($CARGO_TARGET_DIR/debug; `cargo build --bins` is a
#             no-op after `cargo test`); EXTRA_TAGS adds tags (the e2e test's version bumps),
#             IMAGE_VERSION replaces the version tag, MOVIEBOOK_IMAGE_NO_BUILD=1 skips `cargo build`.
#   check     the Dockerfile and the node images agree (scripts/images.py check-dockerfile).
#
# Archives are cached in $MOVIEBOOK_CACHE/images; a rebuild happens only when its inputs change.
# Importing needs the node's containerd (scripts/cluster-node.sh up); without it the archives
# are only built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/kind-tools.sh
. scripts/kind-tools.sh

CACHE=${MOVIEBOOK_CACHE:-$HOME/.cache/moviebook}
STATE=${MOVIEBOOK_CLUSTER_STATE:-/var/lib/moviebook/cluster}
IMAGES=$CACHE/images
TOOLS=$CACHE/node-tools
SOCK=$STATE/containerd/containerd.sock
REGISTRY=moviebook.local
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
PROFILE_DIR=${MOVIEBOOK_IMAGE_PROFILE:-debug}
SUITE=bookworm MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECANTUS_VERSION=${SECANTUS_VERSION:-0.7.0b3}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-v0.0.30}
STORE_PACKAGES=(postgresql-15 redis-server rabbitmq-server python3 ca-certificates)

log() { echo "cluster-images: $*" >&2; }
die() { echo "cluster-images: ERROR: $*" >&2; exit 1; }
py() { python3 "$ROOT/scripts/images.py" "$@"; }

# Imports an archive unless the node's last import for these tags (`key`) was exactly it.
import_archive() { # archive key
  local a=$1 stamp sum
  [[ -S $SOCK ]] || { log "no node containerd at $SOCK: built $a, not imported"; return 0; }
  stamp=$STATE/imported/${2:-$(basename "$a")}.sha
  sum=$(tar -xOf "$a" manifest.json | sha256sum | cut -d' ' -f1)
  [[ -f $stamp && $(cat "$stamp") == "$sum" ]] && return 0
  log "importing $(basename "$a") ($(du -h "$a" | cut -f1))"
  ctr --address "$SOCK" -n k8s.io images import "$a" >/dev/null || die "ctr images import $a failed"
  mkdir -p "$STATE/imported"; echo "$sum" >"$stamp"
}

# ---- infra ----------------------------------------------------------------------------------
infra() {
  local out=$IMAGES/infra.tar spec b
  for b in pause coredns local-path-provisioner; do
    [[ -x $TOOLS/$b ]] || die "$TOOLS/$b is missing: run scripts/cluster-node.sh build"
  done
  if [[ ! -f $out || -n $(find "$TOOLS/pause" "$TOOLS/coredns" "$TOOLS/local-path-provisioner" "$0" -newer "$out" -print -quit) ]]; then
    mkdir -p "$IMAGES"; spec=$(mktemp)
    local bb=/usr/bin/busybox links
    [[ -x $bb ]] || bb=/bin/busybox
    # the helper pods of local-path-provisioner run `sh` scripts: busybox's applets
    links=$("$bb" --list | grep -xE 'sh|mkdir|rm|rmdir|chmod|chown|ls|cat|echo|test|\[|du|mv|cp|sleep|true|false|env' \
      | python3 -c 'import json,sys; print(json.dumps([["/bin/"+l.strip(), "busybox"] for l in sys.stdin]))')
    cat >"$spec" <<EOF
{"out": "$out",
 "layers": {
  "pause": {"files": [["$TOOLS/pause", "/pause", "755"]]},
  "coredns": {"files": [["$TOOLS/coredns", "/coredns", "755"]], "dirs": [["/tmp", "1777"]]},
  "local-path": {"files": [["$bb", "/bin/busybox", "755"], ["$TOOLS/local-path-provisioner", "/usr/local/bin/local-path-provisioner", "755"]],
                 "symlinks": $links, "dirs": [["/tmp", "1777"], ["/etc/config", "755"]],
                 "data": [["/etc/passwd", "root:x:0:0:root:/root:/bin/sh\\n", "644"]]}
 },
 "images": [
  {"tags": ["$REGISTRY/pause:1"], "layers": ["pause"], "config": {"Entrypoint": ["/pause"], "User": "65535:65535"}},
  {"tags": ["$REGISTRY/coredns:${COREDNS_VERSION#v}"], "layers": ["coredns"], "config": {"Entrypoint": ["/coredns"], "User": "65532:65532", "ExposedPorts": {"1053/udp": {}, "1053/tcp": {}}}},
  {"tags": ["$REGISTRY/local-path-provisioner:${LOCAL_PATH_VERSION#v}"], "layers": ["local-path"],
   "config": {"Entrypoint": [], "Cmd": ["/usr/local/bin/local-path-provisioner"], "Env": ["PATH=/usr/local/bin:/bin"]}}
 ]}
EOF
    py archive "$spec" >&2; rm -f "$spec"
  fi
  import_archive "$out" infra
}

# ---- stores ---------------------------------------------------------------------------------
# The rootfs recipe's hash: the suite, the package list and SecantusDB's version (a change
# rebuilds the rootfs and its layer). The archive also depends on the entrypoints and this script.
store_recipe() {
  printf '%s\n' "$SUITE" "$MIRROR" "$SECANTUS_VERSION" "${STORE_PACKAGES[@]}" | sha256sum | cut -c1-16
}
stores_key() { { store_recipe; cat "$0" scripts/cluster/standin/*; } | sha256sum | cut -c1-16; }

chroot_run() { # rootfs cmd...
  local r=$1; shift
  mount -t proc proc "$r/proc"
  local rc=0
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
  umount "$r/proc"
  return $rc
}

store_rootfs() { # -> prints the rootfs path
  local recipe base tmp
  recipe=$(store_recipe)
  base=$IMAGES/rootfs/stores-$recipe
  if [[ -f $base/.moviebook-complete ]]; then echo "$base"; return 0; fi
  [[ $(id -u) == 0 ]] || die "building the store images needs root (debootstrap, chroot)"
  command -v debootstrap >/dev/null || {
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >/dev/null || die "apt-get install debootstrap failed"
  }
  tmp=$base.tmp; rm -rf "$tmp"; mkdir -p "$tmp"
  trap 'mountpoint -q "'"$tmp"'/proc" && umount "'"$tmp"'/proc"; rm -rf "'"$tmp"'"' EXIT
  log "debootstrap $SUITE (minbase) from $MIRROR (once per recipe $recipe)"
  debootstrap --variant=minbase --components=main "$SUITE" "$tmp" "$MIRROR" >"$IMAGES/debootstrap.log" 2>&1 \
    || { tail -n 20 "$IMAGES/debootstrap.log" >&2; die "debootstrap failed (log: $IMAGES/debootstrap.log)"; }
  # the host's apt sources (with security updates) and settings
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$tmp/etc/apt/sources.list.d/"; : >"$tmp/etc/apt/sources.list"
  fi
  for f in /etc/apt/apt.conf.d/99artifact-registry; do [[ -f $f ]] && cp "$f" "$tmp/etc/apt/apt.conf.d/"; done
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"; chmod +x "$tmp/usr/sbin/policy-rc.d"
  mkdir -p "$tmp/etc/postgresql-common/createcluster.d"
  echo "create_main_cluster = false" >"$tmp/etc/postgresql-common/createcluster.d/moviebook.conf"
  log "apt-get install ${STORE_PACKAGES[*]} (chroot)"
  chroot_run "$tmp" apt-get update -qq >/dev/null
  chroot_run "$tmp" apt-get install -y -qq --no-install-recommends "${STORE_PACKAGES[@]}" >"$IMAGES/apt-stores.log" 2>&1 \
    || { tail -n 20 "$IMAGES/apt-stores.log" >&2; die "apt-get install in the chroot failed"; }
  log "SecantusDB $SECANTUS_VERSION from PyPI into /opt/secantus"
  python3 -m pip install -q --disable-pip-version-check --no-compile --target "$tmp/opt/secantus" "SecantusDB==$SECANTUS_VERSION" >&2 \
    || die "pip install SecantusDB==$SECANTUS_VERSION failed"
  chroot_run "$tmp" python3 -m compileall -q /opt/secantus >/dev/null || true
  chroot_run "$tmp" apt-get clean
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/* "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/var/log/*
  rm -f "$tmp/usr/sbin/policy-rc.d"
  dpkg-query --admindir="$tmp/var/lib/dpkg" -W -f='${Package} ${Version}\n' postgresql-15 redis-server rabbitmq-server erlang-base python3 >"$tmp/.moviebook-versions" 2>/dev/null || true
  echo "$recipe" >"$tmp/.moviebook-complete"
  trap - EXIT
  local d
  for d in "$IMAGES"/rootfs/stores-*; do [[ $d == "$tmp" ]] || rm -rf "$d"; done   # older recipes
  mv "$tmp" "$base"
  echo "$base"
}

# passwd/group of the rootfs with the store's user as uid/gid 999 (what the official images and
# the operator's runAsUser use)
store_user_files() { # rootfs user home -> prints JSON data entries
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
root, user, home = sys.argv[1:]
def fix(path, line):
    keep = [l for l in open(f"{root}{path}").read().splitlines()
            if l.split(":")[0] != user and l.split(":")[2] != "999"]
    return "\n".join(keep + [line]) + "\n"
print(json.dumps([["/etc/passwd", fix("/etc/passwd", f"{user}:x:999:999:{user}:{home}:/bin/sh"), "644"],
                  ["/etc/group", fix("/etc/group", f"{user}:x:999:"), "644"]]))
PY
}

stores() {
  local rootfs recipe out spec
  rootfs=$(store_rootfs)
  recipe=$(store_recipe)
  out=$IMAGES/stores-$(stores_key).tar
  if [[ ! -f $out ]]; then
    rm -f "$IMAGES"/stores-*.tar
    local l; for l in "$IMAGES"/layers/stores-*.tar; do [[ $l == */stores-$recipe.tar ]] || rm -f "$l" "$l.sha256"; done
    mkdir -p "$IMAGES/layers"; spec=$(mktemp)
    local pg=/usr/lib/postgresql/15/bin sp=scripts/cluster/standin base=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    cat >"$spec" <<EOF
{"out": "$out",
 "layers": {
  "packages": {"tree": "$rootfs", "exclude": ["proc", "sys", "dev", "run", "tmp"], "cache": "$IMAGES/layers/stores-$recipe.tar"},
  "postgres": {"files": [["$sp/postgres-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh", "755"]],
               "data": $(store_user_files "$rootfs" postgres /var/lib/postgresql),
               "dirs": [["/var/lib/postgresql", "755", 999, 999], ["/var/lib/postgresql/data", "777", 999, 999], ["/var/run/postgresql", "2775", 999, 999], ["/tmp", "1777"]]},
  "redis": {"files": [["$sp/redis-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh", "755"]],
            "data": $(store_user_files "$rootfs" redis /data),
            "dirs": [["/data", "755", 999, 999], ["/tmp", "1777"]]},
  "rabbitmq": {"files": [["$sp/rabbitmq-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh", "755"]],
               "data": $(store_user_files "$rootfs" rabbitmq /var/lib/rabbitmq),
               "dirs": [["/etc/rabbitmq", "755", 999, 999], ["/etc/rabbitmq/conf.d", "755", 999, 999], ["/var/lib/rabbitmq", "755", 999, 999], ["/var/log/rabbitmq", "755", 999, 999], ["/tmp", "1777"]]},
  "mongo": {"files": [["$sp/mongo-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh", "755"], ["$sp/mongo-users.py", "/usr/local/bin/moviebook-mongo-users", "755"]],
            "data": $(store_user_files "$rootfs" mongodb /data/db),
            "dirs": [["/data", "755"], ["/data/db", "755", 999, 999], ["/data/configdb", "755", 999, 999], ["/tmp", "1777"]]}
 },
 "images": [
  {"tags": ["$REGISTRY/postgres-standin:15"], "layers": ["packages", "postgres"],
   "config": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["postgres"], "User": "999:999",
              "Env": ["PATH=$pg:$base", "PGDATA=/var/lib/postgresql/data", "LANG=C.UTF-8"],
              "ExposedPorts": {"5432/tcp": {}}, "Volumes": {"/var/lib/postgresql/data": {}},
              "Labels": {"io.moviebook.stand-in": "PostgreSQL 15 from Debian bookworm; not the official postgres image"}}},
  {"tags": ["$REGISTRY/redis-standin:7"], "layers": ["packages", "redis"],
   "config": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"], "User": "999:999", "WorkingDir": "/data",
              "Env": ["PATH=$base", "LANG=C.UTF-8"], "ExposedPorts": {"6379/tcp": {}}, "Volumes": {"/data": {}},
              "Labels": {"io.moviebook.stand-in": "Redis 7.0 from Debian bookworm; not the official redis image"}}},
  {"tags": ["$REGISTRY/rabbitmq-standin:3"], "layers": ["packages", "rabbitmq"],
   "config": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["rabbitmq-server"], "User": "999:999",
              "Env": ["PATH=/usr/lib/rabbitmq/bin:$base", "HOME=/var/lib/rabbitmq", "RABBITMQ_LOGS=-", "LANG=C.UTF-8"],
              "ExposedPorts": {"5672/tcp": {}}, "Volumes": {"/var/lib/rabbitmq": {}},
              "Labels": {"io.moviebook.stand-in": "RabbitMQ 3.10 from Debian bookworm; not the official rabbitmq image"}}},
  {"tags": ["$REGISTRY/mongo-standin-secantusdb:$SECANTUS_VERSION"], "layers": ["packages", "mongo"],
   "config": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["mongod"], "User": "999:999",
              "Env": ["PATH=$base", "PYTHONPATH=/opt/secantus", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "LANG=C.UTF-8"],
              "ExposedPorts": {"27017/tcp": {}}, "Volumes": {"/data/db": {}},
              "Labels": {"io.moviebook.stand-in": "SecantusDB $SECANTUS_VERSION (MongoDB-wire-compatible, PyPI); not mongod"}}}
 ]}
EOF
    log "packaging the store stand-in images"
    py archive "$spec" >&2; rm -f "$spec"
  fi
  import_archive "$out" stores
}

# ---- services -------------------------------------------------------------------------------
services() {
  local version bins=() out key
  version=${IMAGE_VERSION:-$(moviebook_version)}
  mapfile -t names < <(py list)
  for n in "${names[@]}"; do bins+=(--bin "$n"); done
  if [[ ${MOVIEBOOK_IMAGE_NO_BUILD:-} == 1 ]]; then
    log "using the binaries in $CARGO_TARGET_DIR/$PROFILE_DIR as they are (MOVIEBOOK_IMAGE_NO_BUILD=1)"
  elif [[ $PROFILE_DIR == debug ]]; then
    cargo build --locked --quiet "${bins[@]}" >&2 || die "cargo build ${names[*]} failed"
  else
    cargo build --locked --quiet --release "${bins[@]}" >&2 || die "cargo build --release ${names[*]} failed"
  fi
  # the booking image carries the web assets (storefront + GraphQL IDE, images.tsv WEB_DIR)
  scripts/web.sh build >&2 || die "scripts/web.sh build failed"
  # one archive per build directory and tag set (worktrees share the cache, not their binaries)
  key=services-$(echo "$version ${EXTRA_TAGS:-}" | sha256sum | cut -c1-12)
  out=$IMAGES/moviebook-$PROFILE_DIR-$(echo "$CARGO_TARGET_DIR" | sha256sum | cut -c1-8)-${key#services-}.tar
  local extra=() t
  for t in ${EXTRA_TAGS:-}; do extra+=(--extra-tag "$t"); done
  local newest=() ; for n in "${names[@]}"; do newest+=("$CARGO_TARGET_DIR/$PROFILE_DIR/$n"); done
  if [[ ! -f $out || -n $(find "${newest[@]}" scripts/images.tsv scripts/images.py web/dist -newer "$out" -print -quit) \
        || $(cat "$out.tags" 2>/dev/null) != "$version ${EXTRA_TAGS:-}" ]]; then
    log "packaging ${#names[@]} images from $CARGO_TARGET_DIR/$PROFILE_DIR ($REGISTRY/*:$version ${EXTRA_TAGS:-})"
    mkdir -p "$IMAGES"
    py services --bin-dir "$CARGO_TARGET_DIR/$PROFILE_DIR" --version "$version" --registry "$REGISTRY" "${extra[@]}" --out "$out" >&2
    echo "$version ${EXTRA_TAGS:-}" >"$out.tags"
    spec_hash >"$out.spec"
  fi
  import_archive "$out" "$key"
  echo "$out" >"$IMAGES/last-services-archive"
}

# What the service images are made from besides the binaries: an archive built from other
# specs says nothing about these.
spec_hash() { cat scripts/images.tsv scripts/images.py | sha256sum | cut -d' ' -f1; }

check() {
  local archives=() last
  last=$(cat "$IMAGES/last-services-archive" 2>/dev/null || true)
  if [[ -n $last && -f $last ]]; then
    if [[ $(cat "$last.spec" 2>/dev/null) == "$(spec_hash)" ]]; then
      archives+=("$last")
    else
      log "not checking $last: it was built from another images.tsv/images.py (the next 'services' rebuilds it)"
    fi
  fi
  py check-dockerfile Dockerfile "${archives[@]}"
}

sizes() {
  local a
  for a in "$IMAGES"/*.tar; do
    python3 - "$a" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1]); m = json.load(t.extractfile("manifest.json"))
size = {i.name: i.size for i in t.getmembers()}
for e in m:
    print(f"  {e['RepoTags'][0]:<58} {sum(size[l] for l in e['Layers']) / 1e6:8.1f} MB (uncompressed, layers shared within an archive)")
PY
  done
}

case ${1:-} in
  infra) infra ;;
  stores) stores ;;
  services) services ;;
  all) infra; stores; services ;;
  check) check ;;
  sizes) sizes ;;
  list) py list ;;
  *) echo "usage: $0 infra|stores|services|all|check|sizes|list" >&2; exit 2 ;;
esac
