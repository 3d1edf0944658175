#!/usr/bin/env bash
# The fleet's issuing rate with the CA key in SoftHSM2 (PKCS#11) against the key in memory (issue #15):
# the same demo config, once with the fixture CA's key file, once with a fresh SoftHSM2 token holding a
# key made by `pep-server ca generate-pkcs11`; RUNS runs of each, alternating, a fresh SQLite file per
# run. Needs the softhsm2 package. Prints one line per run and the medians.
# Environment: GATEWAYS [5000], CONCURRENCY [64], RUNS [3], PAUSE [10] (s of rest before each run).
set -euo pipefail
GATEWAYS="${GATEWAYS:-5000}"
CONCURRENCY="${CONCURRENCY:-64}"
RUNS="${RUNS:-3}"
PAUSE="${PAUSE:-10}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
MODULE=/usr/lib/softhsm/libsofthsm2.so
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
[[ -x "$BIN/pep-server" && -x "$BIN/pep-fleet" ]] || cargo build --release -p pep-server -p pep-loadgen

# The token and its CA.
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" > "$WORK/softhsm2.conf"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
export PEP_PKCS11_PIN=bench-1234
softhsm2-util --init-token --free --label pep-bench --so-pin bench-so-5678 --pin "$PEP_PKCS11_PIN" >/dev/null
"$BIN/pep-server" ca generate-pkcs11 --module "$MODULE" --token pep-bench --label ca-key \
    --name "Bench HSM CA" --out "$WORK/hsm" >/dev/null

config() { # $1 = memory|hsm, $2 = database file
    sed -e "s|^database_url = .*|database_url = \"sqlite://$2\"|" \
        -e "s|^listen = .*|listen = \"127.0.0.1:5199\"|" \
        -e "s|\"fixtures/|\"$ROOT/fixtures/|" "$ROOT/fixtures/demo/pep.toml" > "$WORK/pep-$1.toml"
    if [[ "$1" == hsm ]]; then
        python3 - "$WORK/pep-$1.toml" "$WORK/hsm/CA_cert.pem" "$MODULE" <<'PY'
import re, sys
path, cert, module = sys.argv[1:]
text = open(path).read()
ca = f'[ca]\ncert = "{cert}"\nkey = "pkcs11:token=pep-bench;object=ca-key"\npkcs11_module = "{module}"\n'
text = re.sub(r'\[ca\]\n(?:[^\[\n][^\n]*\n|\n)*', ca + '\n', text, count=1)
open(path, 'w').write(text)
PY
    fi
}

run() { # $1 = memory|hsm, $2 = run number
    local db="$WORK/$1-$2.sqlite"
    config "$1" "$db"
    sleep "$PAUSE"
    "$BIN/pep-server" --config "$WORK/pep-$1.toml" > "$WORK/server.out" 2> "$WORK/server-$1-$2.log" &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
    "$BIN/pep-fleet" --gateways "$GATEWAYS" --concurrency "$CONCURRENCY" --server http://127.0.0.1:5199 \
        --token pep-demo-token --json "$WORK/fleet-$1-$2.json" > /dev/null
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    python3 - "$WORK/fleet-$1-$2.json" "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("latency", {})
print(f"{sys.argv[2]:6} run {sys.argv[3]}: {d['provisions_per_s']:8.1f}/s  succeeded {d['succeeded']}  failed {d['failed']}  p50 {lat.get('p50_ms', 0):.1f} ms  p95 {lat.get('p95_ms', 0):.1f} ms")
PY
}

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $GATEWAYS gateways, C = $CONCURRENCY, $RUNS runs each"
for i in $(seq "$RUNS"); do
    run memory "$i"
    run hsm "$i"
done
for kind in memory hsm; do
    printf '%s median: ' "$kind"
    for f in "$WORK"/fleet-"$kind"-*.json; do python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["provisions_per_s"])' "$f"; done \
        | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2] "/s"; else print (a[NR/2]+a[NR/2+1])/2 "/s"}'
done
