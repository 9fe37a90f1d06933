# The gateway image of the local compose deployment (scripts/images.sh builds it): nginx from
# Debian's package, already in the base image; the compose file mounts its config.
ARG BASE
FROM ${BASE}
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx", "-g", "daemon off;"]
