# The storefront and the GraphQL IDE's assets (web/, docs/web.md).
.PHONY: web test-web web-measure

web: ## build the storefront and the IDE assets into web/dist (npm ci when the lock changed)
	@scripts/web.sh build

test-web: ## the browser tests (headless chromium) against servers of their own
	@scripts/web.sh test

web-measure: ## time to first render of the storefront against a running `make dev`
	@scripts/web.sh build >/dev/null && cd web && MEASURE_ONLY=1 BASE_URL=$${BASE_URL:-http://127.0.0.1:8000} CHROMIUM=$${CHROMIUM:-/usr/bin/chromium} node test/e2e/run.mjs
