#!/usr/bin/env bash
# Live mirror capture benchmark (prints figures; not a test).
#
#     tests/bench/mirror.sh                       # 30 s, 32 connections
#     DURATION=10 CONNS=64 tests/bench/mirror.sh
#     RPS=1 tests/bench/mirror.sh                 # steer m1's frames to one CPU
#     LIVE_CAPTURE_BIN=/path/to/older/live_capture tests/bench/mirror.sh
#                                                 # an older build (before/after runs)
#
# Topology from tests/netns/mirror_topology.sh: client ns -- veth -- gateway ns
# (nginx on :5555, pre-built Content-Length JSON responses, 1 worker), tc
# mirred copies both directions of the gateway veth into a monitor ns where
# the release `live_capture` example captures on m1 (BPF "tcp port 5555").
# wrk (1 thread; the machine has 2 cores) drives the gateway from the client ns.
# Prints exchanges seen / requests wrk completed, kernel and queue drop
# counters, and the CPU used by the capture thread and the whole process.
# The full stats line and the tc mirred counters are kept in bench-out/.
# Needs root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-30}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-1}"
[ "$(id -u)" = 0 ] || { echo "mirror.sh needs root (namespaces, tc, packet capture)" >&2; exit 1; }
. "$ROOT/tests/bench/common.sh"
need_tools wrk nginx ethtool

if [ -n "${LIVE_CAPTURE_BIN:-}" ]; then
    BIN="$LIVE_CAPTURE_BIN"
else
    cargo build --release -q -p stoa-tap --example live_capture
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/live_capture"
fi

P="stb$$x"
WORK="$(mktemp -d /tmp/stoa-mirror-bench.XXXXXX)"
TOPO="$ROOT/tests/netns/mirror_topology.sh"
cleanup() {
    sh "$TOPO" down "$P" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
sh "$TOPO" up "$P"

if [ "${RPS:-0}" = 1 ]; then
    # Steer every frame arriving on m1 to one CPU's backlog: mirrored copies of
    # both directions then reach the capture in the order they were mirrored.
    ip netns exec "${P}m" sh -c 'echo 1 > /sys/class/net/m1/queues/rx-0/rps_cpus'
    echo "RPS on m1: all mirrored frames steered to CPU 0"
fi

start_api_nginx "${P}g" "$WORK"
sleep 0.5

ip netns exec "${P}m" "$BIN" --iface m1 --port 5555 --no-exchanges > "$WORK/tap.out" 2> "$WORK/tap.err" &
TAP=$!
wait_ready "$WORK/tap.out" "$WORK/tap.err" || exit 1

echo "wrk: $THREADS thread(s), $CONNS connections, ${DURATION}s against 10.77.0.2:5555 (mirrored)"
ip netns exec "${P}c" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
    -s tests/bench/mirror_wrk.lua http://10.77.0.2:5555/ | tee "$WORK/wrk.out"
sleep 1
kill -TERM "$TAP"
wait "$TAP" || true

OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
grep '"type":"stats"' "$WORK/tap.out" > "$OUT/mirror-stats.json" || true
ip netns exec "${P}g" tc -s filter show dev t0 ingress > "$OUT/mirror-tc.txt" 2>&1 || true
ip netns exec "${P}g" tc -s filter show dev t0 egress >> "$OUT/mirror-tc.txt" 2>&1 || true
M1_RX_DROP=$(ip netns exec "${P}m" cat /sys/class/net/m1/statistics/rx_dropped)
M0_TX_DROP=$(ip netns exec "${P}g" cat /sys/class/net/m0/statistics/tx_dropped)
python3 - "$WORK/wrk.out" "$WORK/tap.out" "$DURATION" "$M1_RX_DROP" "$M0_TX_DROP" <<'PY'
import json, re, sys
wrk = open(sys.argv[1]).read()
sent = int(re.search(r"(\d+) requests in", wrk).group(1))
errs = re.search(r"Socket errors: (.*)", wrk)
stats = [json.loads(l) for l in open(sys.argv[2]) if '"type":"stats"' in l][-1]
dur = float(sys.argv[3])
seen, answered = stats["exchanges"], stats["answered"]
print()
print("== mirror capture benchmark ==")
print(f"requests completed by wrk     {sent}  ({sent/dur:.0f}/s)" + (f"  socket errors: {errs.group(1)}" if errs else ""))
print(f"exchanges seen by stoa-tap    {seen}  (answered {answered}, with gap {stats['with_gap']})")
print(f"seen / sent                   {100.0*answered/sent:.4f} %  (answered exchanges / wrk requests; target >= 99.9 %)")
tcp = stats["engine"]["tcp"]
print(f"reassembly                    gaps {tcp['gaps']}, out-of-order {tcp['out_of_order_segments']}, retransmitted {tcp['retransmitted_segments']}, flows opened {tcp['flows_opened']} (mid-stream {tcp['flows_midstream']}), evicted {tcp['flows_evicted']}")
print(f"frames captured               {stats['frames']}  ({stats['frames']/dur:.0f}/s, {stats['bytes']/dur/1e6:.1f} MB/s)")
print(f"kernel received / dropped     {stats['kernel_received']} / {stats['kernel_dropped']}  (if_dropped {stats['if_dropped']})")
print(f"queue drops (frames)          {stats['frames_dropped_queue']}")
print(f"mirror veth drops             m1 rx_dropped {sys.argv[4]}, m0 tx_dropped {sys.argv[5]}")
w = stats["wall_s"]
print(f"CPU capture thread            {stats['capture_cpu_s']:.2f} s  ({100*stats['capture_cpu_s']/w:.1f} % of one core)")
print(f"CPU whole process             {stats['process_cpu_s']:.2f} s  ({100*stats['process_cpu_s']/w:.1f} % of one core; capture + engine)")
print(f"CPU per million exchanges      {1e6*stats['process_cpu_s']/max(1, seen):.2f} s  (whole process)")
PY
