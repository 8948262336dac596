#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints and all tests. Usage: ./scripts/test.sh
# Needs Rust stable and a C compiler (libsodium and liblzma are built from source by cargo).
# The Habitat interop fixtures must sit at ../shared/interop/habitat (or set WARREN_INTEROP_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# rustfmt and clippy are rustup components; add them when rustup is there and they are missing.
if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            step "rustup component add ${component}"
            rustup component add "${component}"
        fi
    done
fi

fixtures="${WARREN_INTEROP_DIR:-../shared/interop/habitat}"
if [ ! -f "${fixtures}/INDEX.md" ]; then
    echo "error: Habitat interop fixtures not found at ${fixtures} (clone shared/ beside this repository or set WARREN_INTEROP_DIR)" >&2
    exit 1
fi

step "cargo fmt --check"
cargo fmt --all --check

# Clippy lints while the tests build: its driver compiles the workspace's own crates in place
# of rustc (which is what `cargo clippy` does, in check mode), so the dependencies are compiled
# once instead of checked once and built again, a third of a cold run. The same variables are
# set for the test run, or cargo would build the workspace again without them; not for the
# plugins, whose route may be another compiler.
driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [ -z "${driver}" ]; then
    echo "error: clippy-driver not found (rustup component add clippy, or Debian's rust-clippy)" >&2
    exit 1
fi
lint=(env RUSTC_WORKSPACE_WRAPPER="${driver}" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")

step "build the wasm plugins (installs the wasm32-wasip2 toolchain if needed)"
./scripts/build-plugins.sh

step "cargo clippy and build the tests (warnings are errors)"
"${lint[@]}" cargo test --workspace --all-targets --locked --no-run

# Test output is also kept in a log so the run can close on one total line.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

step "cargo test"
"${lint[@]}" cargo test --workspace --locked 2>&1 | tee -a "$log"

step "guest plugin unit tests and lints"
cargo fmt --manifest-path plugins/Cargo.toml --all --check
cargo test --manifest-path plugins/Cargo.toml --locked --target-dir plugins/target/native 2>&1 | tee -a "$log"

step "all checks passed"
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
