#!/usr/bin/env bash
# The one place that finds (or installs) a wasm32-wasip2 toolchain and runs cargo through it.
#
#   1. rustup's wasm32-wasip2 std when `rustup target list --installed` shows it, else try
#      `rustup target add wasm32-wasip2` under a 120 s timeout;
#   2. otherwise Debian's rustc-web + -Zbuild-std, linked by wasm-component-ld installed in $TOOLS.
# Force a route with WARREN_WASM_ROUTE=rustup|debian (default: auto).
#
# Two uses:
# * sourced (WASM_ROUTE_SOURCED=1) by scripts/build-plugins.sh: call wasm_select_route, then
#   wasm_cargo BASE_TARGET_DIR CARGO_ARGS...;
# * run by `warren plugin build` (the binary embeds this file):
#     bash -c "$(cat wasm-route.sh)" wasm-route BASE_TARGET_DIR CARGO_ARGS...
#   cargo's output goes to stderr; stdout gets one line, `target_dir=DIR`.
# Set TOOLS (where wasm-component-ld goes) and WASM_ROUTE_SAY (message prefix) before either.
# The rustup route builds into BASE_TARGET_DIR, the Debian route into BASE_TARGET_DIR/debian.

TARGET=wasm32-wasip2
ROUTE="${WARREN_WASM_ROUTE:-auto}"
COMPONENT_LD_VERSION=0.5.31
DEBIAN_PACKAGES=(rustc-web cargo-web rust-web-src lld-19 wasi-libc)
: "${TOOLS:?TOOLS must name the folder for installed tools}"

say() { echo "${WASM_ROUTE_SAY:-wasm-route}: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

rustup_has_target() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
}

# Succeeds when the rustup route is usable, adding the target if needed.
rustup_ready() {
    if rustup_has_target; then
        return 0
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        say "rustup not found"
        return 1
    fi
    say "rustup target $TARGET not installed; trying 'rustup target add $TARGET' (120 s timeout)"
    if timeout 120 rustup target add "$TARGET" >&2 && rustup_has_target; then
        return 0
    fi
    say "could not add rustup target $TARGET"
    return 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

debian_ready() {
    local missing=()
    local p apt_log="$TOOLS/apt-install.log"
    for p in "${DEBIAN_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        command -v apt-get >/dev/null 2>&1 || die "apt-get not found; the Debian route needs: ${missing[*]}"
        say "installing Debian packages: ${missing[*]} (log: $apt_log)"
        mkdir -p "$TOOLS"
        if ! { as_root apt-get update -q &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}"; } >"$apt_log" 2>&1; then
            tail -n 20 "$apt_log" >&2
            die "apt-get install ${missing[*]} failed (see $apt_log)"
        fi
    fi
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || die "Debian rustc/cargo missing in /usr/bin"
    [ -x /usr/lib/llvm-19/bin/wasm-ld ] || die "/usr/lib/llvm-19/bin/wasm-ld missing (package lld-19)"
    [ -d /usr/lib/wasm32-wasi ] || die "/usr/lib/wasm32-wasi missing (package wasi-libc)"

    local ld="$TOOLS/bin/wasm-component-ld"
    if ! { [ -x "$ld" ] && "$ld" --version 2>/dev/null | grep -q "$COMPONENT_LD_VERSION"; }; then
        say "installing wasm-component-ld $COMPONENT_LD_VERSION into $TOOLS (takes ~90 s)"
        local cargo=cargo
        command -v cargo >/dev/null 2>&1 || cargo=/usr/bin/cargo
        "$cargo" install --locked "wasm-component-ld@$COMPONENT_LD_VERSION" --root "$TOOLS" >&2 ||
            die "cargo install wasm-component-ld@$COMPONENT_LD_VERSION failed"
    fi
}

# Sets ROUTE to rustup or debian, installing what the route needs.
wasm_select_route() {
    case "$ROUTE" in
    auto)
        if rustup_ready; then
            ROUTE=rustup
        else
            say "falling back to the Debian route"
            ROUTE=debian
            debian_ready
        fi
        ;;
    rustup) rustup_ready || die "WARREN_WASM_ROUTE=rustup but the rustup $TARGET target is unavailable" ;;
    debian) debian_ready ;;
    *) die "WARREN_WASM_ROUTE must be rustup, debian or unset (got '$ROUTE')" ;;
    esac
}

# wasm_cargo BASE_TARGET_DIR ARGS...: cargo ARGS through the selected route, output on stderr;
# sets TARGET_DIR to where this route builds.
wasm_cargo() {
    local base="$1"
    shift
    if [ "$ROUTE" = rustup ]; then
        TARGET_DIR="$base"
        say "route: rustup ($(rustc --version))"
        cargo "$@" --target-dir "$TARGET_DIR" >&2 || die "cargo build failed (rustup route)"
    else
        TARGET_DIR="$base/debian"
        say "route: debian ($(/usr/bin/rustc --version), wasm-component-ld $COMPONENT_LD_VERSION)"
        env PATH="/usr/lib/llvm-19/bin:$PATH" \
            RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_WASIP2_LINKER="$TOOLS/bin/wasm-component-ld" \
            CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L/usr/lib/wasm32-wasi" \
            /usr/bin/cargo "$@" --target-dir "$TARGET_DIR" -Zbuild-std=std,panic_abort >&2 ||
            die "cargo build failed (Debian route)"
    fi
}

if [ "${WASM_ROUTE_SOURCED:-0}" != 1 ]; then
    set -euo pipefail
    [ "$#" -ge 2 ] || die "usage: wasm-route.sh BASE_TARGET_DIR CARGO_ARGS..."
    wasm_select_route
    wasm_cargo "$@"
    echo "target_dir=$TARGET_DIR"
fi
