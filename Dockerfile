# syntax=docker/dockerfile:1
#
# Every MovieBook image from one file: one builder stage compiles all six binaries once (with
# the dependencies in their own cached layer, via cargo-chef), then one minimal, non-root
# runtime stage per binary. Pick the image with --target (what `make images` does):
#
#   docker build --target user-service         -t <registry>/user-service:<version> .
#   docker build --target cinema-service       -t <registry>/cinema-service:<version> .
#   docker build --target booking-service      -t <registry>/booking-service:<version> .
#   docker build --target payment-service      -t <registry>/payment-service:<version> .
#   docker build --target notification-service -t <registry>/notification-service:<version> .
#   docker build --target moviebook-operator   -t <registry>/moviebook-operator:<version> .
#
# Without --target the operator image is built (the last stage). The builder stages are shared,
# so building the six targets in a row compiles the workspace once.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm
ARG CARGO_CHEF_VERSION=^0.1

# --- toolchain + cargo-chef ------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS chef
ARG CARGO_CHEF_VERSION
# cmake and a C compiler for aws-lc-sys/ring (rustls); protobuf needs nothing (protox is Rust).
# Build-only packages from the pinned Debian suite: none of them reaches a runtime image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make gcc g++ pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src
# .cargo/config.toml points target-dir outside the clone; inside the image use /target.
ENV CARGO_TARGET_DIR=/target CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0

# --- recipe: only the manifests, so the dependency layer is reused until they change ----------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies (cached layer), then the workspace ----------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
      --bin user-service --bin cinema-service --bin booking-service \
      --bin payment-service --bin notification-service --bin moviebook-operator \
 && mkdir -p /out \
 && for b in user-service cinema-service booking-service payment-service notification-service moviebook-operator; do \
      install -m 0555 "/target/release/$b" "/out/$b"; \
    done

# --- web: the storefront and the GraphQL IDE's assets (npm packages pinned by package-lock.json),
# built into static files the booking image serves (WEB_DIR): no CDN at run time --------------
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- runtime base: glibc + CA certificates, no shell, no package manager, uid 65532 -----------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/moviebook/moviebook" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="MovieBook"
ENV RUST_LOG=info LOG_FORMAT=json
USER 65532:65532
# Liveness and readiness are Kubernetes probes on /health and /ready (set by the operator);
# the image has no shell or curl to run a Docker HEALTHCHECK with.

FROM runtime AS user-service
COPY --from=builder /out/user-service /usr/local/bin/user-service
ENV PORT=8001
EXPOSE 8001
ENTRYPOINT ["/usr/local/bin/user-service"]

FROM runtime AS cinema-service
COPY --from=builder /out/cinema-service /usr/local/bin/cinema-service
ENV PORT=8002 GRPC_PORT=9090
EXPOSE 8002 9090
ENTRYPOINT ["/usr/local/bin/cinema-service"]

FROM runtime AS payment-service
COPY --from=builder /out/payment-service /usr/local/bin/payment-service
ENV PORT=8003
EXPOSE 8003
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS notification-service
COPY --from=builder /out/notification-service /usr/local/bin/notification-service
ENV PORT=8004
EXPOSE 8004
ENTRYPOINT ["/usr/local/bin/notification-service"]

FROM runtime AS booking-service
COPY --from=builder /out/booking-service /usr/local/bin/booking-service
COPY --from=web /web/dist /srv/web
ENV PORT=8010 WEB_DIR=/srv/web
EXPOSE 8010
ENTRYPOINT ["/usr/local/bin/booking-service"]

FROM runtime AS moviebook-operator
COPY --from=builder /out/moviebook-operator /usr/local/bin/moviebook-operator
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/moviebook-operator"]
CMD ["run"]
