#!/usr/bin/env bash
# Engine benchmark: stoa-tap analyze vs tshark on a >= 200 MB synthetic capture.
#
#     tests/bench/engine.sh                 # both tools
#     SKIP_STOA=1 tests/bench/engine.sh     # tshark half only
#     SKIP_TSHARK=1 tests/bench/engine.sh   # stoa-tap half only
#     SIZE_MB=400 tests/bench/engine.sh     # bigger capture (default 200)
#
# Builds release, generates bench-out/api-<SIZE_MB>mb.pcap with the gencap example
# (deterministic; reused if present), warms the page cache, then runs
#   target/release/stoa-tap analyze --json FILE
#   tshark -r FILE -d tcp.port==5555,http -T fields -e http.request.method \
#          -e http.request.uri -e http.response.code
# and prints wall time, MB/s, packets/s, exchanges/s and peak RSS for each, the
# throughput ratio, and whether the exchange counts are identical (tshark final
# responses vs stoa-tap exchanges with a response). Exits non-zero if they differ.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SIZE_MB="${SIZE_MB:-200}"
OUT="${BENCH_OUT:-$ROOT/bench-out}"
PCAP="$OUT/api-${SIZE_MB}mb.pcap"
mkdir -p "$OUT"

cargo build --release -p stoa-tap --example gencap --bin stoa-tap

if [ ! -s "$PCAP" ]; then
    target/release/examples/gencap "$PCAP.tmp" "$SIZE_MB"
    mv "$PCAP.tmp" "$PCAP"
fi
cat "$PCAP" >/dev/null   # warm the page cache

ARGS=()
[ -n "${SKIP_STOA:-}" ] && ARGS+=(--skip-stoa)
[ -n "${SKIP_TSHARK:-}" ] && ARGS+=(--skip-tshark)
exec python3 "$ROOT/tests/bench/measure.py" "$PCAP" "$ROOT/target/release/stoa-tap" "${ARGS[@]}"
