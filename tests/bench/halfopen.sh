#!/usr/bin/env bash
# Memory under a flood of half-open connections: 100k connections that each
# buffer a partial request and an out-of-order segment and never finish.
# Prints peak RSS against the configured memory cap for `analyze` and for the
# `run` daemon (file replay), with mimalloc's default page retention and with
# MIMALLOC_PURGE_DELAY=0 (freed pages returned at once, as the systemd unit sets).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
N="${N:-100000}"
OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
PCAP="$OUT/halfopen-${N}.pcap"
cargo build --release -p stoa-tap --bin stoa-tap
[ -s "$PCAP" ] || python3 tests/bench/halfopen.py "$PCAP" "$N"
BIN=target/release/stoa-tap
printf '%-10s %-8s %-12s %12s %12s %10s\n' mode cap_MiB allocator peak_RSS_MiB accounted evicted
for cap in 16 32 64; do
  for purge in default 0; do
    envs=()
    [ "$purge" = 0 ] && envs=(MIMALLOC_PURGE_DELAY=0)
    line=$(env "${envs[@]}" /usr/bin/time -f "RSS %M" "$BIN" analyze --no-progress --json --memory-cap "$cap" "$PCAP" 2>&1)
    rss=$(echo "$line" | awk '/^RSS/ {printf "%.1f", $2/1024}')
    acc=$(echo "$line" | python3 -c 'import sys,json; t=sys.stdin.read(); d=json.loads(t[:t.rindex("}")+1]); print(round(d["counters"]["tcp"]["peak_memory_bytes"]/1048576,1), d["evictions"])')
    printf '%-10s %-8s %-12s %12s %12s %10s\n' analyze "$cap" "purge=$purge" "$rss" ${acc}
  done
done
# The daemon: replay the flood, read its high-water mark once all is processed.
state=$(mktemp -d)
for purge in default 0; do
  envs=()
  [ "$purge" = 0 ] && envs=(MIMALLOC_PURGE_DELAY=0)
  env "${envs[@]}" "$BIN" run --config /dev/null --replay "$PCAP" --state-dir "$state" \
    --admin-bind 127.0.0.1:19399 --set memory_cap_mb=32 --set workers=2 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    sleep 0.5
    running=$(curl -s 127.0.0.1:19399/api/v1/summary | python3 -c 'import sys,json; print(json.load(sys.stdin)["file_sources_running"])' 2>/dev/null || echo 1)
    [ "$running" = 0 ] && break
  done
  sleep 2
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  printf '%-10s %-8s %-12s %12s %12s %10s\n' run 32 "purge=$purge" "$hwm" - -
done
rm -rf "$state"
