# One image for every role: `xaas worker …`, `xaas sim`, `xaas enqueue …`.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer, so editing the workspace's code
# rebuilds only its crates: the manifests with empty stand-in sources.
# (A crate added to the workspace needs a line here too.)
COPY Cargo.toml Cargo.lock ./
COPY crates/broker/Cargo.toml crates/broker/
COPY crates/console/Cargo.toml crates/console/
COPY crates/core/Cargo.toml crates/core/
COPY crates/dst/Cargo.toml crates/dst/
COPY crates/graph/Cargo.toml crates/graph/
COPY crates/http/Cargo.toml crates/http/
COPY crates/okta/Cargo.toml crates/okta/
COPY crates/sim/Cargo.toml crates/sim/
COPY crates/workers/Cargo.toml crates/workers/
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs \
 && for c in crates/*/; do mkdir -p "$c/src" && : > "$c/src/lib.rs"; done \
 && cargo build --release --locked --bin xaas \
 && rm -rf src crates/*/src
COPY . .
# COPY keeps the sources' own times, which may be older than the stand-ins':
# touch them so cargo rebuilds the workspace's crates.
RUN find src crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin xaas

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /app xaas
WORKDIR /app
COPY --from=build /src/target/release/xaas /usr/local/bin/xaas
COPY xaas.toml ./xaas.toml
COPY examples ./examples
USER xaas
ENV XAAS_CONFIG=/app/xaas.toml \
    XAAS_LOG_FORMAT=json
ENTRYPOINT ["xaas"]
