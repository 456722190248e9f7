//! Link, network and tunnel decoding: one captured frame in, one borrowed TCP
//! segment out (or a counted reason to skip it).
//!
//! INTERFACE CONTRACT:
//! - `decode_tcp(linktype, frame)` never panics and never allocates; the payload
//!   of the returned segment is a subslice of `frame` (zero-copy).
//! - `Skip::reason()` names the counter a skipped frame is added to; every name is
//!   listed in [`ALL_REASONS`]. [`DecodeStats`] counts skips by reason.
//!
//! Supported link types (pcap `LINKTYPE_*` numbers): 1 Ethernet, 113 Linux cooked
//! (SLL), 276 Linux cooked v2 (SLL2), 101/12/14 raw IP, 228 IPv4, 229 IPv6,
//! 0 BSD loopback (NULL, address family in either byte order), 108 OpenBSD LOOP.
//! Ethernet-like headers may carry any stack of 802.1Q / 802.1ad / QinQ tags.
//!
//! Network layer: IPv4 (options, total length 0 = TSO super-packet, Ethernet padding
//! trimmed, fragments skipped), IPv6 (hop-by-hop, routing, destination options, AH,
//! atomic fragments; real fragments skipped; payload length 0 = jumbo/TSO).
//!
//! Mirror encapsulations, decoded recursively up to [`MAX_TUNNEL_DEPTH`] levels:
//! VXLAN (UDP 4789), GENEVE (UDP 6081), GRE (IPv4/IPv6 inside, transparent Ethernet
//! bridging, ERSPAN type I/II on 0x88BE, ERSPAN type III on 0x22EB) and plain
//! IP-in-IP (IP protocols 4 and 41).
//!
//! A capture truncated by its snap length keeps whatever TCP payload was captured:
//! the IP length is only used to trim (never to extend) the payload.
//!
//! Header slicing is etherparse's lax slicing: the Ethernet II header, each
//! VLAN tag, IPv4 (options, AH), IPv6 and its extension headers, TCP and UDP.
//! It already reads truncated and TSO-sized frames the way this module needs
//! (a length field past the capture falls back to the captured bytes; IPv6
//! payload length 0 means the frame). What stays ours, and why:
//! - the VLAN loop: etherparse stops after three link extensions and knows
//!   neither the 0x9200 nor the 0x9300 QinQ tag;
//! - Linux cooked v1: etherparse's reader refuses packet and ARPHRD types it
//!   does not list; cooked v2, BSD NULL/LOOP and raw-IP dispatch: not in
//!   etherparse;
//! - VXLAN, GENEVE, GRE and ERSPAN I/II/III and the tunnel depth bound: not
//!   in etherparse;
//! - IPv4 total length shorter than the header (but not 0): etherparse falls
//!   back to the frame length, we count it as `malformed_ipv4`;
//! - the UDP length rules of a tunnel (0 = GSO, under 8 = malformed);
//! - the skip reasons: etherparse's errors are mapped onto them (a length
//!   error is `truncated_*`, a content error `malformed_*` of the same layer).
//!
//! Measured when this was adopted (`REV=904cd54 RUNS=51
//! tests/bench/engine_ab.sh`, 201 MB gencap capture, 279k frames, shared
//! 2-CPU machine, three runs): offline throughput new/old by CPU time 0.969,
//! 0.973 and 0.974 (old median 0.113-0.115 s, new 0.116-0.118 s): within the
//! 0.95 bar, so etherparse was kept.

// Every access to frame bytes goes through `get`/`first_chunk`: no panicking paths.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use etherparse::{
    Ethernet2HeaderSlice, LaxIpv4Slice, LaxIpv6Slice, SingleVlanHeaderSlice, TcpSlice,
    UdpHeaderSlice,
};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// TCP flag bits as in the TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN bit.
    pub const FIN: u8 = 0x01;
    /// SYN bit.
    pub const SYN: u8 = 0x02;
    /// RST bit.
    pub const RST: u8 = 0x04;
    /// PSH bit.
    pub const PSH: u8 = 0x08;
    /// ACK bit.
    pub const ACK: u8 = 0x10;

    /// True if every bit of `mask` is set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// A TCP segment borrowed from the frame it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// TCP payload (may be empty).
    pub payload: &'a [u8],
}

/// Most tunnel levels (VXLAN, GENEVE, GRE, ERSPAN, IP-in-IP) decoded inside one frame.
pub const MAX_TUNNEL_DEPTH: u8 = 4;

/// The protocol layer a truncated or malformed header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Link header: Ethernet, VLAN tags, SLL, SLL2, NULL/LOOP.
    Link,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header or one of its extension headers.
    Ipv6,
    /// TCP header.
    Tcp,
    /// UDP header (of a tunnel).
    Udp,
    /// Tunnel header: VXLAN, GENEVE, GRE, ERSPAN.
    Tunnel,
}

impl Layer {
    /// Lower-case name of the layer.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Tunnel => "tunnel",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame produced no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// The pcap link type is not one this decoder reads.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    /// BSD loopback (NULL/LOOP) header with an unknown address family.
    #[error("unknown loopback address family {0}")]
    UnknownAddressFamily(u32),
    /// The ethertype (or SLL protocol) is not IPv4/IPv6 (ARP, LLDP, 802.3 length...).
    #[error("not IP (ethertype {0:#06x})")]
    NotIp(u16),
    /// A raw-IP frame whose version nibble is neither 4 nor 6.
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    /// The IP protocol (IPv6: final next header) is not TCP nor a known tunnel.
    /// UDP outside the tunnel ports ends here too, as `NotTcp(17)`.
    #[error("not TCP (IP protocol {0})")]
    NotTcp(u8),
    /// An IPv4 fragment (MF set or offset != 0): not reassembled.
    #[error("IPv4 fragment")]
    Ipv4Fragment,
    /// An IPv6 fragment (non-atomic fragment header): not reassembled.
    #[error("IPv6 fragment")]
    Ipv6Fragment,
    /// The frame ends inside a header of this layer.
    #[error("truncated {0} header")]
    Truncated(Layer),
    /// A header of this layer has inconsistent fields (lengths, version).
    #[error("malformed {0} header")]
    Malformed(Layer),
    /// A tunnel carries a protocol type this decoder does not follow
    /// (GRE/GENEVE protocol type, or GRE version 1).
    #[error("unsupported tunnel payload {0:#06x}")]
    UnsupportedTunnel(u16),
    /// More than [`MAX_TUNNEL_DEPTH`] nested tunnels.
    #[error("tunnels nested too deep")]
    TunnelTooDeep,
}

/// Every counter name that [`Skip::reason`] can return, sorted.
pub const ALL_REASONS: &[&str] = &[
    "bad_ip_version",
    "ipv4_fragment",
    "ipv6_fragment",
    "malformed_ipv4",
    "malformed_ipv6",
    "malformed_link",
    "malformed_tcp",
    "malformed_tunnel",
    "malformed_udp",
    "not_ip",
    "not_tcp",
    "truncated_ipv4",
    "truncated_ipv6",
    "truncated_link",
    "truncated_tcp",
    "truncated_tunnel",
    "truncated_udp",
    "tunnel_too_deep",
    "unknown_address_family",
    "unsupported_link_type",
    "unsupported_tunnel",
];

impl Skip {
    /// Stable counter name for this reason (snake_case, one of [`ALL_REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::UnsupportedLinkType(_) => "unsupported_link_type",
            Skip::UnknownAddressFamily(_) => "unknown_address_family",
            Skip::NotIp(_) => "not_ip",
            Skip::BadIpVersion(_) => "bad_ip_version",
            Skip::NotTcp(_) => "not_tcp",
            Skip::Ipv4Fragment => "ipv4_fragment",
            Skip::Ipv6Fragment => "ipv6_fragment",
            Skip::Truncated(layer) => match layer {
                Layer::Link => "truncated_link",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Tcp => "truncated_tcp",
                Layer::Udp => "truncated_udp",
                Layer::Tunnel => "truncated_tunnel",
            },
            Skip::Malformed(layer) => match layer {
                Layer::Link => "malformed_link",
                Layer::Ipv4 => "malformed_ipv4",
                Layer::Ipv6 => "malformed_ipv6",
                Layer::Tcp => "malformed_tcp",
                Layer::Udp => "malformed_udp",
                Layer::Tunnel => "malformed_tunnel",
            },
            Skip::UnsupportedTunnel(_) => "unsupported_tunnel",
            Skip::TunnelTooDeep => "tunnel_too_deep",
        }
    }
}

/// Skipped frames counted by [`Skip::reason`]. Serialises as a flat
/// `{"reason": count}` object with only the reasons seen (sorted by name).
#[derive(Default, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct DecodeStats {
    /// Count per reason name.
    pub skipped: BTreeMap<&'static str, u64>,
}

impl DecodeStats {
    /// Counts one skipped frame. Allocates only the first time a reason is seen.
    #[inline]
    pub fn record(&mut self, skip: &Skip) {
        *self.skipped.entry(skip.reason()).or_insert(0) += 1;
    }

    /// Skipped frames, all reasons together.
    pub fn total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Count for one reason name (0 if never seen).
    pub fn get(&self, reason: &str) -> u64 {
        self.skipped.get(reason).copied().unwrap_or(0)
    }

    /// Adds another set of counters (e.g. from another worker) into this one.
    pub fn merge(&mut self, other: &DecodeStats) {
        for (reason, n) in &other.skipped {
            *self.skipped.entry(reason).or_insert(0) += n;
        }
    }
}

// pcap link types.
const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW_OLD: u32 = 12;
const LINKTYPE_RAW_OPENBSD: u32 = 14;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

// Ethertypes (also GRE/GENEVE protocol types).
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_9100: u16 = 0x9100;
const ETH_QINQ_9200: u16 = 0x9200;
const ETH_QINQ_9300: u16 = 0x9300;
const ETH_TEB: u16 = 0x6558;
const ETH_ERSPAN2: u16 = 0x88be;
const ETH_ERSPAN3: u16 = 0x22eb;

// IP protocol numbers.
const IP_IPIP: u8 = 4;
const IP_TCP: u8 = 6;
const IP_UDP: u8 = 17;
const IP_IPV6: u8 = 41;
const IP_GRE: u8 = 47;

const UDP_VXLAN: u16 = 4789;
const UDP_GENEVE: u16 = 6081;

type Decoded<'a> = Result<TcpSegment<'a>, Skip>;

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// Decodes one frame of pcap link type `linktype` down to a TCP segment.
pub fn decode_tcp(linktype: u32, frame: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    match linktype {
        LINKTYPE_ETHERNET => ethernet(frame, 0),
        LINKTYPE_LINUX_SLL => sll(frame),
        LINKTYPE_LINUX_SLL2 => sll2(frame),
        LINKTYPE_RAW | LINKTYPE_RAW_OLD | LINKTYPE_RAW_OPENBSD => raw_ip(frame, 0),
        LINKTYPE_IPV4 => ipv4(frame, 0),
        LINKTYPE_IPV6 => ipv6(frame, 0),
        LINKTYPE_NULL | LINKTYPE_LOOP => bsd_loopback(frame),
        other => Err(Skip::UnsupportedLinkType(other)),
    }
}

/// Ethernet II: 6 dst, 6 src, ethertype.
#[inline]
fn ethernet(frame: &[u8], depth: u8) -> Decoded<'_> {
    let h = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| Skip::Truncated(Layer::Link))?;
    let rest = frame.get(h.slice().len()..).unwrap_or_default();
    by_ethertype(h.ether_type().0, rest, depth)
}

/// Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
#[inline]
fn sll(frame: &[u8]) -> Decoded<'_> {
    let (h, rest) = frame
        .split_first_chunk::<16>()
        .ok_or(Skip::Truncated(Layer::Link))?;
    by_ethertype(be16(h[14], h[15]), rest, 0)
}

/// Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, address
/// length, 8 address bytes.
#[inline]
fn sll2(frame: &[u8]) -> Decoded<'_> {
    let (h, rest) = frame
        .split_first_chunk::<20>()
        .ok_or(Skip::Truncated(Layer::Link))?;
    by_ethertype(be16(h[0], h[1]), rest, 0)
}

/// BSD loopback: a 4-byte address family, in the capturing host's byte order for
/// NULL and in network order for LOOP. Both orders are accepted for both: the
/// known values cannot be confused once swapped.
#[inline]
fn bsd_loopback(frame: &[u8]) -> Decoded<'_> {
    let (h, rest) = frame
        .split_first_chunk::<4>()
        .ok_or(Skip::Truncated(Layer::Link))?;
    let le = u32::from_le_bytes(*h);
    let be = u32::from_be_bytes(*h);
    // AF_INET is 2 everywhere. AF_INET6: 10 Linux, 23 Windows, 24 OpenBSD/NetBSD,
    // 28 FreeBSD, 30 macOS.
    let af = if le <= 0xffff { le } else { be };
    match af {
        2 => ipv4(rest, 0),
        10 | 23 | 24 | 28 | 30 => ipv6(rest, 0),
        _ => Err(Skip::UnknownAddressFamily(le.min(be))),
    }
}

/// Raw IP: IPv4 or IPv6 by the version nibble.
#[inline]
fn raw_ip(data: &[u8], depth: u8) -> Decoded<'_> {
    match data.first().map(|b| b >> 4) {
        Some(4) => ipv4(data, depth),
        Some(6) => ipv6(data, depth),
        Some(v) => Err(Skip::BadIpVersion(v)),
        None => Err(Skip::Truncated(Layer::Link)),
    }
}

/// Dispatches on an ethertype, first skipping any stack of VLAN tags.
/// etherparse's own VLAN walk stops at three link extensions and knows
/// neither 0x9200 nor 0x9300: the loop stays ours, each tag read by it.
#[inline]
fn by_ethertype(mut ethertype: u16, mut data: &[u8], depth: u8) -> Decoded<'_> {
    // Each tag consumes 4 bytes, so the loop ends with the frame.
    while matches!(
        ethertype,
        ETH_VLAN | ETH_QINQ | ETH_QINQ_9100 | ETH_QINQ_9200 | ETH_QINQ_9300
    ) {
        let tag =
            SingleVlanHeaderSlice::from_slice(data).map_err(|_| Skip::Truncated(Layer::Link))?;
        ethertype = tag.ether_type().0;
        data = data.get(tag.slice().len()..).unwrap_or_default();
    }
    match ethertype {
        ETH_IPV4 => ipv4(data, depth),
        ETH_IPV6 => ipv6(data, depth),
        other => Err(Skip::NotIp(other)),
    }
}

fn ipv4(data: &[u8], depth: u8) -> Decoded<'_> {
    use etherparse::err::ipv4::HeaderSliceError as E;
    let (ip, ext_err) = LaxIpv4Slice::from_slice(data).map_err(|e| match e {
        E::Len(_) => Skip::Truncated(Layer::Ipv4),
        E::Content(_) => Skip::Malformed(Layer::Ipv4),
    })?;
    let h = ip.header();
    // etherparse takes a total length shorter than the header as "use the
    // frame"; only 0 means that (TSO/GSO super-packet), the rest is broken.
    let total = usize::from(h.total_len());
    if total != 0 && total < h.slice().len() {
        return Err(Skip::Malformed(Layer::Ipv4));
    }
    if ip.is_payload_fragmented() {
        return Err(Skip::Ipv4Fragment);
    }
    if let Some(e) = ext_err {
        return Err(match e {
            etherparse::err::ip_auth::HeaderSliceError::Len(_) => Skip::Truncated(Layer::Ipv4),
            etherparse::err::ip_auth::HeaderSliceError::Content(_) => Skip::Malformed(Layer::Ipv4),
        });
    }
    let src = IpAddr::V4(h.source_addr());
    let dst = IpAddr::V4(h.destination_addr());
    let p = ip.payload();
    by_ip_protocol(p.ip_number.0, src, dst, p.payload, depth)
}

fn ipv6(data: &[u8], depth: u8) -> Decoded<'_> {
    use etherparse::err::ipv6::HeaderSliceError as E;
    let (ip, ext_err) = LaxIpv6Slice::from_slice(data).map_err(|e| match e {
        E::Len(_) => Skip::Truncated(Layer::Ipv6),
        E::Content(_) => Skip::Malformed(Layer::Ipv6),
    })?;
    // A fragment header with offset and M flag both 0 is an atomic fragment
    // (RFC 6946), a whole packet: etherparse does not count it as fragmenting.
    if ip.is_payload_fragmented() {
        return Err(Skip::Ipv6Fragment);
    }
    if let Some((e, _)) = ext_err {
        return Err(match e {
            etherparse::err::ipv6_exts::HeaderSliceError::Len(_) => Skip::Truncated(Layer::Ipv6),
            etherparse::err::ipv6_exts::HeaderSliceError::Content(_) => {
                Skip::Malformed(Layer::Ipv6)
            }
        });
    }
    let h = ip.header();
    let src = IpAddr::V6(h.source_addr());
    let dst = IpAddr::V6(h.destination_addr());
    let p = ip.payload();
    by_ip_protocol(p.ip_number.0, src, dst, p.payload, depth)
}

#[inline]
fn by_ip_protocol(proto: u8, src: IpAddr, dst: IpAddr, data: &[u8], depth: u8) -> Decoded<'_> {
    match proto {
        IP_TCP => tcp(src, dst, data),
        IP_UDP => udp(data, depth),
        IP_GRE => gre(data, deeper(depth)?),
        IP_IPIP => ipv4(data, deeper(depth)?),
        IP_IPV6 => ipv6(data, deeper(depth)?),
        other => Err(Skip::NotTcp(other)),
    }
}

#[inline]
fn deeper(depth: u8) -> Result<u8, Skip> {
    if depth >= MAX_TUNNEL_DEPTH {
        Err(Skip::TunnelTooDeep)
    } else {
        Ok(depth + 1)
    }
}

#[inline]
fn tcp(src: IpAddr, dst: IpAddr, data: &[u8]) -> Decoded<'_> {
    use etherparse::err::tcp::HeaderSliceError as E;
    let t = TcpSlice::from_slice(data).map_err(|e| match e {
        E::Len(_) => Skip::Truncated(Layer::Tcp),
        E::Content(_) => Skip::Malformed(Layer::Tcp),
    })?;
    // All eight flag bits as on the wire (etherparse offers them one by one).
    let flags = t.header_slice().get(13).copied().unwrap_or_default();
    Ok(TcpSegment {
        src: SocketAddr::new(src, t.source_port()),
        dst: SocketAddr::new(dst, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags: TcpFlags(flags),
        payload: t.payload(),
    })
}

/// UDP: only the tunnel ports are followed; anything else is `NotTcp(17)`.
#[inline]
fn udp(data: &[u8], depth: u8) -> Decoded<'_> {
    let h = UdpHeaderSlice::from_slice(data).map_err(|_| Skip::Truncated(Layer::Udp))?;
    let rest = data.get(h.slice().len()..).unwrap_or_default();
    let dport = h.destination_port();
    if dport != UDP_VXLAN && dport != UDP_GENEVE {
        return Err(Skip::NotTcp(IP_UDP));
    }
    let ulen = usize::from(h.length());
    // Length 0: UDP jumbogram or GSO; the IP payload is the datagram.
    let body = if ulen == 0 {
        rest
    } else if ulen < 8 {
        return Err(Skip::Malformed(Layer::Udp));
    } else {
        rest.get(..(ulen - 8).min(rest.len())).unwrap_or(rest)
    };
    let depth = deeper(depth)?;
    if dport == UDP_VXLAN {
        vxlan(body, depth)
    } else {
        geneve(body, depth)
    }
}

/// VXLAN: 8-byte header (flags, VNI), then Ethernet. Flags are not checked
/// (VXLAN-GBP and vendor variants set other bits).
#[inline]
fn vxlan(data: &[u8], depth: u8) -> Decoded<'_> {
    let (_, inner) = data
        .split_first_chunk::<8>()
        .ok_or(Skip::Truncated(Layer::Tunnel))?;
    ethernet(inner, depth)
}

/// GENEVE: version (2 bits) and options length (6 bits, 4-byte words), flags,
/// protocol type, VNI; then the options, then the inner packet.
fn geneve(data: &[u8], depth: u8) -> Decoded<'_> {
    let h = data
        .first_chunk::<8>()
        .ok_or(Skip::Truncated(Layer::Tunnel))?;
    if h[0] >> 6 != 0 {
        return Err(Skip::Malformed(Layer::Tunnel));
    }
    let hlen = 8 + usize::from(h[0] & 0x3f) * 4;
    let inner = data.get(hlen..).ok_or(Skip::Truncated(Layer::Tunnel))?;
    inner_by_protocol(be16(h[2], h[3]), inner, depth)
}

/// A tunnel's inner protocol type (GRE, GENEVE): Ethernet or IP.
#[inline]
fn inner_by_protocol(proto: u16, inner: &[u8], depth: u8) -> Decoded<'_> {
    match proto {
        ETH_TEB => ethernet(inner, depth),
        ETH_IPV4 => ipv4(inner, depth),
        ETH_IPV6 => ipv6(inner, depth),
        other => Err(Skip::UnsupportedTunnel(other)),
    }
}

const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;

/// GRE (RFC 2784/2890): flags, protocol, optional checksum+offset, key, sequence.
fn gre(data: &[u8], depth: u8) -> Decoded<'_> {
    let h = data
        .first_chunk::<4>()
        .ok_or(Skip::Truncated(Layer::Tunnel))?;
    let flags = be16(h[0], h[1]);
    let proto = be16(h[2], h[3]);
    if flags & 0x0007 != 0 {
        // Version 1 is PPTP's enhanced GRE (PPP inside).
        return Err(Skip::UnsupportedTunnel(proto));
    }
    if flags & GRE_R != 0 {
        // RFC 1701 source routing: obsolete, variable length.
        return Err(Skip::Malformed(Layer::Tunnel));
    }
    let mut hlen = 4;
    for bit in [GRE_C, GRE_K, GRE_S] {
        if flags & bit != 0 {
            hlen += 4;
        }
    }
    let inner = data.get(hlen..).ok_or(Skip::Truncated(Layer::Tunnel))?;
    match proto {
        ETH_ERSPAN2 if flags & GRE_S != 0 => erspan2(inner, depth),
        // ERSPAN type I: no sequence number and no ERSPAN header.
        ETH_ERSPAN2 => ethernet(inner, depth),
        ETH_ERSPAN3 => erspan3(inner, depth),
        other => inner_by_protocol(other, inner, depth),
    }
}

/// ERSPAN type II: 8-byte header (version 1), then Ethernet.
#[inline]
fn erspan2(data: &[u8], depth: u8) -> Decoded<'_> {
    let (h, inner) = data
        .split_first_chunk::<8>()
        .ok_or(Skip::Truncated(Layer::Tunnel))?;
    if h[0] >> 4 != 1 {
        return Err(Skip::Malformed(Layer::Tunnel));
    }
    ethernet(inner, depth)
}

/// ERSPAN type III: 12-byte header (version 2), an 8-byte platform-specific
/// subheader when the O bit is set, then an Ethernet frame (frame type 0) or an
/// IP packet (frame type 2).
fn erspan3(data: &[u8], depth: u8) -> Decoded<'_> {
    let (h, rest) = data
        .split_first_chunk::<12>()
        .ok_or(Skip::Truncated(Layer::Tunnel))?;
    if h[0] >> 4 != 2 {
        return Err(Skip::Malformed(Layer::Tunnel));
    }
    // Bytes 10-11: P(1) FT(5) HwID(6) D(1) Gra(2) O(1).
    let w = be16(h[10], h[11]);
    let inner = if w & 0x0001 != 0 {
        rest.get(8..).ok_or(Skip::Truncated(Layer::Tunnel))?
    } else {
        rest
    };
    match (w >> 10) & 0x1f {
        0 => ethernet(inner, depth),
        2 => raw_ip(inner, depth),
        ft => Err(Skip::UnsupportedTunnel(ft)),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests;
