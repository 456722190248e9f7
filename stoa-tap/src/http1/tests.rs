//! Unit tests: `Connection` driven with byte streams split in every way.

use super::*;
use crate::flow::Direction::{ClientToServer as C2S, ServerToClient as S2C};
use contracts::{Exchange, FlowId, HttpVersion};
use std::io::Write;

fn flow() -> FlowId {
    FlowId {
        client: "10.0.0.1:40000".parse().expect("addr"),
        server: "10.0.0.2:5555".parse().expect("addr"),
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Data(Direction, Vec<u8>, Ts),
    Gap(Direction, u64, Ts),
    End(Direction, EndKind, Ts),
    Close(CloseReason, Ts),
}

fn req(b: &[u8], ts: Ts) -> Ev {
    Ev::Data(C2S, b.to_vec(), ts)
}

fn resp(b: &[u8], ts: Ts) -> Ev {
    Ev::Data(S2C, b.to_vec(), ts)
}

fn close(ts: Ts) -> Ev {
    Ev::Close(CloseReason::Closed, ts)
}

fn run_cfg(cfg: &Http1Config, evs: &[Ev]) -> (Vec<Exchange>, Http1Stats) {
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    for e in evs {
        match e {
            Ev::Data(d, b, ts) => c.on_data(cfg, *d, b, *ts, &mut out, &mut st),
            Ev::Gap(d, n, ts) => c.on_gap(cfg, *d, *n, *ts, &mut out, &mut st),
            Ev::End(d, k, ts) => c.on_end(cfg, *d, *k, *ts, &mut out, &mut st),
            Ev::Close(r, ts) => c.on_close(cfg, *r, *ts, &mut out, &mut st),
        }
    }
    (out, st)
}

fn run(evs: &[Ev]) -> (Vec<Exchange>, Http1Stats) {
    run_cfg(&Http1Config::default(), evs)
}

/// Every data event split into single bytes.
fn bytewise(evs: &[Ev]) -> Vec<Ev> {
    evs.iter()
        .flat_map(|e| match e {
            Ev::Data(d, b, ts) => b.iter().map(|x| Ev::Data(*d, vec![*x], *ts)).collect(),
            other => vec![other.clone()],
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

/// Generated once with Python's `brotli` module:
/// `brotli.compress(b'{"message":"' + b'hello brotli ' * 20 + b'"}')`.
const BR_BODY: &[u8] = &[
    0x1b, 0x11, 0x01, 0xf8, 0x9d, 0x09, 0x76, 0xac, 0x8b, 0x09, 0x08, 0x7b, 0x36, 0xbc, 0x16, 0xd1,
    0x11, 0xdb, 0xdb, 0x65, 0x68, 0x72, 0x7d, 0x1a, 0x44, 0x84, 0x8d, 0x4e, 0xb2, 0xa5, 0xbd, 0xa5,
    0x24, 0x95, 0x2c, 0x58, 0x0d, 0x68, 0xd0, 0xdd, 0x98, 0x91, 0xcc, 0x7a, 0x81, 0x01,
];

fn br_plain() -> Vec<u8> {
    let mut v = b"{\"message\":\"".to_vec();
    for _ in 0..20 {
        v.extend_from_slice(b"hello brotli ");
    }
    v.extend_from_slice(b"\"}");
    v
}

/// Generated once with Python's `brotli` module:
/// `brotli.compress(b'A' * (4 * 1024 * 1024), lgwin=22)` (a 14-byte bomb).
const BR_BOMB: &[u8] = &[
    0x9b, 0xff, 0xff, 0x3f, 0xf8, 0x25, 0x82, 0xe2, 0xb1, 0x40, 0x20, 0xf7, 0xfe, 0x07,
];

fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn response_of(x: &Exchange) -> &Response {
    x.response.as_ref().expect("response")
}

// --------------------------------------------------------------------------
// Basics

#[test]
fn simple_get_with_content_length() {
    let (out, st) = run(&[
        req(
            b"GET /users/1?x=2 HTTP/1.1\r\nHost:  api.local  \r\nAccept: */*\r\n\r\n",
            100,
        ),
        resp(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhe",
            200,
        ),
        resp(b"llo", 300),
    ]);
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.seq_on_flow, 0);
    assert_eq!(x.request.method, "GET");
    assert_eq!(x.request.target, "/users/1?x=2");
    assert_eq!(x.request.version, HttpVersion::Http11);
    assert_eq!(x.request_header("host"), Some("api.local"));
    let r = response_of(x);
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    assert_eq!(r.body.sample, b"hello");
    assert_eq!((r.body.wire_len, r.body.decoded_len), (5, 5));
    assert!(!r.body.sample_truncated);
    assert_eq!(x.timing.request_first_ns, 100);
    assert_eq!(x.timing.request_last_ns, 100);
    assert_eq!(x.timing.response_first_ns, Some(200));
    assert_eq!(x.timing.response_last_ns, Some(300));
    assert!(x.anomalies.is_clean());
    assert_eq!((st.requests, st.responses, st.exchanges), (1, 1, 1));
    assert_eq!(st.parse_errors, 0);
}

#[test]
fn request_timing_spans_the_calls_of_the_body() {
    let (out, _) = run(&[
        req(b"POST /a HTTP/1.1\r\nContent-", 10),
        req(b"Length: 4\r\n\r\nab", 20),
        req(b"cd", 30),
        resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 40),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].timing.request_first_ns, 10);
    assert_eq!(out[0].timing.request_last_ns, 30);
    assert_eq!(out[0].request.body.sample, b"abcd");
    assert_eq!(out[0].timing.response_last_ns, Some(40));
}

#[test]
fn body_sample_is_bounded_and_wire_len_counted() {
    let cfg = Http1Config {
        body_sample_bytes: 8,
        ..Http1Config::default()
    };
    let body = vec![b'x'; 100_000];
    let (out, _) = run_cfg(
        &cfg,
        &[
            req(b"GET / HTTP/1.1\r\n\r\n", 1),
            resp(
                &with_body("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", &body),
                2,
            ),
        ],
    );
    let b = &response_of(&out[0]).body;
    assert_eq!(b.sample, b"xxxxxxxx");
    assert!(b.sample.capacity() <= 8);
    assert_eq!((b.wire_len, b.decoded_len), (100_000, 100_000));
    assert!(b.sample_truncated);
}

// --------------------------------------------------------------------------
// The split test: the same exchanges whatever the call boundaries.

fn conversation() -> Vec<Ev> {
    let gz_plain = b"{\"compressed\":true,\"items\":[1,2,3,4,5,6,7,8,9,10,11,12]}".repeat(3);
    let gz = gzip(&gz_plain);
    vec![
        // 0: GET with a Content-Length response.
        req(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 10),
        resp(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"id\":\"a\"}\n",
            20,
        ),
        // 1: chunked request with extensions and trailers, chunked response.
        req(
            b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;ext=1\r\nWiki\r\n5 ; name=\"v\"\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n",
            30,
        ),
        resp(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
              A\r\n0123456789\r\n1;last\r\n!\r\n0\r\nChecksum: abc\r\nMore: x\r\n\r\n",
            40,
        ),
        // 2: HEAD: the response announces a length but has no body.
        req(b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n", 50),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 60),
        // 3: 100-continue.
        req(
            b"PUT /d HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
            70,
        ),
        resp(b"HTTP/1.1 100 Continue\r\n\r\n", 80),
        req(b"payload", 90),
        resp(b"HTTP/1.1 204 No Content\r\n\r\n", 100),
        // 4: 304.
        req(b"GET /e HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n", 110),
        resp(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 50\r\n\r\n",
            120,
        ),
        // 5: gzip body.
        req(b"GET /f HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", 130),
        resp(
            &with_body(
                &format!(
                    "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                    gz.len()
                ),
                &gz,
            ),
            140,
        ),
        // 6: HTTP/1.0 close-delimited response.
        req(b"GET /g HTTP/1.0\r\n\r\n", 150),
        resp(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
            160,
        ),
        Ev::End(S2C, EndKind::Fin, 170),
        Ev::End(C2S, EndKind::Fin, 171),
        close(172),
    ]
}

fn check_conversation(out: &[Exchange]) {
    assert_eq!(out.len(), 7, "{out:#?}");
    for (k, x) in out.iter().enumerate() {
        assert_eq!(x.seq_on_flow, k as u32);
        assert!(x.anomalies.is_clean(), "{k}: {:?}", x.anomalies);
    }
    assert_eq!(out[0].request.target, "/a");
    assert_eq!(response_of(&out[0]).body.sample, b"{\"id\":\"a\"}\n");
    assert_eq!(out[1].request.body.sample, b"Wikipedia");
    assert_eq!(out[1].request.body.wire_len, 9);
    let r1 = response_of(&out[1]);
    assert_eq!(r1.body.sample, b"0123456789!");
    assert_eq!(r1.body.wire_len, 11);
    assert_eq!(response_of(&out[2]).body.wire_len, 0);
    assert_eq!(out[2].request.method, "HEAD");
    let r3 = response_of(&out[3]);
    assert_eq!(r3.status, 204);
    assert_eq!(r3.interim, vec![100]);
    assert_eq!(out[3].request.body.sample, b"payload");
    assert_eq!(response_of(&out[4]).status, 304);
    assert_eq!(response_of(&out[4]).body.wire_len, 0);
    let r5 = response_of(&out[5]);
    let plain = b"{\"compressed\":true,\"items\":[1,2,3,4,5,6,7,8,9,10,11,12]}".repeat(3);
    assert_eq!(r5.body.sample, plain);
    assert_eq!(r5.body.decoded_len, plain.len() as u64);
    assert!(r5.body.wire_len < plain.len() as u64);
    let r6 = response_of(&out[6]);
    assert_eq!(r6.body.sample, b"until the end");
    assert_eq!(r6.version, HttpVersion::Http10);
}

#[test]
fn conversation_parses() {
    let (out, st) = run(&conversation());
    check_conversation(&out);
    assert_eq!(st.parse_errors, 0);
    assert_eq!(st.interim_responses, 1);
    assert_eq!(st.decoded_bodies, 1);
    assert_eq!(st.truncated_messages, 0);
}

#[test]
fn conversation_split_at_every_offset_gives_the_same_exchanges() {
    let evs = conversation();
    let (base, _) = run(&evs);
    check_conversation(&base);
    for k in 0..evs.len() {
        let Ev::Data(d, b, ts) = &evs[k] else {
            continue;
        };
        for cut in 1..b.len() {
            let mut v = evs[..k].to_vec();
            v.push(Ev::Data(*d, b[..cut].to_vec(), *ts));
            v.push(Ev::Data(*d, b[cut..].to_vec(), *ts));
            v.extend_from_slice(&evs[k + 1..]);
            let (out, st) = run(&v);
            assert_eq!(out, base, "event {k} split at {cut}");
            assert_eq!(st.parse_errors, 0, "event {k} split at {cut}");
        }
    }
    let (out, _) = run(&bytewise(&evs));
    assert_eq!(out, base, "byte at a time");
}

#[test]
fn pipelined_streams_split_at_every_offset() {
    let reqs: Vec<u8> = [
        &b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"POST /two HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HEAD /three HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let resps: Vec<u8> = [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
    ]
    .concat();
    let base_evs = vec![req(&reqs, 1), resp(&resps, 2), close(3)];
    let (base, st) = run(&base_evs);
    assert_eq!(base.len(), 3);
    assert_eq!(st.requests, 3);
    let targets: Vec<_> = base.iter().map(|x| x.request.target.as_str()).collect();
    assert_eq!(targets, ["/one", "/two", "/three"]);
    assert_eq!(response_of(&base[0]).body.sample, b"one");
    assert_eq!(response_of(&base[1]).body.sample, b"two");
    assert_eq!(response_of(&base[2]).body.wire_len, 0);
    assert!(base.iter().all(|x| x.anomalies.is_clean()));
    for a in 0..=reqs.len() {
        let evs = vec![
            req(&reqs[..a], 1),
            req(&reqs[a..], 1),
            resp(&resps, 2),
            close(3),
        ];
        assert_eq!(run(&evs).0, base, "request stream split at {a}");
    }
    for b in 0..=resps.len() {
        let evs = vec![
            req(&reqs, 1),
            resp(&resps[..b], 2),
            resp(&resps[b..], 2),
            close(3),
        ];
        assert_eq!(run(&evs).0, base, "response stream split at {b}");
    }
}

// --------------------------------------------------------------------------
// Framing

#[test]
fn chunked_with_extensions_trailers_and_bare_lf() {
    let (out, st) = run(&[
        req(b"GET / HTTP/1.1\n\n", 1),
        resp(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n\
              002;a=b;c=\"d\"\nhi\n00000\nT: 1\n\n",
            2,
        ),
    ]);
    assert_eq!(out.len(), 1);
    let r = response_of(&out[0]);
    assert_eq!(r.body.sample, b"hi");
    assert_eq!(r.body.wire_len, 2);
    assert_eq!(st.parse_errors, 0);
}

#[test]
fn close_delimited_response_completes_at_fin_or_close() {
    let evs = [
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(b"HTTP/1.1 200 OK\r\n\r\npart one, ", 2),
        resp(b"part two", 3),
    ];
    let mut v = evs.to_vec();
    v.push(Ev::End(S2C, EndKind::Fin, 4));
    let (out, _) = run(&v);
    assert_eq!(out.len(), 1, "emitted at FIN");
    assert_eq!(response_of(&out[0]).body.sample, b"part one, part two");
    assert_eq!(out[0].timing.response_last_ns, Some(3));
    assert!(out[0].anomalies.is_clean());

    let mut v = evs.to_vec();
    v.push(close(5));
    let (out, _) = run(&v);
    assert!(out[0].anomalies.is_clean());

    // End of capture without FIN: the body may be incomplete.
    let mut v = evs.to_vec();
    v.push(Ev::Close(CloseReason::EndOfCapture, 5));
    let (out, st) = run(&v);
    assert!(out[0].anomalies.truncated);
    assert_eq!(st.truncated_messages, 1);
}

#[test]
fn head_204_304_and_1xx_have_no_body() {
    let (out, st) = run(&[
        req(
            b"HEAD / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n\
              HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n\
              HTTP/1.1 304 Not Modified\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(out.len(), 3);
    let statuses: Vec<_> = out.iter().map(|x| response_of(x).status).collect();
    assert_eq!(statuses, [200, 204, 304]);
    assert!(out.iter().all(|x| response_of(x).body.wire_len == 0));
    assert_eq!(st.parse_errors, 0);
}

#[test]
fn hundred_continue_and_early_hints_are_interim() {
    let (out, st) = run(&[
        req(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1),
        resp(b"HTTP/1.1 100 Continue\r\n\r\n", 2),
        req(b"abc", 3),
        resp(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 4),
    ]);
    assert_eq!(out.len(), 1);
    let r = response_of(&out[0]);
    assert_eq!(r.status, 200);
    assert_eq!(r.interim, vec![100, 103]);
    assert_eq!(out[0].timing.response_first_ns, Some(4));
    assert_eq!(out[0].timing.request_last_ns, 3);
    assert_eq!((st.responses, st.interim_responses), (1, 2));
}

#[test]
fn response_before_the_request_body_ends() {
    // The server answers 413 while the upload is still coming.
    let (out, _) = run(&[
        req(b"POST /big HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", 1),
        resp(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
        req(b"56789", 3),
        req(b"GET /next HTTP/1.1\r\n\r\n", 4),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 5),
    ]);
    assert_eq!(out.len(), 2);
    assert_eq!(response_of(&out[0]).status, 413);
    assert_eq!(out[0].request.body.sample, b"0123456789");
    assert_eq!(out[1].request.target, "/next");
}

#[test]
fn three_pipelined_requests_pair_in_order() {
    let (out, _) = run(&[
        req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n", 1),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1", 2),
        resp(b"HTTP/1.1 201 OK\r\nContent-Length: 1\r\n\r\n2HTTP/1.1 202 OK\r\nContent-Length: 1\r\n\r\n3", 3),
    ]);
    let pairs: Vec<_> = out
        .iter()
        .map(|x| {
            (
                x.seq_on_flow,
                x.request.target.clone(),
                response_of(x).status,
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (0, "/1".to_string(), 200),
            (1, "/2".to_string(), 201),
            (2, "/3".to_string(), 202)
        ]
    );
}

#[test]
fn pending_bound_pushes_out_the_oldest() {
    let cfg = Http1Config {
        max_pending_requests: 2,
        ..Http1Config::default()
    };
    let (out, st) = run_cfg(
        &cfg,
        &[
            req(
                b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
                1,
            ),
            close(2),
        ],
    );
    assert_eq!(st.pending_overflow, 1);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|x| x.anomalies.unanswered));
    assert_eq!(out[0].request.target, "/1");
    assert!(
        out[2].anomalies.gap,
        "pairing after an overflow is uncertain"
    );
}

#[test]
fn websocket_upgrade_stops_parsing() {
    let (out, st) = run(&[
        req(
            b"GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            1,
        ),
        resp(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
            2,
        ),
        req(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 3),
        resp(b"GET / HTTP/1.1\r\n\r\n", 4),
        close(5),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.upgraded);
    assert!(!out[0].anomalies.unanswered);
    assert_eq!(response_of(&out[0]).status, 101);
    assert_eq!(st.upgrades, 1);
    assert_eq!(st.upgraded_bytes_ignored, 7 + 11 + 18);
    assert_eq!(st.parse_errors, 0);
    assert_eq!(st.requests, 1);
}

#[test]
fn connect_tunnel_stops_parsing() {
    let (out, st) = run(&[
        req(
            b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
            1,
        ),
        resp(b"HTTP/1.1 200 Connection Established\r\n\r\n", 2),
        req(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 3),
        resp(b"\x16\x03\x03\x00\x7a\x02", 4),
        close(5),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.upgraded && out[0].anomalies.tunnel);
    assert_eq!(out[0].request.method, "CONNECT");
    assert_eq!(out[0].request.target, "api.example.com:443");
    assert_eq!(st.upgraded_bytes_ignored, 11 + 6);
    assert_eq!((st.tunnel_bytes_client, st.tunnel_bytes_server), (11, 6));
    assert_eq!(st.tunnels, 1);
    assert_eq!(st.parse_errors, 0);

    // A ClientHello sent before the proxy's answer is tunnel data, not an error.
    let (out, st) = run(&[
        req(
            b"CONNECT api.example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello",
            1,
        ),
        resp(b"HTTP/1.1 200 Connection Established\r\n\r\n", 2),
        req(b"\x17\x03\x03\x00\x01x", 3),
        close(4),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.tunnel);
    assert_eq!(st.connect_early_bytes, 10);
    assert_eq!(st.tunnel_bytes_client, 6);
    assert_eq!(st.parse_errors, 0);

    // A refused CONNECT is an ordinary exchange.
    let (out, st) = run(&[
        req(b"CONNECT a:443 HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\n\r\n",
            2,
        ),
        close(3),
    ]);
    assert_eq!(out.len(), 2);
    assert!(!out[0].anomalies.upgraded);
    assert_eq!(st.upgrades, 0);
}

// --------------------------------------------------------------------------
// Content codings

fn coded_exchange(cfg: &Http1Config, coding: &str, body: &[u8]) -> (Exchange, Http1Stats) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (mut out, st) = run_cfg(
        cfg,
        &[
            req(b"GET / HTTP/1.1\r\n\r\n", 1),
            resp(&with_body(&head, body), 2),
        ],
    );
    assert_eq!(out.len(), 1);
    (out.remove(0), st)
}

#[test]
fn gzip_deflate_and_br_bodies_are_decoded() {
    let plain = b"{\"user\":{\"id\":42,\"name\":\"Ada\"},\"tags\":[\"a\",\"b\",\"c\"]}".repeat(20);
    let cfg = Http1Config::default();
    for (coding, body) in [
        ("gzip", gzip(&plain)),
        ("x-gzip", gzip(&plain)),
        ("deflate", zlib(&plain)),
        ("deflate", raw_deflate(&plain)),
    ] {
        let (x, st) = coded_exchange(&cfg, coding, &body);
        let b = &response_of(&x).body;
        assert_eq!(b.sample, plain, "{coding}");
        assert_eq!(b.wire_len, body.len() as u64);
        assert_eq!(b.decoded_len, plain.len() as u64);
        assert!(!b.sample_truncated);
        assert!(x.anomalies.is_clean());
        assert_eq!(st.decoded_bodies, 1);
    }
    let (x, _) = coded_exchange(&cfg, "br", BR_BODY);
    let b = &response_of(&x).body;
    assert_eq!(b.sample, br_plain());
    assert_eq!(b.decoded_len, br_plain().len() as u64);
    assert!(x.anomalies.is_clean());
}

#[test]
fn coded_bodies_decode_across_many_calls() {
    let plain: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let gz = gzip(&plain);
    let cfg = Http1Config {
        body_sample_bytes: 1000,
        ..Http1Config::default()
    };
    let mut evs = vec![
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                gz.len()
            )
            .as_bytes(),
            2,
        ),
    ];
    for piece in gz.chunks(7) {
        evs.push(resp(piece, 3));
    }
    evs.push(resp(b"\r\n0\r\n\r\n", 4));
    let (out, _) = run_cfg(&cfg, &evs);
    let b = &response_of(&out[0]).body;
    assert_eq!(b.sample, &plain[..1000]);
    assert!(b.sample_truncated);
    assert_eq!(b.decoded_len, plain.len() as u64);
    assert_eq!(b.wire_len, gz.len() as u64);
    assert!(out[0].anomalies.is_clean());

    // Brotli one byte at a time.
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: {}\r\n\r\n",
        BR_BODY.len()
    );
    let evs = bytewise(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(&with_body(&head, BR_BODY), 2),
    ]);
    let (out, _) = run(&evs);
    assert_eq!(response_of(&out[0]).body.sample, br_plain());
}

#[test]
fn multi_member_gzip_is_decoded() {
    let mut body = gzip(b"first,");
    body.extend(gzip(b"second"));
    let (x, _) = coded_exchange(&Http1Config::default(), "gzip", &body);
    assert_eq!(response_of(&x).body.sample, b"first,second");
    assert!(x.anomalies.is_clean());
}

#[test]
fn decompression_bombs_stop_at_the_bound() {
    let cfg = Http1Config {
        max_decoded_bytes: 1 << 20,
        body_sample_bytes: 64,
        ..Http1Config::default()
    };
    let zeros = vec![0u8; 10 << 20];
    let bomb = gzip(&zeros);
    let (x, st) = coded_exchange(&cfg, "gzip", &bomb);
    let b = &response_of(&x).body;
    assert!(x.anomalies.decode_failed);
    assert!(b.sample_truncated);
    assert_eq!(b.sample, vec![0u8; 64]);
    assert_eq!(b.decoded_len, b.wire_len);
    assert_eq!(b.wire_len, bomb.len() as u64);
    assert_eq!(st.decode_limit_exceeded, 1);

    let (x, st) = coded_exchange(&cfg, "br", BR_BOMB);
    assert!(x.anomalies.decode_failed);
    assert_eq!(response_of(&x).body.sample, vec![b'A'; 64]);
    assert_eq!(st.decode_limit_exceeded, 1);

    // Within the bound, the full decoded length is known.
    let cfg = Http1Config {
        max_decoded_bytes: 11 << 20,
        ..cfg
    };
    let (x, _) = coded_exchange(&cfg, "gzip", &bomb);
    assert!(!x.anomalies.decode_failed);
    assert_eq!(response_of(&x).body.decoded_len, 10 << 20);
}

#[test]
fn corrupt_and_unsupported_codings_are_flagged() {
    let mut bad = gzip(b"some text that will be damaged in the middle of it");
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    let (x, st) = coded_exchange(&Http1Config::default(), "gzip", &bad);
    assert!(x.anomalies.decode_failed);
    assert_eq!(response_of(&x).body.decoded_len, bad.len() as u64);
    assert_eq!(st.decode_errors, 1);

    // Plain text mislabelled as gzip.
    let (x, st) = coded_exchange(&Http1Config::default(), "gzip", b"{\"not\":\"gzip\"}");
    assert!(x.anomalies.decode_failed);
    assert_eq!(st.decode_errors, 1);

    // A truncated stream inside a complete message.
    let gz = gzip(b"hello hello hello hello");
    let (x, st) = coded_exchange(&Http1Config::default(), "gzip", &gz[..gz.len() - 6]);
    assert!(x.anomalies.decode_failed);
    assert_eq!(st.decode_errors, 1);

    let (x, st) = coded_exchange(&Http1Config::default(), "zstd", b"\x28\xb5\x2f\xfd");
    assert!(x.anomalies.decode_failed);
    assert!(response_of(&x).body.sample.is_empty());
    assert_eq!(st.decode_unsupported, 1);

    let (x, _) = coded_exchange(&Http1Config::default(), "identity", b"plain");
    assert_eq!(response_of(&x).body.sample, b"plain");
    assert!(x.anomalies.is_clean());
}

// --------------------------------------------------------------------------
// Gaps and resynchronisation

#[test]
fn gap_inside_content_length_body_stays_in_sync() {
    let (out, st) = run(&[
        req(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n012", 1),
        Ev::Gap(C2S, 4, 2),
        req(b"789GET /b HTTP/1.1\r\n\r\n", 3),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab", 4),
        Ev::Gap(S2C, 2, 5),
        resp(b"efHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", 6),
    ]);
    assert_eq!(out.len(), 2);
    assert!(out[0].anomalies.gap);
    assert_eq!(out[0].request.body.wire_len, 10);
    assert_eq!(out[0].request.body.sample, b"012");
    assert!(out[0].request.body.sample_truncated);
    assert_eq!(response_of(&out[0]).body.wire_len, 6);
    assert!(out[1].anomalies.is_clean(), "{:?}", out[1].anomalies);
    assert_eq!(out[1].request.target, "/b");
    assert_eq!(response_of(&out[1]).body.sample, b"z");
    assert_eq!(st.gaps_in_body_synced, 2);
    assert_eq!(st.resyncs, 0);
}

#[test]
fn gap_inside_chunk_data_stays_in_sync() {
    let (out, st) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab",
            2,
        ),
        Ev::Gap(S2C, 3, 3),
        resp(b"fgh\r\n0\r\n\r\n", 4),
        req(b"GET /2 HTTP/1.1\r\n\r\n", 5),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 6),
    ]);
    assert_eq!(out.len(), 2);
    assert!(out[0].anomalies.gap);
    assert_eq!(response_of(&out[0]).body.wire_len, 8);
    assert!(out[1].anomalies.is_clean());
    assert_eq!(st.resyncs, 0);
}

#[test]
fn gap_in_headers_then_resync() {
    let (out, st) = run(&[
        req(b"GET /first HTTP/1.1\r\nHost: a\r\n", 1),
        Ev::Gap(C2S, 100, 2),
        req(
            b"ost: lost\r\nX: y\r\n\r\nGET /second HTTP/1.1\r\nHost: b\r\n\r\n",
            3,
        ),
        resp(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 5),
        close(6),
    ]);
    // The first request line is on the wire: it is recorded (from its line
    // alone) and answered first, as the server answers in order.
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0].request.target, "/first");
    assert!(out[0].anomalies.gap && out[0].anomalies.malformed_request);
    assert!(out[0].request.headers.is_empty());
    assert_eq!(response_of(&out[0]).status, 201);
    assert_eq!(out[1].request.target, "/second");
    assert_eq!(response_of(&out[1]).status, 200);
    assert!(
        out[1].anomalies.gap,
        "pairing after a request-side gap is uncertain"
    );
    assert_eq!(st.resyncs, 1);
    assert_eq!(st.resync_skipped_bytes, 30 + 19);
    assert_eq!(st.parse_errors, 0);
    assert_eq!(st.malformed_requests, 1);
}

#[test]
fn resync_finds_a_start_line_split_across_calls() {
    let (out, _) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        Ev::Gap(S2C, 10, 2),
        resp(b"garbage HT", 3),
        resp(b"TP/1.1 200 OK\r\nContent-Le", 4),
        resp(b"ngth: 2\r\n\r\nok", 5),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(response_of(&out[0]).body.sample, b"ok");
    assert_eq!(out[0].timing.response_first_ns, Some(3));
    assert!(out[0].anomalies.gap);
}

#[test]
fn response_side_gap_marks_uncertain_pairing() {
    let (out, st) = run(&[
        req(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
            2,
        ),
        Ev::Gap(S2C, 500, 3),
        resp(
            b"more lost body\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            4,
        ),
        close(5),
    ]);
    assert_eq!(out.len(), 2);
    assert!(out[0].anomalies.gap);
    assert_eq!(response_of(&out[0]).status, 200);
    assert!(out[1].anomalies.gap);
    assert_eq!(response_of(&out[1]).status, 404);
    assert_eq!(st.resyncs, 1);
}

#[test]
fn stale_response_after_a_request_gap_is_an_orphan() {
    // The request for the first response was lost; the response arrives
    // before the next request started, so it cannot answer it.
    let (out, st) = run(&[
        Ev::Gap(C2S, 40, 1),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA", 2),
        req(b"GET /b HTTP/1.1\r\n\r\n", 3),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB", 4),
    ]);
    assert_eq!(st.orphan_responses, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(response_of(&out[0]).body.sample, b"B");
}

#[test]
fn garbage_then_resync() {
    let mut junk = vec![0u8, 0xff, 0x16, 0x03, 0x01];
    junk.extend_from_slice(b"random words\r\nMORE JUNK here\r\n\x00\x00");
    let mut stream = junk.clone();
    stream.extend_from_slice(b"GET /ok HTTP/1.1\r\n\r\n");
    let (out, st) = run(&[
        req(&stream, 1),
        resp(
            b"\x00\x01garbageHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target, "/ok");
    assert_eq!(st.resyncs, 2);
    assert_eq!(st.resync_skipped_bytes, junk.len() as u64 + 9);
    assert_eq!(st.parse_errors, 2);
    assert_eq!(st.parse_error_token + st.parse_error_version, 2);
    // Same result byte by byte.
    let (out2, st2) = run(&bytewise(&[
        req(&stream, 1),
        resp(
            b"\x00\x01garbageHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
    ]));
    assert_eq!(out2, out);
    assert_eq!(st2.resync_skipped_bytes, st.resync_skipped_bytes);
}

#[test]
fn endless_garbage_keeps_memory_bounded() {
    let cfg = Http1Config::default();
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    let chunk: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8 | 0x80).collect();
    for _ in 0..100 {
        c.on_data(&cfg, C2S, &chunk, 1, &mut out, &mut st);
        c.on_data(&cfg, S2C, &chunk, 1, &mut out, &mut st);
        assert!(
            c.heap_bytes() <= 2 * (cfg.max_line_bytes + 1024),
            "{}",
            c.heap_bytes()
        );
    }
    assert!(out.is_empty());
    assert_eq!(
        st.resync_skipped_bytes + 2 * cfg.max_line_bytes as u64,
        2_000_000
    );
}

// --------------------------------------------------------------------------
// Hostile input

#[test]
fn huge_header_block_is_an_error_with_bounded_memory() {
    let cfg = Http1Config {
        max_header_bytes: 4096,
        ..Http1Config::default()
    };
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    c.on_data(&cfg, C2S, b"GET / HTTP/1.1\r\n", 1, &mut out, &mut st);
    for _ in 0..1000 {
        c.on_data(
            &cfg,
            C2S,
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            2,
            &mut out,
            &mut st,
        );
        assert!(c.heap_bytes() < 3 * 4096 + cfg.max_line_bytes);
    }
    c.on_data(
        &cfg,
        C2S,
        b"\r\nGET /after HTTP/1.1\r\n\r\n",
        3,
        &mut out,
        &mut st,
    );
    c.on_data(
        &cfg,
        S2C,
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        4,
        &mut out,
        &mut st,
    );
    assert_eq!(st.parse_error_header_too_large, 1);
    // The oversized request is recorded from its request line, flagged, with
    // the server's 431; the next request is parsed normally.
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(
        (
            out[0].request.method.as_str(),
            out[0].request.target.as_str()
        ),
        ("GET", "/")
    );
    assert!(out[0].anomalies.head_too_large && out[0].anomalies.malformed_request);
    assert_eq!(response_of(&out[0]).status, 431);
    assert_eq!(out[1].request.target, "/after");
    assert!(out[1].anomalies.is_clean());
    assert_eq!(st.head_too_large_requests, 1);

    // The same in one call (zero-copy path).
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    let line = format!("X-Filler: {}\r\n", "a".repeat(100));
    big.extend(std::iter::repeat_n(line.as_bytes(), 100).flatten());
    big.extend_from_slice(b"\r\n");
    let (out, st) = run_cfg(&cfg, &[req(&big, 1)]);
    assert!(out.is_empty());
    assert_eq!(st.parse_error_header_too_large, 1);
}

#[test]
fn too_many_headers_is_counted() {
    let cfg = Http1Config {
        max_headers: 4,
        ..Http1Config::default()
    };
    let (out, st) = run_cfg(
        &cfg,
        &[req(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
            1,
        )],
    );
    assert!(out.is_empty());
    assert_eq!(st.parse_error_too_many_headers, 1);
    assert_eq!(st.parse_errors, 1);
}

#[test]
fn chunk_size_overflow_is_an_error() {
    let (out, st) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              fffffffffffffffffffffffff\r\nxxxx",
            2,
        ),
        close(3),
    ]);
    assert_eq!(st.parse_error_chunk_size, 1);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.truncated);

    // Under u64 but absurd.
    let (_, st) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n",
            2,
        ),
    ]);
    assert_eq!(st.parse_error_chunk_size, 1);

    // Endless chunk extension.
    let mut ext = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
    ext.extend(std::iter::repeat_n(b'e', 20_000));
    let (_, st) = run(&[req(b"GET / HTTP/1.1\r\n\r\n", 1), resp(&ext, 2)]);
    assert_eq!(st.parse_error_chunk_line_too_long, 1);

    // Missing CRLF after chunk data.
    let (_, st) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
            2,
        ),
    ]);
    assert_eq!(st.parse_error_chunk_data_end, 1);
}

#[test]
fn content_length_overflow_is_a_parse_error() {
    // The request is kept, bodiless and flagged, so the probe stays visible;
    // what follows parses as the next request.
    let (out, st) = run(&[
        req(
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n\
              GET /next HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 2),
    ]);
    assert_eq!(st.parse_error_content_length, 1);
    assert_eq!(st.parse_errors, 1);
    // `/next` stays pending (no close in this run).
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target, "/");
    assert!(out[0].anomalies.ambiguous_framing);
    assert_eq!(out[0].response.as_ref().map(|r| r.status), Some(400));

    let (_, st) = run(&[req(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 1)]);
    assert_eq!(st.parse_error_content_length, 1);
    let (_, st) = run(&[req(
        b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
        1,
    )]);
    assert_eq!(st.parse_errors, 0, "u64::MAX itself is a valid length");
}

#[test]
fn content_length_with_transfer_encoding_is_ambiguous_and_chunked_wins() {
    let (out, st) = run(&[
        req(
            b"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
              1\r\nZ\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
    ]);
    assert_eq!(out.len(), 2);
    assert!(out[0].anomalies.ambiguous_framing);
    assert_eq!(out[0].request.body.sample, b"Z");
    assert_eq!(out[1].request.target, "/smuggled");
    assert!(!out[1].anomalies.ambiguous_framing);
    assert_eq!(st.ambiguous_framing, 1);
}

#[test]
fn smuggling_shapes_are_flagged() {
    for (head, body_sample) in [
        // Differing Content-Lengths: the first is used.
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab"[..],
            &b"ab"[..],
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nab", b"ab"),
        // chunked twice.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n",
            b"q",
        ),
        // chunked not last: not chunk-framed, the rest is the body.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n1\r\nq\r\n0\r\n\r\n",
            b"1\r\nq\r\n0\r\n\r\n",
        ),
        // unknown transfer coding.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\nabc",
            b"",
        ),
    ] {
        let (out, st) = run(&[req(head, 1), close(2)]);
        assert_eq!(out.len(), 1, "{}", String::from_utf8_lossy(head));
        assert!(
            out[0].anomalies.ambiguous_framing,
            "{}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(
            out[0].request.body.sample,
            body_sample,
            "{}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(st.ambiguous_framing, 1);
    }
    // Identical repeated lengths are fine.
    let (out, _) = run(&[
        req(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            1,
        ),
        close(2),
    ]);
    assert!(!out[0].anomalies.ambiguous_framing);
}

#[test]
fn obs_fold_bare_lf_and_nul_bytes() {
    // obs-fold in a response is unfolded; bare LF line endings are accepted.
    let (out, st) = run(&[
        req(b"GET / HTTP/1.1\nHost: h\n\n", 1),
        resp(
            b"HTTP/1.1 200 OK\r\nX-Long: part one\r\n  part two\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(st.parse_errors, 0);
    assert_eq!(out[0].response_header("x-long"), Some("part one part two"));
    // obs-fold in a request is rejected by httparse: counted, not a panic.
    let (out, st) = run(&[req(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 1)]);
    assert!(out.is_empty());
    assert_eq!(st.parse_errors, 1);
    // NUL bytes in the target or a header value.
    let (_, st) = run(&[req(
        b"GET /\x00 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nA: \x00\r\n\r\n",
        1,
    )]);
    assert_eq!(st.parse_errors, 2);
    // Non-UTF-8 header values are kept lossily.
    let (out, _) = run(&[
        req(b"GET / HTTP/1.1\r\nX-Bin: caf\xe9\r\n\r\n", 1),
        close(2),
    ]);
    assert_eq!(out[0].request_header("x-bin"), Some("caf\u{fffd}"));
}

// --------------------------------------------------------------------------
// Pairing and the end of a connection

#[test]
fn orphan_response_is_counted_not_emitted() {
    let (out, st) = run(&[
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 1),
        req(b"GET / HTTP/1.1\r\n\r\n", 2),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3),
    ]);
    assert_eq!(st.orphan_responses, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(response_of(&out[0]).body.sample, b"ok");
}

#[test]
fn unanswered_requests_are_emitted_at_close() {
    let (out, st) = run(&[
        req(
            b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
            1,
        ),
        Ev::Close(CloseReason::IdleTimeout, 2),
    ]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|x| x.anomalies.unanswered));
    assert!(!out[0].anomalies.truncated);
    assert!(out[1].anomalies.truncated);
    assert_eq!(out[1].request.body.wire_len, 5);
    assert_eq!(st.unanswered, 2);
}

#[test]
fn response_cut_short_at_close_is_truncated() {
    let (out, _) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 2),
        Ev::Close(CloseReason::Evicted, 3),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.truncated);
    assert!(!out[0].anomalies.unanswered);
    assert_eq!(response_of(&out[0]).body.wire_len, 3);
    assert_eq!(out[0].timing.response_last_ns, Some(2));
}

#[test]
fn reset_marks_pending_exchanges() {
    let (out, _) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 2),
        Ev::End(S2C, EndKind::Rst, 3),
        close(4),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.reset);
    assert!(out[0].anomalies.truncated);
}

#[test]
fn partial_head_at_close_is_counted() {
    let (out, st) = run(&[req(b"GET /never-finished HTTP/1.1\r\nHo", 1), close(2)]);
    assert_eq!(st.truncated_header_blocks, 1);
    // Its request line was on the wire: recorded, flagged, unanswered.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.target, "/never-finished");
    let a = out[0].anomalies;
    assert!(a.malformed_request && a.truncated && a.unanswered);
    // Bytes that are no request line are only counted.
    let (out, st) = run(&[req(b"\x16\x03\x01", 1), close(2)]);
    assert!(out.is_empty());
    assert_eq!(st.malformed_requests, 0);
}

#[test]
fn events_after_close_are_ignored() {
    let cfg = Http1Config::default();
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    c.on_close(&cfg, CloseReason::Closed, 1, &mut out, &mut st);
    c.on_data(&cfg, C2S, b"GET / HTTP/1.1\r\n\r\n", 2, &mut out, &mut st);
    c.on_gap(&cfg, S2C, 5, 3, &mut out, &mut st);
    c.on_close(&cfg, CloseReason::Closed, 4, &mut out, &mut st);
    assert!(out.is_empty());
}

#[test]
fn heap_bytes_track_buffers_and_pending_requests() {
    let cfg = Http1Config::default();
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    assert_eq!(c.heap_bytes(), 0);
    c.on_data(
        &cfg,
        C2S,
        b"GET /a HTTP/1.1\r\nHost: h\r\n",
        1,
        &mut out,
        &mut st,
    );
    assert!(c.heap_bytes() >= 26);
    c.on_data(&cfg, C2S, b"\r\n", 1, &mut out, &mut st);
    let pending = c.heap_bytes();
    assert!(pending > 0);
    c.on_data(
        &cfg,
        S2C,
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 100\r\n\r\n\x1f\x8b",
        2,
        &mut out,
        &mut st,
    );
    assert!(
        c.heap_bytes() > pending + 40_000,
        "decoder state is counted"
    );
    c.on_close(&cfg, CloseReason::Closed, 3, &mut out, &mut st);
    assert_eq!(c.heap_bytes(), 0);
}

// --------------------------------------------------------------------------
// Random input: never panics, and random call boundaries do not change results.

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn split_at_points(b: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut pts: Vec<usize> = points.iter().map(|p| p % (b.len() + 1)).collect();
        pts.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for p in pts {
            out.push(b[last..p].to_vec());
            last = p;
        }
        out.push(b[last..].to_vec());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn random_call_boundaries(points in proptest::collection::vec(0usize..10_000, 0..12)) {
            let evs = conversation();
            let (base, _) = run(&evs);
            let mut v = Vec::new();
            for (k, e) in evs.iter().enumerate() {
                match e {
                    Ev::Data(d, b, ts) => {
                        let pts: Vec<usize> = points.iter().map(|p| p.wrapping_mul(k + 1)).collect();
                        for piece in split_at_points(b, &pts) {
                            v.push(Ev::Data(*d, piece, *ts));
                        }
                    }
                    other => v.push(other.clone()),
                }
            }
            prop_assert_eq!(run(&v).0, base);
        }

        #[test]
        fn random_bytes_never_panic(
            a in proptest::collection::vec(any::<u8>(), 0..600),
            b in proptest::collection::vec(any::<u8>(), 0..600),
            gap in 0u64..50,
        ) {
            let mut reqs = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            reqs.extend_from_slice(&a);
            let mut resps = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n".to_vec();
            resps.extend_from_slice(&b);
            let evs = vec![
                req(&reqs[..reqs.len() / 2], 1),
                resp(&resps[..resps.len() / 3], 2),
                Ev::Gap(C2S, gap, 3),
                req(&reqs[reqs.len() / 2..], 4),
                resp(&resps[resps.len() / 3..], 5),
                Ev::End(C2S, EndKind::Fin, 6),
                Ev::Close(CloseReason::EndOfCapture, 7),
            ];
            let (out, st) = run(&evs);
            prop_assert!(st.exchanges as usize == out.len());
        }
    }
}

/// Generated once with Python's `brotli` module:
/// `seg = bytes((i*37+11) % 256 for i in range(64))`,
/// `brotli.compress(seg + b'A' * 3000000 + seg, lgwin=24)` (the second `seg`
/// is a back-reference 3 MB away, in a stream that declares a 16 MiB window).
const BR_FAR: &[u8] = &[
    0x9f, 0x3f, 0xc7, 0x2d, 0xf8, 0x65, 0x62, 0x9c, 0xdd, 0x32, 0xa4, 0x0c, 0x30, 0x14, 0x80, 0xa1,
    0xec, 0x01, 0x84, 0x02, 0x30, 0x14, 0x80, 0xa1, 0xd8, 0x75, 0xcc, 0x8b, 0x85, 0xc0, 0x63, 0x3f,
    0xcf, 0xb7, 0x05, 0xc8, 0xb5, 0xe5, 0x3b, 0x16, 0xaf, 0x20, 0x02, 0x67, 0x51, 0xf7, 0xca, 0x2d,
    0x5c, 0xec, 0x29, 0xed, 0x5b, 0x7f, 0x40, 0xc9, 0xfc, 0x15, 0x83, 0x5b, 0xcf, 0x58, 0x65, 0xa8,
    0x7a, 0x64, 0xf7, 0x8d, 0xa0, 0x89, 0xd6, 0x8d, 0x1f, 0x7c, 0x92, 0xf5, 0x89, 0xc6, 0xa9, 0xe3,
    0x1f, 0x9a, 0x29, 0xdd, 0x32, 0x7b, 0xf6, 0xcf, 0xb4, 0xe6, 0xda, 0x17, 0x2e, 0x01, 0x1c, 0x1d,
    0x9a, 0x1a, 0x37,
];

fn br_far_plain() -> Vec<u8> {
    let seg: Vec<u8> = (0..64u32).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    let mut v = seg.clone();
    v.extend(std::iter::repeat_n(b'A', 3_000_000));
    v.extend_from_slice(&seg);
    v
}

struct CountSink(u64, Vec<u8>);

impl coding::Sink for CountSink {
    fn push(&mut self, out: &[u8]) -> bool {
        self.0 += out.len() as u64;
        self.1.extend_from_slice(out);
        true
    }
}

#[test]
fn brotli_window_is_lowered_to_the_decoding_bound() {
    let plain = br_far_plain();
    // A 4 MiB bound needs an 8 MiB window at most, not the declared 16 MiB,
    // and the far back-reference still decodes right.
    let mut d = coding::ContentDecoder::new(coding::Coding::Brotli, 4 << 20);
    let mut sink = CountSink(0, Vec::new());
    d.feed(BR_FAR, &mut sink).expect("valid stream");
    assert!(d.is_complete());
    assert_eq!(sink.1, plain);
    assert!(
        d.heap_bytes() <= (8 << 20) + (1 << 20),
        "{}",
        d.heap_bytes()
    );

    // Through a connection, with the whole body sampled.
    let cfg = Http1Config {
        max_decoded_bytes: 4 << 20,
        body_sample_bytes: plain.len(),
        ..Http1Config::default()
    };
    let (x, _) = coded_exchange(&cfg, "br", BR_FAR);
    let b = &response_of(&x).body;
    assert!(x.anomalies.is_clean());
    assert_eq!(b.decoded_len, plain.len() as u64);
    assert!(b.sample == plain);

    // With the default 1 MiB bound, the window is 2 MiB and decoding stops at the bound.
    let mut d = coding::ContentDecoder::new(coding::Coding::Brotli, 1 << 20);
    struct Bounded(u64);
    impl coding::Sink for Bounded {
        fn push(&mut self, out: &[u8]) -> bool {
            self.0 += out.len() as u64;
            self.0 <= 1 << 20
        }
    }
    let r = d.feed(BR_FAR, &mut Bounded(0));
    assert_eq!(r, Err(coding::DecodeError::Limit));
    assert!(
        d.heap_bytes() <= (2 << 20) + (1 << 20),
        "{}",
        d.heap_bytes()
    );
}

/// Throughput of the uncompressed body path (run with
/// `cargo test --release -p stoa-tap http1::tests::throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput_of_plain_bodies() {
    let cfg = Http1Config::default();
    let mut c = Connection::new(flow());
    let mut out = Vec::new();
    let mut st = Http1Stats::default();
    let total: u64 = 4 << 30;
    let packet = vec![b'x'; 1460];
    let big = vec![b'x'; 64 * 1024];
    c.on_data(&cfg, C2S, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out, &mut st);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2 * total);
    c.on_data(&cfg, S2C, head.as_bytes(), 2, &mut out, &mut st);
    for (name, chunk) in [("1460-byte calls", &packet), ("64 KiB calls", &big)] {
        let t = std::time::Instant::now();
        let mut sent = 0u64;
        while sent < total {
            c.on_data(&cfg, S2C, chunk, 3, &mut out, &mut st);
            sent += chunk.len() as u64;
        }
        let s = t.elapsed().as_secs_f64();
        println!("{name}: {:.2} GB/s", sent as f64 / s / 1e9);
    }
}

// --------------------------------------------------------------------------
// Inputs found by the fuzz target (stoa-tap/fuzz/fuzz_targets/http1.rs),
// decoded with the same record format.

const FUZZ_SNIPPETS: &[&[u8]] = &[
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

fn fuzz_cfg() -> Http1Config {
    Http1Config {
        max_header_bytes: 1024,
        max_headers: 16,
        body_sample_bytes: 64,
        max_decoded_bytes: 4096,
        max_pending_requests: 4,
        max_chunk_size: 1 << 20,
        max_line_bytes: 128,
        decode_content: true,
        response_headers: ResponseHeaders::All,
    }
}

/// The fuzz target's records as events (one connection: stops at the first close).
fn fuzz_events(data: &[u8]) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut ts = 1_000u64;
    let mut rest = data;
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        ts += u64::from(*op >> 4);
        let dir = if op & 0x08 == 0 { C2S } else { S2C };
        match op & 0x07 {
            0..=2 => {
                let len = usize::from(*arg).min(rest.len());
                let (payload, after) = rest.split_at(len);
                rest = after;
                evs.push(Ev::Data(dir, payload.to_vec(), ts));
            }
            3 | 4 => {
                let snip = FUZZ_SNIPPETS[usize::from(*arg) % FUZZ_SNIPPETS.len()];
                evs.push(Ev::Data(dir, snip.to_vec(), ts));
            }
            5 => {
                let len = u64::from(*arg) * if arg & 1 == 1 { 1 } else { 1000 };
                evs.push(Ev::Gap(dir, len, ts));
            }
            6 => {
                let kind = if arg & 1 == 0 {
                    EndKind::Fin
                } else {
                    EndKind::Rst
                };
                evs.push(Ev::End(dir, kind, ts));
            }
            _ => break,
        }
    }
    evs.push(Ev::Close(CloseReason::EndOfCapture, ts));
    evs
}

fn check_fuzz_case(data: &[u8]) {
    let evs = fuzz_events(data);
    let (out, st) = run_cfg(&fuzz_cfg(), &evs);
    for w in out.windows(2) {
        assert!(w[0].seq_on_flow < w[1].seq_on_flow, "{evs:#?}\n{out:#?}");
    }
    assert_eq!(st.exchanges, out.len() as u64);
}

#[test]
fn fuzz_regressions() {
    check_fuzz_case(&[
        0, 0, 59, 4, 91, 42, 243, 243, 243, 243, 243, 243, 243, 243, 243, 37, 243, 42, 243, 243,
        243, 15, 243, 243, 243, 243, 91, 175, 76, 66, 71, 69, 84, 1, 243, 64, 203, 96, 243, 243,
        243, 243, 243, 37, 243, 42, 243, 243, 243, 15, 243, 243, 243, 243, 91, 175, 76, 66, 71, 69,
        84, 1, 243, 64, 203, 96, 243, 190, 52, 243, 243, 243, 243, 42, 245, 243, 243, 15, 243, 243,
        243, 243, 91, 175, 76, 66, 71, 69, 42, 1, 243, 64, 203, 84, 1, 243, 64, 203, 243, 243, 243,
        136, 186, 37, 140, 243, 37, 41, 21, 10, 190, 52, 243, 243, 243, 243, 77, 16, 98, 42, 245,
        243, 243, 15, 243, 243, 243, 243, 91, 175, 76,
    ]);
}

#[test]
fn huge_gaps_do_not_overflow() {
    let (out, st) = run(&[
        req(b"GET / HTTP/1.1\r\n\r\n", 1),
        resp(b"HTTP/1.0 200 OK\r\n\r\nab", 2),
        Ev::Gap(S2C, u64::MAX, 3),
        Ev::Gap(S2C, u64::MAX, 4),
        Ev::Gap(C2S, u64::MAX, 5),
        Ev::Gap(C2S, u64::MAX, 6),
        close(7),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(response_of(&out[0]).body.wire_len, u64::MAX);
    assert!(out[0].anomalies.gap);
    assert_eq!(st.gap_bytes, u64::MAX);
}

// --------------------------------------------------------------------------
// Request lines the full parser refuses, early answers, reordered captures

#[test]
fn http09_request_and_bare_response() {
    let evs = [
        req(b"GET /old/page\r\n", 10),
        resp(b"<html>plain old body</html>", 20),
        Ev::End(S2C, EndKind::Fin, 30),
        close(40),
    ];
    for evs in [evs.to_vec(), bytewise(&evs)] {
        let (out, st) = run(&evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        let x = &out[0];
        assert_eq!(x.request.version, HttpVersion::Http09);
        assert_eq!(
            (x.request.method.as_str(), x.request.target.as_str()),
            ("GET", "/old/page")
        );
        assert!(x.anomalies.http09 && !x.anomalies.malformed_request);
        let r = response_of(x);
        assert_eq!((r.status, r.version), (0, HttpVersion::Http09));
        assert_eq!(r.body.wire_len, 27);
        assert!(!x.anomalies.truncated);
        assert_eq!(
            (st.http09_requests, st.http09_responses, st.parse_errors),
            (1, 1, 0)
        );
    }
}

#[test]
fn http09_request_answered_with_a_status_line() {
    let (out, _) = run(&[
        req(b"GET /x\r\n\r\n", 1),
        resp(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno",
            2,
        ),
        close(3),
    ]);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.http09);
    assert_eq!(response_of(&out[0]).status, 400);
}

#[test]
fn malformed_request_lines_are_recorded_with_the_servers_status() {
    let evs = [
        req(b"GET HTTP/1.1\r\nHost: a\r\n\r\n", 1),
        resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad", 2),
        req(b"GET /two words HTTP/1.1\r\nHost: a\r\n\r\n", 3),
        resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 4),
        req(b"GET /h HTTP/1.1\r\nNo colon here\r\n\r\nCCM_POST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 5),
        resp(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 6),
        resp(b"HTTP/1.1 405 Not Allowed\r\nContent-Length: 0\r\n\r\n", 7),
        close(8),
    ];
    for evs in [evs.to_vec(), bytewise(&evs)] {
        let (out, st) = run(&evs);
        let got: Vec<(&str, &str, &str, u16, bool)> = out
            .iter()
            .map(|x| {
                (
                    x.request.method.as_str(),
                    x.request.target.as_str(),
                    x.request.target_as_sent(),
                    response_of(x).status,
                    x.anomalies.malformed_request,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("GET", "", "", 400, true),
                ("GET", "/two%20words", "/two words", 400, true),
                ("GET", "/h", "/h", 400, true),
                ("CCM_POST", "/c", "/c", 405, false),
            ]
        );
        assert_eq!(out[3].request.body.wire_len, 2);
        assert_eq!(st.malformed_requests, 3);
        assert!(out.iter().all(|x| !x.anomalies.gap));
    }
}

#[test]
fn a_head_answered_before_it_was_complete_is_recorded() {
    let (out, st) = run(&[
        req(b"GET /slow HTTP/1.1\r\nX-Pad: aaaaaaaaaaaa", 1),
        resp(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
        req(b"aaaa\r\nX-More: b\r\n\r\n", 3),
        close(4),
    ]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].request.target, "/slow");
    assert!(out[0].anomalies.malformed_request);
    assert_eq!(response_of(&out[0]).status, 431);
    assert_eq!(st.requests_answered_early, 1);
}

#[test]
fn a_response_captured_slightly_before_its_request_still_answers_it() {
    let ms = 1_000_000;
    let (out, st) = run(&[
        req(b"GET /a HTTP/1.1\r\n\r\n", 100 * ms),
        // Captured 2 ms before the request, within the reorder grace.
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA", 98 * ms),
        req(b"GET /b HTTP/1.1\r\n\r\n", 200 * ms),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB", 201 * ms),
        close(300 * ms),
    ]);
    assert_eq!(out.len(), 2);
    assert_eq!(response_of(&out[0]).body.sample, b"A");
    assert_eq!(response_of(&out[1]).body.sample, b"B");
    assert_eq!(st.reordered_pairs, 1);
    // A response far older than the request cannot answer it.
    let (out, st) = run(&[
        req(b"GET /a HTTP/1.1\r\n\r\n", 100 * ms),
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA", 50 * ms),
        close(300 * ms),
    ]);
    assert!(out[0].anomalies.unanswered);
    assert_eq!(st.orphan_responses, 1);
}

/// Random conversations built from the shapes recorded from their request
/// line (HTTP/0.9, missing targets, bad header lines, oversized heads, early
/// answers, bare responses, CONNECT), split at random points, with gaps and
/// ends: no panic, exchanges in order, every exchange counted, memory bounded.
#[test]
fn random_odd_request_shapes_keep_the_invariants() {
    const PIECES: &[&[u8]] = &[
        b"GET /old\r\n",
        b"GET HTTP/1.1\r\n",
        b"GET /two words HTTP/1.1\r\n",
        b"CCM_POST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        b"No colon here\r\n",
        b"Host: a\r\n",
        b"\r\n",
        b"CONNECT h:443 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA",
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"HTTP/1.1 200 Connection Established\r\n\r\n",
        b"<html>bare body</html>",
        b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    ];
    let cfg = fuzz_cfg();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut evs = Vec::new();
        let mut ts = 1_000u64;
        for _ in 0..(next() % 24) {
            ts += next() % 3_000_000;
            let dir = if next() % 2 == 0 { C2S } else { S2C };
            match next() % 10 {
                0 => evs.push(Ev::Gap(dir, 1 + next() % 300, ts)),
                1 => evs.push(Ev::End(dir, EndKind::Fin, ts)),
                _ => {
                    let p = PIECES[(next() % PIECES.len() as u64) as usize];
                    let cut = (next() % (p.len() as u64 + 1)) as usize;
                    evs.push(Ev::Data(dir, p[..cut].to_vec(), ts));
                    evs.push(Ev::Data(dir, p[cut..].to_vec(), ts + 1));
                }
            }
        }
        evs.push(Ev::Close(CloseReason::EndOfCapture, ts + 10));
        let (out, st) = run_cfg(&cfg, &evs);
        for w in out.windows(2) {
            assert!(w[0].seq_on_flow < w[1].seq_on_flow, "{evs:#?}\n{out:#?}");
        }
        assert_eq!(st.exchanges, out.len() as u64);
        assert!(st.malformed_requests + st.http09_requests <= st.requests);
    }
}

#[test]
fn response_fields_kept_only_by_name_and_framing_read_from_all() {
    // Chunked framing and gzip coding come from fields that are not kept;
    // the kept ones keep wire order, case and the unfolding of obs-fold.
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"{\"a\":1}").expect("gzip");
        e.finish().expect("gzip")
    };
    let mut body = format!("{:x}\r\n", gz.len()).into_bytes();
    body.extend_from_slice(&gz);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut head = b"HTTP/1.1 200 OK\r\nDate: Sat, 05 Dec 2026 09:00:00 GMT\r\n\
        Content-TYPE: application/json;\r\n  charset=utf-8\r\nTransfer-Encoding: chunked\r\n\
        Content-Encoding: gzip\r\nX-Long: one\r\ncontent-type: text/plain\r\n\r\n"
        .to_vec();
    head.extend_from_slice(&body);
    let evs = [
        req(b"GET /a HTTP/1.1\r\nHost: h\r\nX-Req: 1\r\n\r\n", 1),
        resp(&head, 2),
    ];
    let only = Http1Config {
        response_headers: ResponseHeaders::Only(&["content-type", "x-long"]),
        ..Http1Config::default()
    };
    let (all, st_all) = run(&evs);
    let (kept, st_kept) = run_cfg(&only, &evs);
    assert_eq!(st_kept.parse_errors, 0);
    assert_eq!((all.len(), kept.len()), (1, 1));
    let (a, k) = (&all[0], &kept[0]);
    let names = |ex: &Exchange| -> Vec<String> {
        ex.response
            .as_ref()
            .map(|r| r.headers.iter().map(|h| h.name.to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(a).len(), 6);
    assert_eq!(names(k), ["Content-TYPE", "X-Long", "content-type"]);
    let (ra, rk) = (
        a.response.as_ref().expect("resp"),
        k.response.as_ref().expect("resp"),
    );
    for h in &rk.headers {
        assert!(ra.headers.contains(h), "{h:?} differs from the full head's");
    }
    assert_eq!(
        k.response_header("content-type"),
        Some("application/json; charset=utf-8")
    );
    // Everything else is the same: request fields, body, sizes, counters.
    assert_eq!(rk.body, ra.body);
    assert_eq!(rk.body.sample, b"{\"a\":1}");
    assert_eq!(k.request, a.request);
    assert_eq!((rk.status, &rk.reason), (ra.status, &ra.reason));
    assert_eq!(st_kept.exchanges, st_all.exchanges);
    // Split anywhere, the same.
    assert_eq!(run_cfg(&only, &bytewise(&evs)).0, kept);
}
