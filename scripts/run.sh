#!/usr/bin/env bash
# Starts the whole cluster on this machine from a fresh clone: installs what running needs
# (scripts/install-deps.sh run: the pinned Rust release and nginx), then builds and runs
# `cluster up` (README, "Run"). Options are passed on: scripts/run.sh --engine memory.
# The first build takes about 15 minutes on 2 cores; later starts take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh run
exec cargo run --release -p cluster -- up "$@"
