//! Drives one HTTP/1 `Connection` directly: the input is split into records
//! that deliver bytes to either direction at arbitrary call boundaries, report
//! gaps, end a direction or close the connection. Canned protocol fragments can
//! be injected so the fuzzer reaches bodies, codings, pipelining and upgrades
//! quickly. Small limits make every bound trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use stoa_tap::flow::{CloseReason, Direction, EndKind};
use stoa_tap::http1::{Connection, Exchange, Http1Config, Http1Stats, ResponseHeaders};

const SNIPPETS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"POST /a HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n",
    b"CONNECT h:443 HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Encoding: gzip\r\n",
    b"Content-Encoding: deflate\r\n",
    b"Content-Encoding: br\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"5;x=y\r\nhello\r\n",
    b"0\r\nT: v\r\n\r\n",
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
    b"\x78\x9c",
    b"\x1b\x11\x01\xf8",
];

fuzz_target!(|data: &[u8]| {
    let cfg = Http1Config {
        max_header_bytes: 1024,
        max_headers: 16,
        body_sample_bytes: 64,
        max_decoded_bytes: 4096,
        max_pending_requests: 4,
        max_chunk_size: 1 << 20,
        max_line_bytes: 128,
        decode_content: true,
        // Both ways of keeping response fields.
        response_headers: if data.first().is_some_and(|b| b & 0x80 != 0) {
            ResponseHeaders::Only(&["content-type", "x-long"])
        } else {
            ResponseHeaders::All
        },
    };
    let flow = stoa_tap::http1::FlowId {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000),
        server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 5555),
    };
    let mut conn = Connection::new(flow);
    let mut out = Vec::new();
    let mut stats = Http1Stats::default();
    let mut ts = 1_000u64;
    let mut rest = data;
    let mut emitted = 0u64;
    let mut last_seq: Option<u32> = None;
    // Each record: op(1) arg(1) [payload].
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        ts += u64::from(*op >> 4);
        let dir = if op & 0x08 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        match op & 0x07 {
            0..=2 => {
                let len = usize::from(*arg).min(rest.len());
                let (payload, after) = rest.split_at(len);
                rest = after;
                conn.on_data(&cfg, dir, payload, ts, &mut out, &mut stats);
            }
            3 | 4 => {
                let snip = SNIPPETS[usize::from(*arg) % SNIPPETS.len()];
                conn.on_data(&cfg, dir, snip, ts, &mut out, &mut stats);
            }
            5 => {
                let len = u64::from(*arg) * if arg & 1 == 1 { 1 } else { 1000 };
                conn.on_gap(&cfg, dir, len, ts, &mut out, &mut stats);
            }
            6 => {
                let kind = if arg & 1 == 0 {
                    EndKind::Fin
                } else {
                    EndKind::Rst
                };
                conn.on_end(&cfg, dir, kind, ts, &mut out, &mut stats);
            }
            _ => {
                let reason = match arg % 4 {
                    0 => CloseReason::Closed,
                    1 => CloseReason::IdleTimeout,
                    2 => CloseReason::Evicted,
                    _ => CloseReason::EndOfCapture,
                };
                conn.on_close(&cfg, reason, ts, &mut out, &mut stats);
                assert_eq!(conn.heap_bytes(), 0, "state left after close");
                emitted += check(&cfg, &mut out, &mut last_seq);
                conn = Connection::new(flow);
                last_seq = None;
            }
        }
        // Bounded memory: buffers, 4 pending requests with 16 headers, decoders.
        assert!(conn.heap_bytes() < 2 << 20, "heap {}", conn.heap_bytes());
        emitted += check(&cfg, &mut out, &mut last_seq);
    }
    conn.on_close(&cfg, CloseReason::EndOfCapture, ts, &mut out, &mut stats);
    emitted += check(&cfg, &mut out, &mut last_seq);
    assert_eq!(emitted, stats.exchanges);
    assert_eq!(conn.heap_bytes(), 0);
});

/// Checks the exchanges of one connection as they come out; returns how many.
fn check(cfg: &Http1Config, out: &mut Vec<Exchange>, last_seq: &mut Option<u32>) -> u64 {
    let mut n = 0;
    for x in out.drain(..) {
        n += 1;
        assert!(x.request.body.sample.len() <= cfg.body_sample_bytes);
        if let Some(r) = &x.response {
            assert!(r.body.sample.len() <= cfg.body_sample_bytes);
            assert!(r.interim.len() <= 8);
        }
        if let Some(prev) = *last_seq {
            assert!(x.seq_on_flow > prev, "exchanges out of order");
        }
        *last_seq = Some(x.seq_on_flow);
    }
    n
}
