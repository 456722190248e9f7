#!/usr/bin/env bash
# Offline engine throughput of this checkout against an earlier revision, in
# the same run: `analyze --json` on the gencap capture (tests/bench/engine.sh),
# the two binaries alternating, CPU time of each run from wait4 (what other
# processes on a shared machine move least), and wall time. Prints both
# medians and the new/old CPU ratio (throughput ratio = old/new).
#
#     REV=232ae51 tests/bench/engine_ab.sh            # 200 MB, 9 runs each
#     REV=v0.1.0 SIZE_MB=100 RUNS=15 EXTRA="--exchanges /dev/null" tests/bench/engine_ab.sh
#
# The old revision is built once into target/ab-<rev> from a detached worktree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REV="${REV:?set REV to the revision to compare with}"
SIZE_MB="${SIZE_MB:-200}"
RUNS="${RUNS:-9}"
OUT="${BENCH_OUT:-$ROOT/bench-out}"
PCAP="$OUT/api-${SIZE_MB}mb.pcap"
mkdir -p "$OUT"
. "$ROOT/tests/bench/common.sh"

cargo build --release -q -p stoa-tap --example gencap --bin stoa-tap
[ -s "$PCAP" ] || { target/release/examples/gencap "$PCAP.tmp" "$SIZE_MB"; mv "$PCAP.tmp" "$PCAP"; }

old_build "$REV"
cat "$PCAP" >/dev/null   # warm the page cache

exec python3 - "$PCAP" "$OLD_BIN" "$ROOT/target/release/stoa-tap" "$RUNS" "$SHORT" ${EXTRA:-} <<'PY'
import os, statistics, subprocess, sys, time
pcap, old, new, runs, rev = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
extra = sys.argv[6:]
res = {"old": [], "new": []}
for i in range(runs):
    order = (("old", old), ("new", new)) if i % 2 == 0 else (("new", new), ("old", old))
    for name, b in order:
        t0 = time.monotonic()
        p = subprocess.Popen([b, "analyze", "--no-progress", "--json", *extra, pcap],
                             stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if status != 0:
            sys.exit("%s exited with status %d" % (b, status))
        res[name].append((ru.ru_utime + ru.ru_stime, time.monotonic() - t0))
size_mb = os.path.getsize(pcap) / 1e6
print("capture %s (%.0f MB), %d runs each, alternating; args: %s" % (pcap, size_mb, runs, " ".join(extra) or "-"))
for name, label in (("old", "old (%s)" % rev), ("new", "new (this checkout)")):
    cpu = statistics.median(c for c, _ in res[name])
    wall = statistics.median(w for _, w in res[name])
    print("%-22s cpu median %.3f s (%.0f MB per cpu-s)  wall median %.3f s" % (label, cpu, size_mb / cpu, wall))
o = statistics.median(c for c, _ in res["old"])
n = statistics.median(c for c, _ in res["new"])
print("throughput new/old (by cpu time): %.3f" % (o / n))
PY
