//! The netfilter and policy-routing rules that divert a port to the relay,
//! as text (nft) and command lines (iptables, ip), for
//! `stoa-tap tproxy-rules` and `packaging/tproxy.md`.
//!
//! What they do, in the `prerouting` hook at mangle priority:
//! 1. packets carrying the relay's upstream mark return untouched (on a
//!    single host the relay's own upstream traffic comes back in through `lo`
//!    and would otherwise be diverted into the relay again);
//! 2. packets of an existing transparent socket (diverted connections, and
//!    spoofed upstream connections' replies) get the divert mark, so policy
//!    routing delivers them locally;
//! 3. new TCP connections to the gateway port are handed to the listener
//!    with `tproxy` and get the divert mark, but only while the port is in
//!    the guard set (`inet stoa_tap alive`, or the ipset `stoa_tap_alive`),
//!    which the relay keeps filled while it is alive and accepting (see
//!    [`super::guard`]). Without the element the rule does not match and
//!    the connection goes to the gateway as if no rule existed.
//!
//! The divert mark sends them to a routing table whose only route is
//! `local 0.0.0.0/0 dev lo` (and `local ::/0`).

use std::fmt::Write as _;

/// Name of the nft table (family `inet`) holding every rule.
pub const NFT_TABLE: &str = "stoa_tap";
/// iptables chain (table `mangle`) jumped to from `PREROUTING`.
pub const IPT_CHAIN: &str = "STOA_TAP";
/// iptables chain marking packets of transparent sockets.
pub const IPT_DIVERT_CHAIN: &str = "STOA_TAP_DIVERT";

/// What to divert, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Gateway port whose connections are diverted.
    pub port: u16,
    /// Port of the relay's transparent listener.
    pub listen_port: u16,
    /// Only divert connections arriving on this interface (None: any,
    /// including `lo`).
    pub iface: Option<String>,
    /// Divert mark (fwmark of the policy-routing rule).
    pub mark: u32,
    /// Mark of the relay's upstream sockets, exempted from diversion.
    pub upstream_mark: u32,
    /// Also divert IPv6.
    pub ipv6: bool,
    /// Routing table for the divert mark.
    pub route_table: u32,
    /// Divert only while the relay refreshes the guard set (the default);
    /// `false` diverts for as long as the rules are installed.
    pub guard: bool,
}

impl Default for RuleSpec {
    fn default() -> Self {
        RuleSpec {
            port: 5555,
            listen_port: 15001,
            iface: None,
            mark: 0x1,
            upstream_mark: 0x2,
            ipv6: false,
            route_table: 100,
            guard: true,
        }
    }
}

impl RuleSpec {
    /// Checks the marks and the interface name.
    pub fn validate(&self) -> Result<(), String> {
        if self.mark == 0 {
            return Err("--mark must not be 0".into());
        }
        if self.mark & self.upstream_mark != 0 {
            return Err(format!(
                "--mark {:#x} and --upstream-mark {:#x} share bits: the relay's upstream \
                 traffic would be routed to itself",
                self.mark, self.upstream_mark
            ));
        }
        if self.port == self.listen_port {
            return Err("--port and --listen-port must differ".into());
        }
        if let Some(i) = &self.iface {
            let ok = !i.is_empty()
                && i.len() < 16
                && i.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
            if !ok {
                return Err(format!("--iface {i:?} is not a valid interface name"));
            }
        }
        if self.route_table == 0 || self.route_table >= 252 && self.route_table <= 255 {
            return Err(format!("--table {} is reserved", self.route_table));
        }
        Ok(())
    }

    fn iif_nft(&self) -> String {
        match &self.iface {
            Some(i) => format!("iifname \"{i}\" "),
            None => String::new(),
        }
    }
}

/// The nft script for `nft -f -`: idempotent (re-running replaces the table).
pub fn nft_install(spec: &RuleSpec) -> String {
    let mut s = String::new();
    let m = spec.mark;
    let um = spec.upstream_mark;
    let iif = spec.iif_nft();
    let _ = writeln!(s, "table inet {NFT_TABLE}");
    let _ = writeln!(s, "delete table inet {NFT_TABLE}");
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    let alive = if spec.guard {
        let g = super::guard::NFT_SET;
        let _ = writeln!(
            s,
            "\tset {g} {{ type inet_service; flags timeout; timeout 2s; comment \"ports diverted while the relay is alive\"; }}"
        );
        format!("tcp dport @{g} ")
    } else {
        String::new()
    };
    let _ = writeln!(s, "\tchain prerouting {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook prerouting priority mangle; policy accept;"
    );
    if um != 0 {
        let _ = writeln!(
            s,
            "\t\tmeta mark & {um:#x} == {um:#x} return comment \"relay upstream traffic\""
        );
    }
    let _ = writeln!(
        s,
        "\t\tmeta l4proto tcp socket transparent 1 meta mark set {m:#x} accept"
    );
    let _ = writeln!(
        s,
        "\t\t{iif}meta nfproto ipv4 tcp dport {} {alive}tproxy ip to :{} meta mark set {m:#x} accept",
        spec.port, spec.listen_port
    );
    if spec.ipv6 {
        let _ = writeln!(
            s,
            "\t\t{iif}meta nfproto ipv6 tcp dport {} {alive}tproxy ip6 to :{} meta mark set {m:#x} accept",
            spec.port, spec.listen_port
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The nft script removing the table.
pub fn nft_remove() -> String {
    format!("delete table inet {NFT_TABLE}\n")
}

fn argv(prog: &str, args: &str) -> Vec<String> {
    std::iter::once(prog.to_string())
        .chain(args.split_whitespace().map(str::to_string))
        .collect()
}

fn ipt_progs(spec: &RuleSpec) -> Vec<&'static str> {
    if spec.ipv6 {
        vec!["iptables", "ip6tables"]
    } else {
        vec!["iptables"]
    }
}

/// iptables/ip6tables command lines installing the rules (in a dedicated
/// chain jumped to from `mangle PREROUTING`).
pub fn iptables_install(spec: &RuleSpec) -> Vec<Vec<String>> {
    let m = spec.mark;
    let um = spec.upstream_mark;
    let iif = match &spec.iface {
        Some(i) => format!("-i {i} "),
        None => String::new(),
    };
    let mut out = Vec::new();
    let set = super::guard::IPSET;
    let matcher = if spec.guard {
        // One port bitmap serves iptables and ip6tables.
        out.push(argv(
            "ipset",
            &format!("create {set} bitmap:port range 0-65535 timeout 2 -exist"),
        ));
        format!("-m set --match-set {set} dst ")
    } else {
        String::new()
    };
    for p in ipt_progs(spec) {
        let mut c = |a: String| out.push(argv(p, &a));
        c(format!("-t mangle -N {IPT_CHAIN}"));
        c(format!("-t mangle -N {IPT_DIVERT_CHAIN}"));
        c(format!(
            "-t mangle -A {IPT_DIVERT_CHAIN} -j MARK --set-mark {m:#x}"
        ));
        c(format!("-t mangle -A {IPT_DIVERT_CHAIN} -j ACCEPT"));
        if um != 0 {
            c(format!(
                "-t mangle -A {IPT_CHAIN} -m mark --mark {um:#x}/{um:#x} -j RETURN"
            ));
        }
        c(format!(
            "-t mangle -A {IPT_CHAIN} -p tcp -m socket --transparent -j {IPT_DIVERT_CHAIN}"
        ));
        c(format!(
            "-t mangle -A {IPT_CHAIN} {iif}-p tcp --dport {} {matcher}-j TPROXY --on-port {} --tproxy-mark {m:#x}",
            spec.port, spec.listen_port
        ));
        c(format!("-t mangle -A PREROUTING -j {IPT_CHAIN}"));
    }
    out
}

/// iptables/ip6tables command lines removing the rules.
pub fn iptables_remove(spec: &RuleSpec) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in ipt_progs(spec) {
        for a in [
            format!("-t mangle -D PREROUTING -j {IPT_CHAIN}"),
            format!("-t mangle -F {IPT_CHAIN}"),
            format!("-t mangle -X {IPT_CHAIN}"),
            format!("-t mangle -F {IPT_DIVERT_CHAIN}"),
            format!("-t mangle -X {IPT_DIVERT_CHAIN}"),
        ] {
            out.push(argv(p, &a));
        }
    }
    if spec.guard {
        out.push(argv("ipset", &format!("destroy {}", super::guard::IPSET)));
    }
    out
}

/// `ip rule` / `ip route` command lines for the local-delivery table.
pub fn routes_install(spec: &RuleSpec) -> Vec<Vec<String>> {
    let (m, t) = (spec.mark, spec.route_table);
    let mut out = vec![
        argv("ip", &format!("rule add fwmark {m:#x}/{m:#x} lookup {t}")),
        argv("ip", &format!("route add local 0.0.0.0/0 dev lo table {t}")),
    ];
    if spec.ipv6 {
        out.push(argv(
            "ip",
            &format!("-6 rule add fwmark {m:#x}/{m:#x} lookup {t}"),
        ));
        out.push(argv(
            "ip",
            &format!("-6 route add local ::/0 dev lo table {t}"),
        ));
    }
    out
}

/// `ip rule` / `ip route` command lines removing the local-delivery table.
pub fn routes_remove(spec: &RuleSpec) -> Vec<Vec<String>> {
    routes_install(spec)
        .into_iter()
        .map(|mut c| {
            if let Some(a) = c.iter_mut().find(|a| *a == "add") {
                *a = "del".into();
            }
            c
        })
        .collect()
}

/// Shell quoting for printing command lines.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuleSpec {
        RuleSpec {
            iface: Some("t0".into()),
            ipv6: true,
            ..RuleSpec::default()
        }
    }

    #[test]
    fn nft_rules_are_those_of_the_platform_notes() {
        let s = nft_install(&spec());
        assert!(s.starts_with("table inet stoa_tap\ndelete table inet stoa_tap\n"));
        assert!(s.contains("type filter hook prerouting priority mangle; policy accept;"));
        assert!(s.contains("meta mark & 0x2 == 0x2 return"));
        assert!(s.contains("meta l4proto tcp socket transparent 1 meta mark set 0x1 accept"));
        assert!(s.contains(
            "iifname \"t0\" meta nfproto ipv4 tcp dport 5555 tcp dport @alive tproxy ip to :15001 meta mark set 0x1 accept"
        ));
        assert!(s.contains(
            "iifname \"t0\" meta nfproto ipv6 tcp dport 5555 tcp dport @alive tproxy ip6 to :15001 meta mark set 0x1 accept"
        ));
        assert!(s.contains("set alive { type inet_service; flags timeout; timeout 2s;"));
        let unguarded = nft_install(&RuleSpec {
            guard: false,
            ..spec()
        });
        assert!(!unguarded.contains("@alive") && !unguarded.contains("set alive"));
        // The exemption comes first.
        assert!(s.find("return").unwrap() < s.find("socket transparent").unwrap());
        let v4 = nft_install(&RuleSpec::default());
        assert!(!v4.contains("ip6"));
        assert!(v4.contains("\t\tmeta nfproto ipv4 tcp dport 5555 tcp dport @alive"));
    }

    #[test]
    fn iptables_and_routes() {
        let s = spec();
        let lines: Vec<String> = iptables_install(&s).iter().map(|c| shell_line(c)).collect();
        assert!(lines.contains(
            &"iptables -t mangle -A STOA_TAP -i t0 -p tcp --dport 5555 -m set --match-set stoa_tap_alive dst -j TPROXY --on-port 15001 --tproxy-mark 0x1".to_string()
        ));
        assert!(lines.contains(
            &"ip6tables -t mangle -A STOA_TAP -p tcp -m socket --transparent -j STOA_TAP_DIVERT"
                .to_string()
        ));
        assert!(lines.contains(&"iptables -t mangle -A PREROUTING -j STOA_TAP".to_string()));
        let r: Vec<String> = routes_install(&s).iter().map(|c| shell_line(c)).collect();
        assert_eq!(
            r,
            vec![
                "ip rule add fwmark 0x1/0x1 lookup 100",
                "ip route add local 0.0.0.0/0 dev lo table 100",
                "ip -6 rule add fwmark 0x1/0x1 lookup 100",
                "ip -6 route add local ::/0 dev lo table 100",
            ]
        );
        let d: Vec<String> = routes_remove(&s).iter().map(|c| shell_line(c)).collect();
        assert_eq!(d[1], "ip route del local 0.0.0.0/0 dev lo table 100");
        assert_eq!(
            lines[0],
            "ipset create stoa_tap_alive bitmap:port range 0-65535 timeout 2 -exist"
        );
        let rm = iptables_remove(&s);
        assert_eq!(rm.len(), 11);
        assert_eq!(shell_line(&rm[10]), "ipset destroy stoa_tap_alive");
    }

    #[test]
    fn validation() {
        assert!(RuleSpec::default().validate().is_ok());
        let overlap = RuleSpec {
            upstream_mark: 0x3,
            ..RuleSpec::default()
        };
        assert!(overlap.validate().is_err());
        let bad_if = RuleSpec {
            iface: Some("eth0\"; drop".into()),
            ..RuleSpec::default()
        };
        assert!(bad_if.validate().is_err());
        assert_eq!(shell_line(&["a b".into(), "c".into()]), "'a b' c");
    }
}
