#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what is missing, then checks
# formatting, the deployment files and lints, then runs every test. Whole-cluster tests run one at a time (the
# nextest test group `cluster`, .config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
# A CI run builds once from a clean clone: incremental compilation's caches (a large part of a
# debug target folder) would only take disk. The free disk is printed so that a run that fails
# on a full disk says so at its top.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
echo "test.sh: $(df -h --output=avail . | tail -1 | tr -d ' ') free on $(df --output=target . | tail -1)" >&2
cargo fmt --all --check
# The container deployments, checked statically: compose's own validation of the generated
# files (the secret is a placeholder, compose only checks that one is given), and k8s/
# against the Kubernetes API schemas, offline. That they are up to date with the topology
# is a test (build_compose/tests/golden.rs); the container tests (test/tests/containers.rs)
# run the local compose file for real.
WEBSHOP_SECRET=static-check docker-compose -f docker-compose.yml config -q
WEBSHOP_SECRET=static-check docker-compose -f deploy/compose/docker-compose.local.yml config -q
kubernetes-validate --strict --quiet k8s/*.yaml
cargo clippy --workspace --all-targets -- -D warnings
# The container tests (test/tests/containers.rs) run the release build's node binary in their
# images (scripts/images.sh builds it when missing; here, before the tests start).
cargo build --release -p cluster
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace
else
    echo "test.sh: cargo-nextest not found, using cargo test, one test at a time" >&2
    # Without nextest's `cluster` test group, one thread keeps the whole-cluster tests of a
    # file from running side by side on a small machine.
    cargo test --workspace -- --test-threads=1
fi
