#!/bin/sh
# Mirror topology for stoa-tap tests and benchmarks.
#
#   mirror_topology.sh up PREFIX     create it
#   mirror_topology.sh down PREFIX   kill every process in it and delete it
#   mirror_topology.sh remirror PREFIX  delete the mirror veth and create it
#                                    again (the capture interface vanishes
#                                    and comes back as a new interface)
#
#   ${PREFIX}c (client) c0 10.77.0.1/24 ==veth== t0 10.77.0.2/24 ${PREFIX}g (gateway)
#   in ${PREFIX}g: tc clsact on t0, ingress and egress mirred-mirrored to m0
#   m0 ==veth== m1 in ${PREFIX}m (monitor: no address, no forwarding)
#
# Offloads (TSO/GSO/GRO) are off on every veth, so frames are MTU-sized.
# Interface names live inside the namespaces only; nothing is created in the
# caller's namespace.
set -eu
cmd=$1
P=$2
C=${P}c G=${P}g M=${P}m

down() {
    for ns in "$C" "$G" "$M"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        fi
    done
    for ns in "$C" "$G" "$M"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

up() {
    command -v ethtool >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool >/dev/null; }
    }
    for ns in "$C" "$G" "$M"; do ip netns add "$ns"; done
    ip link add c0 netns "$C" type veth peer name t0 netns "$G"
    ip link add m0 netns "$G" type veth peer name m1 netns "$M"
    for ns in "$C" "$G" "$M"; do
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    done
    ip netns exec "$M" sysctl -qw net.ipv4.ip_forward=0
    ip -n "$C" addr add 10.77.0.1/24 dev c0
    ip -n "$G" addr add 10.77.0.2/24 dev t0
    for x in "$C c0" "$G t0" "$G m0" "$M m1"; do
        set -- $x
        ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
        ip -n "$1" link set "$2" up
    done
    ip netns exec "$G" tc qdisc add dev t0 clsact
    mirror
}

mirror() {
    for dir in ingress egress; do
        ip netns exec "$G" tc filter add dev t0 "$dir" protocol all u32 match u32 0 0 \
            action mirred egress mirror dev m0
    done
}

remirror() {
    ip -n "$G" link del m0
    for dir in ingress egress; do ip netns exec "$G" tc filter del dev t0 "$dir"; done
    ip link add m0 netns "$G" type veth peer name m1 netns "$M"
    for x in "$G m0" "$M m1"; do
        set -- $x
        ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
        ip -n "$1" link set "$2" up
    done
    mirror
}

case "$cmd" in
up) down; up ;;
down) down ;;
remirror) remirror ;;
*) echo "usage: $0 up|down|remirror PREFIX" >&2; exit 2 ;;
esac
