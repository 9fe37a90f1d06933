#!/usr/bin/env bash
# Builds the images of the local compose deployment (deploy/compose/docker-compose.local.yml,
# run by scripts/compose.sh) without any container registry, from Debian's packages and
# binaries built on this host:
#
#   webshop-base:<tag>      Debian bookworm made by debootstrap (minbase) with ca-certificates,
#                           curl (the nodes' health checks) and nginx, imported with
#                           `docker import`; <tag> names the package list, so changing the
#                           list builds a new one. Built only when missing (about 1.5 minutes).
#   webshop-node:local      the base and the node binary: target/release/cluster (built by
#                           cargo, a no-op when it is up to date), or WEBSHOP_NODE_BINARY.
#   webshop-store:local     the base and SecantusDB's `secantusd-rs` (scripts/install-deps.sh
#                           builds it), the MongoDB-compatible store of every replica.
#   webshop-gateway:local   the base running its nginx.
#
# The last three are one-layer docker builds (deploy/images/*.Dockerfile): docker's build
# cache makes them free when their binary did not change. Needs root (or sudo) for
# debootstrap, and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=ca-certificates,curl,nginx
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE="webshop-base:$SUITE-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-8)"
export DOCKER_BUILDKIT=0

say() { echo "images: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    local root
    root=$(mktemp -d /tmp/webshop-rootfs.XXXXXX)
    # shellcheck disable=SC2064
    trap "as_root rm -rf '$root'" EXIT
    say "building $BASE with debootstrap ($SUITE minbase + $PACKAGES; about 1.5 minutes)"
    as_root debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
        tail -20 "$root.log" >&2
        exit 1
    }
    # What a container never needs: downloaded packages, package lists, documentation.
    as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    as_root tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
    as_root rm -rf "$root" "$root.log"
    trap - EXIT
}

# One image from deploy/images/NAME.Dockerfile, with the program at PATH (if given) copied
# into its build context as AS, without its debug information.
build_one() {
    local name=$1 path=${2:-} as=${3:-} ctx
    ctx=$(mktemp -d /tmp/webshop-image.XXXXXX)
    if [ -n "$path" ]; then
        cp "$path" "$ctx/$as"
        # The debug information of a release build is most of its size; the image runs it only.
        if command -v strip >/dev/null 2>&1; then strip --strip-debug "$ctx/$as"; fi
    fi
    docker build --build-arg BASE="$BASE" -t "webshop-$name:local" -f "deploy/images/$name.Dockerfile" "$ctx" \
        >"$ctx.log" 2>&1 || {
        cat "$ctx.log" >&2
        exit 1
    }
    rm -rf "$ctx" "$ctx.log"
}

started=$(date +%s)
if have_image "$BASE"; then say "$BASE present"; else build_base; fi

if [ -n "${WEBSHOP_NODE_BINARY:-}" ]; then
    node_bin=$WEBSHOP_NODE_BINARY
else
    cargo build -q --release -p cluster
    node_bin=target/release/cluster
fi
[ -x "$node_bin" ] || { echo "images: no node binary at $node_bin" >&2; exit 1; }
store_bin=$(command -v "${SECANTUSD:-secantusd-rs}" || true)
if [ -z "$store_bin" ]; then
    scripts/install-deps.sh
    store_bin=$(command -v "${SECANTUSD:-secantusd-rs}")
fi

build_one node "$node_bin" cluster
build_one store "$store_bin" secantusd-rs
build_one gateway
say "webshop-node:local webshop-store:local webshop-gateway:local ready ($(($(date +%s) - started)) s)"
