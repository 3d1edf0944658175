#!/usr/bin/env bash
# The cloud claim sender's own cost (issue #18), without a fleet running beside it: queue N
# claims with the cloud unreachable, then send them all with `pep-server cloud sync` against the
# cloud stand-in and print the CPU of both processes per claim. The sender code is the daemon's
# (`cloud::Worker` rounds), so this isolates what one claim costs the server (take, HTTP request,
# settle) and the stand-in. Its commits are not shared with provisioning writes as in the daemon,
# so the writes weigh more here than under a fleet.
#
# Environment (defaults in brackets): CLAIMS [20000] claims to queue and send, MAX_IN_FLIGHT [8]
# `[cloud] max_in_flight`; SERVER_BIN, CARGO_TARGET_DIR as in bench/lib.sh (whose helpers this
# reuses; the stand-in and the server are stopped by its cleanup). Needs cargo, openssl, sqlite3.
set -euo pipefail
CLAIMS="${CLAIMS:-20000}"
MAX_IN_FLIGHT="${MAX_IN_FLIGHT:-8}"
CLOUD=each # lib.sh builds the stand-in too
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

listening() { # FILE: the address after "listening on "
    for _ in $(seq 1 100); do grep -q '^listening on ' "$1" 2>/dev/null && break; sleep 0.1; done
    sed -n 's/^listening on //p' "$1"
}

(umask 077 && echo "ak_bench_$(openssl rand -hex 16)" > "$WORK/cloud.key")
sed -e 's|^listen = .*|listen = "127.0.0.1:0"|' \
    -e "s|^database_url = .*|database_url = \"sqlite://$WORK/pep.sqlite\"|" \
    -e "s|\"fixtures/|\"$ROOT/fixtures/|g" "$DEMO_CONFIG" > "$WORK/pep.toml"
# Port 9 (discard) refuses the connection: every claim is queued and retried with backoff.
printf '\n[cloud]\nmode = "each"\napi_url = "http://127.0.0.1:9"\napi_key_file = "%s"\nmax_in_flight = %s\nbackoff_max_s = 3600\n' \
    "$WORK/cloud.key" "$MAX_IN_FLIGHT" >> "$WORK/pep.toml"

echo "== queueing $CLAIMS claims (the cloud unreachable)"
"$SERVER_BIN" --config "$WORK/pep.toml" > "$WORK/server.out" 2> "$WORK/server.err" &
SERVER_PID=$!
addr="$(listening "$WORK/server.out")"; addr="${addr#*://}"
[[ -n "$addr" ]] || { echo "pep-server did not start:"; cat "$WORK/server.err"; exit 1; }
"$FLEET_BIN" --gateways "$CLAIMS" --concurrency 64 --server "http://$addr" \
    --token "$TOKEN" --prefix claims- --json "$WORK/fleet.json" > /dev/null
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

"$BIN/cloud-standin" --keep-alive --api-key-file "$WORK/cloud.key" > "$WORK/cloud.out" 2> "$WORK/cloud.err" &
CLOUD_PID=$!
cloud="$(listening "$WORK/cloud.out")"
[[ -n "$cloud" ]] || { echo "cloud-standin did not start:"; cat "$WORK/cloud.err"; exit 1; }
sed -i "s|^api_url = .*|api_url = \"http://$cloud\"|" "$WORK/pep.toml"
"$SERVER_BIN" --config "$WORK/pep.toml" cloud retry --state retrying > /dev/null
echo "   queued: $(sqlite3 "$WORK/pep.sqlite" "SELECT COUNT(*) FROM claims WHERE state = 'pending'") pending"

echo "== pep-server cloud sync (max_in_flight $MAX_IN_FLIGHT)"
standin0="$(cpu_s "$CLOUD_PID")"
python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(p.stdout, end="")
if p.returncode != 0: print(p.stderr, end=""); sys.exit(p.returncode)
print("wall %.2f s cpu %.3f s" % (time.monotonic() - t, r.ru_utime + r.ru_stime))' \
    "$SERVER_BIN" --config "$WORK/pep.toml" cloud sync > "$WORK/sync.out"
standin1="$(cpu_s "$CLOUD_PID")"
claimed="$(awk '$1 == "claimed" {print $2}' "$WORK/sync.out")"
sync_cpu="$(awk '$1 == "wall" {print $5}' "$WORK/sync.out")"
echo "   $(grep '^sent ' "$WORK/sync.out"), claimed $claimed, $(grep '^wall ' "$WORK/sync.out")"
[[ "$claimed" == "$CLAIMS" ]] || { echo "not every claim was sent:"; cat "$WORK/sync.out"; exit 1; }
printf '   per claim: sender %.1f µs CPU (the whole cloud sync process), stand-in %.1f µs CPU\n' \
    "$(echo "1000000 * $sync_cpu / $CLAIMS" | bc -l)" "$(echo "1000000 * ($standin1 - $standin0) / $CLAIMS" | bc -l)"
