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
# to the gateway's veth (ingress and egress) in three ways, all in the same
# run:
#   probe    the probe and its ring-buffer reader only (segments counted and
#            dropped): what attaching the probe costs the traffic;
#   full     the probe feeding the TCP/HTTP engine, as `stoa-tap run` does;
#   batch    the same under SCHED_BATCH (`chrt -b 0`): a fair share of CPU,
#            but no preemption of the traffic's processes when a batch of
#            segments wakes the analyzer (CPUSchedulingPolicy=batch in the
#            systemd unit).
# Prints per round and overall: wrk throughput of each against the run
# without the probe (target >= 0.95), exchanges seen / requests wrk
# completed (target >= 99.9 %), ring-buffer drops, and the CPU time of the
# probe's reader process. The stats lines are kept in bench-out/. Needs root
# and a kernel that loads the probe.
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
probe_run() { # NAME POLICY(other|batch) EXTRA-ARGS...
    local name=$1 policy=$2
    shift 2
    ip netns exec "${P}g" chrt "--$policy" 0 "$BIN" --iface t0 --port 5555 --no-exchanges "$@" \
        > "$WORK/probe-$name.out" 2> "$WORK/probe-$name.err" &
    local pid=$!
    for _ in $(seq 100); do grep -q '"ready"' "$WORK/probe-$name.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '"ready"' "$WORK/probe-$name.out" || { cat "$WORK/probe-$name.err" >&2; exit 1; }
    wrk_run "$name"
    sleep 1
    cpu_s "$pid" > "$WORK/probe-$name.cpu"
    kill -TERM "$pid"
    wait "$pid" || true
}

for r in $(seq "$ROUNDS"); do
    wrk_run "off-$r"
    probe_run "probe-$r" other --no-engine
    probe_run "full-$r" other
    probe_run "batch-$r" batch
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
def probe(name):
    stats = [json.loads(l) for l in open(f"{work}/probe-{name}.out") if '"type":"stats"' in l][-1]
    cpu = float(open(f"{work}/probe-{name}.cpu").read())
    return stats, cpu
kinds = [("probe", "probe only"), ("full", "full"), ("batch", "full batch")]
tot = {k: 0 for k, _ in kinds}
tot_off = 0
seen = {"full": 0, "batch": 0}
drops = {k: 0 for k, _ in kinds}
print()
print("== eBPF probe benchmark ==")
print(f"{'round':>5} {'variant':>11} {'req/s':>9} {'ratio':>7} {'seen/sent':>11} {'ring drops':>10} {'gaps':>6} {'reader CPU':>11}")
for r in range(1, rounds + 1):
    off, e = wrk(f"off-{r}")
    tot_off += off
    print(f"{r:>5} {'no probe':>11} {off/dur:>9.0f}" + (f"  wrk errors: {e}" if e else ""))
    for k, label in kinds:
        n, e = wrk(f"{k}-{r}")
        stats, cpu = probe(f"{k}-{r}")
        kern = stats["probe"]["kernel"]
        tot[k] += n
        drops[k] += kern["ring_full_records"]
        line = f"{'':>5} {label:>11} {n/dur:>9.0f} {n/off:>7.3f} "
        if k == "probe":
            line += f"{'-':>11} "
        else:
            seen[k] += stats["answered"]
            line += f"{100*stats['answered']/n:>10.4f}% "
        line += f"{kern['ring_full_records']:>10} {stats['engine']['tcp']['gaps']:>6} {cpu:>9.2f} s"
        print(line + (f"  wrk errors: {e}" if e else ""))
print()
print(f"overall throughput with / without the probe (target >= 0.95):")
for k, label in kinds:
    print(f"  {label:>11}: {tot[k]/tot_off:.3f}  (ring-buffer drops {drops[k]})")
for k in ("full", "batch"):
    print(f"exchanges seen / sent, {dict(kinds)[k]}: {100*seen[k]/tot[k]:.4f} % (target >= 99.9 %)")
stats, _ = probe(f"full-{rounds}")
k = stats["probe"]["kernel"]
print(f"last full run probe counters: packets {k['packets']}, segments {k['segments']}, records {k['records']}, "
      f"payload {k['payload_bytes']/1e6:.1f} MB, super-packets {k['multi_chunk_segments']}, "
      f"queue drops {stats['segments_dropped_queue']}, reassembly gaps {stats['engine']['tcp']['gaps']}")
PY
