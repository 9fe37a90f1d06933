#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what is missing, then checks
# formatting and lints, then runs every test. Whole-cluster tests run one at a time (the
# nextest test group `cluster`, .config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace
else
    echo "test.sh: cargo-nextest not found, using cargo test" >&2
    cargo test --workspace
fi
