#!/usr/bin/env bash
# A local, encrypted, 3-member warren ring on the built-in defaults.
#
#   examples/ring-demo.sh              run until Ctrl-C
#   examples/ring-demo.sh --for 10     run 10 seconds, then stop (non-interactive)
#
# It generates a ring key into a temporary key cache, starts three supervisors on
# 127.0.0.1/2/3 (gossip :9638, HTTP gateway :9631, the default ports), prints the ring as
# member 1 sees it (from GET /butterfly) until the members are alive, then keeps refreshing.
# Ctrl-C or the end of --for stops the supervisors (SIGTERM) and removes the temp folder.
# Needs curl and jq. WARREN=/path/to/warren overrides the binary.
set -euo pipefail

FOR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --for) FOR="${2:?--for needs SECONDS}"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
WARREN="${WARREN:-}"
if [ -z "$WARREN" ]; then
    if [ -x "$here/target/debug/warren" ]; then WARREN="$here/target/debug/warren"
    elif [ -x "$here/target/release/warren" ]; then WARREN="$here/target/release/warren"
    else WARREN="$(command -v warren || true)"; fi
fi
[ -x "$WARREN" ] || { echo "warren binary not found (cargo build, or set WARREN=)" >&2; exit 1; }
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

work="$(mktemp -d -t warren-ring-demo.XXXXXX)"
pids=()
cleanup() {
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        echo
        echo "stopping the ring..."
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A SYM-SEC-1 ring key file, as Habitat writes them: header, name-revision, blank, base64.
rev="$(date -u +%Y%m%d%H%M%S)"
mkdir -p "$work/keys"
key="$work/keys/demo-ring-$rev.sym.key"
printf 'SYM-SEC-1\ndemo-ring-%s\n\n%s\n' "$rev" "$(head -c 32 /dev/urandom | base64)" > "$key"
chmod 0400 "$key"
echo "ring key demo-ring-$rev in $work/keys"

for i in 1 2 3; do
    WARREN_LOG=warn WARREN_CACHE_KEY_PATH="$work/keys" "$WARREN" sup run \
        --listen-gossip "127.0.0.$i:9638" \
        --listen-http "127.0.0.$i:9631" \
        --listen-ctl "127.0.0.$i:9632" \
        --peer 127.0.0.1:9638 \
        --ring demo-ring \
        --data-path "$work/data-$i" \
        >"$work/sup-$i.log" 2>&1 &
    pids+=($!)
    echo "supervisor $i: pid $!, gossip 127.0.0.$i:9638, http http://127.0.0.$i:9631"
done

table() {
    curl -sf --max-time 2 "http://127.0.0.1:9631/butterfly" | jq -r '
        .member.members as $m | .member.health | to_entries | sort_by($m[.key].address)
        | (["MEMBER", "ADDRESS", "HEALTH", "INCARNATION"] | @tsv),
          (.[] | [.key, "\($m[.key].address):\($m[.key].gossip_port)", .value, $m[.key].incarnation] | @tsv)' \
        | column -t -s $'\t'
}

alive_count() {
    curl -sf --max-time 2 "http://127.0.0.1:9631/butterfly" \
        | jq '[.member.health[] | select(. == "Alive")] | length' 2>/dev/null || echo 0
}

start=$SECONDS
printf 'waiting for the members to come alive'
until [ "$(alive_count)" = 3 ]; do
    for i in 1 2 3; do
        if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
            echo; echo "supervisor $i exited:" >&2; cat "$work/sup-$i.log" >&2; exit 1
        fi
    done
    if [ $((SECONDS - start)) -gt 30 ]; then echo; echo "the ring did not converge in 30 s" >&2; exit 1; fi
    printf '.'; sleep 0.3
done
echo " all 3 alive after $((SECONDS - start)) s"
echo
echo "ring as seen by 127.0.0.1 (GET /butterfly):"
table
echo
curl -sf "http://127.0.0.1:9631/metrics" | grep -E '^warren_ring_(members|packets_(sent|received)_total|packets_rejected_total\{reason="(decrypt|unknown_key)"\})' || true

if [ -n "$FOR" ]; then
    sleep "$FOR"
else
    echo
    echo "Ctrl-C to stop. Try: curl -s http://127.0.0.2:9631/census | jq ."
    while true; do
        sleep 5
        echo; date -u +%H:%M:%S; table || true
    done
fi
