#!/usr/bin/env bash
# The main demo: builds warren and its example plugins (installing the wasm32-wasip2 toolchain
# if needed), then starts a local encrypted 3-member ring with plugins and rotates a FILE:
# credential without a restart. Ctrl-C stops it. Usage: ./scripts/demo.sh [--for SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

echo "building warren..."
cargo build --quiet --bin warren
echo "building the example plugins..."
./scripts/build-plugins.sh env file hook-example
# The binary cargo just built (CARGO_TARGET_DIR is honoured), unless WARREN names another.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export WARREN="${WARREN:-$target/debug/warren}"
exec ./examples/ring-demo.sh "$@"
