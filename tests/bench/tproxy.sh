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
# env REFERENCE=haproxy|none (default haproxy, installed if missing): also measure
# HAProxy in TCP mode as a transparent relay (TPROXY on :5557, `usesrc
# clientip`, 2 threads) in the same rounds, as a reference for what a mature
# relay achieves on the same machine and topology.
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
REFERENCE=${REFERENCE:-haproxy}
. "$ROOT/tests/bench/common.sh"
if [ "$REFERENCE" = haproxy ]; then
    need_tools haproxy || { echo "haproxy not installable: no reference relay" >&2; REFERENCE=none; }
fi
if [ "$REFERENCE" = haproxy ]; then
    ip netns exec "$T" nft add rule inet stoa_tap prerouting iifname t0 meta nfproto ipv4 \
        tcp dport 5557 tproxy ip to :15002 meta mark set 0x1 accept
fi
ip netns exec "$T" ip rule add fwmark 0x1/0x1 lookup 100
ip netns exec "$T" ip route add local 0.0.0.0/0 dev lo table 100

mkfifo "$WORK/srv.in" "$WORK/relay.in"
ip netns exec "$G" "$BIN" --serve '[::]:5555' --serve '[::]:5556' --serve '[::]:5557' --serve-body "$BODY" \
    < "$WORK/srv.in" > "$WORK/srv.out" 2>&1 &
exec 8>"$WORK/srv.in"
ip netns exec "$T" "$BIN" --spoof --quiet ${RELAY_ARGS:-} < "$WORK/relay.in" > "$WORK/relay.out" 2>"$WORK/relay.err" &
RELAY_PID=$!
exec 9>"$WORK/relay.in"
if [ "$REFERENCE" = haproxy ]; then
    cat > "$WORK/haproxy.cfg" <<CFG
global
    maxconn 4000
    nbthread 2
    log stderr local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen relay
    option splice-auto
    bind 0.0.0.0:15002 transparent
    source 0.0.0.0 usesrc clientip
    server gateway 0.0.0.0
CFG
    ip netns exec "$T" haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.out" 2>&1 8>&- 9>&- &
    # Without a listener the TPROXY rule does not match and the packets are
    # simply forwarded: the "reference" would then measure the direct path.
    for _ in $(seq 50); do
        ip netns exec "$T" ss -Htln 'sport = :15002' | grep -q . && break
        sleep 0.1
    done
    ip netns exec "$T" ss -Htln 'sport = :15002' | grep -q . \
        || { echo "haproxy did not start:" >&2; cat "$WORK/haproxy.out" >&2; exit 1; }
fi
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
[ "$REFERENCE" = haproxy ] && ip netns exec "$C" wrk -t1 -c4 -d1s "http://10.77.2.2:5557/" >/dev/null

echo "run: ${DUR}s per measurement, ${BODY} B bodies, ${ROUNDS} round(s)"
# Each round measures direct then relayed back to back, so that a burst of
# load from elsewhere on the machine skews both sides of a ratio alike.
: > "$WORK/rows"
for round in $(seq "$ROUNDS"); do
    for load in "1 1" "2 32"; do
        set -- $load
        d=$(run "direct-c$2" 5556 "$1" "$2")
        r=$(run "relay-c$2" 5555 "$1" "$2")
        h="- - -"
        [ "$REFERENCE" = haproxy ] && h=$(run "haproxy-c$2" 5557 "$1" "$2")
        echo "$round $2 $1 $d $r $h" >> "$WORK/rows"
    done
done
python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
fmt = "%-6s %-6s %8s %12s %12s %8s %10s %10s %10s %10s %12s %12s %10s %14s"
print(fmt % ("round", "conns", "threads", "direct_rps", "relay_rps", "ratio",
             "d_p50_us", "r_p50_us", "d_p99_us", "r_p99_us", "added_p99_us",
             "haproxy_rps", "hap_ratio", "hap_added_p99"))
per = {}
for rnd, conns, thr, drps, dp50, dp99, rrps, rp50, rp99, hrps, hp50, hp99 in rows:
    ratio = float(rrps) / float(drps)
    added = int(float(rp99) - float(dp99))
    if hrps == "-":
        href, hadd = None, None
    else:
        href, hadd = float(hrps) / float(drps), int(float(hp99) - float(dp99))
    per.setdefault(conns, []).append((ratio, added, href, hadd))
    print(fmt % (rnd, conns, thr, drps, rrps, "%.3f" % ratio, dp50, rp50, dp99, rp99, added,
                 hrps, "-" if href is None else "%.3f" % href, "-" if hadd is None else hadd))
for conns, v in per.items():
    line = "median over %d round(s), %s conn(s): ratio %.3f, added p99 %d us" % (
        len(v), conns, statistics.median(x[0] for x in v),
        statistics.median(x[1] for x in v))
    if v[0][2] is not None:
        line += "; haproxy ratio %.3f, added p99 %d us" % (
            statistics.median(x[2] for x in v), statistics.median(x[3] for x in v))
    print(line)
PY

if [ "$REFERENCE" = haproxy ] && ! ip netns exec "$T" ss -Htln 'sport = :15002' | grep -q .; then
    echo "haproxy exited during the run; its figures are void:" >&2
    cat "$WORK/haproxy.out" >&2
fi
exec 9>&-
# The relay prints its stats once its stdin closes and its queue is drained.
for _ in $(seq 100); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
echo
echo "relay stats:"
grep '"event":"stats"' "$WORK/relay.out" | python3 -c "
import json,sys
s=json.loads(sys.stdin.read())
r=s['relay']
print('  connections %d, c2s %d B, s2c %d B, tap events sent %d, dropped %d (%d B), untapped conns %d, exchanges parsed %d' % (
  r['connections_accepted'], r['bytes_client_to_server'], r['bytes_server_to_client'], r['tap_events_sent'],
  r['tap_events_dropped'], r['tap_bytes_dropped'], r['untapped_connections'], s['http']['exchanges']))"
