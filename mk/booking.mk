# booking-service: load benchmark and the end-to-end demo (both against `make dev`).
.PHONY: bench-booking demo test-booking

BENCH_TARGETS += bench-booking

BOOKING_URL ?= http://127.0.0.1:8010
BOOKING_LOAD_USERS ?= 64
BOOKING_LOAD_TIME ?= 30s

bench-booking: ## load-test the GraphQL API (browse, book, pay, cancel) of `make dev`; prints req/s and percentiles
	cargo build --quiet -p booking-service --bin moviebook-load
	@echo "dev-profile build (deps opt-level 2, our code opt-level 1); $$(nproc) CPU(s), $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
	$(CARGO_TARGET_DIR)/debug/moviebook-load --host $(BOOKING_URL) --users $(BOOKING_LOAD_USERS) \
		--increase-rate $(BOOKING_LOAD_USERS) --run-time $(BOOKING_LOAD_TIME) --no-reset-metrics --quiet

demo: ## walk the documented flow over the wire against `make dev` (register, login, browse, book, pay, notification)
	cargo build --quiet -p booking-service --bin moviebook-demo
	BOOKING_URL=$(BOOKING_URL) $(CARGO_TARGET_DIR)/debug/moviebook-demo

test-booking: ## the booking service's unit and end-to-end tests against the test backing servers
	eval "$$(scripts/stack.sh test env)" && MOVIEBOOK_STACK_SCRIPT="$(CURDIR)/scripts/stack.sh test" cargo test -p booking-service
