#!/usr/bin/env bash
# Capture throughput of `stoa-tap run` with the publisher on, pointed at a
# black-holed control plane, against the publisher off (prints figures; not a
# test).
#
#     tests/bench/publish.sh                   # 8 rounds, 300 copies of wrk_short.pcap
#     ROUNDS=12 COPIES=500 tests/bench/publish.sh
#     HEARTBEAT_S=30 DISCOVERY_S=60 tests/bench/publish.sh   # the default intervals
#
# The traffic is fixtures/real/wrk_short.pcap (3,639 exchanges) repeated
# COPIES times with each copy's clients on their own address
# (pcap_repeat.py), replayed by the file source as fast as the pipeline takes
# it. The black hole is a TCP socket that listens with a backlog of one and
# never accepts: the first connection completes and is never answered, later
# SYNs are dropped, so every publisher call waits for its timeout. The
# publisher runs with 1 s heartbeat and discovery intervals (a copy of the
# observations every second) and a 2 s timeout. Rounds alternate which
# variant goes first; a round's figure is the steady-state rate: exchanges
# observed or counted as dropped per second between the first and the last
# poll of the admin API (every 50 ms, the same in both variants) taken while
# the replay is in progress, so neither variant's start-up counts. Prints the median of each
# variant, their ratio (on / off), and the median of the per-round ratios
# (each round's two runs are neighbours in time, so machine drift cancels).
# On a machine shared with other work the wall-clock figures are noisy, so it
# also prints exchanges per CPU-second of the capture threads (file reader,
# dispatcher, workers: the process's CPU time minus that of its other
# threads, from /proc), which other processes move much less.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-8}"
COPIES="${COPIES:-300}"
HEARTBEAT_S="${HEARTBEAT_S:-1}"
DISCOVERY_S="${DISCOVERY_S:-1}"

cargo build --release -q -p stoa-tap
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stoa-tap"
WORK="$(mktemp -d /tmp/stoa-publish-bench.XXXXXX)"
HOLE_PID=""
cleanup() {
    [ -n "$HOLE_PID" ] && kill "$HOLE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 tests/bench/pcap_repeat.py fixtures/real/wrk_short.pcap "$WORK/traffic.pcap" "$COPIES"
EXPECTED=$((3639 * COPIES))

# The black hole: listens, never accepts.
python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
while True:
    time.sleep(3600)
' > "$WORK/hole.port" &
HOLE_PID=$!
for _ in $(seq 50); do [ -s "$WORK/hole.port" ] && break; sleep 0.1; done
HOLE_PORT="$(cat "$WORK/hole.port")"
echo "gw-bench-key" > "$WORK/key"
: > "$WORK/off.yaml"
cat > "$WORK/on.yaml" <<YAML
control_plane:
  url: http://127.0.0.1:$HOLE_PORT
  key_file: $WORK/key
  heartbeat_interval_s: $HEARTBEAT_S
  discovery_interval_s: $DISCOVERY_S
  request_timeout_s: 2
YAML

# capture_ticks PID: CPU ticks of the capture path (file reader, dispatcher,
# workers): the whole process (which keeps the time of threads that ended)
# minus the threads off that path (aggregator, publisher, HTTP client, admin
# server, saver).
capture_ticks() {
    awk 'FNR == 1 && FILENAME ~ /task/ && $2 !~ /^\((stoa-tap|stoa-worker-[0-9]+)\)$/ { off += $14 + $15 }
         FILENAME !~ /task/ { all = $14 + $15 }
         END { print all - off }' /proc/"$1"/stat /proc/"$1"/task/*/stat 2>/dev/null || echo 0
}

# done_count ADDR: exchanges observed plus exchanges dropped before contract
# learning, from the summary (grep rather than a Python start per poll).
done_count() {
    curl -sf -m 10 "http://$1/api/v1/summary" |
        grep -oE '"(exchanges_observed|aggregator_queue_full|aggregator_stopped)": [0-9]+' |
        awk '{ n += $2 } END { print n + 0 }'
}

# run_once VARIANT: prints exchanges per second (wall) and per CPU-second
# of the capture threads, both over the samples taken mid-replay.
run_once() {
    local variant=$1 state="$WORK/state-$1" err="$WORK/$1.err"
    # The log of the previous round goes first: its admin address is stale.
    rm -rf "$state" "$err"
    local addr=""
    "$BIN" -v run --config "$WORK/$variant.yaml" --replay "$WORK/traffic.pcap" \
        --state-dir "$state" --admin-bind 127.0.0.1:0 --set workers=1 > /dev/null 2> "$err" &
    local pid=$!
    for _ in $(seq 200); do
        addr=$(grep -so 'admin server listening addr=[0-9.:]*' "$err" | head -1 | sed 's/.*addr=//') || true
        [ -n "$addr" ] && break
        sleep 0.02
    done
    [ -n "$addr" ] || { cat "$err" >&2; kill "$pid"; return 1; }
    # Samples taken while the replay is in progress (not before the first
    # exchange, not after the last) give the steady-state rate, without the
    # start-up of either variant.
    local first="" last="" sample done_n ticks now
    while :; do
        now=$(date +%s.%N)
        ticks=$(capture_ticks "$pid")
        done_n=$(done_count "$addr")
        [ "$done_n" -ge "$EXPECTED" ] && break
        if [ "$done_n" -gt 0 ]; then
            sample="$now $done_n $ticks"
            [ -n "$first" ] || first=$sample
            last=$sample
        fi
        sleep 0.05
    done
    kill -TERM "$pid"
    wait "$pid" || true
    if [ "$variant" = on ] && ! grep -q 'publisher started' "$err"; then
        echo "publisher did not start" >&2
        return 1
    fi
    if [ -z "$first" ] || [ "$first" = "$last" ]; then
        echo "replay too short for two samples; raise COPIES" >&2
        return 1
    fi
    python3 -c "
f, l, hz = '$first'.split(), '$last'.split(), $(getconf CLK_TCK)
n = int(l[1]) - int(f[1])
print(round(n / (float(l[0]) - float(f[0]))), round(n / max((int(l[2]) - int(f[2])) / hz, 1 / hz)))"
}

echo "traffic: $COPIES x wrk_short.pcap = $EXPECTED exchanges; black hole on 127.0.0.1:$HOLE_PORT;" \
    "heartbeat every ${HEARTBEAT_S} s, discovery every ${DISCOVERY_S} s"
off=()
on=()
off_cpu=()
on_cpu=()
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for v in $order; do
        read -r x c < <(run_once "$v")
        if [ "$v" = off ]; then off+=("$x"); off_cpu+=("$c"); else on+=("$x"); on_cpu+=("$c"); fi
        echo "round $r $v: $x exchanges/s (wall), $c exchanges per CPU-second of the capture threads"
    done
done
grep -h 'control plane call failed' "$WORK/on.err" | head -1 | sed 's/^/last round, publisher: /' || true
python3 - "${off[*]}" "${on[*]}" "${off_cpu[*]}" "${on_cpu[*]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
off_cpu = [float(x) for x in sys.argv[3].split()]
on_cpu = [float(x) for x in sys.argv[4].split()]
mo, mn = statistics.median(off), statistics.median(on)
print(f"publisher off: median {mo:,.0f} exchanges/s ({', '.join(f'{x:,.0f}' for x in off)})")
print(f"publisher on (black-holed): median {mn:,.0f} exchanges/s ({', '.join(f'{x:,.0f}' for x in on)})")
print(f"ratio of the medians on/off: {mn / mo:.3f}")
pairs = [b / a for a, b in zip(off, on)]
print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in pairs)}; median {statistics.median(pairs):.3f}")
co, cn = statistics.median(off_cpu), statistics.median(on_cpu)
print(f"capture threads, exchanges per CPU-second: off {co:,.0f}, on {cn:,.0f}, ratio {cn / co:.3f}")
PY
