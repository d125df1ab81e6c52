# booking-service: the createBooking/processPayment benchmark and the unit costs of the stores
# (both self-contained), the goose load mix and the end-to-end demo (both against `make dev`).
.PHONY: bench-booking bench-store-ops load-booking demo test-booking audit

BENCH_TARGETS += bench-booking bench-store-ops

BOOKING_URL ?= http://127.0.0.1:8010
BOOKING_LOAD_USERS ?= 64
BOOKING_LOAD_TIME ?= 30s
# createBooking alone holds the seats it books until the holds lapse (5 min): 20 s at a few
# hundred/s stays well inside the seeded ~25,000 seats; wait 5 minutes before repeating it.
BOOKING_FOCUS_TIME ?= 20s

bench-booking: ## createBooking and processPayment req/s, p99 and CPU/store cost per request (own stores, ports, data; release build)
	@scripts/bench-booking.sh

bench-store-ops: ## server CPU per single MongoDB and Redis operation, the unit costs of bench-booking's tables (own servers)
	@scripts/bench-store-ops.sh

load-booking: ## goose load test of the GraphQL API of `make dev`: createBooking alone, book+pay+cancel, then the browse/book/pay/cancel mix
	cargo build --quiet --release -p booking-service --features load --bin moviebook-load
	@echo "load generator: release build; $$(nproc) CPU(s),$$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); services as \`make dev\` built them (MOVIEBOOK_PROFILE=$${MOVIEBOOK_PROFILE:-dev})"
	@echo "== createBooking alone (one seat nobody else wants; every error counts); $(BOOKING_LOAD_USERS) users, $(BOOKING_FOCUS_TIME)"
	$(CARGO_TARGET_DIR)/release/moviebook-load --host $(BOOKING_URL) --scenarios createbooking \
		--users $(BOOKING_LOAD_USERS) --increase-rate $(BOOKING_LOAD_USERS) --run-time $(BOOKING_FOCUS_TIME) --quiet
	@echo "== createBooking, processPayment, cancelBooking (refund); $(BOOKING_LOAD_USERS) users, $(BOOKING_FOCUS_TIME)"
	$(CARGO_TARGET_DIR)/release/moviebook-load --host $(BOOKING_URL) --scenarios paybooking \
		--users $(BOOKING_LOAD_USERS) --increase-rate $(BOOKING_LOAD_USERS) --run-time $(BOOKING_FOCUS_TIME) --quiet
	@echo "== mix: browse, seat map, createBooking, processPayment (4 in 5), cancelBooking; $(BOOKING_LOAD_USERS) users, $(BOOKING_LOAD_TIME)"
	$(CARGO_TARGET_DIR)/release/moviebook-load --host $(BOOKING_URL) --scenarios browsebookpaycancel \
		--users $(BOOKING_LOAD_USERS) --increase-rate $(BOOKING_LOAD_USERS) --run-time $(BOOKING_LOAD_TIME) --no-reset-metrics --quiet

demo: ## walk the documented flow over the wire against `make dev` (register, login, browse, book, pay, notification)
	cargo build --quiet -p booking-service --bin moviebook-demo
	BOOKING_URL=$(BOOKING_URL) $(CARGO_TARGET_DIR)/debug/moviebook-demo

test-booking: ## the booking service's unit and end-to-end tests against the test backing servers
	eval "$$(scripts/stack.sh test env)" && MOVIEBOOK_STACK_SCRIPT="$(CURDIR)/scripts/stack.sh test" cargo test -p booking-service

audit: ## reconcile bookings, payments and seats (the booking service's env; default: `make dev`): every inconsistency, the sums; exit 1 if any
	cargo build --quiet -p booking-service --bin booking-service
	$(CARGO_TARGET_DIR)/debug/booking-service audit
