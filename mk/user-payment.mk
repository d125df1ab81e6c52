# user-service and payment-service targets.
.PHONY: bench-user-payment test-user-payment

BENCH_TARGETS += bench-user-payment

bench-user-payment: ## register/login/token/payment req/s and p50/p99 (in-process services, test backing servers)
	@scripts/stack.sh test up >/dev/null
	@eval "$$(scripts/stack.sh test env)" && \
		cargo build -q -p payment-service --example bench_user_payment && \
		"$(CARGO_TARGET_DIR)/debug/examples/bench_user_payment"

test-user-payment: ## tests of the user and payment services against the test backing servers
	@eval "$$(scripts/stack.sh test env)" && cargo test -p user-service -p payment-service
