//! Drives the flow table and reassembly (with the HTTP parser behind it) with
//! arbitrary segments: random sequence numbers, flags, overlaps and ports, under
//! small memory caps so eviction and buffer overflow paths run too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use stoa_tap::decode::{TcpFlags, TcpSegment};
use stoa_tap::pipeline::{Engine, EngineConfig};

fuzz_target!(|data: &[u8]| {
    let mut cfg = EngineConfig::default();
    cfg.tcp.memory_cap = 256 * 1024;
    cfg.tcp.max_buffer_per_direction = 32 * 1024;
    cfg.tcp.max_flows = 8;
    cfg.tcp.idle_timeout_ns = 1_000_000_000;
    let mut engine = Engine::new(cfg);
    let mut rest = data;
    let mut ts = 1_000_000_000u64;
    let mut base = [0u32; 4];
    // Each record: conn(1) dir+flags(1) seq delta(2) ack delta(2) len(1) ts step(1), then payload.
    while rest.len() >= 8 {
        let (h, tail) = rest.split_at(8);
        let conn = (h[0] % 4) as usize;
        let to_server = h[1] & 0x80 != 0;
        let flags = h[1] & 0x1f;
        let seq_delta = u32::from(u16::from_le_bytes([h[2], h[3]]));
        let ack = u32::from(u16::from_le_bytes([h[4], h[5]]));
        let len = (h[6] as usize).min(tail.len());
        ts += u64::from(h[7]) * 10_000_000;
        let (payload, after) = tail.split_at(len);
        rest = after;
        // Sequence numbers start near the wrap point so wraparound is exercised.
        base[conn] = base[conn].wrapping_add(seq_delta);
        let seq = base[conn].wrapping_add(u32::MAX - 40_000);
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000 + conn as u16);
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 5555);
        let (src, dst) = if to_server { (client, server) } else { (server, client) };
        let seg = TcpSegment {
            src,
            dst,
            seq,
            ack: ack.wrapping_add(u32::MAX - 40_000),
            flags: TcpFlags(flags),
            payload,
        };
        engine.segment(&seg, ts);
        assert!(engine.open_flows() <= 8, "flow limit exceeded");
        for ex in engine.take_exchanges() {
            assert!(ex.request.method.len() <= 64 * 1024);
        }
    }
    engine.finish();
    assert_eq!(engine.open_flows(), 0, "flows left after finish");
    engine.take_exchanges().for_each(drop);
});
