#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, builds the
# plugins, then runs every unit and integration test (they start real redis-server and
# etcd processes on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plugins the integration tests load, built for wasm32 (and their host-side unit tests).
./plugins/build.sh >/dev/null
(cd sdk && cargo test --locked)
(cd plugins && cargo test --locked)
cargo test --workspace --locked
