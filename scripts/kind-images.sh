#!/usr/bin/env bash
# scripts/kind-images.sh: builds the six images from the Dockerfile (one builder stage, so the
# workspace compiles once) as <registry>/<name>:<version>. Needs a running Docker daemon and
# says so plainly when there is none.
#   IMAGE_REGISTRY (default moviebook.local, what charts/moviebook/ci/kind-values.yaml expects)
#   IMAGE_TAG      (default: the workspace version in Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kind-tools.sh
REGISTRY=${IMAGE_REGISTRY:-moviebook.local}
TAG=${IMAGE_TAG:-$(moviebook_version)}
if ! require_docker; then
  echo "make images: NOT BUILT. Nothing else needs Docker: 'make test' checks the Dockerfile (checkov)," >&2
  echo "the chart and the operator against a real kube-apiserver without it." >&2
  exit 1
fi
for entry in "${IMAGES[@]}"; do
  read -r target name <<<"$entry"
  echo "==> $REGISTRY/$name:$TAG (target $target)"
  DOCKER_BUILDKIT=1 docker build --target "$target" -t "$REGISTRY/$name:$TAG" .
done
docker image ls --filter "reference=$REGISTRY/*:$TAG"
