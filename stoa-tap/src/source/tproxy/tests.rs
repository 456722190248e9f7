use super::sock::canonical;
use super::tap::ConnTap;
use super::*;
use crate::flow::{Direction, EndKind};
use contracts::FlowId;
use std::sync::mpsc::sync_channel;

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
    let (tx, rx) = sync_channel(2);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 7, flow());
    let mut d = tap.dir(Direction::ClientToServer);
    d.data(b"GET / HTTP/1.1\r\n", 1); // fills the queue (Open + this)
    d.data(b"abc", 2); // dropped
    d.data(b"defg", 3); // dropped
    assert_eq!(c.snapshot().tap_events_dropped, 2);
    assert_eq!(c.snapshot().tap_bytes_dropped, 7);
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0], TapEvent::Open { conn: 7, .. }));
    d.data(b"hi", 4);
    let got: Vec<_> = rx.try_iter().collect();
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
}

#[test]
fn lost_open_leaves_the_connection_untapped() {
    let (tx, rx) = sync_channel(1);
    tx.send(TapEvent::Close { conn: 0, ts_ns: 0 }).unwrap();
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 1, flow());
    let _ = rx.try_recv();
    let mut d = tap.dir(Direction::ServerToClient);
    d.data(b"HTTP/1.1 200 OK\r\n", 1);
    d.end(EndKind::Fin);
    assert!(
        rx.try_recv().is_err(),
        "nothing is sent for an untapped connection"
    );
    let s = c.snapshot();
    assert_eq!(s.untapped_connections, 1);
    assert_eq!(s.untapped_bytes, 17);
    assert_eq!(s.tap_events_dropped, 0);
}

#[test]
fn end_and_close_are_retried_once_the_queue_drains() {
    let (tx, rx) = sync_channel(2);
    let c = Arc::new(Counters::default());
    let tap = ConnTap::open(tx, c.clone(), 3, flow());
    let mut d = tap.dir(Direction::ClientToServer);
    d.data(b"x", 1); // queue full now
    d.data(b"yz", 2); // dropped: gap of 2 owed
    d.end(EndKind::Fin); // Gap + End pending
    let pending = d.take_pending();
    assert_eq!(pending.len(), 2);
    let drained: Vec<_> = rx.try_iter().collect();
    assert_eq!(drained.len(), 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(tap.close(pending, Duration::from_millis(50)));
    let got: Vec<_> = rx.try_iter().collect();
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
    let (tx, _rx) = sync_channel(1);
    let cfg = TproxyConfig {
        max_connections: 0,
        ..TproxyConfig::default()
    };
    assert!(matches!(start(cfg, tx), Err(TproxyError::Config(_))));
}
