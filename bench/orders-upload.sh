#!/usr/bin/env bash
# The 1,000,000-serial work-order upload (issue #17): a release pep-server on a fresh SQLite file
# (or PostgreSQL, DATABASE=postgres://…), one order, one CSV upload of SERIALS lines with curl;
# prints the upload's wall time, the server's peak RSS (VmHWM) and what the order then counts.
# Targets (issue #17): < 30 s and < 128 MiB. Short: run it once on a quiet machine.
#
# Environment: SERIALS [1000000], DATABASE [sqlite], CARGO_TARGET_DIR [<repo>/target]
set -euo pipefail

SERIALS="${SERIALS:-1000000}"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

PLAN_TOKEN="$(openssl rand -hex 32)"
dir="$WORK/upload"; mkdir -p "$dir"
start_server "$dir" 1
# start_server wrote the config and started the server; restart it with a plan token added.
stop_server
printf '\n[[tokens]]\nname = "planner"\ntoken = "%s"\nroles = ["plan", "read"]\n' "$PLAN_TOKEN" >> "$dir/pep.toml"
"$SERVER_BIN" --config "$dir/pep.toml" > "$dir/server.out" 2> "$dir/server.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do grep -q '^listening on ' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
ADDR="$(sed -n 's/^listening on //p' "$dir/server.out")"; ADDR="${ADDR#*://}"
[[ -n "$ADDR" ]] || { echo "pep-server did not start:"; cat "$dir/server.err"; exit 1; }

echo "== generating $SERIALS serials"
python3 -c 'import sys
n = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    f.write("serial\n")
    for i in range(n):
        f.write("GW-UPLOAD-%07d\n" % i)' "$SERIALS" "$dir/serials.csv"
echo "   $(du -h "$dir/serials.csv" | cut -f1) of CSV"

curl -sS -f -H "Authorization: Bearer $PLAN_TOKEN" -H 'Content-Type: application/json' \
    "http://$ADDR/v3/orders" -d '{"orderId": "WO-BENCH-1"}' > /dev/null
rss0="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
t0="$(now)"
curl -sS -H "Authorization: Bearer $PLAN_TOKEN" -H 'Content-Type: text/csv' \
    --data-binary @"$dir/serials.csv" "http://$ADDR/v3/orders/WO-BENCH-1/serials" > "$dir/answer.json"
t1="$(now)"
hwm="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
expected="$(jget "$dir/answer.json" expected)"
stop_server
printf '== upload of %d serials: %.1f s; server RSS before %d MiB, peak (VmHWM) %d MiB; order expects %s\n' \
    "$SERIALS" "$(echo "$t1 - $t0" | bc -l)" "$((rss0 / 1024))" "$((hwm / 1024))" "$expected"
[[ "$expected" == "$SERIALS" ]] || { echo "the order counts $expected, not $SERIALS:"; cat "$dir/answer.json"; exit 1; }
