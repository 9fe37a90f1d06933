#!/usr/bin/env bash
# Installs what building and testing the project needs besides the Rust toolchain (cargo,
# rustfmt, clippy; cargo-nextest is used when present):
#   - nginx, the gateway that `cluster up` and the whole-cluster tests start;
#   - SecantusDB's Rust build (`secantusd-rs`, crates.io `secantus-mdb`, built with cmake:
#     about 10 minutes on 2 cores the first time), the MongoDB-compatible server of the
#     mongo engine tests;
#   - docker-compose (Debian's), which validates the generated docker-compose.yml offline;
#   - kubernetes-validate (PyPI), which validates k8s/ against the bundled Kubernetes schemas.
# Idempotent: installs only what is missing, so it is cheap to run before every test run.
# Uses apt-get (Debian/Ubuntu), through sudo unless already root.
set -euo pipefail

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

# SecantusDB, a MongoDB-compatible server: the mongo engine's tests and `cluster up --engine
# mongo` run it as a separate process (it is GPL; it is never linked). Its Rust build,
# `secantusd-rs`, from crates.io: the Python one (`secantusd-py`, PyPI `SecantusDB`) could not
# carry the course scenario here (common/src/storage/mongo.rs). `SECANTUSD` may name another
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
