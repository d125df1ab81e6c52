# notification-service targets (included by the root Makefile).
.PHONY: bench-notification test-notification

BENCH_TARGETS += bench-notification

bench-notification: ## notification worker: events/s and publish→notified p50/p99 (starts the test stack unless RABBITMQ_URL is set)
	@if [[ -z "$${RABBITMQ_URL:-}" ]]; then scripts/stack.sh test up >/dev/null; eval "$$(scripts/stack.sh test env)"; export MONGODB_URL REDIS_URL RABBITMQ_URL; fi; \
	cargo build -q -p notification-service --bin notification-bench && \
	"$(CARGO_TARGET_DIR)/debug/notification-bench"

test-notification: ## notification-service tests against the test stack
	eval "$$(scripts/stack.sh test env)" && cargo test -p notification-service
