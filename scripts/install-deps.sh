#!/usr/bin/env bash
# Installs what the project needs besides rustup, in two sets:
#
#   scripts/install-deps.sh run    what running the cluster needs (scripts/run.sh):
#       - the Rust release of rust-toolchain.toml, with rustfmt and clippy;
#       - nginx, the gateway that `cluster up` starts.
#   scripts/install-deps.sh test   (the default) the above, and what the tests need besides
#                                  (scripts/test.sh):
#       - SecantusDB's Rust build (`secantusd-rs`, crates.io `secantus-mdb`, built with
#         cmake: about 10 minutes on 2 cores the first time), the MongoDB-compatible server
#         of the mongo engine tests;
#       - docker-compose (Debian's), which validates the generated docker-compose.yml offline;
#       - kubernetes-validate (PyPI), which validates k8s/ against the Kubernetes schemas;
#       - chromium (Debian's), the headless browser that opens the status page in a test;
#       - prometheus (Debian's), which a test runs against a local cluster.
# Idempotent: installs only what is missing, so it is cheap to run before every run.
# Uses apt-get (Debian/Ubuntu), through sudo unless already root.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-test}"
case "$what" in
    run | test) ;;
    *)
        echo "usage: scripts/install-deps.sh [run|test]" >&2
        exit 2
        ;;
esac

# The Rust release rust-toolchain.toml pins: rustup installs it (with rustfmt and clippy).
# Where rustup cannot download (no network to its servers) and its `stable` is that same
# release, the pinned name is made to point at stable's folder (rustup's `toolchain link`
# refuses names of official releases, so the link is made in rustup's toolchains folder).
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null 2>&1; then
    # Without rustup, cargo ignores rust-toolchain.toml: only the pinned release will do.
    if cargo --version 2>/dev/null | grep -q "^cargo $toolchain "; then
        echo "install-deps: Rust $toolchain present (without rustup)"
    else
        echo "install-deps: rustup not found; install it from https://rustup.rs (the project builds with Rust $toolchain; cargo here: $(cargo --version 2>/dev/null || echo none))" >&2
        exit 1
    fi
elif rustup toolchain list | grep -q "^$toolchain-"; then
    echo "install-deps: Rust $toolchain present"
else
    echo "install-deps: installing Rust $toolchain"
    if ! rustup toolchain install --no-self-update "$toolchain" --profile minimal -c rustfmt -c clippy; then
        stable=$(rustc +stable --version 2>/dev/null | awk '{print $2}')
        if [ "$stable" = "$toolchain" ]; then
            host=$(rustc +stable -vV | sed -n 's/^host: //p')
            link="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$toolchain-$host"
            echo "install-deps: rustup could not download; $link is the installed stable, which is $toolchain"
            ln -sfn "$(rustc +stable --print sysroot)" "$link"
        else
            echo "install-deps: cannot install Rust $toolchain (stable here is ${stable:-missing})" >&2
            exit 1
        fi
    fi
fi

have_nginx() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

apt_updated=""

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "install-deps: need root or sudo to install: $*" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    if [ -z "$apt_updated" ]; then
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if have_nginx; then
    echo "install-deps: nginx present"
else
    echo "install-deps: installing nginx"
    apt_install nginx
    have_nginx || { echo "install-deps: nginx still not found after installing it" >&2; exit 1; }
fi

if [ "$what" = run ]; then
    exit 0
fi

# SecantusDB, a MongoDB-compatible server: the mongo engine's tests and `cluster up --engine
# mongo` run it as a separate process (it is GPL; it is never linked). Its Rust build,
# `secantusd-rs`, from crates.io: the Python one (`secantusd-py`, PyPI `SecantusDB`) could not
# carry the course scenario here (store/src/mongo.rs). `SECANTUSD` may name another
# build of it.
SECANTUS_VERSION=0.5.3-beta.196
have_secantusd() {
    command -v "${SECANTUSD:-secantusd-rs}" >/dev/null 2>&1
}

pip_install() {
    local pip=(python3 -m pip)
    if ! "${pip[@]}" --version >/dev/null 2>&1; then
        echo "install-deps: installing pip"
        apt_install python3-pip
    fi
    # Debian's system Python refuses installs outside a venv (PEP 668) unless told otherwise.
    "${pip[@]}" install -q "$@" 2>/dev/null || "${pip[@]}" install -q --break-system-packages "$@"
    hash -r
}

if have_secantusd; then
    echo "install-deps: ${SECANTUSD:-secantusd-rs} present"
else
    command -v cmake >/dev/null 2>&1 || apt_install cmake
    echo "install-deps: building SecantusDB (secantusd-rs $SECANTUS_VERSION; about 10 minutes the first time)"
    cargo install -q secantus-mdb --version "$SECANTUS_VERSION" --locked --ignore-rust-version
    hash -r
    have_secantusd || { echo "install-deps: secantusd-rs still not found after building it (is ~/.cargo/bin on PATH?)" >&2; exit 1; }
fi

if command -v docker-compose >/dev/null 2>&1; then
    echo "install-deps: docker-compose present"
else
    echo "install-deps: installing docker-compose"
    apt_install docker-compose
fi

if command -v kubernetes-validate >/dev/null 2>&1; then
    echo "install-deps: kubernetes-validate present"
else
    echo "install-deps: installing kubernetes-validate"
    pip_install kubernetes-validate
    command -v kubernetes-validate >/dev/null 2>&1 || { echo "install-deps: kubernetes-validate still not found after installing it" >&2; exit 1; }
fi

if command -v chromium >/dev/null 2>&1; then
    echo "install-deps: chromium present"
else
    echo "install-deps: installing chromium"
    apt_install chromium
fi

if command -v prometheus >/dev/null 2>&1; then
    echo "install-deps: prometheus present"
else
    echo "install-deps: installing prometheus"
    apt_install prometheus
fi
