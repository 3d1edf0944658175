#!/usr/bin/env bash
# The documented chaos run of docs/robustness.md: the chaos test of pep-server
# (pep-server/tests/robust_chaos.rs) at full size, on a release build: GATEWAYS simulated gateways
# through the fleet library `pep-loadgen` (20% faulty: close without reply, corrupted hash, stall
# past the read timeout, wire status 9, ReturnStatus 17, refused connection), the server killed with SIGKILL
# KILLS times at random moments and restarted from the same config, every failed gateway retried
# without faults; then every guarantee is checked against the SQLite database and /metrics.
#
#   bench/chaos.sh                      # 20,000 gateways, 3 kills, 32 in flight
#   GATEWAYS=2000 KILLS=1 bench/chaos.sh
#
# Environment: GATEWAYS [20000], KILLS [3], CONCURRENCY [32], SEED [random], OUT [chaos.log],
# CARGO_TARGET_DIR as usual. Exit status 0 when every guarantee held.
set -euo pipefail
cd "$(dirname "$0")/.."

export PEP_CHAOS_GATEWAYS="${GATEWAYS:-20000}"
export PEP_CHAOS_KILLS="${KILLS:-3}"
export PEP_CHAOS_CONCURRENCY="${CONCURRENCY:-32}"
if [ -n "${SEED:-}" ]; then export PEP_CHAOS_SEED="$SEED"; fi
OUT="${OUT:-chaos.log}"

cargo test --release --locked -p pep-server --test suite -- robust_chaos:: --nocapture --test-threads 1 2>&1 | tee "$OUT"
