#!/bin/bash
# Topology for the TPROXY test and benchmark (namespaces only, no host addresses):
#
#   ${P}c (client)  c0 10.77.1.2 fd00:77:1::2
#        | veth
#   ${P}t (tap)     t0 10.77.1.1 fd00:77:1::1   forwarding on, TPROXY rules, relay
#                   t1 10.77.2.1 fd00:77:2::1
#        | veth
#   ${P}g (gateway) g0 10.77.2.2 fd00:77:2::2   HTTP server on :5555 (relayed) and :5556 (direct)
#
# usage: tproxy_netns.sh up PREFIX | down PREFIX
set -u
cmd=${1:?up|down}
P=${2:?prefix}
C=${P}c T=${P}t G=${P}g

down() {
    for ns in "$C" "$T" "$G"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        fi
    done
    return 0
}

up() {
    set -e
    for ns in "$C" "$T" "$G"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$C" link add c0 type veth peer name t0 netns "$T"
    ip -n "$T" link add t1 type veth peer name g0 netns "$G"
    ip -n "$C" addr add 10.77.1.2/24 dev c0
    ip -n "$C" addr add fd00:77:1::2/64 dev c0 nodad
    ip -n "$T" addr add 10.77.1.1/24 dev t0
    ip -n "$T" addr add fd00:77:1::1/64 dev t0 nodad
    ip -n "$T" addr add 10.77.2.1/24 dev t1
    ip -n "$T" addr add fd00:77:2::1/64 dev t1 nodad
    ip -n "$G" addr add 10.77.2.2/24 dev g0
    ip -n "$G" addr add fd00:77:2::2/64 dev g0 nodad
    ip -n "$C" link set c0 up
    ip -n "$T" link set t0 up
    ip -n "$T" link set t1 up
    ip -n "$G" link set g0 up
    ip -n "$C" route add default via 10.77.1.1
    ip -n "$C" -6 route add default via fd00:77:1::1
    ip -n "$G" route add default via 10.77.2.1
    ip -n "$G" -6 route add default via fd00:77:2::1
    ip netns exec "$T" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}

case "$cmd" in
    up) up || { down; exit 1; } ;;
    down) down ;;
    *) echo "usage: $0 up|down PREFIX" >&2; exit 2 ;;
esac
