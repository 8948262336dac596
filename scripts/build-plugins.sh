#!/usr/bin/env bash
# Build every warren guest plugin (plugins/, its own cargo workspace) into a wasm32-wasip2
# component and copy it to target/plugins/NAME.wasm (test fixtures: target/plugins/fixtures/NAME.wasm).
#
# Usage: scripts/build-plugins.sh [NAME...]      (no NAME: all plugins and fixtures)
#
# Toolchain route: scripts/wasm-route.sh (shared with `warren plugin build`), tools in .tools/.
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

# ---------------------------------------------------------------- route selection

# Defines say, die, TARGET, wasm_select_route and wasm_cargo.
WASM_ROUTE_SOURCED=1
WASM_ROUTE_SAY=build-plugins
# shellcheck source=wasm-route.sh
source "$ROOT/scripts/wasm-route.sh"
wasm_select_route

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
say "building ${#PKGS[@]} plugin(s)"
wasm_cargo "$PLUGINS/target" "${cargo_args[@]}"
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
