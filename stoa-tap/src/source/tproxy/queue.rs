//! The bounded queue between the relay and the analyzer.
//!
//! Why not `std::sync::mpsc`: a consumer blocked in `recv` has to be woken
//! (a futex call and two context switches) for nearly every event, i.e.
//! twice per relayed request/response pair. On a small machine those
//! wake-ups take the CPU the relayed traffic needs. Here a send is an append
//! under a short lock that never wakes anyone, and the consumer takes
//! everything queued at once on a short timer ([`TapReceiver::recv_batch`]):
//! wake-ups are bounded by the timer (about 1000/s at most), whatever the
//! event rate.
//!
//! The queue is bounded twice: by events, and by the payload bytes of the
//! queued `Data` events, so that large chunks cannot make its memory grow
//! past a budget. Control events carry no payload and only count as events.

use crate::source::TapEvent;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// First sleep of an empty poll; doubled while the queue stays empty.
const MIN_POLL: Duration = Duration::from_millis(1);
/// Longest sleep between polls of an idle queue.
const MAX_POLL: Duration = Duration::from_millis(16);

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its maximum number of events.
    Full,
    /// The event's payload does not fit in the byte budget.
    OverBudget,
    /// The receiver is gone.
    Disconnected,
}

struct Inner {
    events: Vec<TapEvent>,
    /// Payload bytes of the queued `Data` events.
    bytes: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    max_events: usize,
    max_bytes: usize,
    senders: AtomicUsize,
    receiver_alive: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent (a push
        // or a swap): carry on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue holding at most `max_events` events and `max_bytes` payload bytes.
/// Both bounds are at least 1.
pub fn channel(max_events: usize, max_bytes: usize) -> (TapSender, TapReceiver) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            events: Vec::new(),
            bytes: 0,
        }),
        max_events: max_events.max(1),
        max_bytes: max_bytes.max(1),
        senders: AtomicUsize::new(1),
        receiver_alive: AtomicBool::new(true),
    });
    (
        TapSender {
            shared: shared.clone(),
        },
        TapReceiver {
            shared,
            poll: MIN_POLL,
        },
    )
}

fn payload(ev: &TapEvent) -> usize {
    match ev {
        TapEvent::Data { data, .. } => data.len(),
        _ => 0,
    }
}

/// The relay's end: never waits.
pub struct TapSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TapSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapSender")
            .field("max_events", &self.shared.max_events)
            .field("max_bytes", &self.shared.max_bytes)
            .finish()
    }
}

impl TapSender {
    /// The byte budget of the queue.
    pub fn max_bytes(&self) -> usize {
        self.shared.max_bytes
    }

    /// Queues `ev` without waiting, or gives it back with the reason.
    pub fn try_send(&self, ev: TapEvent) -> Result<(), (TapEvent, Refused)> {
        if !self.shared.receiver_alive.load(Ordering::Relaxed) {
            return Err((ev, Refused::Disconnected));
        }
        let n = payload(&ev);
        let mut q = self.shared.lock();
        if q.events.len() >= self.shared.max_events {
            return Err((ev, Refused::Full));
        }
        if n > 0 && q.bytes.saturating_add(n) > self.shared.max_bytes {
            return Err((ev, Refused::OverBudget));
        }
        q.bytes += n;
        q.events.push(ev);
        Ok(())
    }
}

impl Clone for TapSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        TapSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for TapSender {
    fn drop(&mut self) {
        // Release: the receiver that sees 0 also sees every earlier push.
        self.shared.senders.fetch_sub(1, Ordering::Release);
    }
}

/// The analyzer's end.
pub struct TapReceiver {
    shared: Arc<Shared>,
    /// Sleep before the next poll if it finds the queue empty.
    poll: Duration,
}

impl std::fmt::Debug for TapReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapReceiver")
            .field("max_events", &self.shared.max_events)
            .field("max_bytes", &self.shared.max_bytes)
            .finish()
    }
}

/// Every sender is gone and the queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl TapReceiver {
    /// Moves every queued event to the end of `out` without waiting; returns
    /// how many. Their bytes leave the budget at once.
    pub fn try_drain(&mut self, out: &mut Vec<TapEvent>) -> usize {
        let mut q = self.shared.lock();
        let n = q.events.len();
        if n == 0 {
            return 0;
        }
        if out.is_empty() {
            // Swap buffers: the queue keeps `out`'s capacity, so neither side
            // reallocates in the steady state.
            std::mem::swap(out, &mut q.events);
        } else {
            out.append(&mut q.events);
        }
        q.bytes = 0;
        n
    }

    /// Waits up to `max_wait` for events and moves them all to `out`;
    /// returns how many (0 when `max_wait` passed first). Polls on a short
    /// timer (1 ms, backing off to 16 ms while idle) instead of being woken
    /// by senders. `Err` once every sender is gone and nothing is left.
    pub fn recv_batch(
        &mut self,
        out: &mut Vec<TapEvent>,
        max_wait: Duration,
    ) -> Result<usize, Disconnected> {
        let start = Instant::now();
        loop {
            // Read the sender count before draining: a sender that leaves
            // after this drain is seen by the next round.
            let open = self.shared.senders.load(Ordering::Acquire) > 0;
            let n = self.try_drain(out);
            if n > 0 {
                self.poll = MIN_POLL;
                return Ok(n);
            }
            if !open {
                return Err(Disconnected);
            }
            let waited = start.elapsed();
            if waited >= max_wait {
                return Ok(0);
            }
            std::thread::sleep(self.poll.min(max_wait - waited));
            self.poll = (self.poll * 2).min(MAX_POLL);
        }
    }

    /// Payload bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

impl Drop for TapReceiver {
    fn drop(&mut self) {
        self.shared.receiver_alive.store(false, Ordering::Relaxed);
        // What was queued is the analyzer's loss, as for a closed mpsc.
        let mut q = self.shared.lock();
        q.events.clear();
        q.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Direction;

    fn data(n: usize) -> TapEvent {
        TapEvent::Data {
            conn: 1,
            dir: Direction::ClientToServer,
            data: vec![b'x'; n],
            ts_ns: 0,
        }
    }

    #[test]
    fn bounded_by_events_and_by_payload_bytes() {
        let (tx, mut rx) = channel(4, 100);
        assert!(tx.try_send(data(60)).is_ok());
        assert!(matches!(
            tx.try_send(data(41)),
            Err((_, Refused::OverBudget))
        ));
        assert!(tx.try_send(data(40)).is_ok());
        // Control events carry no payload: the byte budget does not apply.
        let close = TapEvent::Close { conn: 1, ts_ns: 0 };
        assert!(tx.try_send(close.clone()).is_ok());
        assert!(tx.try_send(close.clone()).is_ok());
        assert!(matches!(
            tx.try_send(close.clone()),
            Err((_, Refused::Full))
        ));
        assert_eq!(rx.queued_bytes(), 100);
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), 4);
        assert_eq!(rx.queued_bytes(), 0);
        assert!(tx.try_send(data(100)).is_ok(), "draining frees the budget");
        assert_eq!(rx.try_drain(&mut out), 1);
        assert_eq!(out.len(), 5, "a non-empty `out` is appended to");
    }

    #[test]
    fn recv_batch_times_out_then_reports_disconnection_after_the_last_event() {
        let (tx, mut rx) = channel(8, 1 << 20);
        let mut out = Vec::new();
        assert_eq!(rx.recv_batch(&mut out, Duration::from_millis(5)), Ok(0));
        let tx2 = tx.clone();
        drop(tx);
        assert!(tx2.try_send(data(3)).is_ok());
        drop(tx2);
        assert_eq!(rx.recv_batch(&mut out, Duration::from_secs(5)), Ok(1));
        assert_eq!(
            rx.recv_batch(&mut out, Duration::from_secs(5)),
            Err(Disconnected)
        );
    }

    #[test]
    fn events_sent_from_another_thread_are_all_received_in_order() {
        let (tx, mut rx) = channel(64, 1 << 20);
        let t = std::thread::spawn(move || {
            let mut sent = 0u64;
            while sent < 10_000 {
                let ev = TapEvent::Close {
                    conn: sent,
                    ts_ns: 0,
                };
                if tx.try_send(ev).is_ok() {
                    sent += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut out = Vec::new();
        let mut next = 0u64;
        while rx.recv_batch(&mut out, Duration::from_secs(5)).is_ok() {
            for ev in out.drain(..) {
                assert_eq!(
                    ev,
                    TapEvent::Close {
                        conn: next,
                        ts_ns: 0
                    }
                );
                next += 1;
            }
        }
        t.join().expect("sender thread");
        assert_eq!(next, 10_000);
    }

    #[test]
    fn a_dropped_receiver_refuses_further_events() {
        let (tx, rx) = channel(8, 1 << 20);
        drop(rx);
        assert!(matches!(
            tx.try_send(data(1)),
            Err((_, Refused::Disconnected))
        ));
    }
}
