#!/usr/bin/env bash
# Installs what Tessera's cluster, tests and benchmarks need on a Debian machine, skipping
# what is already there: redis-server and redis-tools (tests, `tessera up`), nutcracker
# (twemproxy, for the load benchmark), etcd-server, protobuf-compiler and libprotobuf-dev
# (topology service), clang and lld (the C example plugin), python3 with venv and redis-py
# (client-library tests), chromium and chromium-driver (the dashboard's web UI test) and
# Rust's wasm32-unknown-unknown target (plugins).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's build imports;
# a recommendation of protobuf-compiler, so not there with --no-install-recommends.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld)
# Client-library tests run redis-py from a virtualenv (python3 -m venv needs ensurepip).
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The dashboard's web UI is tested in a headless Chromium driven over WebDriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ "${TESSERA_BENCH_DEPS:-0}" = 1 ]; then
  command -v nutcracker >/dev/null || missing+=(nutcracker)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
# redis-py, the Python client the client-library tests use (tests/resp3.rs), in
# target/py: PyPI's current major version, pinned so a run is repeatable.
REDIS_PY=8.1.0
VENV="$(cd "$(dirname "$0")/.." && pwd)/target/py"
PY="$VENV/bin/python3"
if ! { [ -x "$PY" ] && "$PY" -c "import redis, sys; sys.exit(redis.__version__ != '$REDIS_PY')" 2>/dev/null; }; then
  echo "install-deps: installing redis-py $REDIS_PY into $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "redis==$REDIS_PY"
fi
# Plugins are built for WebAssembly.
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  echo "install-deps: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
