use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

const C: u8 = 0;
const S: u8 = 1;

#[derive(Debug, Default, Clone, PartialEq)]
struct Rec {
    streams: [Vec<u8>; 2],
    gaps: [u64; 2],
    ends: Vec<(Direction, EndKind)>,
    closed: Option<CloseReason>,
}

#[derive(Debug, Default)]
struct Ctx {
    done: Vec<(FlowId, Rec)>,
}

#[derive(Debug)]
struct RecH(FlowId, Rec);

impl StreamHandler for RecH {
    type Ctx = Ctx;
    fn open(flow: FlowId, _: &mut Ctx) -> Self {
        RecH(flow, Rec::default())
    }
    fn on_data(&mut self, _: &mut Ctx, dir: Direction, data: &[u8], _: u64) {
        self.1.streams[dir.index()].extend_from_slice(data);
    }
    fn on_gap(&mut self, _: &mut Ctx, dir: Direction, len: u64, _: u64) {
        self.1.gaps[dir.index()] += len;
        // Keep positions visible: a gap shows as '#' bytes.
        self.1.streams[dir.index()].extend(std::iter::repeat_n(b'#', len as usize));
    }
    fn on_end(&mut self, _: &mut Ctx, dir: Direction, kind: EndKind, _: u64) {
        self.1.ends.push((dir, kind));
    }
    fn on_close(&mut self, ctx: &mut Ctx, reason: CloseReason, _: u64) {
        self.1.closed = Some(reason);
        ctx.done.push((self.0, std::mem::take(&mut self.1)));
    }
    fn heap_bytes(&self) -> usize {
        self.1.streams[0].len() + self.1.streams[1].len()
    }
    /// A request seen and no response yet (enough for the eviction tests).
    fn in_exchange(&self) -> bool {
        !self.1.streams[0].is_empty() && self.1.streams[1].is_empty()
    }
}

fn addr(side: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + side)), port)
}

#[derive(Debug, Clone)]
struct Pkt {
    side: u8,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

fn feed(table: &mut FlowTable<RecH>, ctx: &mut Ctx, pkts: &[Pkt], client_port: u16) {
    for (i, p) in pkts.iter().enumerate() {
        let (src, dst) = if p.side == C {
            (addr(C, client_port), addr(S, 5555))
        } else {
            (addr(S, 5555), addr(C, client_port))
        };
        let seg = TcpSegment {
            src,
            dst,
            seq: p.seq,
            ack: p.ack,
            flags: TcpFlags(p.flags),
            payload: &p.payload,
        };
        table.process(ctx, &seg, 1_000_000_000 + i as u64 * 1000);
    }
}

/// Like [`feed`], with capture times from `t0` on (1 us apart).
fn feed_at(table: &mut FlowTable<RecH>, ctx: &mut Ctx, pkts: &[Pkt], client_port: u16, t0: u64) {
    for (i, p) in pkts.iter().enumerate() {
        let (src, dst) = if p.side == C {
            (addr(C, client_port), addr(S, 5555))
        } else {
            (addr(S, 5555), addr(C, client_port))
        };
        let seg = TcpSegment {
            src,
            dst,
            seq: p.seq,
            ack: p.ack,
            flags: TcpFlags(p.flags),
            payload: &p.payload,
        };
        table.process(ctx, &seg, t0 + i as u64 * 1000);
    }
}

fn run(pkts: &[Pkt]) -> Vec<(FlowId, Rec)> {
    let mut table = FlowTable::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    feed(&mut table, &mut ctx, pkts, 40000);
    table.finish(&mut ctx, 2_000_000_000);
    ctx.done
}

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const FIN: u8 = TcpFlags::FIN;
const RST: u8 = TcpFlags::RST;

/// A whole conversation cut into segments at `cuts`, ISNs chosen by the caller.
fn conversation(
    cisn: u32,
    sisn: u32,
    req: &[u8],
    resp: &[u8],
    cuts_c: &[usize],
    cuts_s: &[usize],
) -> (Vec<Pkt>, Vec<Pkt>, Vec<Pkt>, Vec<Pkt>) {
    let handshake = vec![
        Pkt {
            side: C,
            seq: cisn,
            ack: 0,
            flags: SYN,
            payload: vec![],
        },
        Pkt {
            side: S,
            seq: sisn,
            ack: cisn.wrapping_add(1),
            flags: SYN | ACK,
            payload: vec![],
        },
        Pkt {
            side: C,
            seq: cisn.wrapping_add(1),
            ack: sisn.wrapping_add(1),
            flags: ACK,
            payload: vec![],
        },
    ];
    let cut = |data: &[u8], cuts: &[usize], isn: u32, ack: u32, side: u8| {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| Pkt {
                side,
                seq: isn.wrapping_add(1).wrapping_add(w[0] as u32),
                ack,
                flags: ACK,
                payload: data[w[0]..w[1]].to_vec(),
            })
            .collect::<Vec<_>>()
    };
    let cdata = cut(req, cuts_c, cisn, sisn.wrapping_add(1), C);
    let sdata = cut(
        resp,
        cuts_s,
        sisn,
        cisn.wrapping_add(1).wrapping_add(req.len() as u32),
        S,
    );
    let cend = cisn.wrapping_add(1).wrapping_add(req.len() as u32);
    let send = sisn.wrapping_add(1).wrapping_add(resp.len() as u32);
    let fins = vec![
        Pkt {
            side: S,
            seq: send,
            ack: cend,
            flags: FIN | ACK,
            payload: vec![],
        },
        Pkt {
            side: C,
            seq: cend,
            ack: send.wrapping_add(1),
            flags: FIN | ACK,
            payload: vec![],
        },
        Pkt {
            side: S,
            seq: send.wrapping_add(1),
            ack: cend.wrapping_add(1),
            flags: ACK,
            payload: vec![],
        },
    ];
    (handshake, cdata, sdata, fins)
}

fn expect_clean(done: &[(FlowId, Rec)], req: &[u8], resp: &[u8]) {
    assert_eq!(done.len(), 1, "one connection");
    let rec = &done[0].1;
    assert_eq!(rec.gaps, [0, 0]);
    assert_eq!(rec.streams[0], req);
    assert_eq!(rec.streams[1], resp);
    assert_eq!(rec.closed, Some(CloseReason::Closed));
    assert!(rec
        .ends
        .contains(&(Direction::ClientToServer, EndKind::Fin)));
    assert!(rec
        .ends
        .contains(&(Direction::ServerToClient, EndKind::Fin)));
    assert_eq!(done[0].0.server.port(), 5555);
}

/// Moves each element at most `window` places, driven by `keys`.
fn shuffle_within(v: &mut [Pkt], keys: &[usize], window: usize) {
    for (i, k) in keys.iter().enumerate() {
        if v.len() < 2 {
            return;
        }
        let a = i % v.len();
        let b = (a + k % (window + 1)).min(v.len() - 1);
        v.swap(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any segmentation, reordering within a window, duplication and
    /// overlapping retransmission of a conversation gives the same streams.
    #[test]
    fn any_segmentation_reorder_duplication_gives_same_streams(
        req in proptest::collection::vec(any::<u8>(), 1..3000),
        resp in proptest::collection::vec(any::<u8>(), 1..6000),
        cisn in any::<u32>(),
        sisn in prop_oneof![any::<u32>(), (u32::MAX - 3000)..=u32::MAX],
        cuts_c in proptest::collection::vec(any::<usize>(), 0..20),
        cuts_s in proptest::collection::vec(any::<usize>(), 0..40),
        shuffle_c in proptest::collection::vec(any::<usize>(), 0..20),
        shuffle_s in proptest::collection::vec(any::<usize>(), 0..40),
        window in 0usize..6,
        dups in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<usize>()), 0..8),
    ) {
        let (hs, mut cdata, mut sdata, fins) = conversation(cisn, sisn, &req, &resp, &cuts_c, &cuts_s);
        // Retransmissions with other boundaries (same bytes), inserted anywhere.
        for (which, start, len) in dups {
            let (data, isn, target, side, ack) = if which % 2 == 0 {
                (&req, cisn, &mut cdata, C, sisn.wrapping_add(1))
            } else {
                (&resp, sisn, &mut sdata, S, cisn.wrapping_add(1).wrapping_add(req.len() as u32))
            };
            let s = start % data.len();
            let e = (s + 1 + len % 1500).min(data.len());
            let at = which % (target.len() + 1);
            target.insert(at, Pkt { side, seq: isn.wrapping_add(1).wrapping_add(s as u32), ack, flags: ACK, payload: data[s..e].to_vec() });
        }
        shuffle_within(&mut cdata, &shuffle_c, window);
        shuffle_within(&mut sdata, &shuffle_s, window);
        let all: Vec<Pkt> = hs.into_iter().chain(cdata).chain(sdata).chain(fins).collect();
        let done = run(&all);
        expect_clean(&done, &req, &resp);
    }
}

#[test]
fn sequence_numbers_wrap_inside_the_stream() {
    let req = b"GET / HTTP/1.1\r\n\r\n".repeat(50);
    let resp = vec![b'x'; 5000];
    let (hs, c, s, f) = conversation(
        u32::MAX - 100,
        u32::MAX - 2000,
        &req,
        &resp,
        &[100, 200, 300],
        &[1000, 2500, 4000],
    );
    let all: Vec<Pkt> = hs.into_iter().chain(c).chain(s).chain(f).collect();
    expect_clean(&run(&all), &req, &resp);
}

#[test]
fn overlap_keeps_first_copy_and_counts_conflicts() {
    let req = b"0123456789".to_vec();
    let resp = b"abcdefghij".to_vec();
    let (hs, mut c, s, f) = conversation(1000, 5000, &req, &resp, &[3, 6], &[]);
    // Segments: [0,3) [3,6) [6,10). Deliver [6,10) first, then a conflicting
    // copy of [4,8), then the rest.
    let last = c.pop().expect("segment");
    let conflicting = Pkt {
        side: C,
        seq: 1001 + 4,
        ack: 5001,
        flags: ACK,
        payload: b"XXXX".to_vec(),
    };
    let mut order = vec![last, conflicting];
    order.extend(c);
    let all: Vec<Pkt> = hs.into_iter().chain(order).chain(s).chain(f).collect();
    let mut table = FlowTable::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    feed(&mut table, &mut ctx, &all, 40000);
    table.finish(&mut ctx, 0);
    let rec = &ctx.done[0].1;
    // [4,6) came first as "XX" (conflicting copy buffered before the original);
    // [6,8) was buffered from the original first.
    assert_eq!(rec.streams[0], b"0123XX6789");
    assert_eq!(table.stats.overlap_conflict_bytes, 2 + 2);
}

#[test]
fn midstream_pickup_and_end_of_capture() {
    let req = b"GET /a HTTP/1.1\r\n\r\n".to_vec();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let (_, c, s, _) = conversation(7, 9, &req, &resp, &[], &[]);
    let all: Vec<Pkt> = c.into_iter().chain(s).collect();
    let mut table = FlowTable::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    feed(&mut table, &mut ctx, &all, 40000);
    table.finish(&mut ctx, 0);
    assert_eq!(table.stats.flows_midstream, 1);
    let rec = &ctx.done[0].1;
    assert_eq!(rec.streams, [req, resp]);
    assert_eq!(rec.closed, Some(CloseReason::EndOfCapture));
}

#[test]
fn lost_segment_becomes_gap_when_peer_acks_past_it() {
    let req = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789".to_vec();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let (hs, mut c, s, f) = conversation(100, 900, &req, &resp, &[10, 20], &[]);
    c.remove(1); // bytes [10, 20) never captured
    let all: Vec<Pkt> = hs.into_iter().chain(c).chain(s).chain(f).collect();
    let done = run(&all);
    let rec = &done[0].1;
    assert_eq!(rec.gaps, [10, 0]);
    let mut expected = req.clone();
    expected[10..20].fill(b'#');
    assert_eq!(rec.streams[0], expected);
    assert_eq!(rec.streams[1], resp);
}

#[test]
fn reset_flushes_and_closes() {
    let req = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let (hs, c, _, _) = conversation(1, 2, &req, b"", &[], &[]);
    let mut all: Vec<Pkt> = hs.into_iter().chain(c).collect();
    all.push(Pkt {
        side: S,
        seq: 3,
        ack: 1 + 1 + req.len() as u32,
        flags: RST | ACK,
        payload: vec![],
    });
    let mut table = FlowTable::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    feed(&mut table, &mut ctx, &all, 40000);
    assert_eq!(table.len(), 0, "reset connection leaves the table");
    assert_eq!(table.stats.resets, 1);
    let rec = &ctx.done[0].1;
    assert!(rec
        .ends
        .contains(&(Direction::ServerToClient, EndKind::Rst)));
}

#[test]
fn other_ports_are_counted_and_ignored() {
    let mut table = FlowTable::<RecH>::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    let seg = TcpSegment {
        src: addr(C, 40000),
        dst: addr(S, 80),
        seq: 1,
        ack: 0,
        flags: TcpFlags(ACK),
        payload: b"GET / HTTP/1.1\r\n\r\n",
    };
    table.process(&mut ctx, &seg, 1);
    assert_eq!(table.len(), 0);
    assert_eq!(table.stats.segments_other_ports, 1);
}

#[test]
fn any_port_detects_http_by_content() {
    let cfg = TcpConfig {
        ports: ServerPorts::Any,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::<RecH>::new(cfg);
    let mut ctx = Ctx::default();
    // A response seen first: the sender is the server.
    let seg = TcpSegment {
        src: addr(S, 8080),
        dst: addr(C, 40000),
        seq: 1,
        ack: 0,
        flags: TcpFlags(ACK),
        payload: b"HTTP/1.1 200 OK\r\n",
    };
    table.process(&mut ctx, &seg, 1);
    // TLS bytes on another connection are not HTTP.
    let tls = TcpSegment {
        src: addr(C, 40001),
        dst: addr(S, 443),
        seq: 1,
        ack: 0,
        flags: TcpFlags(ACK),
        payload: &[0x16, 0x03, 0x01, 0x00, 0x10],
    };
    table.process(&mut ctx, &tls, 2);
    table.finish(&mut ctx, 3);
    assert_eq!(ctx.done.len(), 1);
    assert_eq!(ctx.done[0].0.server.port(), 8080);
    assert_eq!(table.stats.segments_not_http, 1);
}

#[test]
fn buffer_cap_gives_up_on_a_hole() {
    let req = vec![b'r'; 4000];
    let (hs, mut c, _, _) = conversation(10, 20, &req, b"", &[1000, 2000, 3000], &[]);
    c.remove(0); // first 1000 bytes never seen
    let cfg = TcpConfig {
        max_buffer_per_direction: 1500,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut ctx = Ctx::default();
    let all: Vec<Pkt> = hs.into_iter().chain(c).collect();
    feed(&mut table, &mut ctx, &all, 40000);
    table.finish(&mut ctx, 0);
    assert_eq!(table.stats.buffer_overflows, 1);
    let rec = &ctx.done[0].1;
    assert_eq!(rec.gaps[0], 1000);
    assert_eq!(&rec.streams[0][1000..], &req[1000..]);
}

#[test]
fn memory_cap_evicts_least_recently_active() {
    let cfg = TcpConfig {
        memory_cap: 64 * 1024,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut ctx = Ctx::default();
    // Many connections each holding 8 KiB out of order.
    for port in 0..64u16 {
        let pkts = vec![
            Pkt {
                side: C,
                seq: 100,
                ack: 0,
                flags: SYN,
                payload: vec![],
            },
            Pkt {
                side: C,
                seq: 101 + 10,
                ack: 0,
                flags: ACK,
                payload: vec![0u8; 8192],
            },
        ];
        feed(&mut table, &mut ctx, &pkts, 30000 + port);
        assert!(table.memory_bytes() <= 64 * 1024 + 8192 + (flow_box_bytes::<RecH>() + 64) * 2);
    }
    assert!(table.stats.flows_evicted > 0);
    assert!(table.stats.peak_memory_bytes > 0);
    assert!(ctx
        .done
        .iter()
        .all(|(_, r)| r.closed == Some(CloseReason::Evicted)));
}

#[test]
fn idle_connections_time_out() {
    let cfg = TcpConfig {
        idle_timeout_ns: 5_000_000_000,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::<RecH>::new(cfg);
    let mut ctx = Ctx::default();
    let a = TcpSegment {
        src: addr(C, 40000),
        dst: addr(S, 5555),
        seq: 1,
        ack: 0,
        flags: TcpFlags(ACK),
        payload: b"GET",
    };
    table.process(&mut ctx, &a, 1_000_000_000);
    let b = TcpSegment {
        src: addr(C, 40001),
        ..a
    };
    table.process(&mut ctx, &b, 20_000_000_000);
    assert_eq!(table.stats.flows_idle_timeout, 1);
    assert_eq!(table.len(), 1);
}

/// A SYN from a flood source: a distinct client address per `i`.
fn flood_syn(table: &mut FlowTable<RecH>, ctx: &mut Ctx, i: u32, ts: u64) {
    let client = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        1024 + (i % 50_000) as u16,
    );
    let seg = TcpSegment {
        src: client,
        dst: addr(S, 5555),
        seq: i.wrapping_mul(7919),
        ack: 0,
        flags: TcpFlags(SYN),
        payload: b"",
    };
    table.process(ctx, &seg, ts);
}

/// `(handshake + request)` of an exchange waiting for its response, and
/// `(handshake + request + response)` of an idle established connection.
fn active_and_idle() -> (Vec<Pkt>, Vec<Pkt>) {
    let (hs, c, _, _) = conversation(100, 900, b"GET /a HTTP/1.1\r\n\r\n", b"", &[], &[]);
    let active: Vec<Pkt> = hs.into_iter().chain(c).collect();
    let (hs, c, sd, _) = conversation(
        300,
        700,
        b"GET /i HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        &[],
        &[],
    );
    let idle: Vec<Pkt> = hs.into_iter().chain(c).chain(sd).collect();
    (active, idle)
}

#[test]
fn syn_flood_at_the_flow_limit_evicts_only_half_open_connections() {
    let cfg = TcpConfig {
        max_flows: 200,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut ctx = Ctx::default();
    let (active, idle) = active_and_idle();
    // The established connections are the least recently active ones.
    feed_at(&mut table, &mut ctx, &active, 40000, 1_000_000_000);
    feed_at(&mut table, &mut ctx, &idle, 40001, 1_000_100_000);
    for i in 0..5000 {
        flood_syn(&mut table, &mut ctx, i, 1_001_000_000 + u64::from(i) * 1000);
        assert!(table.len() <= 200);
    }
    let s = &table.stats;
    assert!(s.flows_evicted >= 4800, "{s:?}");
    assert_eq!(s.evicted_half_open, s.flows_evicted);
    assert_eq!((s.evicted_idle, s.evicted_active), (0, 0));
    assert!(s.eviction_batches > 0 && s.eviction_batches < s.flows_evicted);
    table.finish(&mut ctx, 2_000_000_000);
    let port_of = |p: u16| {
        ctx.done
            .iter()
            .find(|(id, _)| id.client.port() == p)
            .map(|(_, r)| r.closed)
    };
    assert_eq!(port_of(40000), Some(Some(CloseReason::EndOfCapture)));
    assert_eq!(port_of(40001), Some(Some(CloseReason::EndOfCapture)));
}

#[test]
fn memory_cap_evicts_half_open_then_idle_then_active() {
    // Room for a few hundred SYN-only connections.
    let per_flow = flow_box_bytes::<RecH>() + 2 * std::mem::size_of::<Slot<RecH>>();
    let cfg = TcpConfig {
        memory_cap: 300 * per_flow,
        ..TcpConfig::default()
    };
    let mut table = FlowTable::new(cfg);
    let mut ctx = Ctx::default();
    let (active, idle) = active_and_idle();
    feed_at(&mut table, &mut ctx, &active, 40000, 1_000_000_000);
    feed_at(&mut table, &mut ctx, &idle, 40001, 1_000_100_000);
    // A SYN flood: only its own connections go.
    for i in 0..2000 {
        flood_syn(&mut table, &mut ctx, i, 1_001_000_000 + u64::from(i) * 1000);
        assert!(table.memory_bytes() <= 300 * per_flow + per_flow);
    }
    assert!(table.stats.evicted_half_open > 1000, "{:?}", table.stats);
    assert_eq!(table.stats.evicted_half_open, table.stats.flows_evicted);
    assert!(table.stats.peak_memory_bytes <= (300 * per_flow + per_flow) as u64);
    // Established idle connections now fill the table: the other idle one
    // (older) goes before the exchange in progress (oldest of all).
    let (_, idle_template) = active_and_idle();
    for p in 0..400u16 {
        feed_at(
            &mut table,
            &mut ctx,
            &idle_template,
            41000 + p,
            1_100_000_000 + u64::from(p) * 100_000,
        );
    }
    let s = table.stats.clone();
    assert!(s.evicted_idle > 0, "{s:?}");
    assert_eq!(s.evicted_active, 0, "{s:?}");
    let closed = |p: u16| {
        ctx.done
            .iter()
            .find(|(id, _)| id.client.port() == p)
            .and_then(|(_, r)| r.closed)
    };
    assert_eq!(closed(40001), Some(CloseReason::Evicted));
    assert_eq!(
        closed(40000),
        None,
        "the exchange in progress is still tracked"
    );
    assert_eq!(
        s.flows_evicted,
        s.evicted_half_open + s.evicted_idle + s.evicted_active
    );
}

#[test]
fn memory_counts_every_connection_and_shrinks_after_a_flood() {
    let mut table = FlowTable::<RecH>::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    let empty = table.memory_bytes();
    for i in 0..20_000 {
        flood_syn(&mut table, &mut ctx, i, 1_000_000_000 + u64::from(i));
    }
    let full = table.memory_bytes();
    // Each connection costs at least its boxed state and its table slot.
    let floor = 20_000 * (std::mem::size_of::<Flow<RecH>>() + std::mem::size_of::<Slot<RecH>>());
    assert!(full - empty >= floor, "{full} < {floor}");
    // The flood times out; the table is shrunk at the next sweep.
    let late = 1_000_000_000 + TcpConfig::default().idle_timeout_ns + 2_000_000_000;
    table.expire_idle(&mut ctx, late);
    assert_eq!(table.len(), 0);
    table.expire_idle(&mut ctx, late + 1_000_000_000);
    assert!(
        table.memory_bytes() < full / 8,
        "{} after the flood left, {full} during it",
        table.memory_bytes()
    );
}

#[test]
fn end_of_capture_closes_in_steps_oldest_first() {
    let mut table = FlowTable::<RecH>::new(TcpConfig::default());
    let mut ctx = Ctx::default();
    for i in 0..10 {
        flood_syn(&mut table, &mut ctx, 9 - i, 1_000_000_000 + u64::from(i));
    }
    assert!(!table.finish_some(&mut ctx, 2_000_000_000, 4));
    assert_eq!(ctx.done.len(), 4);
    assert!(table.finish_some(&mut ctx, 2_000_000_000, 100));
    let order: Vec<u8> = ctx
        .done
        .iter()
        .map(|(id, _)| match id.client.ip() {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(_) => 255,
        })
        .collect();
    assert_eq!(order, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    assert!(ctx
        .done
        .iter()
        .all(|(_, r)| r.closed == Some(CloseReason::EndOfCapture)));
}
