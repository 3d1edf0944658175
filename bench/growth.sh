#!/usr/bin/env bash
# How the cost per gateway grows with the inventory: one server, one database, fleet batches run
# back to back (each with its own serial prefix), so batch k starts with every row of the batches
# before it. Prints a table: rows before, rate, p50/p99, CPU per gateway of server and fleet,
# TIME_WAIT sockets after, and the time of a CSV export of the whole inventory at the end.
#
# Environment (defaults in brackets):
#   BATCHES ["1000 5000 5000 5000 5000"]   batch sizes, in order
#   CONCURRENCY [64]  FLEET_THREADS [1]  DATABASE [sqlite]  SERVER_LOG []  CARGO_TARGET_DIR
set -euo pipefail

BATCHES="${BATCHES:-1000 5000 5000 5000 5000}"

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

dir="$WORK/growth"; mkdir -p "$dir"
start_server "$dir" growth
rows=0
echo
echo "| Batch | Rows before | Rate (/s) | p50 / p99 (ms) | Server CPU per gateway | Fleet CPU per gateway | TIME_WAIT after | Failures |"
echo "|---|---|---|---|---|---|---|---|"
k=0
for n in $BATCHES; do
    k=$((k + 1))
    server_cpu0="$(cpu_s "$SERVER_PID")"
    fleet_run "$dir" "$n" "growth$k-"
    server_cpu1="$(cpu_s "$SERVER_PID")"
    server_us="$(echo "1000000 * ($server_cpu1 - $server_cpu0) / $n" | bc -l | xargs printf '%.0f')"
    fleet_us="$(echo "1000000 * $(tail -1 "$dir/fleet.cpu") / $n" | bc -l | xargs printf '%.0f')"
    tw="$(ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l)"
    printf '| %s | %s | %.0f | %.1f / %.1f | %s µs | %s µs | %s | %s |\n' "$n" "$rows" \
        "$(jget "$dir/fleet.json" provisions_per_s)" "$(jget "$dir/fleet.json" latency.p50_ms)" \
        "$(jget "$dir/fleet.json" latency.p99_ms)" "$server_us" "$fleet_us" "$tw" "$(jget "$dir/fleet.json" failed)"
    rows=$((rows + n))
done
t0="$(now)"
lines="$(curl -sf -H "Authorization: Bearer $TOKEN" "http://$ADDR/v3/enrollment-ids.csv" | wc -l)"
t1="$(now)"
printf '\nCSV export of the whole inventory: %s lines in %.2f s\n' "$lines" "$(echo "$t1 - $t0" | bc -l)"
stop_server
