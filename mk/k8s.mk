# Kubernetes: container images, the Helm chart and a kind cluster (docs/kubernetes.md).
# `images`, `kind-up`, `kind-smoke` and `kind-down` need Docker; `chart-lint` and `chart-test`
# do not (`make test` runs scripts/chart-test.sh against its real kube-apiserver).

.PHONY: images kind-up kind-smoke kind-down chart-lint chart-test chart-crd

images: ## build the six container images (needs Docker; says so when it is missing)
	@scripts/kind-images.sh

kind-up: ## kind cluster + images + chart + sample system, waits until Ready (needs Docker)
	@scripts/kind-up.sh

kind-smoke: ## register, login, GraphQL and the 429 rate limit through Kong on kind (needs Docker)
	@scripts/kind-smoke.sh

kind-down: ## delete the kind cluster and everything in it (needs Docker)
	@scripts/kind-down.sh

chart-lint: ## helm lint --strict + helm template of charts/moviebook (no cluster needed)
	@. scripts/kind-tools.sh && ensure_helm && \
	cmp -s crds/moviebook.io_moviebookingsystems.yaml charts/moviebook/crds/moviebook.io_moviebookingsystems.yaml \
	  || { echo "charts/moviebook/crds differs from crds/: run 'make chart-crd'" >&2; exit 1; } ; \
	for v in "" charts/moviebook/ci/*-values.yaml; do \
	  "$$HELM" lint --strict charts/moviebook $${v:+-f $$v} && \
	  "$$HELM" template moviebook charts/moviebook -n moviebook $${v:+-f $$v} >/dev/null || exit 1; \
	done; echo "chart-lint: ok"

chart-test: ## every chart check, incl. the real kube-apiserver (also part of `make test`)
	@scripts/chart-test.sh

chart-crd: ## copy the generated CRD (crds/) into the chart
	cp crds/moviebook.io_moviebookingsystems.yaml charts/moviebook/crds/
