# The node image of the local compose deployment (scripts/images.sh builds it): the base
# image and the node binary built on the host (`cluster replica|coordinator`, configured by
# APP__* variables). The published docker-compose.yml builds its node image from the
# repository's Dockerfile instead.
ARG BASE
FROM ${BASE}
COPY cluster /usr/local/bin/cluster
# Nodes never need root.
RUN useradd --system --no-create-home webshop
USER webshop
ENTRYPOINT ["cluster"]
CMD ["--help"]
