#!/usr/bin/env bash
# eBPF probe benchmark (prints figures; not a test).
#
#     tests/bench/ebpf.sh                          # 2 rounds of 20 s, 32 connections
#     DURATION=30 ROUNDS=3 CONNS=64 tests/bench/ebpf.sh
#     VARIANTS="probe tcpdump" ROUNDS=16 DURATION=4 tests/bench/ebpf.sh   # the probe's cost, tightly
#     VARIANTS="daemon daemon1" tests/bench/ebpf.sh   # a subset, in this order
#     OLD_STOA_BIN=/path/to/older/stoa-tap VARIANTS="daemon0 daemon daemonb" tests/bench/ebpf.sh
#                                                  # before/after in one run (daemon0 = the older build)
#     PERF_OUT=target/perf VARIANTS=daemon ROUNDS=1 tests/bench/ebpf.sh   # profile `run` (perf record -g)
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
# and two references on the same interface, in the same rounds:
#   tcpdump  `tcpdump -w /dev/null` with the same port filter: the classic
#            libpcap tap, capture only (compare with "probe only");
#   pcap     the `live_capture` example: libpcap capture feeding the same
#            engine (compare with "full").
# Each tapped run is compared with the mean of the untapped runs just before
# and just after it.
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
VARIANTS="${VARIANTS:-probe full batch daemon tcpdump pcap}"
[ "$(id -u)" = 0 ] || { echo "ebpf.sh needs root (namespaces, loading the probe)" >&2; exit 1; }
. "$ROOT/tests/bench/common.sh"
need_tools wrk nginx tcpdump
bash stoa-tap-ebpf/toolchain.sh >/dev/null
cargo build --release -q -p stoa-tap --features ebpf --bin stoa-tap --example probe_capture --example live_capture
STOA_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stoa-tap"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/probe_capture"
PCAP_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/live_capture"

P="seb$$x"
WORK="$(mktemp -d /tmp/stoa-ebpf-bench.XXXXXX)"
TOPO="$ROOT/tests/netns/probe_topology.sh"
cleanup() {
    sh "$TOPO" down "$P" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
sh "$TOPO" up "$P"

start_api_nginx "${P}g" "$WORK"
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
    wait_ready "$WORK/probe-$name.out" "$WORK/probe-$name.err" || exit 1
    wrk_run "$name"
    sleep 1
    cpu_s "$pid" > "$WORK/probe-$name.cpu"
    kill -TERM "$pid"
    wait "$pid" || true
}

ref_run() { # NAME CMD... : a reference tap in the gateway namespace during one wrk run
    local name=$1
    shift
    ip netns exec "${P}g" "$@" > "$WORK/ref-$name.out" 2> "$WORK/ref-$name.err" &
    local pid=$!
    sleep 1
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/ref-$name.err" >&2; exit 1; }
    wrk_run "$name"
    sleep 1
    cpu_s "$pid" > "$WORK/ref-$name.cpu" 2>/dev/null || echo 0 > "$WORK/ref-$name.cpu"
    kill -TERM "$pid"
    wait "$pid" || true
}

daemon_run() { # NAME [ARGS]: `stoa-tap run --ebpf` (workers, contracts) during one wrk run
    local name=$1 api=http://127.0.0.1:9191 bin=${DAEMON_BIN:-$STOA_BIN} policy=${DAEMON_POLICY:-other}
    shift
    ip netns exec "${P}g" chrt "--$policy" 0 "$bin" run --ebpf t0 --port 5555 --admin-bind 127.0.0.1:9191 \
        --state-dir "$WORK/state-$name" "$@" > "$WORK/daemon-$name.out" 2> "$WORK/daemon-$name.err" &
    local pid=$!
    for _ in $(seq 100); do
        ip netns exec "${P}g" curl -sf "$api/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip netns exec "${P}g" curl -sf "$api/readyz" >/dev/null || { cat "$WORK/daemon-$name.err" >&2; exit 1; }
    local before
    before=$(ip netns exec "${P}g" curl -sf "$api/api/v1/summary")
    # PERF_OUT=DIR: a call-graph profile of the daemon during the wrk run.
    local perf_pid=
    if [ -n "${PERF_OUT:-}" ]; then
        mkdir -p "$PERF_OUT"
        perf record -q -F 499 --call-graph dwarf,16384 -p "$pid" -o "$PERF_OUT/$name.data" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    wrk_run "$name"
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    # Let the workers and the aggregator catch up before reading the counts.
    sleep 2
    echo "$before" > "$WORK/daemon-$name.before"
    ip netns exec "${P}g" curl -sf "$api/api/v1/summary" > "$WORK/daemon-$name.summary"
    ip netns exec "${P}g" curl -sf "$api/metrics" > "$WORK/daemon-$name.metrics"
    cpu_s "$pid" > "$WORK/daemon-$name.cpu"
    kill -TERM "$pid"
    wait "$pid" || true
}

# Every tapped run sits between two untapped ones: off-R-0, V1, off-R-1,
# V2, off-R-2, ... Its baseline is the mean of those two neighbours, so
# that the machine's drift over a round (seen here: +-12 % between the start
# and the end of one) weighs on both sides of each ratio alike.
run_variant() { # VARIANT ROUND
    case $1 in
        probe) probe_run "probe-$2" other --no-engine ;;
        full) probe_run "full-$2" other ;;
        batch) probe_run "batch-$2" batch ;;
        daemon) daemon_run "daemon-$2" ;;
        daemon1) daemon_run "daemon1-$2" --set workers=1 ;;
        daemonb) DAEMON_POLICY=batch daemon_run "daemonb-$2" ;;
        daemon0) DAEMON_BIN="${OLD_STOA_BIN:?daemon0 needs OLD_STOA_BIN}" daemon_run "daemon0-$2" ;;
        tcpdump) ref_run "tcpdump-$2" tcpdump -i t0 -s 0 -B 65536 -n -w /dev/null tcp port 5555 ;;
        pcap) ref_run "pcap-$2" "$PCAP_BIN" --iface t0 --port 5555 --no-exchanges ;;
        *) echo "unknown variant $1" >&2; exit 2 ;;
    esac
}
for r in $(seq "$ROUNDS"); do
    wrk_run "off-$r-0"
    i=0
    for v in $VARIANTS; do
        run_variant "$v" "$r"
        i=$((i + 1))
        wrk_run "off-$r-$i"
    done
done

OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
cat "$WORK"/probe-*.out | grep '"type":"stats"' > "$OUT/ebpf-stats.json" || true
python3 - "$WORK" "$ROUNDS" "$DURATION" "$VARIANTS" <<'PY'
import json, random, re, statistics, sys
work, rounds, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
chosen = sys.argv[4].split()
def wrk(name):
    t = open(f"{work}/wrk-{name}.out").read()
    n = int(re.search(r"(\d+) requests in", t).group(1))
    errs = re.search(r"Socket errors: (.*)", t)
    return n, (errs.group(1) if errs else "")
def stats_of(path):
    return [json.loads(l) for l in open(path) if '"type":"stats"' in l][-1]
def cpu_of(path):
    return float(open(path).read())
# variant -> label in the table
labels = {"probe": "probe only", "full": "full", "batch": "full batch", "daemon": "run --ebpf",
          "daemon1": "run 1 worker", "daemonb": "run SCHED_BATCH", "daemon0": "run (older)", "tcpdump": "tcpdump", "pcap": "pcap full"}
kinds = [(k, labels[k]) for k in chosen]
ratios = {k: [] for k, _ in kinds}
tot = {k: 0 for k, _ in kinds}
tot_off = {k: 0 for k, _ in kinds}
DAEMONS = ("daemon", "daemon1", "daemonb", "daemon0")
seen = {k: 0 for k in chosen if k in ("full", "batch", "pcap") + DAEMONS}
def metric(text, name):
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))
drops = {k: 0 for k, _ in kinds}
cpus = {k: 0.0 for k, _ in kinds}
print()
print("== eBPF probe benchmark ==")
print("baseline of each run: mean of the untapped runs just before and after it")
print(f"{'round':>5} {'variant':>11} {'req/s':>9} {'ratio':>7} {'seen/sent':>11} {'drops':>8} {'gaps':>6} {'tap CPU':>9}")
for r in range(1, rounds + 1):
    offs = [wrk(f"off-{r}-{i}") for i in range(len(kinds) + 1)]
    print(f"{r:>5} {'no tap':>11} " + " ".join(f"{n/dur:.0f}" for n, _ in offs)
          + "".join(f"  wrk errors: {e}" for _, e in offs if e))
    for i, (k, label) in enumerate(kinds):
        off = (offs[i][0] + offs[i + 1][0]) / 2
        tot_off[k] += off
        n, e = wrk(f"{k}-{r}")
        tot[k] += n
        ratios[k].append(n / off)
        line = f"{'':>5} {label:>11} {n/dur:>9.0f} {n/off:>7.3f} "
        if k in ("probe", "full", "batch"):
            st = stats_of(f"{work}/probe-{k}-{r}.out")
            cpu = cpu_of(f"{work}/probe-{k}-{r}.cpu")
            d = st["probe"]["kernel"]["ring_full_records"]
            gaps = st["engine"]["tcp"]["gaps"]
        elif k in DAEMONS:
            before = json.load(open(f"{work}/daemon-{k}-{r}.before"))["exchanges_observed"]
            after = json.load(open(f"{work}/daemon-{k}-{r}.summary"))["exchanges_observed"]
            st = {"answered": after - before}
            cpu = cpu_of(f"{work}/daemon-{k}-{r}.cpu")
            m = open(f"{work}/daemon-{k}-{r}.metrics").read()
            d = int(metric(m, "stoa_tap_ebpf_probe_ring_full_records_total"))
            gaps = int(metric(m, "stoa_tap_tcp_gaps_total"))
        elif k == "pcap":
            st = stats_of(f"{work}/ref-{k}-{r}.out")
            cpu = cpu_of(f"{work}/ref-{k}-{r}.cpu")
            d = st["kernel_dropped"] + st["frames_dropped_queue"]
            gaps = st["engine"]["tcp"]["gaps"]
        else:
            st, gaps = None, "-"
            cpu = cpu_of(f"{work}/ref-{k}-{r}.cpu")
            m = re.search(r"(\d+) packets dropped by kernel", open(f"{work}/ref-{k}-{r}.err").read())
            d = int(m.group(1)) if m else 0
        drops[k] += d
        cpus[k] += cpu
        if k in seen:
            seen[k] += st["answered"]
            line += f"{100*st['answered']/n:>10.4f}% "
        else:
            line += f"{'-':>11} "
        line += f"{d:>8} {gaps:>6} {cpu:>7.2f} s"
        print(line + (f"  wrk errors: {e}" if e else ""))
print()
def median_ci(xs, n=4000, seed=5555):
    # Percentile bootstrap of the median: how far the rounds' noise leaves it.
    if len(xs) < 4:
        return None
    rng = random.Random(seed)
    ms = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return ms[int(0.025 * n)], ms[int(0.975 * n) - 1]
print("throughput with / without the tap (target >= 0.95): overall, median of the rounds,")
print("and a 95 % bootstrap interval of that median (4 rounds or more)")
for k, label in kinds:
    ci = median_ci(ratios[k])
    ci_text = f"  95 % CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else ""
    print(f"  {label:>11}: {tot[k]/tot_off[k]:.3f}  median {statistics.median(ratios[k]):.3f}{ci_text}  (drops {drops[k]})")
for k in seen:
    print(f"exchanges seen / sent, {dict(kinds)[k]}: {100*seen[k]/tot[k]:.4f} % (target >= 99.9 %)")
for k in seen:
    if k in DAEMONS and seen[k]:
        print(f"CPU s per million exchanges, {dict(kinds)[k]}: {cpus[k] / seen[k] * 1e6:.2f}")
if "full" not in chosen:
    sys.exit(0)
st = stats_of(f"{work}/probe-full-{rounds}.out")
k = st["probe"]["kernel"]
print(f"last full run probe counters: packets {k['packets']}, segments {k['segments']}, records {k['records']}, "
      f"payload {k['payload_bytes']/1e6:.1f} MB, super-packets {k['multi_chunk_segments']}, "
      f"queue drops {st['segments_dropped_queue']}, reassembly gaps {st['engine']['tcp']['gaps']}")
PY
