#!/usr/bin/env bash
# Contract-learning benchmark: cost of `analyze --out` over `analyze` alone on the
# same capture (best of several runs, one run each side by side), and memory on a
# capture where every request names a new id (GENCAP_UNIQUE_IDS=1, >1M ids).
#
#     tests/bench/contracts.sh            # SIZE_MB=200 realistic, IDS_MB=600 unique ids
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SIZE_MB="${SIZE_MB:-200}"
IDS_MB="${IDS_MB:-600}"
OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
cargo build --release -p stoa-tap --example gencap --bin stoa-tap
[ -s "$OUT/api-${SIZE_MB}mb.pcap" ] || target/release/examples/gencap "$OUT/api-${SIZE_MB}mb.pcap" "$SIZE_MB"
[ -s "$OUT/ids-${IDS_MB}mb.pcap" ] || GENCAP_UNIQUE_IDS=1 target/release/examples/gencap "$OUT/ids-${IDS_MB}mb.pcap" "$IDS_MB"
exec python3 "$ROOT/tests/bench/contracts.py" "$ROOT/target/release/stoa-tap" \
  "$OUT/api-${SIZE_MB}mb.pcap" "$OUT/ids-${IDS_MB}mb.pcap" "$OUT"
