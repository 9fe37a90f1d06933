# The image of every webshop node (docker-compose.yml, k8s/): `cluster replica` and
# `cluster coordinator`, configured by APP__* variables (README, "Docker compose").
#
# Build:  docker build -t webshop-node:latest .
# Two stages: the Rust toolchain builds the binary; the image that runs it has only the
# binary, CA certificates and curl (the health checks).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The lock file pins every crate; only the node binary is built.
RUN cargo build --release --locked -p cluster \
    && cp target/release/cluster /usr/local/bin/cluster

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/cluster /usr/local/bin/cluster
# Nodes never need root.
RUN useradd --system --no-create-home webshop
USER webshop
ENTRYPOINT ["cluster"]
CMD ["--help"]
