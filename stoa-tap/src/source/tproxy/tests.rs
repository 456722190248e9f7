use super::sock::canonical;
use super::tap::ConnTap;
use super::*;
use crate::flow::{Direction, EndKind};
use crate::source::TapEvent;
use contracts::FlowId;

fn flow() -> FlowId {
    FlowId {
        client: "10.0.0.1:40000".parse().unwrap(),
        server: "10.0.0.2:5555".parse().unwrap(),
    }
}

#[test]
fn ipv4_mapped_addresses_become_ipv4() {
    let m: SocketAddr = "[::ffff:10.1.2.3]:5555".parse().unwrap();
    assert_eq!(canonical(m), "10.1.2.3:5555".parse::<SocketAddr>().unwrap());
    let v6: SocketAddr = "[fd00::1]:5555".parse().unwrap();
    assert_eq!(canonical(v6), v6);
}

#[test]
fn full_queue_drops_data_and_reports_a_gap_before_the_next_chunk() {
    let (tx, mut rx) = channel(2, 1 << 20);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 7, flow());
    let mut d = tap.dir(Direction::ClientToServer);
    d.data(b"GET / HTTP/1.1\r\n", 1); // fills the queue (Open + this)
    d.data(b"abc", 2); // dropped
    d.data(b"defg", 3); // dropped
    assert_eq!(c.snapshot().tap_events_dropped, 2);
    assert_eq!(c.snapshot().tap_bytes_dropped, 7);
    let got = drain(&mut rx);
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0], TapEvent::Open { conn: 7, .. }));
    d.data(b"hi", 4);
    let got = drain(&mut rx);
    assert_eq!(
        got,
        vec![
            TapEvent::Gap {
                conn: 7,
                dir: Direction::ClientToServer,
                len: 7,
                ts_ns: 4
            },
            TapEvent::Data {
                conn: 7,
                dir: Direction::ClientToServer,
                data: b"hi".to_vec(),
                ts_ns: 4
            }
        ]
    );
    assert_eq!(c.snapshot().tap_events_sent, 4);
    assert_eq!(c.snapshot().tap_dropped_queue_full, 2);
    assert_eq!(c.snapshot().tap_dropped_byte_budget, 0);
}

#[test]
fn chunks_over_the_byte_budget_are_dropped_and_counted_under_their_reason() {
    let (tx, mut rx) = channel(100, 10);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 9, flow());
    let mut d = tap.dir(Direction::ServerToClient);
    d.data(b"12345678", 1); // 8 of 10 bytes
    d.data(b"abc", 2); // over budget: dropped, gap of 3
    let s = c.snapshot();
    assert_eq!(
        (
            s.tap_events_dropped,
            s.tap_bytes_dropped,
            s.tap_dropped_byte_budget
        ),
        (1, 3, 1)
    );
    assert_eq!(s.tap_dropped_queue_full, 0);
    assert_eq!(drain(&mut rx).len(), 2, "Open and the first chunk");
    // The budget is free again: the gap is reported before the next chunk,
    // and `End` (no payload) is never refused by the byte budget.
    d.data(b"0123456789", 3);
    d.end(EndKind::Fin);
    let got = drain(&mut rx);
    assert!(matches!(got[0], TapEvent::Gap { len: 3, .. }), "{got:?}");
    assert!(matches!(got[1], TapEvent::Data { .. }));
    assert!(matches!(got[2], TapEvent::End { .. }));
    assert!(d.take_pending().is_empty());
}

#[test]
fn a_stopped_analyzer_is_a_reason_of_its_own() {
    let (tx, rx) = channel(100, 1 << 20);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 1, flow());
    let mut d = tap.dir(Direction::ClientToServer);
    drop(rx);
    d.data(b"abc", 1);
    let s = c.snapshot();
    assert_eq!((s.tap_events_dropped, s.tap_dropped_analyzer_gone), (1, 1));
}

fn drain(rx: &mut TapReceiver) -> Vec<TapEvent> {
    let mut out = Vec::new();
    rx.try_drain(&mut out);
    out
}

#[test]
fn lost_open_leaves_the_connection_untapped() {
    let (tx, mut rx) = channel(1, 1 << 20);
    tx.try_send(TapEvent::Close { conn: 0, ts_ns: 0 }).unwrap();
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 1, flow());
    assert_eq!(drain(&mut rx).len(), 1);
    let mut d = tap.dir(Direction::ServerToClient);
    d.data(b"HTTP/1.1 200 OK\r\n", 1);
    d.end(EndKind::Fin);
    assert!(
        drain(&mut rx).is_empty(),
        "nothing is sent for an untapped connection"
    );
    let s = c.snapshot();
    assert_eq!(s.untapped_connections, 1);
    assert_eq!(s.untapped_bytes, 17);
    assert_eq!(s.tap_events_dropped, 0);
}

#[test]
fn end_and_close_are_retried_once_the_queue_drains() {
    let (tx, mut rx) = channel(2, 1 << 20);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 3, flow());
    let mut d = tap.dir(Direction::ClientToServer);
    d.data(b"x", 1); // queue full now
    d.data(b"yz", 2); // dropped: gap of 2 owed
    d.end(EndKind::Fin); // Gap + End pending
    let pending = d.take_pending();
    assert_eq!(pending.len(), 2);
    let drained = drain(&mut rx);
    assert_eq!(drained.len(), 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(tap.close(pending, Duration::from_millis(50)));
    let got = drain(&mut rx);
    assert!(matches!(got[0], TapEvent::Gap { len: 2, .. }));
    assert!(matches!(
        got[1],
        TapEvent::End {
            kind: EndKind::Fin,
            ..
        }
    ));
    // Close did not fit (capacity 2): retried, then counted as lost.
    assert_eq!(got.len(), 2);
    assert_eq!(c.snapshot().tap_control_lost, 1);
}

#[test]
fn config_is_validated() {
    let (tx, _rx) = channel(1, 1 << 20);
    let cfg = TproxyConfig {
        max_connections: 0,
        ..TproxyConfig::default()
    };
    assert!(matches!(
        start(cfg, tx.clone()),
        Err(TproxyError::Config(_))
    ));
    let cfg = TproxyConfig {
        idle_timeout: Some(Duration::ZERO),
        ..TproxyConfig::default()
    };
    assert!(matches!(start(cfg, tx), Err(TproxyError::Config(_))));
    // A byte budget smaller than one read cannot hold a full chunk.
    let (tx, _rx) = channel(1, 1024);
    let e = start(TproxyConfig::default(), tx).expect_err("budget < read_buffer");
    assert!(e.to_string().contains("read_buffer"), "{e}");
}
