#!/usr/bin/env bash
# The warren demo: a local, encrypted 3-member ring on the built-in defaults, with signed
# credential plugins loaded from a drop-in folder, and the gateway's bearer token kept in a
# file (`auth_token = "FILE:..."`) that rotates without a restart, a real service whose
# lifecycle hooks come from a WebAssembly plugin, a service group configured with one encrypted
# `config apply`, and a leader-follower group that elects natively and fails over on a kill -9.
#
#   examples/ring-demo.sh              run until Ctrl-C
#   examples/ring-demo.sh --for 10     stop after 10 seconds (non-interactive)
#
# Needs target/debug/warren and target/plugins/*.wasm (./scripts/demo.sh builds both).
# WARREN=/path/to/warren overrides the binary. Everything lives in a temp folder, removed on exit.
set -euo pipefail

FOR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --for) FOR="${2:?--for needs SECONDS}"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
WARREN="${WARREN:-$here/target/debug/warren}"
[ -x "$WARREN" ] || { echo "warren binary not found at $WARREN (run ./scripts/demo.sh, or set WARREN=)" >&2; exit 1; }
for p in env file hook-example leader-follower; do
    [ -f "$here/target/plugins/$p.wasm" ] || { echo "target/plugins/$p.wasm missing (scripts/build-plugins.sh)" >&2; exit 1; }
done

work="$(mktemp -d -t warren-demo.XXXXXX)"
pids=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        echo
        echo "stopping the ring (SIGTERM)..."
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    # A supervisor killed with -9 (step 9) leaves its services running until it is back; if
    # the demo failed in between, they are orphans: whatever still runs from $work goes. (Not
    # on success: then every service must have stopped with its supervisor, as tests check.)
    if [ "$rc" != 0 ]; then pkill -KILL -f -- "$work/" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Warnings, and what plugins log (the hook plugin's lines in step 7).
# (Election transitions too: the supervisors' logs are shown when a step fails.)
export WARREN_CACHE_KEY_PATH="$work/keys" WARREN_LOG=warn,warren::plugin=info,warren::election=info
warren() { "$WARREN" "$@"; }
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s## %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
token() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
status() { warren sup status --remote-http 127.0.0.1:9631 --auth-token "$1"; }

say "1. Keys: a ring key (encrypts all gossip) and an origin key (signs plugins)"
run warren ring key generate demo-ring
run warren origin key generate demo-origin

say "2. Plugins: the env and file credential sources, the hook-example lifecycle hook and the leader-follower topology policy, signed, in a drop-in folder"
mkdir -p "$work/plugins"
for p in env file hook-example leader-follower; do
    cp "$here/target/plugins/$p.wasm" "$work/plugins/$p.wasm"
    run warren plugin sign --origin demo-origin "$work/plugins/$p.wasm"
done
echo "(an origin public key is in the cache, so plugin trust is strict: unsigned plugins are refused)"

say "3. The gateway token lives in a file; sup.toml refers to it with FILE:"
mkdir -p "$work/secrets"
first="$(token)"
printf '%s\n' "$first" > "$work/secrets/gateway-token"
cat > "$work/sup.toml" <<TOML
auth_token = "FILE:$work/secrets/gateway-token"

[plugins.env]
signer = "demo-origin"

[plugins.file]
signer = "demo-origin"
read_paths = ["$work/secrets"]
TOML
run cat "$work/sup.toml"

say "4. Three supervisors on 127.0.0.1-3 (default ports: gossip 9638, HTTP 9631)"
start_sup() { # supervisor $1 on 127.0.0.$1, its pid in pids[$1 - 1]
    # The binary itself, not the `warren` shell function: $! must be the supervisor's pid, or
    # the cleanup's SIGTERM reaches only a subshell and the supervisors outlive the demo.
    "$WARREN" sup run \
        --listen-gossip "127.0.0.$1:9638" \
        --listen-http "127.0.0.$1:9631" \
        --listen-ctl "127.0.0.$1:9632" \
        --peer 127.0.0.1:9638 \
        --ring demo-ring \
        --org demo \
        --config "$work/sup.toml" \
        --plugin-path "$work/plugins" \
        --data-path "$work/data-$1" \
        >>"$work/sup-$1.log" 2>&1 &
    pids[$(($1 - 1))]=$!
}
for i in 1 2 3; do
    start_sup "$i"
    echo "supervisor $i: pid ${pids[$((i - 1))]}, gossip 127.0.0.$i:9638, gateway http://127.0.0.$i:9631"
done

alive() { status "$1" 2>/dev/null | grep -c ' Alive ' || true; }
start=$SECONDS
printf 'waiting for the members to come alive'
until [ "$(alive "$first")" = 3 ]; do
    for i in 1 2 3; do
        if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
            echo; echo "supervisor $i exited:" >&2; cat "$work/sup-$i.log" >&2; exit 1
        fi
    done
    if [ $((SECONDS - start)) -gt 30 ]; then echo; echo "the ring did not converge in 30 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
    printf '.'; sleep 0.3
done
echo " all 3 alive after $((SECONDS - start)) s"
echo
echo '$ warren sup status --remote-http 127.0.0.1:9631 --auth-token ...'
status "$first"

say "5. Rotate the token: rewrite the file (atomically), no restart"
second="$(token)"
printf '%s\n' "$second" > "$work/secrets/gateway-token.new"
mv "$work/secrets/gateway-token.new" "$work/secrets/gateway-token"
start=$SECONDS
until status "$second" >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -gt 15 ]; then echo "the token did not rotate in 15 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
    sleep 0.1
done
echo "the new token is accepted (within $((SECONDS - start)) s); the old one is refused:"
if status "$first" >/dev/null 2>"$work/refused.txt"; then echo "!! the old token still works" >&2; exit 1; fi
sed 's/^/  /' "$work/refused.txt"
echo
status "$second" | sed -n '/^credentials:/,$p'
echo "(same supervisors, same pids: ${pids[*]}; the fingerprint and version changed, the value is never shown)"

say "6. Remote control: the ctl gateway (CTL_SECRET, Noise channel); the HTTP gateway only reads"
# The demo's own cli.toml (yours is left alone): supervisor 1 by default, a secret for each
# (every supervisor made its own CTL_SECRET at first start, 0600 in its data path).
export WARREN_CLI_CONFIG="$work/cli.toml"
run warren cli setup --remote-sup 127.0.0.1 --ctl-secret "FILE:$work/data-1/CTL_SECRET"
for i in 2 3; do
    warren cli setup --for "127.0.0.$i" --ctl-secret "FILE:$work/data-$i/CTL_SECRET" >/dev/null
done
echo "(and --for 127.0.0.2 / 127.0.0.3 with their own secrets: [remote.\"HOST:PORT\"] tables)"
run warren ctl ping --count 3 --interval-ms 100
run warren sup status --remote-sup 127.0.0.2
run warren ring key list --remote-sup 127.0.0.2
run warren ring rumor inject --remote-sup 127.0.0.2 \
    '{"type": "service_config", "service_group": "demo.default", "config": "greeting = \"hello\""}'
echo "(the secret never crosses the wire: client and supervisor prove they share it in the handshake)"
gen() { warren sup status --remote-sup 127.0.0.3 --json 2>/dev/null | sed -n 's/.*"generation": \([0-9]*\).*/\1/p'; }
before="$(gen)"
run warren sup restart --remote-sup 127.0.0.3
start=$SECONDS
until [ -n "$(gen)" ] && [ "$(gen)" != "$before" ]; do
    if [ $((SECONDS - start)) -gt 30 ]; then echo "supervisor 3 did not come back in 30 s" >&2; cat "$work/sup-3.log" >&2; exit 1; fi
    sleep 0.2
done
echo "supervisor 3 is back (generation $before -> $(gen)), the same process (still pid ${pids[2]}, $(kill -0 "${pids[2]}" && echo alive))"

say "7. A real service: the hello-http package, built, installed and run by supervisor 1"
run warren pkg build "$here/examples/packages/hello-http" --origin demo-origin --out "$work" >/dev/null
hart="$(ls "$work"/demo-origin-hello-http-*.hart)"
echo "built $(basename "$hart") (signed by demo-origin; the supervisors trust it: same key cache)"
# Run as root, the service runs as its package's svc_user (nobody): it must be able to pass
# through the demo's folder (not list or read it) to reach its own directory.
chmod 711 "$work"
# Where it listens, as an operator sets it: user.toml (watched; changes apply without a reload).
mkdir -p "$work/data-1/user/hello-http"
printf '[http]\nlisten = "127.0.0.1"\nport = 18080\n' > "$work/data-1/user/hello-http/user.toml"
# Its init, health-check, reconfigure and post-stop hooks come from the hook-example plugin.
run warren svc load "$hart" --hooks-plugin hook-example --health-check-interval 1
http_get() { # GET / on ${2:-127.0.0.1}:${1:-18080} with bash's /dev/tcp (no curl needed)
    exec 3<>/dev/tcp/"${2:-127.0.0.1}"/"${1:-18080}" || return 1
    printf 'GET / HTTP/1.0\r\nHost: demo\r\n\r\n' >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}
echo '$ GET http://127.0.0.1:18080/'
http_get
run warren svc status
gateway_get() { # GET $1 on supervisor ${2:-1}'s HTTP gateway, with its current bearer token
    exec 4<>/dev/tcp/127.0.0.${2:-1}/9631 || return 1
    printf 'GET %s HTTP/1.0\r\nHost: demo\r\nAuthorization: Bearer %s\r\n\r\n' "$1" "$second" >&4
    sed '1,/^\r$/d' <&4
    exec 4<&-
}
echo "the HTTP gateway shows it as Habitat's does: /services, /services/hello-http/default[/config|/health]"
start=$SECONDS
until gateway_get /services/hello-http/default/health 2>/dev/null | grep -q '"status":"OK"'; do
    if [ $((SECONDS - start)) -gt 20 ]; then echo "no OK health check in 20 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
    sleep 0.2
done
echo '$ GET http://127.0.0.1:9631/services/hello-http/default/health   (curl -H "Authorization: Bearer ...")'
gateway_get /services/hello-http/default/health; echo
echo '$ GET http://127.0.0.1:9631/services   (a few of its fields)'
gateway_get /services | grep -o '"\(service_group\|spec_identifier\|desired_state\|health_check\)":"[^"]*"' | tr '\n' ' '; echo
svc_health() { warren svc status demo-origin/hello-http --json 2>/dev/null | sed -n 's/.*"health":"\([A-Z]*\)".*/\1/p'; }
wait_health() {
    start=$SECONDS
    until [ "$(svc_health)" = "$1" ]; do
        if [ $((SECONDS - start)) -gt 20 ]; then echo "health did not become $1 in 20 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
        sleep 0.2
    done
}
wait_health OK
echo
echo "its hooks run in the hook-example plugin (sandboxed, under its deadline and memory cap); health from it:"
run warren svc status demo-origin/hello-http --json
echo "the plugin's own log lines, in supervisor 1's log:"
sed 's/\x1b\[[0-9;]*m//g' "$work/sup-1.log" | grep -m 2 -F 'warren::plugin: ' | sed 's/^/  /'
svc_pid() { warren svc status demo-origin/hello-http --json 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
first_pid="$(svc_pid)"
echo
echo "a config change: a new message in user.toml, re-rendered, the plugin's reconfigure runs, no restart"
printf 'message = "Hello again, from user.toml"\n[http]\nlisten = "127.0.0.1"\nport = 18080\n' \
    > "$work/data-1/user/hello-http/user.toml"
start=$SECONDS
until http_get 2>/dev/null | grep -q "Hello again"; do
    if [ $((SECONDS - start)) -gt 20 ]; then echo "the new config was not served in 20 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
    sleep 0.2
done
echo '$ GET http://127.0.0.1:18080/'
http_get
echo "(same process: pid $first_pid -> $(svc_pid))"
echo
echo "fail_health = true in user.toml: the plugin reads the new config at its next check"
printf 'fail_health = true\nmessage = "Hello again, from user.toml"\n[http]\nlisten = "127.0.0.1"\nport = 18080\n' \
    > "$work/data-1/user/hello-http/user.toml"
wait_health CRITICAL
echo "health: $(svc_health) (from the plugin; the service keeps running, pid $(svc_pid))"
printf 'message = "Hello again, from user.toml"\n[http]\nlisten = "127.0.0.1"\nport = 18080\n' \
    > "$work/data-1/user/hello-http/user.toml"
wait_health OK
echo "health: $(svc_health) again"
echo
echo "a crash: kill -9 of the service's process; the supervisor restarts it at once"
kill -9 "$first_pid"
start=$SECONDS
until [ -n "$(svc_pid)" ] && [ "$(svc_pid)" != "$first_pid" ] && http_get >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -gt 20 ]; then echo "not restarted in 20 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
    sleep 0.1
done
echo "restarted: pid $first_pid -> $(svc_pid), answering again"
run warren svc status

say "8. A service group: hello-http on all three (--org demo), one encrypted config apply for every member"
for i in 2 3; do
    mkdir -p "$work/data-$i/user/hello-http"
    printf '[http]\nlisten = "127.0.0.1"\nport = 1808%s\n' "$i" > "$work/data-$i/user/hello-http/user.toml"
    run warren svc load "$hart" --remote-sup "127.0.0.$i" >/dev/null
done
echo "hello-http.default@demo now runs on 127.0.0.1:18080, :18082 and :18083"
run warren user key generate demo-operator
run warren svc key generate hello-http.default demo
echo "(the group's secret key is in every member's key cache; the operator's public key too)"
printf 'message = "Hello from one config apply, to every member"\n' > "$work/group.toml"
echo
echo "plaintext for a group of the supervisors' org is refused, with the reason:"
if warren config apply hello-http.default@demo 1 "$work/group.toml" 2>"$work/refused.txt"; then
    echo "!! plaintext was accepted" >&2; exit 1
fi
sed 's/^/  /' "$work/refused.txt"
run warren config apply hello-http.default@demo 1 "$work/group.toml" --user demo-operator
start=$SECONDS
for port in 18080 18082 18083; do
    until http_get "$port" 2>/dev/null | grep -q "one config apply"; do
        if [ $((SECONDS - start)) -gt 30 ]; then echo "port $port did not re-render in 30 s" >&2; cat "$work/sup-1.log" >&2; exit 1; fi
        sleep 0.2
    done
    printf '$ GET http://127.0.0.1:%s/   ' "$port"
    http_get "$port"
done
echo "(every member decrypted it with the group's key and re-rendered within $((SECONDS - start)) s; the gossip carried only BOX-1)"
echo
echo "the same version again is refused, and the reply names the current one (Habitat drops it silently):"
if warren config apply hello-http.default@demo 1 "$work/group.toml" --user demo-operator 2>"$work/refused.txt"; then
    echo "!! an old version was accepted" >&2; exit 1
fi
sed 's/^/  /' "$work/refused.txt"
echo
# Each member's Service rumor reaches supervisor 1's census within a gossip round or two.
start=$SECONDS
until [ "$(gateway_get /census 2>/dev/null | grep -o '"alive":true' | wc -l)" -ge 3 ]; do
    if [ $((SECONDS - start)) -gt 20 ]; then echo "the census did not show 3 members in 20 s" >&2; exit 1; fi
    sleep 0.2
done
echo '$ GET http://127.0.0.1:9631/census   (the group, its members and the config version)'
gateway_get /census | grep -o '"hello-http.default@demo"\|"incarnation":[0-9]*,"value"\|"alive":true' | sort | uniq -c | sed 's/^/  /'

say "9. A leader-follower group: kv-leader on all three with --topology leader; the supervisors elect its leader natively"
run warren pkg build "$here/examples/packages/kv-leader" --origin demo-origin --out "$work" >/dev/null
kv="$(ls "$work"/demo-origin-kv-leader-*.hart)"
for i in 1 2 3; do
    run warren svc load "$kv" --topology leader --no-wait --remote-sup "127.0.0.$i"
done
echo "(the leader-follower plugin says the group needs an election; the native Bully election over gossip picks"
echo " the leader; each kv-leader starts once its group's election finished, with its role in its config)"
# "ROLE LEADER" of supervisor $1's kv-leader as its svc status says it, once its election finished.
role_of() {
    local j
    j="$(warren svc status demo-origin/kv-leader --json --remote-sup "127.0.0.$1" 2>/dev/null)" || return 0
    field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$j"; }
    [ "$(field election_status)" = finished ] && echo "$(field role) $(field leader_id)"
    return 0
}
# Waits until supervisors "$@" agree: one leader, the rest followers of it; sets $leader_at.
wait_agreed() {
    local start=$SECONDS
    while true; do
        local leaders=() ids=() i r
        for i in "$@"; do
            r="$(role_of "$i")"
            ids+=("${r#* }")
            [ "${r% *}" = leader ] && leaders+=("$i")
        done
        if [ ${#leaders[@]} = 1 ] && [ -n "${ids[0]}" ] && [ "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" = 1 ]; then
            leader_at=${leaders[0]}
            return
        fi
        if [ $((SECONDS - start)) -gt 60 ]; then
            echo "supervisors $* did not agree on a leader in 60 s" >&2
            for i in "$@"; do echo "-- supervisor $i:" >&2; grep -a 'election' "$work/sup-$i.log" | tail -n 15 >&2; done
            exit 1
        fi
        sleep 0.2
    done
}
wait_agreed 1 2 3
# Gossip brings each member's service to the others within a round or two, but an election
# can finish before: a member that counts only part of the group would see a minority after
# the kill. Every member counting all three (its /metrics) is what makes the failover certain.
population() { gateway_get /metrics "$1" 2>/dev/null | sed -n 's/^warren_election_population{group="kv-leader[^}]*} \([0-9]*\).*/\1/p'; }
start=$SECONDS
until [ "$(population 1)" = 3 ] && [ "$(population 2)" = 3 ] && [ "$(population 3)" = 3 ]; do
    if [ $((SECONDS - start)) -gt 30 ]; then echo "the members do not all count 3 in the group" >&2; exit 1; fi
    sleep 0.2
done
echo "elected: supervisor $leader_at leads; the other two follow it (each member counts all 3)"
run warren svc status --remote-sup "127.0.0.$leader_at"
for i in 1 2 3; do
    printf '$ GET http://127.0.0.%s:8400/   ' "$i"
    http_get 8400 "127.0.0.$i" | grep '^role' | tr '\n' ' '; echo
done
echo
echo "a failover: kill -9 of the leader's supervisor (supervisor $leader_at, pid ${pids[$((leader_at - 1))]})"
old_leader=$leader_at
kill -9 "${pids[$((old_leader - 1))]}"
wait "${pids[$((old_leader - 1))]}" 2>/dev/null || true
start=$SECONDS
rest=(); for i in 1 2 3; do [ "$i" = "$old_leader" ] || rest+=("$i"); done
wait_agreed "${rest[@]}"
echo "failover: supervisor $leader_at leads within $((SECONDS - start)) s of the kill (the ring's failure detection, then one election term)"
run warren svc status --remote-sup "127.0.0.$leader_at"
echo
echo "supervisor $old_leader restarts (same data path, same member id): it rejoins as a follower, no flip back"
start=$SECONDS
start_sup "$old_leader"
echo "restarted supervisor $old_leader (pid ${pids[$((old_leader - 1))]})"
new_leader=$leader_at
wait_agreed 1 2 3
if [ "$leader_at" != "$new_leader" ]; then echo "!! the lead flipped back to supervisor $leader_at" >&2; exit 1; fi
echo "rejoined: supervisor $old_leader follows supervisor $leader_at ($(role_of "$old_leader" | cut -d' ' -f1)), within $((SECONDS - start)) s"
# Its kv-leader kept running while its supervisor was down; the restarted one reattached it
# and rendered the new role into its config.
until http_get 8400 "127.0.0.$old_leader" 2>/dev/null | grep -q '^role = "follower"'; do
    if [ $((SECONDS - start)) -gt 30 ]; then echo "kv-leader on 127.0.0.$old_leader did not become a follower in 30 s" >&2; exit 1; fi
    sleep 0.2
done
for i in 1 2 3; do
    printf '$ GET http://127.0.0.%s:8400/   ' "$i"
    http_get 8400 "127.0.0.$i" | grep '^role' | tr '\n' ' '; echo
done

if [ -n "$FOR" ]; then
    sleep "$FOR"
else
    echo
    echo "Ctrl-C to stop. Try: warren sup status --remote-http 127.0.0.2:9631 --auth-token $second"
    while true; do
        sleep 10
        echo; date -u +%H:%M:%S; status "$second" | sed -n '1,/^$/p' || true
    done
fi
