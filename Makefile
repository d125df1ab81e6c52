# MovieBook entry points. `make dev` runs the whole system locally; `make test` runs every check.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/moviebook/target

.PHONY: help dev dev-down dev-status deps-up deps-down test lint fmt build bench mongo-rs

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-14s %s\n", $$1, $$2}'

dev: ## start backing servers, migrations, sample data and the five services (background)
	@scripts/dev.sh up

dev-down: ## stop everything `make dev` started
	@scripts/dev.sh down

dev-status: ## what is up
	@scripts/dev.sh status

deps-up: ## start only the backing servers (PostgreSQL, MongoDB, Redis, RabbitMQ) on standard ports
	@scripts/stack.sh dev up

deps-down: ## stop the backing servers
	@scripts/stack.sh dev down

test: ## fmt, clippy and every test against real servers and a real kube-apiserver
	@scripts/test.sh

lint: ## fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --all-features -- -D warnings   # + the load generator

fmt: ## format the code
	cargo fmt --all

mongo-rs: ## build the faster Rust SecantusDB once (~15-30 min, cached); `make dev` then prefers it
	@command -v cmake >/dev/null || { echo "cmake is needed: apt-get install cmake"; exit 1; }
	cargo install secantus-mdb --version 0.5.3-beta.196 --ignore-rust-version --locked \
	  --root $(HOME)/.cache/moviebook/secantus-rs --target-dir $(HOME)/.cache/moviebook/secantus-build

build: ## build every binary
	cargo build --workspace --bins

# Each part of the system adds its own targets (benchmarks, demo, images, kind) in mk/*.mk and
# appends its benchmark target to BENCH_TARGETS.
BENCH_TARGETS :=
-include mk/*.mk

bench: ## run every benchmark, then print their one-line results (`bench-<name>: ...`) together
	@log=$$(mktemp); failed=""; \
	for t in $(BENCH_TARGETS); do \
	  set -o pipefail; $(MAKE) --no-print-directory $$t 2>&1 | tee -a "$$log" || failed="$$failed $$t"; \
	done; \
	echo; echo "== results ($$(nproc) CPU(s),$$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))"; \
	grep -E '^bench-[a-z-]+: ' "$$log" || true; rm -f "$$log"; \
	if [[ -n $$failed ]]; then echo "failed:$$failed"; exit 1; fi
