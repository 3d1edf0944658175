#!/usr/bin/env bash
# What one provisioning leaves behind and costs the disk (issue #20, "scale on paper"): one server
# on a fresh SQLite file (or PostgreSQL database) with the demo config and the durable default,
# one fleet of N gateways, then per gateway: the server's CPU, the bytes it wrote to the disk
# (`/proc/PID/io` write_bytes: the WAL, checkpoints into the database file), the fsyncs it made
# (none counted here: see docs/robustness.md for the strace count), the database's size, and the
# rows of each table. Reuses bench/lib.sh (same environment: DATABASE, SERVER_BIN, KEY_MODE,
# CLOUD, WEBHOOKS, …).
#
#   GATEWAYS [20000]   fleet size       CONCURRENCY [64]
set -euo pipefail
GATEWAYS="${GATEWAYS:-20000}"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

dir="$WORK/run"; mkdir -p "$dir"
start_server "$dir" 1
io_write() { awk '/^write_bytes:/ {print $2}' "/proc/$SERVER_PID/io"; }
cpu0="$(cpu_s "$SERVER_PID")"; written0="$(io_write)"
fleet_run "$dir" "$GATEWAYS" "foot-"
drain_outboxes
cpu1="$(cpu_s "$SERVER_PID")"; written1="$(io_write)"
ok="$(jget "$dir/fleet.json" succeeded)"
rate="$(jget "$dir/fleet.json" provisions_per_s)"
stop_server
echo "== $GATEWAYS gateways ($ok provisioned) at $(printf '%.0f' "$rate")/s"
printf '   per gateway: server CPU %.0f µs, written to disk %.0f bytes\n' \
    "$(echo "1000000 * ($cpu1 - $cpu0) / $GATEWAYS" | bc -l)" "$(echo "($written1 - $written0) / $GATEWAYS" | bc -l)"
if [[ "$DATABASE" == sqlite ]]; then
    db="$dir/pep.sqlite"
    # The server checkpointed at close: the file holds everything.
    printf '   database file: %s bytes, %.0f bytes per gateway\n' "$(stat -c %s "$db")" "$(echo "$(stat -c %s "$db") / $GATEWAYS" | bc -l)"
    echo "   rows per table (per gateway):"
    for t in $(sqlite3 "$db" "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name"); do
        n="$(sqlite3 "$db" "SELECT COUNT(*) FROM \"$t\"")"
        [[ "$n" == 0 ]] || printf '     %-20s %8d  (%.2f)\n' "$t" "$n" "$(echo "$n / $GATEWAYS" | bc -l)"
    done
    # What reads every row grows with the inventory: the audit chain's verification and the
    # enrollment-ID export.
    t0="$(now)"
    "$SERVER_BIN" audit verify --database "sqlite://$db" --ca-cert "$ROOT/fixtures/ca/CA_cert.pem" > "$dir/verify.out"
    printf '   audit verify: %.2f s (%s)\n' "$(echo "$(now) - $t0" | bc -l)" "$(tail -1 "$dir/verify.out")"
    echo "   bytes per table and index (dbstat, per gateway):"
    sqlite3 "$db" "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 14" 2>/dev/null |
        while IFS='|' read -r name bytes; do printf '     %-28s %10d  (%.0f)\n' "$name" "$bytes" "$(echo "$bytes / $GATEWAYS" | bc -l)"; done || true
fi
