# syntax=docker/dockerfile:1
#
# One image with every alertsync binary: alertsync (the operator CLI, `run`, `check`, `render`,
# `stand-ins`), alertsync-ingest, alertsync-enricher and alertsync-forwarder.
#
#   docker build -t alertsync .
#   docker run --rm alertsync alertsync --help
#
# Stages: `chef` (Rust + cargo-chef), `planner` (the dependency recipe), `builder` (dependencies
# first, in their own cached layer, then the workspace), and the runtime: distroless (glibc,
# CA certificates, no shell, no package manager, no build tools), running as uid 65532.

ARG RUST_VERSION=1.89
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install --locked cargo-chef --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# The recipe only changes when a manifest or Cargo.lock does.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies: cached until the recipe changes, however often the code does.
RUN cargo chef cook --profile dist --locked --recipe-path recipe.json
COPY . .
# The `dist` profile (Cargo.toml): `release` with link-time optimisation, ~12 % less CPU.
RUN cargo build --profile dist --locked --bins \
        -p alertsync-cli -p alertsync-ingest -p alertsync-enricher -p alertsync-forwarder \
    && mkdir -p /out \
    && cp target/dist/alertsync target/dist/alertsync-ingest \
          target/dist/alertsync-enricher target/dist/alertsync-forwarder /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="alertsync" \
      org.opencontainers.image.description="Push Sekoia.io alerts into the tools where analysts work" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /usr/local/bin/
# Mount alertsync.toml here (compose: a bind mount; Kubernetes: the ConfigMap).
ENV ALERTSYNC_CONFIG=/etc/alertsync/alertsync.toml \
    ALERTSYNC_LOG_FORMAT=json
# distroless' "nonroot" user, numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
# ingest (webhook), enricher, forwarder: /healthz, /readyz.
EXPOSE 8080 8081 8082
# Every stage in one process; compose and Kubernetes run one binary per container instead.
CMD ["alertsync", "run"]
