#!/usr/bin/env bash
# The docker compose deployment on this machine, on images built here without a registry
# (README, "Docker compose"):
#
#   scripts/compose.sh up              builds the missing images (scripts/images.sh), starts
#                                      every container of deploy/compose/docker-compose.local.yml
#                                      and returns once the gateway serves requests
#   scripts/compose.sh down            stops and removes the containers, networks and volumes
#   scripts/compose.sh compose ARGS    docker-compose with the same file, project and secret:
#                                      `compose ps`, `compose kill order-replica-0`,
#                                      `compose pause order-coordinator-0`, `compose logs -f`
#
# Settings (environment): WEBSHOP_COMPOSE_PROJECT, the compose project (default webshop);
# WEBSHOP_GATEWAY_PORT, the gateway's port on 127.0.0.1 (default 8000); WEBSHOP_SECRET, the
# cluster secret (default: made once per project and kept, readable by its owner only, in
# ~/.local/state/webshop/<project>.secret, so that later `compose` calls find it);
# WEBSHOP_NODE_BINARY, the node binary the node image gets (default target/release/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

FILE=deploy/compose/docker-compose.local.yml
PROJECT=${WEBSHOP_COMPOSE_PROJECT:-webshop}
PORT=${WEBSHOP_GATEWAY_PORT:-8000}
export WEBSHOP_GATEWAY_PORT=$PORT
# How long `up` waits for the gateway to serve a request once the containers started.
READY_TIMEOUT_S=${WEBSHOP_READY_TIMEOUT_S:-180}

secret_file="${XDG_STATE_HOME:-$HOME/.local/state}/webshop/$PROJECT.secret"

load_secret() {
    if [ -n "${WEBSHOP_SECRET:-}" ]; then
        return
    fi
    if [ ! -s "$secret_file" ]; then
        mkdir -p "$(dirname "$secret_file")"
        (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file")
    fi
    WEBSHOP_SECRET=$(cat "$secret_file")
    export WEBSHOP_SECRET
}

compose() {
    docker-compose --ansi never -p "$PROJECT" -f "$FILE" "$@"
}

# Waits until a request through the gateway reaches a service and gets its answer: a
# missing item's 400 from stock, not nginx's 502 while the coordinators start.
wait_ready() {
    local started=$1 code
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://127.0.0.1:$PORT/stock/find/00000000-0000-0000-0000-000000000000" || true)
        case "$code" in
        2?? | 4??) return 0 ;;
        esac
        if [ $(($(date +%s) - started)) -ge "$READY_TIMEOUT_S" ]; then
            echo "compose: the gateway did not serve a request within ${READY_TIMEOUT_S} s (last answer: ${code:-none})" >&2
            compose ps >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

case "${1:-}" in
up)
    started=$(date +%s)
    scripts/images.sh
    load_secret
    compose up -d --remove-orphans
    wait_ready "$started"
    echo "compose: the gateway serves http://127.0.0.1:$PORT ($(($(date +%s) - started)) s after up; project $PROJECT)"
    ;;
down)
    load_secret
    compose down -v --remove-orphans
    ;;
compose)
    shift
    load_secret
    compose "$@"
    ;;
*)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]
    ;;
esac
