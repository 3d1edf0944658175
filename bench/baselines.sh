#!/usr/bin/env bash
# The pep performance run: pep-server + `pep-fleet` end to end, and in the same invocation the
# two ways a factory provisions without pep, per device:
#   (a) the openssl CLI: genpkey (P-256) + req + x509 -req signed by the factory CA, one device at a time;
#   (b) one Python process per gateway doing P-256 keygen + certificate signing with the
#       `cryptography` package (the floor of the old design, which spawned a Python tool per gateway).
# Prints one table with the rates and the ratios. Run from anywhere; needs cargo, openssl, python3.
#
# Environment (defaults in brackets):
#   GATEWAYS [20000]   fleet size           CONCURRENCY [64]   requests in flight
#   RUNS [3]           fleet runs (median)  OPENSSL_N [200]    openssl devices
#   PYTHON_N [100]     python devices       FLOOR [1]          also run the pep-ca floor benchmark
#   VENV [~/.cache/pep-bench-venv]          where the cryptography venv is created (reused)
#   FLEET_THREADS [1]  fleet runtime threads
#   OUT_DIR []         if set, each run's fleet JSON report is copied there (runN.json)
#   DATABASE [sqlite]  `sqlite` (a fresh file per run) or a PostgreSQL admin URL such as
#                      postgres://postgres@127.0.0.1:5432/postgres: each run then gets a fresh
#                      database `pep_bench_<pid>_<run>` on that server, dropped afterwards
#   SERVER_LOG []      RUST_LOG of the server; empty = its default (`info`, the README's command)
#   PAUSE [65]         seconds of rest before each fleet run: the previous run's TIME_WAIT sockets
#                      expire (60 s), and on a shared VM the CPU recovers from the previous load
#   TLS [0]            1: the API over HTTPS (`[tls] cert`/`key` from a throw-away test CA made
#                      with openssl in the work dir; the fleet uses --ca-cert, keeps its
#                      connections alive and resumes TLS sessions); compare with a TLS=0 run
#   WEBHOOKS [0]       1: an event webhook (deployed, failed) to a local receiver
#                      (`pep-server --example webhook_receiver`, verifies every signature); compare with a
#                      WEBHOOKS=0 run (issue #17: the rate with webhooks stays >= 70 %)
#   CLOUD [off]        each | bulk: claim every deployed gateway in the cloud stand-in
#                      (`cloud-standin`, started per run; see bench/lib.sh); compare with a
#                      CLOUD=off run (issue #18: each must keep >= 90 % of the rate)
#   KEY_MODE []        by_tool | by_device: the server's key_mode (empty: the demo config's, by_tool)
#   FLEET_BIN []       another build of pep-fleet (see bench/lib.sh); SERVER_BIN likewise
#   HOOK [0]           1: the pre-provisioning hook on, answered by a local signature-checking
#                      allow-all receiver (issue #17); compare with a HOOK=0 run (target >= 70 %)
#   CARGO_TARGET_DIR [<repo>/target]
set -euo pipefail

GATEWAYS="${GATEWAYS:-20000}"
CONCURRENCY="${CONCURRENCY:-64}"
RUNS="${RUNS:-3}"
OPENSSL_N="${OPENSSL_N:-200}"
PYTHON_N="${PYTHON_N:-100}"
FLOOR="${FLOOR:-1}"
FLEET_THREADS="${FLEET_THREADS:-1}"
PAUSE="${PAUSE:-65}"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pep-bench-venv}"

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

: > "$WORK/rates"; : > "$WORK/p50"; : > "$WORK/p95"; : > "$WORK/p99"; : > "$WORK/max"; : > "$WORK/rss"; : > "$WORK/fail"
: > "$WORK/server_us"; : > "$WORK/fleet_us"
echo "== pep end to end: store $([[ "$DATABASE" == sqlite ]] && echo SQLite || echo "PostgreSQL at ${DATABASE%/*}"), server log ${SERVER_LOG:-default (info)}"
for run in $(seq 1 "$RUNS"); do
    sleep "$PAUSE"
    dir="$WORK/run$run"; mkdir -p "$dir"
    start_server "$dir" "$run"
    server_cpu0="$(cpu_s "$SERVER_PID")"
    fleet_run "$dir" "$GATEWAYS" "bench$run-"
    server_cpu1="$(cpu_s "$SERVER_PID")"
    drain_outboxes
    if [[ "$CLOUD" != off || "$WEBHOOKS" == 1 ]]; then
        echo "   server CPU per gateway with the drain: $(echo "1000000 * ($(cpu_s "$SERVER_PID") - $server_cpu0) / $GATEWAYS" | bc -l | xargs printf '%.0f') µs"
    fi
    rss_kib="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
    stop_server
    echo "1000000 * ($server_cpu1 - $server_cpu0) / $GATEWAYS" | bc -l | xargs printf '%.0f\n' >> "$WORK/server_us"
    echo "1000000 * $(tail -1 "$dir/fleet.cpu") / $GATEWAYS" | bc -l | xargs printf '%.0f\n' >> "$WORK/fleet_us"
    rate="$(jget "$dir/fleet.json" provisions_per_s)"
    echo "$rate" >> "$WORK/rates"
    for q in p50 p95 p99 max; do jget "$dir/fleet.json" "latency.${q}_ms" >> "$WORK/$q"; done
    echo "$((rss_kib / 1024))" >> "$WORK/rss"
    jget "$dir/fleet.json" failed >> "$WORK/fail"
    printf '   run %d: %8.1f provisions/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  server VmHWM %d MiB  CPU per gateway: server %s µs, fleet %s µs  failures %s  (load %s)\n' \
        "$run" "$rate" "$(tail -1 "$WORK/p50")" "$(tail -1 "$WORK/p99")" "$(tail -1 "$WORK/max")" \
        "$((rss_kib / 1024))" "$(tail -1 "$WORK/server_us")" "$(tail -1 "$WORK/fleet_us")" "$(tail -1 "$WORK/fail")" "$(cut -d' ' -f1 /proc/loadavg)"
done
PEP_RATE="$(median < "$WORK/rates")"
if [[ -n "${OUT_DIR:-}" ]]; then
    mkdir -p "$OUT_DIR"
    for run in $(seq 1 "$RUNS"); do cp "$WORK/run$run/fleet.json" "$OUT_DIR/run$run.json"; done
fi
echo "== latency histogram of the last run (successful provisionings)"
python3 - "$WORK/run$RUNS/fleet.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
total = sum(b["count"] for b in d["histogram"]) or 1
lo = 0
for b in d["histogram"]:
    hi = b["le_ms"]
    label = f"{lo}–{hi} ms" if hi is not None else f"> {lo} ms"
    print(f"   {label:>14}: {b['count']:7d} {100 * b['count'] / total:6.2f} %")
    lo = hi
PY

# ---------------------------------------------------------------- (a) openssl CLI
echo "== baseline (a): openssl CLI, $OPENSSL_N devices, one at a time"
od="$WORK/openssl"; mkdir -p "$od"
CA_CERT="$ROOT/fixtures/ca/CA_cert.pem"; CA_KEY="$ROOT/fixtures/ca/CA_private.pem"
t0="$(now)"
for i in $(seq 1 "$OPENSSL_N"); do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$od/key.pem" 2>/dev/null
    openssl req -new -key "$od/key.pem" -subj "/CN=device-$i" -out "$od/csr.pem"
    openssl x509 -req -in "$od/csr.pem" -CA "$CA_CERT" -CAkey "$CA_KEY" -set_serial "0x$(openssl rand -hex 16)" \
        -days 7300 -sha256 -outform DER -out "$od/cert.der" 2>/dev/null
done
t1="$(now)"
OPENSSL_S="$(echo "$t1 - $t0" | bc -l)"
OPENSSL_RATE="$(echo "$OPENSSL_N / $OPENSSL_S" | bc -l)"

# ---------------------------------------------------------------- (b) python per gateway
echo "== baseline (b): one python3 + cryptography process per device, $PYTHON_N devices"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import cryptography' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet cryptography
fi
cat > "$WORK/issue.py" <<'PY'
# One gateway: P-256 key + certificate signed by the factory CA (what the old per-gateway tool did).
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ca_cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
ca_key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), password=None)
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sys.argv[3])]))
    .issuer_name(ca_cert.subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now)
    .not_valid_after(now + datetime.timedelta(days=7300))
    .sign(ca_key, hashes.SHA256())
)
der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
sys.stdout.buffer.write(cert.public_bytes(serialization.Encoding.DER))
PY
"$VENV/bin/python" "$WORK/issue.py" "$CA_CERT" "$CA_KEY" warmup > /dev/null
t0="$(now)"
for i in $(seq 1 "$PYTHON_N"); do
    "$VENV/bin/python" "$WORK/issue.py" "$CA_CERT" "$CA_KEY" "device-$i" > "$WORK/py.der"
done
t1="$(now)"
PYTHON_S="$(echo "$t1 - $t0" | bc -l)"
PYTHON_RATE="$(echo "$PYTHON_N / $PYTHON_S" | bc -l)"

# ---------------------------------------------------------------- pep-ca floor
FLOOR_RATE=""
if [[ "$FLOOR" == 1 ]]; then
    echo "== floor: pep-ca benchmark 'floor ring: P-256 keygen + 1 ECDSA sign' (one thread)"
    floor_out="$(cd "$ROOT" && cargo bench --quiet -p pep-ca --bench ca -- 'floor ring' --warm-up-time 1 --measurement-time 3 2>/dev/null || true)"
    # criterion: "time:   [31.2 µs 31.9 µs 32.7 µs]" -> the middle value
    floor_us="$(echo "$floor_out" | grep -m1 'time:' | sed -E 's/.*\[[^ ]+ [^ ]+ ([0-9.]+) ([µmn]s).*/\1 \2/' | awk '{v=$1; if ($2=="ns") v/=1000; if ($2=="ms") v*=1000; print v}')"
    if [[ -n "$floor_us" ]]; then FLOOR_RATE="$(echo "1000000 / $floor_us" | bc -l)"; fi
fi

# ---------------------------------------------------------------- table
echo
echo "== results ($(date -u +%FT%TZ), load after: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '| %-58s | %14s | %14s |\n' "Way to provision" "per device" "devices/s"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..16})" "$(printf -- '-%.0s' {1..16})"
printf '| %-58s | %11.3f ms | %14.1f |\n' "pep end to end (median of $RUNS × $GATEWAYS, C=$CONCURRENCY)" "$(echo "1000 / $PEP_RATE" | bc -l)" "$PEP_RATE"
printf '| %-58s | %11.3f ms | %14.1f |\n' "(a) openssl CLI genpkey + req + x509 -req ($OPENSSL_N)" "$(echo "1000 * $OPENSSL_S / $OPENSSL_N" | bc -l)" "$OPENSSL_RATE"
printf '| %-58s | %11.3f ms | %14.1f |\n' "(b) python3 + cryptography, one process each ($PYTHON_N)" "$(echo "1000 * $PYTHON_S / $PYTHON_N" | bc -l)" "$PYTHON_RATE"
if [[ -n "$FLOOR_RATE" ]]; then
printf '| %-58s | %11.3f ms | %14.1f |\n' "floor: ring P-256 keygen + sign, one thread (pep-ca bench)" "$(echo "1000 / $FLOOR_RATE" | bc -l)" "$FLOOR_RATE"
fi
echo
printf 'pep runs (provisions/s): %s (median %.1f); p50 ms %s; p99 ms median %s (%s); max ms %s; server VmHWM MiB %s; failures %s\n' \
    "$(paste -sd' ' "$WORK/rates")" "$PEP_RATE" "$(median < "$WORK/p50")" "$(median < "$WORK/p99")" "$(minmax < "$WORK/p99")" \
    "$(median < "$WORK/max")" "$(minmax < "$WORK/rss")" "$(paste -sd' ' "$WORK/fail")"
printf 'CPU per gateway (median): server %s µs, fleet %s µs\n' "$(median < "$WORK/server_us")" "$(median < "$WORK/fleet_us")"
printf 'ratio pep / openssl CLI: %.1f×\n' "$(echo "$PEP_RATE / $OPENSSL_RATE" | bc -l)"
printf 'ratio pep / python per gateway: %.1f×\n' "$(echo "$PEP_RATE / $PYTHON_RATE" | bc -l)"
if [[ -n "$FLOOR_RATE" ]]; then
printf 'ratio pep / floor (one thread): %.1f %%\n' "$(echo "100 * $PEP_RATE / $FLOOR_RATE" | bc -l)"
# Issue #20, target 1: the server's CPU per provisioning against the crypto floor of this run.
printf 'floor ratio: server CPU per provisioning %s µs / floor %.1f µs = %.1f×\n' \
    "$(median < "$WORK/server_us")" "$floor_us" "$(echo "$(median < "$WORK/server_us") / $floor_us" | bc -l)"
fi
