#!/usr/bin/env bash
# Builds the bundled plugins and prints where each module is:
#   - the Rust plugins (command-filter, key-prefix, acl-auth) for wasm32-unknown-unknown;
#   - the C plugins in c/, if clang is installed.
# The WAT modules in wat/ need no build: the proxy loads WebAssembly text as it is.
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build --target wasm32-unknown-unknown --release
for m in command_filter key_prefix acl_auth; do
  echo "$PWD/target/wasm32-unknown-unknown/release/$m.wasm"
done

if command -v clang >/dev/null 2>&1; then
  c/build.sh
else
  echo "clang not found: skipping the C plugins (apt-get install clang lld)" >&2
fi

for w in wat/*.wat; do
  echo "$PWD/$w"
done
