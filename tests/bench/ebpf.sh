#!/usr/bin/env bash
# eBPF probe benchmark (prints figures; not a test).
#
#     tests/bench/ebpf.sh                          # 2 rounds of 20 s, 32 connections
#     DURATION=30 ROUNDS=3 CONNS=64 tests/bench/ebpf.sh
#
# Topology from tests/netns/probe_topology.sh: client ns -- veth -- gateway ns
# (nginx on :5555 with pre-built responses, 1 worker; offloads on, as on a
# VM's interface). wrk (1 thread; the machine has 2 cores) drives the gateway
# from the client ns at the highest rate it reaches. Each round runs wrk
# without the probe, then with the release `probe_capture` example attached
# to the gateway's veth (ingress and egress) feeding the HTTP/1 engine, so
# both sides are measured in the same run. Prints, per round and overall:
# wrk throughput without / with the probe and their ratio (target >= 0.95),
# exchanges seen / requests wrk completed (target >= 99.9 %), and ring-buffer
# drops, plus the CPU time of the probe's reader process. The stats lines are
# kept in bench-out/. Needs root and a kernel that loads the probe.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-20}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-1}"
[ "$(id -u)" = 0 ] || { echo "ebpf.sh needs root (namespaces, loading the probe)" >&2; exit 1; }
for tool in wrk nginx; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        pkg=$tool; [ "$tool" = nginx ] && pkg=nginx-light
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null; }
    fi
done
bash stoa-tap-ebpf/toolchain.sh >/dev/null
cargo build --release -q -p stoa-tap --features ebpf --example probe_capture
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/probe_capture"

P="seb$$x"
WORK="$(mktemp -d /tmp/stoa-ebpf-bench.XXXXXX)"
TOPO="$ROOT/tests/netns/probe_topology.sh"
cleanup() {
    sh "$TOPO" down "$P" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
sh "$TOPO" up "$P"

sed "s#@DIR@#$WORK#g" tests/bench/mirror_nginx.conf.in > "$WORK/nginx.conf"
ip netns exec "${P}g" nginx -c "$WORK/nginx.conf" -p "$WORK" &
disown $!
for _ in $(seq 50); do
    ip netns exec "${P}g" bash -c 'exec 3<>/dev/tcp/127.0.0.1/5555' 2>/dev/null && break
    sleep 0.1
done
ip netns exec "${P}c" wrk -t1 -c4 -d2s http://10.78.0.2:5555/api/v1/health >/dev/null

wrk_run() { # NAME
    ip netns exec "${P}c" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
        -s tests/bench/mirror_wrk.lua http://10.78.0.2:5555/ > "$WORK/wrk-$1.out"
}
cpu_s() { # PID -> utime+stime in seconds
    awk '{print ($14 + $15) / 100}' "/proc/$1/stat"
}

echo "wrk: $THREADS thread(s), $CONNS connections, ${DURATION}s per run, $ROUNDS rounds, against 10.78.0.2:5555"
for r in $(seq "$ROUNDS"); do
    wrk_run "off-$r"
    ip netns exec "${P}g" "$BIN" --iface t0 --port 5555 --no-exchanges \
        > "$WORK/probe-$r.out" 2> "$WORK/probe-$r.err" &
    PROBE=$!
    for _ in $(seq 100); do grep -q '"ready"' "$WORK/probe-$r.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '"ready"' "$WORK/probe-$r.out" || { cat "$WORK/probe-$r.err" >&2; exit 1; }
    wrk_run "on-$r"
    sleep 1
    cpu_s "$PROBE" > "$WORK/probe-$r.cpu"
    kill -TERM "$PROBE"
    wait "$PROBE" || true
done

OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
cat "$WORK"/probe-*.out | grep '"type":"stats"' > "$OUT/ebpf-stats.json" || true
python3 - "$WORK" "$ROUNDS" "$DURATION" <<'PY'
import json, re, sys
work, rounds, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def wrk(name):
    t = open(f"{work}/wrk-{name}.out").read()
    n = int(re.search(r"(\d+) requests in", t).group(1))
    errs = re.search(r"Socket errors: (.*)", t)
    return n, (errs.group(1) if errs else "")
tot_off = tot_on = tot_seen = tot_drop = 0
print()
print("== eBPF probe benchmark ==")
print(f"{'round':>5} {'off req/s':>10} {'on req/s':>10} {'ratio':>7} {'seen/sent':>10} {'ring drops':>10} {'gaps':>6} {'probe CPU':>10}")
for r in range(1, rounds + 1):
    off, e1 = wrk(f"off-{r}")
    on, e2 = wrk(f"on-{r}")
    stats = [json.loads(l) for l in open(f"{work}/probe-{r}.out") if '"type":"stats"' in l][-1]
    k = stats["probe"]["kernel"]
    cpu = float(open(f"{work}/probe-{r}.cpu").read())
    seen = stats["answered"]
    tot_off += off; tot_on += on; tot_seen += seen; tot_drop += k["ring_full_records"]
    print(f"{r:>5} {off/dur:>10.0f} {on/dur:>10.0f} {on/off:>7.3f} {100*seen/on:>9.4f}% {k['ring_full_records']:>10} {stats['with_gap']:>6} {cpu:>8.2f} s" + (f"  wrk errors: {e1} {e2}" if e1 or e2 else ""))
    last = stats
print(f"overall: throughput with / without the probe {tot_on/tot_off:.3f} (target >= 0.95); "
      f"exchanges seen / sent {100*tot_seen/tot_on:.4f} % (target >= 99.9 %); ring-buffer drops {tot_drop}")
k = last["probe"]["kernel"]
print(f"last round probe counters: packets {k['packets']}, segments {k['segments']}, records {k['records']}, "
      f"payload {k['payload_bytes']/1e6:.1f} MB, super-packets {k['multi_chunk_segments']}, "
      f"queue drops {last['segments_dropped_queue']}, reassembly gaps {last['engine']['tcp']['gaps']}")
PY
