//! The copy of relayed bytes toward the analyzer: never blocking, with gap
//! accounting when its queue is full.

use super::queue::{Refused, TapSender};
use super::Counters;
use crate::flow::{Direction, EndKind};
use crate::source::{now_ns, ConnId, TapEvent};
use contracts::FlowId;
use std::sync::Arc;
use std::time::Duration;

/// Queues `ev` without waiting; gives it back (with the reason) when the
/// queue is full, over its byte budget, or the analyzer is gone.
fn try_send(tx: &TapSender, counters: &Counters, ev: TapEvent) -> Result<(), (TapEvent, Refused)> {
    tx.try_send(ev)?;
    Counters::add(&counters.tap_events_sent, 1);
    Ok(())
}

/// Per-connection tap: `Open` and `Close`, with bounded retries for `Close`.
pub(super) struct ConnTap {
    tx: TapSender,
    counters: Arc<Counters>,
    conn: ConnId,
    tapped: bool,
}

impl ConnTap {
    /// Sends `Open`; when it cannot be queued the connection stays untapped.
    pub(super) fn open(
        tx: TapSender,
        counters: Arc<Counters>,
        conn: ConnId,
        flow: FlowId,
    ) -> ConnTap {
        let ev = TapEvent::Open {
            conn,
            flow,
            ts_ns: now_ns(),
        };
        let tapped = try_send(&tx, &counters, ev).is_ok();
        if !tapped {
            Counters::add(&counters.untapped_connections, 1);
            tracing::debug!(conn, "tap queue full at open: connection untapped");
        }
        ConnTap {
            tx,
            counters,
            conn,
            tapped,
        }
    }

    /// The tap of one direction.
    pub(super) fn dir(&self, dir: Direction) -> DirTap {
        DirTap {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
            conn: self.conn,
            dir,
            tapped: self.tapped,
            gap: 0,
            ended: false,
            pending: Vec::new(),
        }
    }

    /// Sends what the directions could not (their final `Gap`/`End`) and
    /// `Close`, retrying with a doubling back-off for up to `retry` in total.
    /// Runs after the sockets are closed, so it never delays traffic.
    pub(super) async fn close(self, mut pending: Vec<TapEvent>, retry: Duration) {
        if !self.tapped {
            return;
        }
        pending.push(TapEvent::Close {
            conn: self.conn,
            ts_ns: now_ns(),
        });
        let mut queue = std::collections::VecDeque::from(pending);
        let mut waited = Duration::ZERO;
        let mut step = Duration::from_millis(1);
        loop {
            while let Some(ev) = queue.pop_front() {
                if let Err((ev, _)) = try_send(&self.tx, &self.counters, ev) {
                    queue.push_front(ev);
                    break;
                }
            }
            if queue.is_empty() || waited >= retry {
                break;
            }
            tokio::time::sleep(step).await;
            waited += step;
            step = (step * 2).min(Duration::from_millis(100));
        }
        if !queue.is_empty() {
            Counters::add(&self.counters.tap_control_lost, queue.len() as u64);
            tracing::debug!(
                conn = self.conn,
                lost = queue.len(),
                "tap queue full at close"
            );
        }
    }
}

/// The tap of one direction of one connection.
pub(super) struct DirTap {
    tx: TapSender,
    counters: Arc<Counters>,
    conn: ConnId,
    dir: Direction,
    tapped: bool,
    /// Bytes relayed but not handed to the analyzer since the last event
    /// that got through.
    gap: u64,
    ended: bool,
    /// `Gap`/`End` that could not be queued when the direction ended.
    pending: Vec<TapEvent>,
}

impl DirTap {
    /// A chunk was relayed: hand a copy over, or count it as skipped.
    pub(super) fn data(&mut self, data: &[u8], ts_ns: u64) {
        let n = data.len() as u64;
        if !self.tapped {
            Counters::add(&self.counters.untapped_bytes, n);
            return;
        }
        if self.gap > 0 {
            let ev = TapEvent::Gap {
                conn: self.conn,
                dir: self.dir,
                len: self.gap,
                ts_ns,
            };
            if let Err((_, why)) = try_send(&self.tx, &self.counters, ev) {
                self.drop_chunk(n, why);
                return;
            }
            self.gap = 0;
        }
        let ev = TapEvent::Data {
            conn: self.conn,
            dir: self.dir,
            data: data.to_vec(),
            ts_ns,
        };
        if let Err((_, why)) = try_send(&self.tx, &self.counters, ev) {
            self.drop_chunk(n, why);
        }
    }

    fn drop_chunk(&mut self, n: u64, why: Refused) {
        self.gap += n;
        let c = &self.counters;
        Counters::add(&c.tap_events_dropped, 1);
        Counters::add(&c.tap_bytes_dropped, n);
        Counters::add(
            match why {
                Refused::Full => &c.tap_dropped_queue_full,
                Refused::OverBudget => &c.tap_dropped_byte_budget,
                Refused::Disconnected => &c.tap_dropped_analyzer_gone,
            },
            1,
        );
    }

    /// The direction ended: `Gap` (if bytes are owed) then `End`; what
    /// cannot be queued now is kept for [`ConnTap::close`]. Idempotent.
    pub(super) fn end(&mut self, kind: EndKind) {
        if self.ended || !self.tapped {
            self.ended = true;
            return;
        }
        self.ended = true;
        let ts_ns = now_ns();
        if self.gap > 0 {
            self.pending.push(TapEvent::Gap {
                conn: self.conn,
                dir: self.dir,
                len: self.gap,
                ts_ns,
            });
            self.gap = 0;
        }
        self.pending.push(TapEvent::End {
            conn: self.conn,
            dir: self.dir,
            kind,
            ts_ns,
        });
        let mut sent = 0;
        for ev in self.pending.iter() {
            if try_send(&self.tx, &self.counters, ev.clone()).is_err() {
                break;
            }
            sent += 1;
        }
        self.pending.drain(..sent);
    }

    /// Whether [`DirTap::end`] was called.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// Events still owed to the analyzer.
    pub(super) fn take_pending(&mut self) -> Vec<TapEvent> {
        std::mem::take(&mut self.pending)
    }
}
