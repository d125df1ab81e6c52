# Cinema service: benchmark of the gRPC seat inventory (see docs/cinema.md).
.PHONY: bench-cinema

# Runs against the PostgreSQL of DATABASE_URL if set, else the test-profile server (started if
# needed; it listens on its own ports, so a running `make dev` is untouched). The benchmark
# creates and drops its own database there and starts the service in-process. Release build:
# the dev profile compiles our crates (and the generic code of tonic/sqlx they instantiate) at
# opt-level 1, which measures the compiler settings rather than the service.
bench-cinema: ## cinema gRPC benchmark: availability, lock+release, flash sale (req/s, p50/p99)
	@if [[ -z "$${DATABASE_URL:-}" ]]; then scripts/stack.sh test up >/dev/null; eval "$$(scripts/stack.sh test env)"; fi; \
	cargo build -q --release -p cinema-service --bin cinema-bench && \
	RUST_LOG=$${RUST_LOG:-warn} "$(CARGO_TARGET_DIR)/release/cinema-bench"

BENCH_TARGETS += bench-cinema
