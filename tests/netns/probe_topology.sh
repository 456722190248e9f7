#!/bin/sh
# Topology for the eBPF probe tests and benchmark.
#
#   probe_topology.sh up PREFIX [nooffload]   create it
#   probe_topology.sh down PREFIX             kill every process in it and delete it
#
#   ${PREFIX}c (client) c0 10.78.0.1/24 fd78::1/64 ==veth== t0 10.78.0.2/24 fd78::2/64 ${PREFIX}g (gateway)
#
# Offloads stay on (the default), so TCP segments larger than the MTU
# (GSO/GRO super-packets) cross the veth, as they do on a real VM's
# interfaces; `nooffload` turns them off. Nothing is created in the caller's
# namespace.
set -eu
cmd=$1
P=$2
C=${P}c G=${P}g

down() {
    for ns in "$C" "$G"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        fi
    done
    for ns in "$C" "$G"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

up() {
    for ns in "$C" "$G"; do ip netns add "$ns"; done
    ip link add c0 netns "$C" type veth peer name t0 netns "$G"
    for ns in "$C" "$G"; do
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=0
    done
    ip -n "$C" addr add 10.78.0.1/24 dev c0
    ip -n "$G" addr add 10.78.0.2/24 dev t0
    # nodad: the addresses are usable at once.
    ip -n "$C" addr add fd78::1/64 dev c0 nodad
    ip -n "$G" addr add fd78::2/64 dev t0 nodad
    if [ "${1:-}" = nooffload ]; then
        ip netns exec "$C" ethtool -K c0 tso off gso off gro off >/dev/null 2>&1 || true
        ip netns exec "$G" ethtool -K t0 tso off gso off gro off >/dev/null 2>&1 || true
    fi
    ip -n "$C" link set c0 up
    ip -n "$G" link set t0 up
}

case "$cmd" in
up) up "${3:-}" ;;
down) down ;;
*) echo "usage: $0 up|down PREFIX [nooffload]" >&2; exit 2 ;;
esac
