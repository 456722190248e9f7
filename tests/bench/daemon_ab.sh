#!/usr/bin/env bash
# CPU that `stoa-tap run` spends per exchange, this checkout against an
# earlier revision, in the same run (prints figures; not a test).
#
#     REV=e842ace tests/bench/daemon_ab.sh             # wrk-shaped capture, 7 runs each
#     REV=e842ace PCAP=bench-out/api-200mb.pcap tests/bench/daemon_ab.sh   # gencap's API mix
#
# The whole daemon runs (reader, workers, aggregator with contract learning,
# admin server) with `--replay CAPTURE`, so the work per exchange is the live
# sources' without their capture cost, and the figure does not depend on how
# busy the machine is. By default the capture is recorded once (root: netns,
# nginx, wrk, tcpdump) from the traffic of tests/bench/ebpf.sh: wrk GETs
# over 32 keep-alive connections to nginx's pre-built JSON responses, about
# 200 k exchanges. Each run waits until every exchange of the capture is
# observed (or dropped, counted and printed), then reads the process's CPU
# time (utime + stime), divided by the exchanges observed. The old and
# new binaries alternate; printed: median CPU seconds per million exchanges
# of each and new/old.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REV="${REV:?set REV to the revision to compare with}"
RUNS="${RUNS:-7}"
OUT="${BENCH_OUT:-$ROOT/bench-out}"
mkdir -p "$OUT"
PCAP="${PCAP:-$OUT/wrk-keepalive.pcap}"
. "$ROOT/tests/bench/common.sh"
cargo build --release -q -p stoa-tap --bin stoa-tap
if [ ! -s "$PCAP" ]; then
    [ "$(id -u)" = 0 ] || { echo "recording the capture needs root" >&2; exit 1; }
    need_tools wrk nginx tcpdump
    P="sda$$x"
    WORK="$(mktemp -d /tmp/stoa-daemon-ab.XXXXXX)"
    trap 'sh tests/netns/probe_topology.sh down "$P" || true; rm -rf "$WORK"' EXIT
    sh tests/netns/probe_topology.sh up "$P" nooffload
    start_api_nginx "${P}g" "$WORK"
    ip netns exec "${P}g" tcpdump -q -i t0 -s 0 -B 65536 -w "$PCAP.tmp" tcp port 5555 2>"$WORK/tcpdump.err" &
    tcpdump_pid=$!
    sleep 1
    ip netns exec "${P}c" wrk -t1 -c32 -d2s -s tests/bench/mirror_wrk.lua http://10.78.0.2:5555/ >"$WORK/wrk.out"
    sleep 1
    kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" || true
    grep -q "0 packets dropped by kernel" "$WORK/tcpdump.err" || { cat "$WORK/tcpdump.err" >&2; echo "tcpdump dropped packets; record again" >&2; exit 1; }
    mv "$PCAP.tmp" "$PCAP"
fi
old_build "$REV" --bin stoa-tap
cat "$PCAP" >/dev/null   # warm the page cache
exec python3 - "$PCAP" "$OLD_BIN" "$ROOT/target/release/stoa-tap" "$RUNS" "$SHORT" <<'PY'
import json, os, statistics, subprocess, sys, tempfile, time, urllib.request
pcap, old, new, runs, rev = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
port = 19000 + os.getpid() % 1000

def expected(binary):
    out = subprocess.run([binary, "analyze", pcap, "--port", "5555", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["exchanges"]

def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def one(binary, want):
    with tempfile.TemporaryDirectory() as state:
        p = subprocess.Popen([binary, "run", "--replay", pcap, "--port", "5555",
                              "--admin-bind", f"127.0.0.1:{port}", "--state-dir", state],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            seen, lost = 0, 0
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/summary", timeout=2) as r:
                        s = json.load(r)
                    seen, lost = s["exchanges_observed"], s.get("dropped_total", 0)
                except OSError:
                    seen, lost = 0, 0
                if seen + lost >= want:
                    break
                time.sleep(0.02)
            cpu = cpu_of(p.pid)
        finally:
            p.terminate()
            p.wait()
        if seen + lost < want:
            sys.exit(f"{binary}: {seen} of {want} exchanges observed, {lost} dropped")
        if lost:
            print(f"  {binary}: {lost} exchanges dropped (queues full)", flush=True)
        return cpu, seen

want_old, want_new = expected(old), expected(new)
print(f"capture {pcap}: {want_new} exchanges ({want_old} by {rev})")
res = {"old": [], "new": []}
for i in range(runs):
    for k, b, w in (("old", old, want_old), ("new", new, want_new)):
        cpu, seen = one(b, w)
        res[k].append(cpu / seen * 1e6)
    print(f"run {i + 1}: {rev} {res['old'][-1]:.2f}  new {res['new'][-1]:.2f}  CPU s per million exchanges", flush=True)
mo, mn = statistics.median(res["old"]), statistics.median(res["new"])
print(f"median CPU s per million exchanges: {rev} {mo:.2f}, new {mn:.2f}; new/old {mn / mo:.3f}")
PY
