# Shared by bench/baselines.sh and bench/growth.sh: build, start and stop the server (SQLite file or
# a fresh PostgreSQL database), CPU accounting, small statistics. Source it; it sets ROOT, BIN, WORK.
# Environment: DATABASE [sqlite], SERVER_LOG [], CARGO_TARGET_DIR [<repo>/target],
# SERVER_BIN [<target>/release/pep-server]: another build of the server to measure with the same
# fleet (a before/after comparison runs this tree's pep-fleet against an older pep-server),
# DEMO_CONFIG [<repo>/fixtures/demo/pep.toml]: the config the runs start from (an older server
# needs its own tree's, without the newer keys),
# DURABILITY []: `full` or `normal` sets `[store] durability` (empty: the server's default; a
# server older than that setting must run with it empty),
# TLS [0]: 1 serves the API over HTTPS: a throw-away test CA and a server certificate for
# 127.0.0.1 are made with the openssl CLI in the work dir, the server's config gets `[tls] cert`
# and `key`, and the fleet talks https with `--ca-cert` (it keeps its connections alive and
# resumes TLS sessions, as workstations would). The server must have the `[tls]` settings.
# WEBHOOKS [0]: 1 adds an event webhook (`[[hooks.events]]`, deployed + failed) to each run's
# server, received by `pep-server --example webhook_receiver` (release build) on 127.0.0.1 (it
# verifies every signature and counts the events by ID; the Python receiver it replaced was
# slower than the server on these two cores); the
# rate then includes writing the outbox and sending it. stop_server prints what the receiver got.
# The server must have the `[hooks]` settings.
# CLOUD [off]: `each` or `bulk` claims every deployed gateway in the device-management cloud
# (issue #18): each run starts the cloud stand-in (`cloud-standin --keep-alive`, test support, on
# 127.0.0.1; it keeps connections alive like the real cloud)
# and the server's config gets `[cloud] mode`, `api_url` and an `api_key_file`; the stand-in's
# last line (how many IDs it accepted, how many twice) is printed after each run. Compare the
# rate with a CLOUD=off run (target: at least 90 %). The server must have the `[cloud]` settings.
# KEY_MODE []: `by_tool` or `by_device` sets the server's `key_mode` (empty: the demo config's,
# by_tool); with by_device each simulated gateway makes its own key and CSR, which the fleet's CPU
# then includes. FLEET_BIN [<target>/release/pep-fleet]: another build of the fleet (a
# before/after comparison of the simulated device's own cost).
# HOOK [0]: 1 turns on the pre-provisioning hook (`[hooks] pre_provision`, issue #17): a local
# receiver (`pep-server --example hook_receiver`, release build) that verifies each request's
# signature and allows it, on 127.0.0.1; compare the rate with a HOOK=0 run (target >= 70 %).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
SERVER_BIN="${SERVER_BIN:-$BIN/pep-server}"
FLEET_BIN="${FLEET_BIN:-$BIN/pep-fleet}"
KEY_MODE="${KEY_MODE:-}"
DEMO_CONFIG="${DEMO_CONFIG:-$ROOT/fixtures/demo/pep.toml}"
TOKEN="pep-demo-token"
TLS="${TLS:-0}"
WEBHOOKS="${WEBHOOKS:-0}"
WEBHOOK_PID=""
WEBHOOK_COUNT=""
HOOK="${HOOK:-0}"
HOOK_PID=""
DATABASE="${DATABASE:-sqlite}"
SERVER_LOG="${SERVER_LOG:-}"
PG_DB=""
# psql's NOTICE lines ("database … does not exist, skipping") are noise here.
export PGOPTIONS="${PGOPTIONS:--c client_min_messages=warning}"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$HOOK_PID" ]]; then kill "$HOOK_PID" 2>/dev/null || true; wait "$HOOK_PID" 2>/dev/null || true; fi
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -n "$WEBHOOK_PID" ]]; then kill "$WEBHOOK_PID" 2>/dev/null || true; wait "$WEBHOOK_PID" 2>/dev/null || true; fi
    if [[ -n "$CLOUD_PID" ]]; then kill "$CLOUD_PID" 2>/dev/null || true; wait "$CLOUD_PID" 2>/dev/null || true; fi
    if [[ -n "$PG_DB" ]]; then psql -q "$DATABASE" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}'; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); 
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }

SCHEME=http
FLEET_TLS_ARGS=()
if [[ "$TLS" == 1 ]]; then
    # P-256 like the factory CA; the key files are PKCS#8 ("BEGIN PRIVATE KEY"), which rustls reads.
    tls="$WORK/tls"; mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=pep bench test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n' > "$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 2 -sha256 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    chmod 600 "$tls/ca.key" "$tls/server.key"
    SCHEME=https
    FLEET_TLS_ARGS=(--ca-cert "$tls/ca.pem")
elif [[ "$TLS" != 0 ]]; then
    echo "TLS must be 0 or 1, not \`$TLS\`" >&2; exit 2
fi
if [[ "$WEBHOOKS" != 0 && "$WEBHOOKS" != 1 ]]; then
    echo "WEBHOOKS must be 0 or 1, not \`$WEBHOOKS\`" >&2; exit 2
fi
CLOUD="${CLOUD:-off}"
CLOUD_PID=""
CLOUD_DIR=""
BUILD_CLOUD=()
case "$CLOUD" in
    off) ;;
    each|bulk) BUILD_CLOUD=(-p cloud-standin) ;;
    *) echo "CLOUD must be off, each or bulk, not \`$CLOUD\`" >&2; exit 2 ;;
esac

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building release binaries (pep-server, pep-fleet)"
(cd "$ROOT" && cargo build --release --quiet -p pep-server -p pep-loadgen "${BUILD_CLOUD[@]}")
if [[ "$WEBHOOKS" == 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p pep-server --example webhook_receiver)
fi
if [[ "$HOOK" == 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p pep-server --example hook_receiver)
    openssl rand -hex 32 > "$WORK/hook.secret"; chmod 600 "$WORK/hook.secret"
    "$BIN/examples/hook_receiver" "$WORK/hook.secret" > "$WORK/hook.out" 2> "$WORK/hook.err" &
    HOOK_PID=$!
    for _ in $(seq 1 100); do
        if grep -q '^listening on ' "$WORK/hook.out" 2>/dev/null; then break; fi
        sleep 0.1
    done
    HOOK_ADDR="$(sed -n 's/^listening on //p' "$WORK/hook.out")"
    [[ -n "$HOOK_ADDR" ]] || { echo "the hook receiver did not start:"; cat "$WORK/hook.err"; exit 1; }
    echo "== pre-provisioning hook on: http://$HOOK_ADDR/pep/approve (signature-checking allow-all receiver)"
elif [[ "$HOOK" != 0 ]]; then
    echo "HOOK must be 0 or 1, not \`$HOOK\`" >&2; exit 2
fi
echo "== server measured: $SERVER_BIN, fleet $FLEET_BIN, key_mode ${KEY_MODE:-of the demo config}, [store] durability: ${DURABILITY:-the server default}, API over $SCHEME, pre-provisioning hook $([[ "$HOOK" == 1 ]] && echo on || echo off), webhooks $([[ "$WEBHOOKS" == 1 ]] && echo on || echo off), cloud claims: $CLOUD"

# ---------------------------------------------------------------- pep end to end
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }
start_server() {
    local dir="$1" run="$2" url
    if [[ "$DATABASE" == sqlite ]]; then
        url="sqlite://$dir/pep.sqlite"
    else
        PG_DB="pep_bench_$$_$run"
        psql -q "$DATABASE" -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" >/dev/null
        url="${DATABASE%/*}/$PG_DB"
    fi
    sed -e 's|^listen = .*|listen = "127.0.0.1:0"|' \
        -e "s|^database_url = .*|database_url = \"$url\"|" \
        -e "s|\"fixtures/|\"$ROOT/fixtures/|g" \
        "$DEMO_CONFIG" > "$dir/pep.toml"
    if [[ -n "$KEY_MODE" ]]; then sed -i "s|^key_mode = .*|key_mode = \"$KEY_MODE\"|" "$dir/pep.toml"; fi
    if [[ -n "${DURABILITY:-}" ]]; then printf '\n[store]\ndurability = "%s"\n' "$DURABILITY" >> "$dir/pep.toml"; fi
    if [[ "$HOOK" == 1 ]]; then printf '\n[hooks]\npre_provision = "http://%s/pep/approve"\nsecret_file = "%s"\n' "$HOOK_ADDR" "$WORK/hook.secret" >> "$dir/pep.toml"; fi
    if [[ "$TLS" == 1 ]]; then printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$WORK/tls/server.pem" "$WORK/tls/server.key" >> "$dir/pep.toml"; fi
    if [[ "$WEBHOOKS" == 1 ]]; then
        openssl rand -hex 32 > "$dir/hook.secret"; chmod 600 "$dir/hook.secret"
        "$BIN/examples/webhook_receiver" "$dir/hook.secret" "$dir/hook.count" > "$dir/webhook.out" 2> "$dir/webhook.err" &
        WEBHOOK_PID=$!
        WEBHOOK_COUNT="$dir/hook.count"
        for _ in $(seq 1 100); do grep -q '^listening on ' "$dir/webhook.out" 2>/dev/null && break; sleep 0.1; done
        local webhook_addr
        webhook_addr="$(sed -n 's/^listening on //p' "$dir/webhook.out")"
        [[ -n "$webhook_addr" ]] || { echo "the webhook receiver did not start:"; cat "$dir/webhook.err"; exit 1; }
        printf '\n[[hooks.events]]\nname = "bench"\nurl = "http://%s/hook"\nevents = ["deployed", "failed"]\nsecret_file = "%s"\n' \
            "$webhook_addr" "$dir/hook.secret" >> "$dir/pep.toml"
    fi
    if [[ "$CLOUD" != off ]]; then start_cloud "$dir"; fi
    if [[ -n "$SERVER_LOG" ]]; then export RUST_LOG="$SERVER_LOG"; else unset RUST_LOG; fi
    "$SERVER_BIN" --config "$dir/pep.toml" > "$dir/server.out" 2> "$dir/server.err" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if grep -q '^listening on ' "$dir/server.out" 2>/dev/null; then break; fi
        sleep 0.1
    done
    ADDR="$(sed -n 's/^listening on //p' "$dir/server.out")"
    # host:port, whether or not the server names its scheme
    ADDR="${ADDR#*://}"
    [[ -n "$ADDR" ]] || { echo "pep-server did not start:"; cat "$dir/server.err"; exit 1; }
}
# start_cloud DIR: the cloud stand-in for one run, and the server's `[cloud]` section.
start_cloud() {
    local dir="$1"
    CLOUD_DIR="$dir"
    (umask 077 && echo "ak_bench_$(openssl rand -hex 16)" > "$dir/cloud.key")
    "$BIN/cloud-standin" --keep-alive --api-key-file "$dir/cloud.key" > "$dir/cloud.out" 2> "$dir/cloud.err" &
    CLOUD_PID=$!
    for _ in $(seq 1 100); do
        if grep -q '^listening on ' "$dir/cloud.out" 2>/dev/null; then break; fi
        sleep 0.1
    done
    local addr
    addr="$(sed -n 's/^listening on //p' "$dir/cloud.out")"
    [[ -n "$addr" ]] || { echo "cloud-standin did not start:"; cat "$dir/cloud.err"; exit 1; }
    printf '\n[cloud]\nmode = "%s"\napi_url = "http://%s"\napi_key_file = "%s"\nbulk_interval_s = 5\n' \
        "$CLOUD" "$addr" "$dir/cloud.key" >> "$dir/pep.toml"
}
stop_server() {
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    if [[ -n "$WEBHOOK_PID" ]]; then
        echo "   webhook receiver CPU: $(cpu_s "$WEBHOOK_PID") s"
        kill "$WEBHOOK_PID"; wait "$WEBHOOK_PID" 2>/dev/null || true; WEBHOOK_PID=""
        # What arrived by the time the server stopped; the rest waits in the run's outbox.
        echo "   webhook receiver: $(cat "$WEBHOOK_COUNT" 2>/dev/null || echo 'no count written')"
    fi
    if [[ -n "$CLOUD_PID" ]]; then
        echo "   cloud stand-in CPU: $(cpu_s "$CLOUD_PID") s"
        kill "$CLOUD_PID"; wait "$CLOUD_PID" 2>/dev/null || true; CLOUD_PID=""
        echo "   cloud stand-in: $(tail -1 "$CLOUD_DIR/cloud.out")"
    fi
    if [[ -n "$PG_DB" ]]; then psql -q "$DATABASE" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null; PG_DB=""; fi
}


# drain_outboxes: with CLOUD or WEBHOOKS on, waits (at most 300 s) until the server's outboxes
# hold nothing more to send (`/metrics`: claims pending/retrying, deliveries pending/failing) and
# prints how long after the fleet's end that was: a sender that falls behind the line leaves part
# of its work for after the fleet, which the rate alone would not show. The server CPU figure
# printed after it includes the drain.
drain_outboxes() {
    [[ "$CLOUD" != off || "$WEBHOOKS" == 1 ]] || return 0
    local start=$SECONDS left metrics ca=()
    [[ "$TLS" == 1 ]] && ca=(--cacert "$WORK/tls/ca.pem")
    while :; do
        metrics="$(curl -s "${ca[@]}" -H "Authorization: Bearer $TOKEN" "$SCHEME://$ADDR/metrics")"
        left="$(awk '/^pep_cloud_claims\{state="(pending|retrying)"\}/ || /^pep_hook_deliveries\{state="(pending|failing)"\}/ {n += $2} END {print n + 0}' <<< "$metrics")"
        [[ "$left" == 0 || $((SECONDS - start)) -ge 300 ]] && break
        sleep 0.2
    done
    echo "   outboxes: $left left to send $((SECONDS - start)) s after the fleet ended"
}

# fleet_run DIR N PREFIX: `pep-fleet` of N gateways against the started server; writes
# DIR/fleet.json, DIR/fleet.out and DIR/fleet.cpu (the fleet's CPU seconds, from the kernel's
# accounting of the finished child). CONCURRENCY [64], FLEET_THREADS [1].
fleet_run() {
    local dir="$1" n="$2" prefix="$3"
    python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"))
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.3f" % (r.ru_utime + r.ru_stime), file=sys.stderr)' "$dir/fleet.out" \
        "$FLEET_BIN" --gateways "$n" --concurrency "${CONCURRENCY:-64}" --threads "${FLEET_THREADS:-1}" \
        --server "$SCHEME://$ADDR" "${FLEET_TLS_ARGS[@]}" --token "$TOKEN" --prefix "$prefix" --json "$dir/fleet.json" 2> "$dir/fleet.cpu" || true
}
