#!/usr/bin/env bash
# Builds the C plugins here into plugins/target/c/*.wasm (or $OUT), with clang and lld (Debian:
# `apt-get install clang lld`). No libc, no WASI: the module imports nothing; lld exports
# the memory by default. -mbulk-memory lowers the copies clang makes into memcpy calls to
# memory.copy (there is no libc to provide memcpy).
set -euo pipefail
cd "$(dirname "$0")"
CC=${CC:-clang}
OUT=${OUT:-../target/c}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for src in *.c; do
  out="$OUT/${src%.c}.wasm"
  "$CC" --target=wasm32 -mbulk-memory -nostdlib -O2 -Wall -Wextra -Werror \
    -Wl,--no-entry -Wl,--strip-all \
    -o "$out" "$src"
  echo "$out"
done
