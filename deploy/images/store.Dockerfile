# The store image of the local compose deployment (scripts/images.sh builds it): SecantusDB's
# Rust build `secantusd-rs`, a MongoDB-compatible server, built on the host from crates.io
# (scripts/install-deps.sh), in place of `mongo:7.0`, which no registry here can give. It is
# GPL software and runs as a program of its own; the compose file gives its options.
ARG BASE
FROM ${BASE}
COPY secantusd-rs /usr/local/bin/secantusd-rs
RUN mkdir -p /data/db
VOLUME /data/db
ENTRYPOINT ["secantusd-rs"]
