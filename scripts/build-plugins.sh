#!/usr/bin/env bash
# Build every warren guest plugin (plugins/, its own cargo workspace) into a wasm32-wasip2
# component and copy it to target/plugins/NAME.wasm (test fixtures: target/plugins/fixtures/NAME.wasm).
#
# Usage: scripts/build-plugins.sh [NAME...]      (no NAME: all plugins and fixtures)
#
# Toolchain route (see shared toolchain notes):
#   1. rustup's wasm32-wasip2 std when `rustup target list --installed` shows it, else try
#      `rustup target add wasm32-wasip2` under a 120 s timeout;
#   2. otherwise Debian's rustc-web + -Zbuild-std, linked by wasm-component-ld installed in .tools/.
# Force a route with WARREN_WASM_ROUTE=rustup|debian (default: auto).
# The rustup route builds into plugins/target, the Debian route into plugins/target/debian.
set -euo pipefail
# scripts/test.sh lints the host's workspace through clippy's driver; guests are built by their
# own route's compiler (maybe not the one that driver belongs to), so never through it.
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGINS="$ROOT/plugins"
OUT="$ROOT/target/plugins"
TOOLS="$ROOT/.tools"
TARGET=wasm32-wasip2
ROUTE="${WARREN_WASM_ROUTE:-auto}"
COMPONENT_LD_VERSION=0.5.31
DEBIAN_PACKAGES=(rustc-web cargo-web rust-web-src lld-19 wasi-libc)

say() { echo "build-plugins: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------- route selection

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

# ---------------------------------------------------------------- plugin list

# Every directory under plugins/ with a plugin.toml is a plugin crate.
declare -a DIRS=()
while IFS= read -r manifest; do
    DIRS+=("$(dirname "$manifest")")
done < <(find "$PLUGINS" -path "$PLUGINS/target" -prune -o -name plugin.toml -print | sort)
[ "${#DIRS[@]}" -gt 0 ] || die "no plugin.toml found under $PLUGINS"

toml_name() { sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$1" | head -n1; }

declare -a PKGS=() NAMES=() DESTS=()
for dir in "${DIRS[@]}"; do
    pkg="$(toml_name "$dir/Cargo.toml")"
    name="$(toml_name "$dir/plugin.toml")"
    [ -n "$pkg" ] && [ -n "$name" ] || die "cannot read package or plugin name in $dir"
    if [ "$#" -gt 0 ]; then
        wanted=0
        for arg in "$@"; do [ "$arg" = "$name" ] || [ "$arg" = "$pkg" ] && wanted=1; done
        [ "$wanted" = 1 ] || continue
    fi
    case "$dir" in
    "$PLUGINS"/fixtures/*) dest="$OUT/fixtures/$name.wasm" ;;
    *) dest="$OUT/$name.wasm" ;;
    esac
    PKGS+=("$pkg")
    NAMES+=("$name")
    DESTS+=("$dest")
done
[ "${#PKGS[@]}" -gt 0 ] || die "no plugin matches: $*"

# ---------------------------------------------------------------- build

cargo_args=(build --release --target "$TARGET" --manifest-path "$PLUGINS/Cargo.toml")
for pkg in "${PKGS[@]}"; do cargo_args+=(-p "$pkg"); done

start=$(date +%s)
if [ "$ROUTE" = rustup ]; then
    TARGET_DIR="$PLUGINS/target"
    say "route: rustup ($(rustc --version)); building ${#PKGS[@]} plugin(s)"
    cargo "${cargo_args[@]}" --target-dir "$TARGET_DIR" >&2 || die "cargo build failed (rustup route)"
else
    TARGET_DIR="$PLUGINS/target/debian"
    say "route: debian ($(/usr/bin/rustc --version), wasm-component-ld $COMPONENT_LD_VERSION); building ${#PKGS[@]} plugin(s)"
    env PATH="/usr/lib/llvm-19/bin:$PATH" \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_WASIP2_LINKER="$TOOLS/bin/wasm-component-ld" \
        CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L/usr/lib/wasm32-wasi" \
        /usr/bin/cargo "${cargo_args[@]}" --target-dir "$TARGET_DIR" -Zbuild-std=std,panic_abort >&2 ||
        die "cargo build failed (Debian route)"
fi
say "cargo finished in $(($(date +%s) - start)) s"

# ---------------------------------------------------------------- copy and check

mkdir -p "$OUT" "$OUT/fixtures"
for i in "${!PKGS[@]}"; do
    src="$TARGET_DIR/$TARGET/release/${PKGS[$i]//-/_}.wasm"
    dest="${DESTS[$i]}"
    [ -f "$src" ] || die "expected build output $src is missing"
    magic="$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')"
    [ "$magic" = 0061736d0d000100 ] || die "$src is not a WebAssembly component (header $magic)"
    LC_ALL=C grep -qa "warren-manifest" "$src" || die "$src has no warren-manifest custom section"
    if ! cmp -s "$src" "$dest"; then
        cp "$src" "$dest.tmp" && mv "$dest.tmp" "$dest"
    fi
    say "$(printf '%-40s %7d bytes' "${dest#"$ROOT"/}" "$(stat -c %s "$dest")")"
done
say "done (route: $ROUTE)"
