#!/usr/bin/env bash
# A whole local Tessera cluster in one command: installs redis-server if missing, builds
# the release binary and runs `tessera up` (extra arguments are passed on). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked --bin tessera
exec ./target/release/tessera up "$@"
