# stoa-tap %preun ($1: 0 on erase, 1 on upgrade). On erase: stop and disable
# the service, then remove any TPROXY rules still installed (the TPROXY
# drop-in removes them when the service stops; rules installed by hand would
# otherwise keep diverting the gateway port to a relay that no longer exists).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now stoa-tap.service >/dev/null 2>&1 || :
    fi
    if command -v nft >/dev/null 2>&1 && nft list table inet stoa_tap >/dev/null 2>&1; then
        echo "stoa-tap: removing the nft TPROXY rules"
        v6=""
        if ip -6 rule show 2>/dev/null | grep -q 'fwmark 0x1/0x1 lookup 100'; then
            v6="--ipv6"
        fi
        /usr/bin/stoa-tap tproxy-rules remove --backend nft $v6 >/dev/null 2>&1 || :
    fi
    if command -v iptables >/dev/null 2>&1 && iptables -t mangle -n -L STOA_TAP >/dev/null 2>&1; then
        echo "stoa-tap: removing the iptables TPROXY rules"
        v6=""
        if command -v ip6tables >/dev/null 2>&1 && ip6tables -t mangle -n -L STOA_TAP >/dev/null 2>&1; then
            v6="--ipv6"
        fi
        /usr/bin/stoa-tap tproxy-rules remove --backend iptables $v6 >/dev/null 2>&1 || :
    fi
fi
exit 0
