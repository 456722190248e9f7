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
# Each round measures, at 1 connection (1 wrk thread) and at 32 connections
# (2 wrk threads), back to back: direct, then stoa-tap, HAProxy (and the
# COMPARE_BIN relay when set), the relays in reverse order every other
# round, so that a burst of load from elsewhere on the machine skews every
# side of a ratio alike and no relay always runs in the same position.
# Printed: one row per measurement (wrk requests/s, ratio to the direct run
# of the same round, p50/p99, p99 added to direct, and the relay process's
# CPU time per request including its analyzer thread), then the median per
# load and variant, and stoa-tap's throughput over HAProxy's round by round.
# env RELAY_ARGS: extra tproxy_relay options (e.g. "--workers 1", "--stall")
# env REFERENCE=haproxy|none (default haproxy, installed if missing): also measure
# HAProxy in TCP mode as a transparent relay (TPROXY on :5557, `usesrc
# clientip`, 2 threads, splice-auto) in the same rounds, as a reference for
# what a mature relay achieves on the same machine and topology.
# env COMPARE_BIN=PATH: another tproxy_relay binary (e.g. one built from an
# earlier commit) measured in the same rounds as variant "compare" (TPROXY on
# :5558 to :15003), with COMPARE_ARGS as its extra options. A/B comparisons
# of relay changes then see the same machine load.
# Needs root, wrk, nft. The 2 cores of the CI machine are shared by wrk, the
# relay, the server and the kernel forwarding path.
set -euo pipefail
DUR=${1:-10}
BODY=${2:-1024}
ROUNDS=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "tproxy.sh needs root" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p stoa-tap --example tproxy_relay)
BIN="$ROOT/target/release/examples/tproxy_relay"
P="stb$$"
T="${P}t" G="${P}g" C="${P}c"
WORK=$(mktemp -d)

cleanup() {
    exec 7>&- 8>&- 9>&- 2>/dev/null || true
    "$HERE/tproxy_netns.sh" down "$P"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$HERE/tproxy_netns.sh" up "$P"
"$BIN" --print-rules --rules-iface t0 | ip netns exec "$T" nft -f -
REFERENCE=${REFERENCE:-haproxy}
COMPARE_BIN=${COMPARE_BIN:-}
. "$ROOT/tests/bench/common.sh"
command -v wrk >/dev/null || need_tools wrk
if [ "$REFERENCE" = haproxy ]; then
    need_tools haproxy || { echo "haproxy not installable: no reference relay" >&2; REFERENCE=none; }
fi
if [ "$REFERENCE" = haproxy ]; then
    ip netns exec "$T" nft add rule inet stoa_tap prerouting iifname t0 meta nfproto ipv4 \
        tcp dport 5557 tproxy ip to :15002 meta mark set 0x1 accept
fi
if [ -n "$COMPARE_BIN" ]; then
    ip netns exec "$T" nft add rule inet stoa_tap prerouting iifname t0 meta nfproto ipv4 \
        tcp dport 5558 tproxy ip to :15003 meta mark set 0x1 accept
fi
ip netns exec "$T" ip rule add fwmark 0x1/0x1 lookup 100
ip netns exec "$T" ip route add local 0.0.0.0/0 dev lo table 100

mkfifo "$WORK/srv.in" "$WORK/relay.in" "$WORK/compare.in"
ip netns exec "$G" "$BIN" --serve '[::]:5555' --serve '[::]:5556' --serve '[::]:5557' \
    --serve '[::]:5558' --serve-body "$BODY" < "$WORK/srv.in" > "$WORK/srv.out" 2>&1 &
exec 8>"$WORK/srv.in"
ip netns exec "$T" "$BIN" --spoof --quiet ${RELAY_ARGS:-} < "$WORK/relay.in" > "$WORK/relay.out" 2>"$WORK/relay.err" &
RELAY_PID=$!
exec 9>"$WORK/relay.in"
COMPARE_PID=
if [ -n "$COMPARE_BIN" ]; then
    ip netns exec "$T" "$COMPARE_BIN" --listen '[::]:15003' --spoof --quiet ${COMPARE_ARGS:-} \
        < "$WORK/compare.in" > "$WORK/compare.out" 2>"$WORK/compare.err" 8>&- 9>&- &
    COMPARE_PID=$!
    exec 7>"$WORK/compare.in"
fi
HAPROXY_PID=
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
    ip netns exec "$T" haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.out" 2>&1 7>&- 8>&- 9>&- &
    HAPROXY_PID=$!
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
    grep -q ready "$WORK/srv.out" 2>/dev/null && grep -q ready "$WORK/relay.out" 2>/dev/null \
        && { [ -z "$COMPARE_BIN" ] || grep -q ready "$WORK/compare.out" 2>/dev/null; } && break
    sleep 0.1
done

# cpu_ticks PID: user+system clock ticks of every thread of PID so far (0
# without a PID).
cpu_ticks() {
    [ -n "$1" ] || { echo 0; return; }
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the
    # command name.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# run NAME PORT THREADS CONNS [PID] -> "rps p50_us p99_us cpu_ticks"
run() {
    local out c0 c1
    c0=$(cpu_ticks "${5:-}")
    out=$(ip netns exec "$C" wrk -t"$3" -c"$4" -d"${DUR}s" --latency "http://10.77.2.2:$2/" 2>&1)
    c1=$(cpu_ticks "${5:-}")
    echo "$out" > "$WORK/wrk-$1.txt"
    python3 - "$WORK/wrk-$1.txt" "$((c1 - c0))" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def us(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {sys.argv[2]}")
PY
}

# Warm-up (ARP/ND, page cache).
for port in 5556 5555 $([ "$REFERENCE" = haproxy ] && echo 5557) $([ -n "$COMPARE_BIN" ] && echo 5558); do
    ip netns exec "$C" wrk -t1 -c4 -d1s "http://10.77.2.2:$port/" > "$WORK/wrk-warm-$port.txt"
done

echo "run: ${DUR}s per measurement, ${BODY} B bodies, ${ROUNDS} round(s); $(uptime | sed 's/.*load/load/')"
: > "$WORK/rows"
for round in $(seq "$ROUNDS"); do
    for load in "1 1" "2 32"; do
        set -- $load
        echo "$round $2 direct $(run "direct-r$round-c$2" 5556 "$1" "$2")" >> "$WORK/rows"
        # The relays run in turn after direct; their order is reversed every
        # other round so that no relay always runs in the same position
        # (right after direct, or last).
        order="stoa-tap"
        [ "$REFERENCE" = haproxy ] && order="$order haproxy"
        [ -n "$COMPARE_BIN" ] && order="$order compare"
        [ $((round % 2)) = 0 ] && order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')
        for v in $order; do
            # variant -> wrk output name, diverted port, process measured
            case $v in
            stoa-tap) set -- "$1" "$2" relay 5555 "$RELAY_PID" ;;
            haproxy) set -- "$1" "$2" haproxy 5557 "$HAPROXY_PID" ;;
            compare) set -- "$1" "$2" compare 5558 "$COMPARE_PID" ;;
            esac
            echo "$round $2 $v $(run "$3-r$round-c$2" "$4" "$1" "$2" "$5")" >> "$WORK/rows"
        done
    done
done
echo "after the rounds: $(uptime | sed 's/.*load/load/')"
DUR="$DUR" python3 - "$WORK/rows" "$(getconf CLK_TCK)" <<'PY'
import os, statistics, sys
DUR = float(os.environ["DUR"])
tick_us = 1e6 / float(sys.argv[2])
rows = [l.split() for l in open(sys.argv[1])]
direct = {(r[0], r[1]): r for r in rows if r[2] == "direct"}
fmt = "%-5s %5s  %-9s %9s %7s %8s %8s %10s %11s"
print()
print(fmt % ("round", "conns", "variant", "rps", "ratio", "p50_us", "p99_us",
             "added_p99", "cpu_us/req"))
per = {}
for rnd, conns, var, rps, p50, p99, ticks in rows:
    d = direct[(rnd, conns)]
    ratio = float(rps) / float(d[3])
    added = float(p99) - float(d[5])
    cpu = "-" if var == "direct" else "%.1f" % (int(ticks) * tick_us / max(1.0, float(rps) * float(DUR)))
    per.setdefault((int(conns), var), []).append(
        (ratio, added, float(rps), float(p99), None if cpu == "-" else float(cpu)))
    print(fmt % (rnd, conns, var, rps, "%.3f" % ratio, p50, p99,
                 "-" if var == "direct" else "%d" % added, cpu))
nr = len({r[0] for r in rows})
print()
print("median over %d round(s):" % nr)
fmt = "%5s  %-9s %9s %7s %8s %10s %11s"
print(fmt % ("conns", "variant", "rps", "ratio", "p99_us", "added_p99", "cpu_us/req"))
med = statistics.median
for (conns, var), v in sorted(per.items(), key=lambda kv: (kv[0][0], ["direct", "stoa-tap", "haproxy", "compare"].index(kv[0][1]))):
    cpus = [x[4] for x in v if x[4] is not None]
    print(fmt % (conns, var, "%.0f" % med(x[2] for x in v), "%.3f" % med(x[0] for x in v),
                 "%.0f" % med(x[3] for x in v),
                 "-" if var == "direct" else "%.0f" % med(x[1] for x in v),
                 "%.1f" % med(cpus) if cpus else "-"))
# Paired by round: the two relays' throughput measured in the same round,
# which cancels what a round's load did to both.
pairs = {}
for rnd, conns, var, rps, *_ in rows:
    pairs.setdefault((int(conns), rnd), {})[var] = float(rps)
for conns in sorted({c for c, _ in pairs}):
    q = [p["stoa-tap"] / p["haproxy"]
         for (c, _), p in sorted(pairs.items(), key=lambda kv: (kv[0][0], int(kv[0][1])))
         if c == conns and "stoa-tap" in p and "haproxy" in p]
    if q:
        print("%5d  stoa-tap / haproxy throughput, per round: %s; median %.3f; stoa-tap ahead in %d of %d" % (
            conns, " ".join("%.3f" % x for x in q), med(q), sum(x >= 1 for x in q), len(q)))
PY

if [ "$REFERENCE" = haproxy ] && ! ip netns exec "$T" ss -Htln 'sport = :15002' | grep -q .; then
    echo "haproxy exited during the run; its figures are void:" >&2
    cat "$WORK/haproxy.out" >&2
fi
# relay_stats NAME PID OUT WRK_OUTPUT...: a relay prints its stats once its
# stdin closes and its queue is drained; the exchanges its analyzer parsed
# are compared with the requests wrk completed through it.
relay_stats() {
    local name=$1 pid=$2 out=$3
    shift 3
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "$name stats:"
    grep '"event":"stats"' "$out" | python3 -c "
import json, re, sys
s=json.loads(sys.stdin.read())
wrk = sum(int(re.search(r'(\d+) requests in', open(f).read()).group(1)) for f in sys.argv[1:])
r=s['relay']
print('  connections %d, c2s %d B, s2c %d B, tap events sent %d, dropped %d (%d B), untapped conns %d, exchanges parsed %d' % (
  r['connections_accepted'], r['bytes_client_to_server'], r['bytes_server_to_client'], r['tap_events_sent'],
  r['tap_events_dropped'], r['tap_bytes_dropped'], r['untapped_connections'], s['http']['exchanges']))
print('  exchanges parsed / requests wrk completed: %d / %d = %.4f' % (
  s['http']['exchanges'], wrk, s['http']['exchanges'] / max(1, wrk)))" "$@"
}
echo
exec 9>&-
relay_stats stoa-tap "$RELAY_PID" "$WORK/relay.out" "$WORK"/wrk-relay-* "$WORK/wrk-warm-5555.txt"
if [ -n "$COMPARE_BIN" ]; then
    exec 7>&-
    relay_stats compare "$COMPARE_PID" "$WORK/compare.out" "$WORK"/wrk-compare-* "$WORK/wrk-warm-5558.txt"
fi
