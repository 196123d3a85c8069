# One image for every role: `xaas worker …`, `xaas sim`, `xaas enqueue …`.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin xaas

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
