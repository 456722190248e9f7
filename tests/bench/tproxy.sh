#!/bin/bash
# TPROXY relay benchmark (prints figures, asserts nothing).
#
# Same topology as tests/tproxy.rs (tests/bench/tproxy_netns.sh): wrk in the
# client namespace against the gateway namespace, directly (:5556, routed
# through the tap namespace) and through the relay (:5555, TPROXY-diverted,
# spoof_client on, tap events parsed by the HTTP/1 parser). The gateway is a
# fast fixed-response server (tproxy_relay --serve) so that the relay, not the
# server, is what the comparison measures.
#
# usage: sudo tests/bench/tproxy.sh [DURATION_S=10] [BODY_BYTES=1024] [ROUNDS=1]
# ROUNDS > 1 repeats the direct/relay pairs and prints the median ratio and
# added p99 per load (useful when the machine is shared).
# env RELAY_ARGS: extra tproxy_relay options (e.g. "--workers 1", "--stall")
# Needs root, wrk, nft. The 2 cores of the CI machine are shared by wrk, the
# relay, the server and the kernel forwarding path.
set -euo pipefail
DUR=${1:-10}
BODY=${2:-1024}
ROUNDS=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "tproxy.sh needs root" >&2; exit 1; }
command -v wrk >/dev/null || { echo "tproxy.sh needs wrk" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p stoa-tap --example tproxy_relay)
BIN="$ROOT/target/release/examples/tproxy_relay"
P="stb$$"
T="${P}t" G="${P}g" C="${P}c"
WORK=$(mktemp -d)

cleanup() {
    exec 8>&- 9>&- 2>/dev/null || true
    "$HERE/tproxy_netns.sh" down "$P"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$HERE/tproxy_netns.sh" up "$P"
"$BIN" --print-rules --rules-iface t0 | ip netns exec "$T" nft -f -
ip netns exec "$T" ip rule add fwmark 0x1/0x1 lookup 100
ip netns exec "$T" ip route add local 0.0.0.0/0 dev lo table 100

mkfifo "$WORK/srv.in" "$WORK/relay.in"
ip netns exec "$G" "$BIN" --serve '[::]:5555' --serve '[::]:5556' --serve-body "$BODY" \
    < "$WORK/srv.in" > "$WORK/srv.out" 2>&1 &
exec 8>"$WORK/srv.in"
ip netns exec "$T" "$BIN" --spoof --quiet ${RELAY_ARGS:-} < "$WORK/relay.in" > "$WORK/relay.out" 2>"$WORK/relay.err" &
exec 9>"$WORK/relay.in"
for _ in $(seq 50); do
    grep -q ready "$WORK/srv.out" 2>/dev/null && grep -q ready "$WORK/relay.out" 2>/dev/null && break
    sleep 0.1
done

# run NAME PORT THREADS CONNS -> "rps p50_us p99_us"
run() {
    local out
    out=$(ip netns exec "$C" wrk -t"$3" -c"$4" -d"${DUR}s" --latency "http://10.77.2.2:$2/" 2>&1)
    echo "$out" > "$WORK/wrk-$1.txt"
    python3 - "$WORK/wrk-$1.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def us(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
print(f"{rps:.0f} {p50:.0f} {p99:.0f}")
PY
}

# Warm-up (ARP/ND, page cache).
ip netns exec "$C" wrk -t1 -c4 -d1s "http://10.77.2.2:5556/" >/dev/null
ip netns exec "$C" wrk -t1 -c4 -d1s "http://10.77.2.2:5555/" >/dev/null

echo "run: ${DUR}s per measurement, ${BODY} B bodies, ${ROUNDS} round(s)"
# Each round measures direct then relayed back to back, so that a burst of
# load from elsewhere on the machine skews both sides of a ratio alike.
: > "$WORK/rows"
for round in $(seq "$ROUNDS"); do
    for load in "1 1" "2 32"; do
        set -- $load
        d=$(run "direct-c$2" 5556 "$1" "$2")
        r=$(run "relay-c$2" 5555 "$1" "$2")
        echo "$round $2 $1 $d $r" >> "$WORK/rows"
    done
done
python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
fmt = "%-6s %-6s %8s %12s %12s %8s %10s %10s %10s %10s %12s"
print(fmt % ("round", "conns", "threads", "direct_rps", "relay_rps", "ratio",
             "d_p50_us", "r_p50_us", "d_p99_us", "r_p99_us", "added_p99_us"))
per = {}
for rnd, conns, thr, drps, dp50, dp99, rrps, rp50, rp99 in rows:
    ratio = float(rrps) / float(drps)
    added = int(float(rp99) - float(dp99))
    per.setdefault(conns, []).append((ratio, added))
    print(fmt % (rnd, conns, thr, drps, rrps, "%.3f" % ratio, dp50, rp50, dp99, rp99, added))
if len(rows) > 2:
    for conns, v in per.items():
        print("median over %d rounds, %s conn(s): ratio %.3f, added p99 %d us" % (
            len(v), conns, statistics.median(x[0] for x in v),
            statistics.median(x[1] for x in v)))
PY

exec 9>&-
sleep 1
echo
echo "relay stats:"
grep '"event":"stats"' "$WORK/relay.out" | python3 -c "
import json,sys
s=json.loads(sys.stdin.read())
r=s['relay']
print('  connections %d, c2s %d B, s2c %d B, tap events sent %d, dropped %d (%d B), untapped conns %d, exchanges parsed %d' % (
  r['connections_accepted'], r['bytes_client_to_server'], r['bytes_server_to_client'], r['tap_events_sent'],
  r['tap_events_dropped'], r['tap_bytes_dropped'], r['untapped_connections'], s['http']['exchanges']))"
