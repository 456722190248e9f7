#!/usr/bin/env bash
# Kernel cost of the eBPF probe per program run, under wrk load (prints
# figures; not a test).
#
#     tests/bench/ebpf_cost.sh                 # 3 runs of 6 s
#     RUNS=5 DURATION=10 tests/bench/ebpf_cost.sh
#     PROBE_ARGS="--ring-mb 16" tests/bench/ebpf_cost.sh   # probe_capture options
#     PROBE_BIN=/tmp/old/probe_capture RUNS=1 tests/bench/ebpf_cost.sh
#                                       # another build, for alternating runs
#
# Same topology and load as tests/bench/ebpf.sh (nginx on :5555 in the gateway
# namespace, wrk with 32 connections from the client namespace). The release
# `probe_capture` example is attached to the gateway's veth (probe and ring
# reader only); `kernel.bpf_stats_enabled` is switched on for the wrk run only,
# and `bpftool prog show` then gives each program's run count and run time.
# The time includes the helpers the program calls (payload copy, ring buffer).
# On a shared VM the figure moves with the machine's state (seen here: 350 to
# 620 ns for the same build), so compare builds in alternating runs.
# Needs root; installs wrk, nginx and bpftool if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-6}"
[ "$(id -u)" = 0 ] || { echo "ebpf_cost.sh needs root" >&2; exit 1; }
. "$ROOT/tests/bench/common.sh"
need_tools wrk nginx bpftool
bash stoa-tap-ebpf/toolchain.sh >/dev/null
if [ -n "${PROBE_BIN:-}" ]; then
    BIN="$PROBE_BIN"
else
    cargo build --release -q -p stoa-tap --features ebpf --example probe_capture
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/probe_capture"
fi

P="sec$$x"
WORK="$(mktemp -d /tmp/stoa-ebpf-cost.XXXXXX)"
TOPO="$ROOT/tests/netns/probe_topology.sh"
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled=0 || true
    sh "$TOPO" down "$P" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
sh "$TOPO" up "$P"
start_api_nginx "${P}g" "$WORK"

printf '%4s %10s %18s %18s\n' run "req/s" "ingress ns/run" "egress ns/run"
for r in $(seq "$RUNS"); do
    ip netns exec "${P}g" "$BIN" --iface t0 --port 5555 --no-exchanges --no-engine ${PROBE_ARGS:-} \
        > "$WORK/probe.out" 2> "$WORK/probe.err" &
    pid=$!
    wait_ready "$WORK/probe.out" "$WORK/probe.err" || exit 1
    sysctl -qw kernel.bpf_stats_enabled=1
    rps=$(ip netns exec "${P}c" wrk -t1 -c32 -d"${DURATION}s" -s tests/bench/mirror_wrk.lua \
        http://10.78.0.2:5555/ | awk '/Requests\/sec/ {print $2}')
    costs=$(bpftool -j prog show | python3 -c '
import json, sys
cost = {p["name"]: p["run_time_ns"] / p["run_cnt"] for p in json.load(sys.stdin)
        if p.get("name", "").startswith("stoa_tap") and p.get("run_cnt")}
print("%.0f %.0f" % (cost.get("stoa_tap_ingress", 0), cost.get("stoa_tap_egress", 0)))')
    sysctl -qw kernel.bpf_stats_enabled=0
    kill -TERM "$pid"
    wait "$pid" || true
    set -- $costs
    printf '%4s %10.0f %18s %18s\n' "$r" "$rps" "$1" "$2"
done
