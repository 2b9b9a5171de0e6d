#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, then runs
# every unit and integration test (they start real redis-server processes on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
