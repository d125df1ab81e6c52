# notification-service targets (included by the root Makefile).
.PHONY: bench-notification test-notification

BENCH_TARGETS += bench-notification

bench-notification: ## notification worker: events/s and publish→notified p50/p99 against the local stack
	cargo build -p notification-service --bin notification-bench
	$(CARGO_TARGET_DIR)/debug/notification-bench

test-notification: ## notification-service tests against the test stack
	eval "$$(scripts/stack.sh test env)" && cargo test -p notification-service
