# A real one-node Kubernetes on this machine, without Docker (docs/cluster.md): containerd,
# runc and the CNI bridge from Debian, every Kubernetes binary, CoreDNS and local-path-
# provisioner from their Go modules, images built from the workspace's binaries and stand-in
# stores from Debian's packages. Needs root. Its components listen on the node address
# 10.245.0.1 only, so nothing collides with `make dev` or the tests' servers.
.PHONY: cluster-up cluster-env cluster-down cluster-status cluster-images cluster-e2e images-check

cluster-up: ## the node + images + chart + a MovieBookingSystem with sample data; returns when Ready
	@scripts/cluster.sh up

cluster-env: ## print export lines: KUBECONFIG and the URLs of GraphQL, users, the catalogue
	@scripts/cluster.sh env

cluster-down: ## stop the node and remove everything it made (processes, mounts, iptables, cni0, sysctls)
	@scripts/cluster.sh down

cluster-status: ## exit 0 when the node's MovieBookingSystem is Ready
	@scripts/cluster.sh status

cluster-images: ## build (and import into a running node) every image without Docker
	@scripts/cluster-images.sh all

cluster-e2e: ## the end-to-end test on the node (part of `make test`); brings the node up if needed
	@scripts/cluster-e2e.sh

images-check: ## the Dockerfile and the node's images agree (entrypoints, user, env, ports)
	@scripts/cluster-images.sh check
