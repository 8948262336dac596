#!/usr/bin/env bash
# A walk through warren's keys, packages and encrypted messages in a throwaway directory.
# Usage: examples/keys-demo.sh
# Builds warren with cargo first; needs Rust stable and a C compiler. Nothing outside the
# temporary directory is touched (the key cache lives there too).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "building warren..."
cargo build --quiet --bin warren
WARREN_BIN="$PWD/target/debug/warren"

DEMO="$(mktemp -d -t warren-demo.XXXXXX)"
trap 'rm -rf "$DEMO"' EXIT
cd "$DEMO"
export WARREN_CACHE_KEY_PATH="$DEMO/keys"

warren() { "$WARREN_BIN" "$@"; }
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s## %s%s\n' "$bold" "$*" "$plain"; }
run() {
    printf '$ %s\n' "$*"
    "$@"
}
# Runs a command that is supposed to fail, and shows that it did.
refused() {
    printf '$ %s\n' "$*"
    if "$@"; then
        echo "!! expected a failure" >&2
        exit 1
    else
        echo "(refused, exit $?)"
    fi
}

say "Working in $DEMO; the key cache is \$WARREN_CACHE_KEY_PATH=$WARREN_CACHE_KEY_PATH"

say "1. An origin signing key pair (it signs packages and plugins)"
run warren origin key generate acme
run warren origin key export acme --type public

say "2. Sign a directory into a HART-1 package (warren tars and xz-compresses it)"
mkdir -p app/bin app/config
printf '#!/bin/sh\necho "hello from acme/app"\n' > app/bin/app
chmod 755 app/bin/app
printf 'port = 8080\n' > app/config/default.toml
ln -s bin/app app/run
run warren pkg sign --origin acme app acme-app-1.0.0-x86_64-linux.hart
run warren pkg header acme-app-1.0.0-x86_64-linux.hart
run warren pkg verify acme-app-1.0.0-x86_64-linux.hart

say "3. Extract it (verified first; unsafe entries would refuse the whole package)"
run warren pkg extract acme-app-1.0.0-x86_64-linux.hart unpacked
run ls -lR unpacked
run ./unpacked/run

say "4. One flipped byte in the payload and the package no longer verifies"
cp acme-app-1.0.0-x86_64-linux.hart tampered.hart
size=$(wc -c < tampered.hart)
printf 'X' | dd of=tampered.hart bs=1 seek=$((size - 40)) conv=notrunc status=none
refused warren pkg verify tampered.hart

say "5. Another machine verifies with only the public key, imported from stdin"
echo "\$ warren origin key export acme | warren origin key import --cache-key-path other-keys"
warren origin key export acme | warren origin key import --cache-key-path other-keys
run warren pkg verify acme-app-1.0.0-x86_64-linux.hart --cache-key-path other-keys
refused warren pkg verify acme-app-1.0.0-x86_64-linux.hart --cache-key-path empty-keys

say "6. A ring key (it encrypts gossip between supervisors), shared the same way"
run warren ring key generate prod-ring
echo "\$ warren ring key export prod-ring | warren ring key import --cache-key-path other-keys"
warren ring key export prod-ring | warren ring key import --cache-key-path other-keys

say "7. User and service group encryption keys, and an encrypted configuration (BOX-1)"
run warren user key generate ops
run warren svc key generate web.prod acme
printf 'db_password = "s3cret"\n' > secret.toml
echo "\$ warren box encrypt --from ops --to web.prod@acme secret.toml > secret.box"
warren box encrypt --from ops --to web.prod@acme secret.toml > secret.box
run cat secret.box
run warren box decrypt secret.box
refused warren box decrypt secret.box --cache-key-path other-keys

say "8. A ctl gateway secret (base64 of 64 random bytes)"
run warren sup secret generate

say "9. Everything the cache now holds"
run ls -l keys

say "Done. (The temporary directory is removed on exit.)"
