//! Hand-built frames for every link type and encapsulation, plus truncated and
//! malformed variants of each layer.

use super::*;
use proptest::prelude::*;

// IPv6 extension header numbers (read by etherparse in the decoder).
const IP_HOPOPT: u8 = 0;
const IP_ROUTING: u8 = 43;
const IP_FRAGMENT: u8 = 44;
const IP_AH: u8 = 51;
const IP_DSTOPTS: u8 = 60;

const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
const V4_SRC: [u8; 4] = [10, 0, 0, 1];
const V4_DST: [u8; 4] = [10, 0, 0, 2];
const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

// ---- builders -------------------------------------------------------------

fn tcp_hdr(options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut v = Vec::new();
    v.extend_from_slice(&40000u16.to_be_bytes());
    v.extend_from_slice(&5555u16.to_be_bytes());
    v.extend_from_slice(&1001u32.to_be_bytes());
    v.extend_from_slice(&5001u32.to_be_bytes());
    v.push((((20 + options.len()) / 4) as u8) << 4);
    v.push(TcpFlags::PSH | TcpFlags::ACK);
    v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    v.extend_from_slice(options);
    v.extend_from_slice(payload);
    v
}

fn tcp() -> Vec<u8> {
    tcp_hdr(&[], PAYLOAD)
}

fn ipv4_opts(proto: u8, options: &[u8], body: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 20 + options.len();
    let mut v = vec![0x40 | (ihl / 4) as u8, 0];
    v.extend_from_slice(&((ihl + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]); // id, DF, ttl, proto, csum
    v.extend_from_slice(&V4_SRC);
    v.extend_from_slice(&V4_DST);
    v.extend_from_slice(options);
    v.extend_from_slice(body);
    v
}

fn ipv4(proto: u8, body: &[u8]) -> Vec<u8> {
    ipv4_opts(proto, &[], body)
}

/// `exts` are (next-header code of this extension, its bytes without the
/// next-header byte); the chain is linked automatically.
fn ipv6_ext(exts: &[(u8, Vec<u8>)], proto: u8, body: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map(|e| e.0).unwrap_or(proto);
        chain.push(next);
        chain.extend_from_slice(bytes);
    }
    chain.extend_from_slice(body);
    let first = exts.first().map(|e| e.0).unwrap_or(proto);
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(chain.len() as u16).to_be_bytes());
    v.push(first);
    v.push(64);
    v.extend_from_slice(&V6_SRC);
    v.extend_from_slice(&V6_DST);
    v.extend_from_slice(&chain);
    v
}

fn ipv6(proto: u8, body: &[u8]) -> Vec<u8> {
    ipv6_ext(&[], proto, body)
}

fn eth(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn vlan_tag(vid: u16, inner: u16) -> Vec<u8> {
    let mut v = vid.to_be_bytes().to_vec();
    v.extend_from_slice(&inner.to_be_bytes());
    v
}

fn udp(dport: u16, body: &[u8]) -> Vec<u8> {
    let mut v = 12345u16.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(body);
    v
}

fn vxlan(inner_eth: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    v.extend_from_slice(inner_eth);
    v
}

fn geneve(proto: u16, options: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut v = vec![(options.len() / 4) as u8, 0];
    v.extend_from_slice(&proto.to_be_bytes());
    v.extend_from_slice(&[0, 0, 42, 0]);
    v.extend_from_slice(options);
    v.extend_from_slice(inner);
    v
}

fn gre(flags: u16, proto: u16, inner: &[u8]) -> Vec<u8> {
    let mut v = flags.to_be_bytes().to_vec();
    v.extend_from_slice(&proto.to_be_bytes());
    for bit in [GRE_C, GRE_K, GRE_S] {
        if flags & bit != 0 {
            v.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        }
    }
    v.extend_from_slice(inner);
    v
}

fn erspan2_hdr() -> Vec<u8> {
    vec![0x10, 0x0a, 0x00, 0x01, 0, 0, 0, 7]
}

fn erspan3_hdr(frame_type: u16, o_bit: bool) -> Vec<u8> {
    let mut v = vec![0x20, 0x0a, 0x00, 0x01, 1, 2, 3, 4, 0, 0];
    let w: u16 = (frame_type << 10) | u16::from(o_bit);
    v.extend_from_slice(&w.to_be_bytes());
    if o_bit {
        v.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
    }
    v
}

fn eth_v4_tcp() -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(IP_TCP, &tcp()))
}

// ---- checks ---------------------------------------------------------------

fn assert_v4(seg: &TcpSegment<'_>) {
    assert_eq!(seg.src, "10.0.0.1:40000".parse().unwrap());
    assert_eq!(seg.dst, "10.0.0.2:5555".parse().unwrap());
    assert_eq!(seg.seq, 1001);
    assert_eq!(seg.ack, 5001);
    assert!(seg.flags.has(TcpFlags::PSH | TcpFlags::ACK));
    assert!(!seg.flags.has(TcpFlags::SYN));
    assert_eq!(seg.payload, PAYLOAD);
}

fn assert_v6(seg: &TcpSegment<'_>) {
    assert_eq!(seg.src, "[fd00::1]:40000".parse().unwrap());
    assert_eq!(seg.dst, "[fd00::2]:5555".parse().unwrap());
    assert_eq!(seg.payload, PAYLOAD);
}

fn ok(linktype: u32, frame: &[u8]) -> TcpSegment<'_> {
    match decode_tcp(linktype, frame) {
        Ok(seg) => {
            assert_within(frame, seg.payload);
            seg
        }
        Err(e) => panic!("linktype {linktype}: unexpected skip {e:?}"),
    }
}

fn skip(linktype: u32, frame: &[u8]) -> Skip {
    match decode_tcp(linktype, frame) {
        Ok(seg) => panic!("linktype {linktype}: unexpected segment {seg:?}"),
        Err(e) => {
            assert!(ALL_REASONS.contains(&e.reason()), "{e:?}");
            e
        }
    }
}

fn assert_within(frame: &[u8], payload: &[u8]) {
    let f = frame.as_ptr_range();
    let p = payload.as_ptr_range();
    assert!(p.start >= f.start && p.end <= f.end);
}

/// Every strict prefix of a valid frame must be skipped (or, when only TCP payload
/// is cut, decode with a shorter payload), never panic.
fn all_prefixes(linktype: u32, frame: &[u8]) {
    let full = ok(linktype, frame).payload.len();
    for n in 0..frame.len() {
        let cut = frame.get(..n).unwrap();
        match decode_tcp(linktype, cut) {
            Ok(seg) => {
                assert_within(cut, seg.payload);
                assert!(seg.payload.len() < full || full == 0);
            }
            Err(e) => assert!(ALL_REASONS.contains(&e.reason())),
        }
    }
}

// ---- link types -------------------------------------------------------------

#[test]
fn ethernet_ipv4() {
    let f = eth_v4_tcp();
    assert_v4(&ok(1, &f));
    all_prefixes(1, &f);
}

#[test]
fn ethernet_padding_is_not_payload() {
    // A bare ACK padded to the 60-byte Ethernet minimum.
    let mut f = eth(ETH_IPV4, &ipv4(IP_TCP, &tcp_hdr(&[], b"")));
    assert_eq!(f.len(), 54);
    f.resize(60, 0);
    assert_eq!(ok(1, &f).payload, b"");
}

#[test]
fn ethernet_ipv6() {
    let f = eth(ETH_IPV6, &ipv6(IP_TCP, &tcp()));
    assert_v6(&ok(1, &f));
    all_prefixes(1, &f);
}

#[test]
fn ethernet_not_ip() {
    assert_eq!(skip(1, &eth(0x0806, &[0; 28])), Skip::NotIp(0x0806));
    // 802.3 length field + LLC.
    assert_eq!(skip(1, &eth(0x0026, &[0; 38])), Skip::NotIp(0x0026));
    assert_eq!(skip(1, &[0; 13]), Skip::Truncated(Layer::Link));
    assert_eq!(skip(1, &[]), Skip::Truncated(Layer::Link));
}

#[test]
fn vlan_single_qinq_and_stacked() {
    let ip = ipv4(IP_TCP, &tcp());
    let mut one = vlan_tag(100, ETH_IPV4);
    one.extend_from_slice(&ip);
    let f = eth(ETH_VLAN, &one);
    assert_v4(&ok(1, &f));
    all_prefixes(1, &f);

    for outer in [ETH_QINQ, ETH_QINQ_9100, ETH_QINQ_9200, ETH_VLAN] {
        let mut two = vlan_tag(10, ETH_VLAN);
        two.extend_from_slice(&vlan_tag(20, ETH_IPV4));
        two.extend_from_slice(&ip);
        let f = eth(outer, &two);
        assert_v4(&ok(1, &f));
        all_prefixes(1, &f);
    }

    let mut three = vlan_tag(1, ETH_QINQ);
    three.extend_from_slice(&vlan_tag(2, ETH_VLAN));
    three.extend_from_slice(&vlan_tag(3, ETH_IPV6));
    three.extend_from_slice(&ipv6(IP_TCP, &tcp()));
    assert_v6(&ok(1, &eth(ETH_QINQ, &three)));

    // Tag ending the frame, and a tag with a non-IP inner type.
    assert_eq!(
        skip(1, &eth(ETH_VLAN, &[0, 5])),
        Skip::Truncated(Layer::Link)
    );
    assert_eq!(
        skip(1, &eth(ETH_VLAN, &vlan_tag(5, 0x0806))),
        Skip::NotIp(0x0806)
    );
    // A frame made only of VLAN tags terminates.
    let many: Vec<u8> = std::iter::repeat_n(vlan_tag(1, ETH_VLAN), 300)
        .flatten()
        .collect();
    assert_eq!(skip(1, &eth(ETH_VLAN, &many)), Skip::Truncated(Layer::Link));
}

#[test]
fn linux_sll() {
    let ip = ipv4(IP_TCP, &tcp());
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&ETH_IPV4.to_be_bytes());
    f.extend_from_slice(&ip);
    assert_v4(&ok(113, &f));
    all_prefixes(113, &f);

    let mut v6 = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    v6.extend_from_slice(&ETH_IPV6.to_be_bytes());
    v6.extend_from_slice(&ipv6(IP_TCP, &tcp()));
    assert_v6(&ok(113, &v6));

    // VLAN tag left in place by the capture.
    let mut tagged = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    tagged.extend_from_slice(&ETH_VLAN.to_be_bytes());
    tagged.extend_from_slice(&vlan_tag(7, ETH_IPV4));
    tagged.extend_from_slice(&ip);
    assert_v4(&ok(113, &tagged));

    let mut arp = vec![0; 14];
    arp.extend_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(skip(113, &arp), Skip::NotIp(0x0806));
    assert_eq!(skip(113, &[0; 15]), Skip::Truncated(Layer::Link));
}

#[test]
fn linux_sll2() {
    let mut f = ETH_IPV4.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(f.len(), 20);
    f.extend_from_slice(&ipv4(IP_TCP, &tcp()));
    assert_v4(&ok(276, &f));
    all_prefixes(276, &f);

    let mut v6 = ETH_IPV6.to_be_bytes().to_vec();
    v6.extend_from_slice(&[0; 18]);
    v6.extend_from_slice(&ipv6(IP_TCP, &tcp()));
    assert_v6(&ok(276, &v6));
    assert_eq!(skip(276, &[0x08, 0, 0, 0]), Skip::Truncated(Layer::Link));
}

#[test]
fn raw_ip_link_types() {
    let v4 = ipv4(IP_TCP, &tcp());
    let v6 = ipv6(IP_TCP, &tcp());
    for lt in [101, 12, 14] {
        assert_v4(&ok(lt, &v4));
        assert_v6(&ok(lt, &v6));
        all_prefixes(lt, &v4);
        all_prefixes(lt, &v6);
        assert_eq!(skip(lt, &[0x50; 40]), Skip::BadIpVersion(5));
        assert_eq!(skip(lt, &[]), Skip::Truncated(Layer::Link));
    }
    assert_v4(&ok(228, &v4));
    assert_v6(&ok(229, &v6));
    all_prefixes(228, &v4);
    all_prefixes(229, &v6);
    // Version nibble disagreeing with the link type.
    assert_eq!(skip(228, &v6), Skip::Malformed(Layer::Ipv4));
    assert_eq!(
        skip(229, &[v4.clone(), vec![0; 40]].concat()),
        Skip::Malformed(Layer::Ipv6)
    );
}

#[test]
fn bsd_null_and_loop() {
    let v4 = ipv4(IP_TCP, &tcp());
    let v6 = ipv6(IP_TCP, &tcp());
    for lt in [0, 108] {
        // Both byte orders, whatever the link type says.
        for af in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let f = [af.as_slice(), &v4].concat();
            assert_v4(&ok(lt, &f));
            all_prefixes(lt, &f);
        }
        for af6 in [10u32, 23, 24, 28, 30] {
            for af in [af6.to_le_bytes(), af6.to_be_bytes()] {
                assert_v6(&ok(lt, &[af.as_slice(), &v6].concat()));
            }
        }
        let unknown = [7u32.to_be_bytes().as_slice(), &v4].concat();
        assert_eq!(skip(lt, &unknown), Skip::UnknownAddressFamily(7));
        assert_eq!(skip(lt, &[2, 0, 0]), Skip::Truncated(Layer::Link));
    }
}

#[test]
fn unsupported_link_type() {
    let f = eth_v4_tcp();
    assert_eq!(skip(105, &f), Skip::UnsupportedLinkType(105));
    assert_eq!(skip(u32::MAX, &f), Skip::UnsupportedLinkType(u32::MAX));
}

// ---- IPv4 -------------------------------------------------------------------

#[test]
fn ipv4_options() {
    // Router alert + NOP padding, and the maximal 40 bytes of options.
    let f = ipv4_opts(IP_TCP, &[0x94, 0x04, 0, 0], &tcp());
    assert_v4(&ok(228, &f));
    all_prefixes(228, &f);
    let f = ipv4_opts(IP_TCP, &[1; 40], &tcp());
    assert_v4(&ok(228, &f));
}

#[test]
fn ipv4_total_length_zero_uses_frame() {
    let mut f = ipv4(IP_TCP, &tcp());
    f[2] = 0;
    f[3] = 0;
    assert_v4(&ok(228, &f));
}

#[test]
fn ipv4_total_length_trims_and_never_extends() {
    let mut f = ipv4(IP_TCP, &tcp());
    // Shorter total length: payload trimmed.
    let total = (20 + 20 + 3) as u16;
    f[2..4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(ok(228, &f).payload, &PAYLOAD[..3]);
    // Longer than captured (snaplen): keep what was captured.
    let mut f = ipv4(IP_TCP, &tcp());
    f[2..4].copy_from_slice(&1500u16.to_be_bytes());
    assert_v4(&ok(228, &f));
}

#[test]
fn ipv4_malformed() {
    let good = ipv4(IP_TCP, &tcp());
    let mut f = good.clone();
    f[0] = 0x44; // IHL 4
    assert_eq!(skip(228, &f), Skip::Malformed(Layer::Ipv4));
    let mut f = good.clone();
    f[2..4].copy_from_slice(&10u16.to_be_bytes()); // total < IHL
    assert_eq!(skip(228, &f), Skip::Malformed(Layer::Ipv4));
    let mut f = good.clone();
    f[0] = 0x4f; // IHL 60, but the packet is 58 bytes long
    f[2..4].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(skip(228, &f), Skip::Truncated(Layer::Ipv4));
    assert_eq!(skip(228, &good[..19]), Skip::Truncated(Layer::Ipv4));
    // Total length cutting into the TCP header.
    let mut f = good.clone();
    f[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(skip(228, &f), Skip::Truncated(Layer::Tcp));
}

#[test]
fn ipv4_fragments_are_skipped() {
    let good = ipv4(IP_TCP, &tcp());
    let mut first = good.clone();
    first[6] = 0x20; // MF, offset 0
    assert_eq!(skip(228, &first), Skip::Ipv4Fragment);
    let mut last = good.clone();
    last[6] = 0x00;
    last[7] = 0x03; // offset 24 bytes
    assert_eq!(skip(228, &last), Skip::Ipv4Fragment);
    let mut df = good.clone();
    df[6] = 0x40; // DF only
    assert_v4(&ok(228, &df));
}

#[test]
fn ipv4_not_tcp() {
    assert_eq!(skip(228, &ipv4(1, &[8, 0, 0, 0])), Skip::NotTcp(1));
    assert_eq!(
        skip(228, &ipv4(IP_UDP, &udp(53, b"x"))),
        Skip::NotTcp(IP_UDP)
    );
    assert_eq!(skip(228, &ipv4(132, &[0; 12])), Skip::NotTcp(132));
}

// ---- IPv6 -------------------------------------------------------------------

fn opts8() -> Vec<u8> {
    // Hdr ext len 0 (8 bytes): next header byte is added by the builder; PadN.
    vec![0, 1, 4, 0, 0, 0, 0]
}

#[test]
fn ipv6_extension_headers() {
    let exts = vec![
        (IP_HOPOPT, opts8()),
        (IP_DSTOPTS, {
            let mut v = vec![1]; // 16 bytes
            v.extend_from_slice(&[1, 12]);
            v.extend_from_slice(&[0; 12]);
            v
        }),
        (IP_ROUTING, vec![0, 4, 0, 0, 0, 0, 0]),
        (IP_AH, {
            let mut v = vec![4]; // (4+2)*4 = 24 bytes
            v.extend_from_slice(&[0; 22]);
            v
        }),
        (IP_DSTOPTS, opts8()),
    ];
    let f = ipv6_ext(&exts, IP_TCP, &tcp());
    assert_v6(&ok(229, &f));
    all_prefixes(229, &f);
    let f = eth(ETH_IPV6, &f);
    assert_v6(&ok(1, &f));
}

#[test]
fn ipv6_fragments() {
    // Atomic fragment (offset 0, M 0) is a whole packet.
    let atomic = ipv6_ext(&[(IP_FRAGMENT, vec![0, 0, 0, 0, 0, 0, 9])], IP_TCP, &tcp());
    assert_v6(&ok(229, &atomic));
    let first = ipv6_ext(&[(IP_FRAGMENT, vec![0, 0, 1, 0, 0, 0, 9])], IP_TCP, &tcp());
    assert_eq!(skip(229, &first), Skip::Ipv6Fragment);
    let later = ipv6_ext(&[(IP_FRAGMENT, vec![0, 0, 8, 0, 0, 0, 9])], IP_TCP, &tcp());
    assert_eq!(skip(229, &later), Skip::Ipv6Fragment);
}

#[test]
fn ipv6_payload_length() {
    // Zero (jumbo/TSO): the frame is the packet.
    let mut f = ipv6(IP_TCP, &tcp());
    f[4] = 0;
    f[5] = 0;
    assert_v6(&ok(229, &f));
    // Trailing padding trimmed.
    let mut f = eth(ETH_IPV6, &ipv6(IP_TCP, &tcp()));
    f.extend_from_slice(&[0xee; 6]);
    assert_v6(&ok(1, &f));
    // Longer than captured.
    let mut f = ipv6(IP_TCP, &tcp());
    f[4..6].copy_from_slice(&9000u16.to_be_bytes());
    assert_v6(&ok(229, &f));
}

#[test]
fn ipv6_malformed_and_truncated() {
    assert_eq!(skip(229, &[0x60; 39]), Skip::Truncated(Layer::Ipv6));
    // Extension header claiming more bytes than there are.
    let f = ipv6_ext(
        &[(IP_HOPOPT, {
            let mut v = vec![200];
            v.extend_from_slice(&[0; 6]);
            v
        })],
        IP_TCP,
        &[],
    );
    assert_eq!(skip(229, &f), Skip::Truncated(Layer::Ipv6));
    // Payload length cutting the extension chain.
    let mut f = ipv6_ext(&[(IP_HOPOPT, opts8())], IP_TCP, &tcp());
    f[4..6].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(skip(229, &f), Skip::Truncated(Layer::Ipv6));
    // No next header, ESP, UDP.
    assert_eq!(skip(229, &ipv6(59, &[])), Skip::NotTcp(59));
    assert_eq!(skip(229, &ipv6(50, &[0; 16])), Skip::NotTcp(50));
    assert_eq!(skip(229, &ipv6(IP_UDP, &udp(443, b""))), Skip::NotTcp(17));
}

// ---- TCP --------------------------------------------------------------------

#[test]
fn tcp_options_and_data_offset() {
    let opts = [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7];
    let f = ipv4(IP_TCP, &tcp_hdr(&opts, PAYLOAD));
    assert_v4(&ok(228, &f));
    all_prefixes(228, &f);
    // Maximal options (data offset 15).
    let f = ipv4(IP_TCP, &tcp_hdr(&[1; 40], PAYLOAD));
    assert_v4(&ok(228, &f));

    let mut t = tcp();
    t[12] = 0x40; // data offset 4
    assert_eq!(skip(228, &ipv4(IP_TCP, &t)), Skip::Malformed(Layer::Tcp));
    let mut t = tcp_hdr(&[], b"");
    t[12] = 0xf0; // 60 bytes, only 20 there
    assert_eq!(skip(228, &ipv4(IP_TCP, &t)), Skip::Truncated(Layer::Tcp));
    assert_eq!(
        skip(228, &ipv4(IP_TCP, &[0; 19])),
        Skip::Truncated(Layer::Tcp)
    );
}

#[test]
fn tcp_flags_pass_through() {
    let mut t = tcp_hdr(&[], b"");
    t[13] = TcpFlags::SYN;
    let f = ipv4(IP_TCP, &t);
    let seg = ok(228, &f);
    assert!(seg.flags.has(TcpFlags::SYN));
    assert!(!seg.flags.has(TcpFlags::ACK));
    assert!(seg.payload.is_empty());
}

// ---- tunnels ----------------------------------------------------------------

fn outer_v4_udp(dport: u16, body: &[u8]) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(IP_UDP, &udp(dport, body)))
}

fn outer_v4_gre(gre_bytes: &[u8]) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(IP_GRE, gre_bytes))
}

#[test]
fn vxlan_inner_ethernet() {
    let f = outer_v4_udp(4789, &vxlan(&eth_v4_tcp()));
    assert_v4(&ok(1, &f));
    all_prefixes(1, &f);
    // Outer IPv6 and inner IPv6 + VLAN.
    let mut inner = vlan_tag(9, ETH_IPV6);
    inner.extend_from_slice(&ipv6(IP_TCP, &tcp()));
    let f = eth(
        ETH_IPV6,
        &ipv6(IP_UDP, &udp(4789, &vxlan(&eth(ETH_VLAN, &inner)))),
    );
    assert_v6(&ok(1, &f));
    assert_eq!(
        skip(1, &outer_v4_udp(4789, &[8, 0, 0])),
        Skip::Truncated(Layer::Tunnel)
    );
}

#[test]
fn udp_lengths() {
    let mut u = udp(4789, &vxlan(&eth_v4_tcp()));
    u[4] = 0;
    u[5] = 0; // 0 = use the IP payload
    assert_v4(&ok(228, &ipv4(IP_UDP, &u)));
    let mut u = udp(4789, &vxlan(&eth_v4_tcp()));
    u[4] = 0;
    u[5] = 7;
    assert_eq!(skip(228, &ipv4(IP_UDP, &u)), Skip::Malformed(Layer::Udp));
    assert_eq!(
        skip(228, &ipv4(IP_UDP, &[0, 1, 0x12])),
        Skip::Truncated(Layer::Udp)
    );
    // UDP length shorter than the body: inner frame cut.
    let mut u = udp(4789, &vxlan(&eth_v4_tcp()));
    u[4..6].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(skip(228, &ipv4(IP_UDP, &u)), Skip::Truncated(Layer::Link));
}

#[test]
fn geneve_variants() {
    let opt = [0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];
    for options in [&[][..], &opt[..]] {
        let f = outer_v4_udp(6081, &geneve(ETH_TEB, options, &eth_v4_tcp()));
        assert_v4(&ok(1, &f));
        all_prefixes(1, &f);
        let f = outer_v4_udp(6081, &geneve(ETH_IPV4, options, &ipv4(IP_TCP, &tcp())));
        assert_v4(&ok(1, &f));
        let f = outer_v4_udp(6081, &geneve(ETH_IPV6, options, &ipv6(IP_TCP, &tcp())));
        assert_v6(&ok(1, &f));
    }
    let f = outer_v4_udp(6081, &geneve(0x8847, &[], &[0; 40]));
    assert_eq!(skip(1, &f), Skip::UnsupportedTunnel(0x8847));
    let mut g = geneve(ETH_TEB, &[], &eth_v4_tcp());
    g[0] = 0x40; // version 1
    assert_eq!(
        skip(1, &outer_v4_udp(6081, &g)),
        Skip::Malformed(Layer::Tunnel)
    );
    let mut g = geneve(ETH_TEB, &[], &[]);
    g[0] = 0x3f; // 252 bytes of options that are not there
    assert_eq!(
        skip(1, &outer_v4_udp(6081, &g)),
        Skip::Truncated(Layer::Tunnel)
    );
}

#[test]
fn gre_variants() {
    // All combinations of C, K, S with inner IPv4.
    for flags in 0..8u16 {
        let flags = ((flags & 4) << 13) | ((flags & 3) << 12);
        let f = outer_v4_gre(&gre(flags, ETH_IPV4, &ipv4(IP_TCP, &tcp())));
        assert_v4(&ok(1, &f));
        all_prefixes(1, &f);
    }
    let f = outer_v4_gre(&gre(GRE_K, ETH_IPV6, &ipv6(IP_TCP, &tcp())));
    assert_v6(&ok(1, &f));
    // Transparent Ethernet bridging.
    let f = outer_v4_gre(&gre(0, ETH_TEB, &eth_v4_tcp()));
    assert_v4(&ok(1, &f));
    // GRE over IPv6.
    let f = eth(
        ETH_IPV6,
        &ipv6(IP_GRE, &gre(0, ETH_IPV4, &ipv4(IP_TCP, &tcp()))),
    );
    assert_v4(&ok(1, &f));

    assert_eq!(
        skip(1, &outer_v4_gre(&gre(0x0001, 0x880b, &[0; 20]))),
        Skip::UnsupportedTunnel(0x880b)
    );
    assert_eq!(
        skip(1, &outer_v4_gre(&gre(0, 0x8847, &[0; 20]))),
        Skip::UnsupportedTunnel(0x8847)
    );
    assert_eq!(
        skip(1, &outer_v4_gre(&gre(GRE_R, ETH_IPV4, &[0; 40]))),
        Skip::Malformed(Layer::Tunnel)
    );
    assert_eq!(
        skip(1, &outer_v4_gre(&[0x30, 0, 0x08, 0, 0, 0, 0, 0])),
        Skip::Truncated(Layer::Tunnel)
    );
}

#[test]
fn erspan_types() {
    // Type I: 0x88BE without S, Ethernet right after GRE.
    let f = outer_v4_gre(&gre(0, ETH_ERSPAN2, &eth_v4_tcp()));
    assert_v4(&ok(1, &f));

    // Type II.
    let body = [erspan2_hdr(), eth_v4_tcp()].concat();
    let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN2, &body));
    assert_v4(&ok(1, &f));
    all_prefixes(1, &f);
    let mut bad = body.clone();
    bad[0] = 0x20;
    let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN2, &bad));
    assert_eq!(skip(1, &f), Skip::Malformed(Layer::Tunnel));

    // Type III with and without the platform subheader, Ethernet and IP frames.
    for o_bit in [false, true] {
        let body = [erspan3_hdr(0, o_bit), eth_v4_tcp()].concat();
        let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN3, &body));
        assert_v4(&ok(1, &f));
        all_prefixes(1, &f);
        let body = [erspan3_hdr(2, o_bit), ipv6(IP_TCP, &tcp())].concat();
        let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN3, &body));
        assert_v6(&ok(1, &f));
    }
    let body = [erspan3_hdr(1, false), eth_v4_tcp()].concat();
    let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN3, &body));
    assert_eq!(skip(1, &f), Skip::UnsupportedTunnel(1));
    let mut body = [erspan3_hdr(0, false), eth_v4_tcp()].concat();
    body[0] = 0x10;
    let f = outer_v4_gre(&gre(GRE_S, ETH_ERSPAN3, &body));
    assert_eq!(skip(1, &f), Skip::Malformed(Layer::Tunnel));
}

#[test]
fn ip_in_ip() {
    let f = ipv4(IP_IPIP, &ipv4(IP_TCP, &tcp()));
    assert_v4(&ok(228, &f));
    let f = ipv4(IP_IPV6, &ipv6(IP_TCP, &tcp()));
    assert_v6(&ok(228, &f));
}

/// Wraps `inner` (an Ethernet frame) in `n` VXLAN levels.
fn nest_vxlan(n: usize) -> Vec<u8> {
    let mut f = eth_v4_tcp();
    for _ in 0..n {
        f = outer_v4_udp(4789, &vxlan(&f));
    }
    f
}

#[test]
fn tunnel_depth_bound() {
    let depth = usize::from(MAX_TUNNEL_DEPTH);
    assert_v4(&ok(1, &nest_vxlan(depth)));
    assert_eq!(skip(1, &nest_vxlan(depth + 1)), Skip::TunnelTooDeep);
    // Mixed nesting: GRE in GENEVE in VXLAN.
    let gre_pkt = outer_v4_gre(&gre(GRE_K, ETH_TEB, &eth_v4_tcp()));
    let gen = outer_v4_udp(6081, &geneve(ETH_TEB, &[], &gre_pkt));
    let vx = outer_v4_udp(4789, &vxlan(&gen));
    assert_v4(&ok(1, &vx));
    // Self-nesting IP-in-IP beyond the bound.
    let mut f = ipv4(IP_TCP, &tcp());
    for _ in 0..=depth {
        f = ipv4(IP_IPIP, &f);
    }
    assert_eq!(skip(228, &f), Skip::TunnelTooDeep);
}

// ---- reasons and stats --------------------------------------------------------

#[test]
fn reasons_are_listed_unique_and_snake_case() {
    let layers = [
        Layer::Link,
        Layer::Ipv4,
        Layer::Ipv6,
        Layer::Tcp,
        Layer::Udp,
        Layer::Tunnel,
    ];
    let mut all = vec![
        Skip::UnsupportedLinkType(0),
        Skip::UnknownAddressFamily(0),
        Skip::NotIp(0),
        Skip::BadIpVersion(0),
        Skip::NotTcp(0),
        Skip::Ipv4Fragment,
        Skip::Ipv6Fragment,
        Skip::UnsupportedTunnel(0),
        Skip::TunnelTooDeep,
    ];
    for l in layers {
        all.push(Skip::Truncated(l));
        all.push(Skip::Malformed(l));
    }
    let mut names: Vec<&str> = all.iter().map(Skip::reason).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
    assert_eq!(names, ALL_REASONS);
    for n in ALL_REASONS {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{n}"
        );
    }
    for s in &all {
        assert!(!s.to_string().is_empty());
    }
}

#[test]
fn decode_stats_counts_and_serialises() {
    let mut st = DecodeStats::default();
    assert_eq!(st.total(), 0);
    st.record(&Skip::NotTcp(17));
    st.record(&Skip::NotTcp(1));
    st.record(&Skip::Truncated(Layer::Tcp));
    assert_eq!(st.total(), 3);
    assert_eq!(st.get("not_tcp"), 2);
    assert_eq!(st.get("ipv4_fragment"), 0);
    let mut other = DecodeStats::default();
    other.record(&Skip::Ipv4Fragment);
    st.merge(&other);
    assert_eq!(st.total(), 4);
    assert_eq!(
        serde_json::to_string(&st).unwrap(),
        r#"{"ipv4_fragment":1,"not_tcp":2,"truncated_tcp":1}"#
    );
}

// ---- never panic ------------------------------------------------------------

const LINKTYPES: [u32; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(lt in proptest::sample::select(LINKTYPES.to_vec()),
                                frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(seg) = decode_tcp(lt, &frame) {
            assert_within(&frame, seg.payload);
        }
    }

    #[test]
    fn mutated_tunnel_frames_never_panic(which in 0usize..6,
                                         flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut f = match which {
            0 => nest_vxlan(2),
            1 => outer_v4_udp(6081, &geneve(ETH_TEB, &[1, 2, 0x80, 1, 0, 0, 0, 0], &eth_v4_tcp())),
            2 => outer_v4_gre(&gre(GRE_S, ETH_ERSPAN2, &[erspan2_hdr(), eth_v4_tcp()].concat())),
            3 => outer_v4_gre(&gre(GRE_S, ETH_ERSPAN3, &[erspan3_hdr(0, true), eth_v4_tcp()].concat())),
            4 => eth(ETH_IPV6, &ipv6_ext(&[(IP_HOPOPT, opts8()), (IP_DSTOPTS, opts8())], IP_TCP, &tcp())),
            _ => eth(ETH_QINQ, &[vlan_tag(1, ETH_VLAN), vlan_tag(2, ETH_IPV4), ipv4_opts(IP_TCP, &[1; 8], &tcp())].concat()),
        };
        for (pos, val) in flips {
            let n = f.len();
            f[pos % n] = val;
        }
        if let Ok(seg) = decode_tcp(1, &f) {
            assert_within(&f, seg.payload);
        }
    }
}

// ---- synthesized fixtures (fixtures/scripts/synth_decode.py) ----------------------

/// (link type, frame) of every packet in a classic pcap (little-endian, as written
/// by the synth script) or a pcapng file (SHB, IDB and EPB blocks only).
fn read_capture(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let u16le = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let mut out = Vec::new();
    if u32le(bytes, 0) == 0xa1b2_c3d4 {
        let linktype = u32le(bytes, 20);
        let mut o = 24;
        while o < bytes.len() {
            let caplen = u32le(bytes, o + 8) as usize;
            out.push((linktype, bytes[o + 16..o + 16 + caplen].to_vec()));
            o += 16 + caplen;
        }
    } else {
        let mut interfaces = Vec::new();
        let mut o = 0;
        while o < bytes.len() {
            let (btype, blen) = (u32le(bytes, o), u32le(bytes, o + 4) as usize);
            match btype {
                1 => interfaces.push(u32::from(u16le(bytes, o + 8))),
                6 => {
                    let ifx = u32le(bytes, o + 8) as usize;
                    let caplen = u32le(bytes, o + 20) as usize;
                    out.push((interfaces[ifx], bytes[o + 28..o + 28 + caplen].to_vec()));
                }
                _ => {}
            }
            o += blen;
        }
    }
    out
}

#[test]
fn synthesized_fixtures_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/synth");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // fixtures not generated in this checkout
    };
    let mut seen = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = name
            .strip_prefix("decode_")
            .and_then(|n| n.split('.').next())
        else {
            continue;
        };
        seen += 1;
        let mut stats = DecodeStats::default();
        let mut request = Vec::new();
        let mut response = Vec::new();
        let mut syns = 0;
        for (lt, frame) in read_capture(&std::fs::read(&path).unwrap()) {
            match decode_tcp(lt, &frame) {
                Ok(seg) => {
                    if seg.flags.has(TcpFlags::SYN) {
                        syns += 1;
                    }
                    if seg.dst.port() == 5555 {
                        request.extend_from_slice(seg.payload);
                    } else {
                        assert_eq!(seg.src.port(), 5555, "{name}");
                        response.extend_from_slice(seg.payload);
                    }
                }
                Err(e) => stats.record(&e),
            }
        }
        let request = String::from_utf8(request).unwrap();
        let response = String::from_utf8(response).unwrap();
        if case == "mixed_pcapng" {
            assert_eq!(syns, 4, "{name}");
            assert!(
                request.contains("GET /decode/mixed-a HTTP/1.1\r\n"),
                "{name}"
            );
            assert!(
                request.contains("GET /decode/mixed-b HTTP/1.1\r\n"),
                "{name}"
            );
            assert_eq!(response.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{name}");
        } else {
            assert_eq!(syns, 2, "{name}");
            assert!(
                request.starts_with(&format!("GET /decode/{case} HTTP/1.1\r\n")),
                "{name}"
            );
        }
        if case == "ipv4_fragments" {
            assert!(stats.get("ipv4_fragment") >= 2, "{name}: {stats:?}");
            assert_eq!(stats.total(), stats.get("ipv4_fragment"), "{name}");
            assert!(response.is_empty(), "{name}");
        } else {
            assert_eq!(stats.total(), 0, "{name}: {stats:?}");
            if case != "mixed_pcapng" {
                assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{name}");
                // Padding never leaks into payloads: exact lengths.
                assert!(
                    response.ends_with(&format!("{{\"case\":\"{case}\",\"ok\":true}}")),
                    "{name}"
                );
            }
        }
    }
    assert!(seen == 0 || seen >= 17, "only {seen} decode fixtures");
}
