//! Live capture with libpcap: one capture thread per interface, frames handed
//! to the pipeline in batches through a bounded channel.
//!
//! Design:
//! - Every interface gets its own [`pcap::Capture`] (TPACKET_V3 ring, large
//!   buffer, non-immediate by default) owned outright by its capture thread.
//! - The thread reads with `pcap_dispatch`, which hands over everything the
//!   ring holds and then returns; frames are copied into a [`FrameBatch`] and
//!   sent in batches of at most [`LiveConfig::batch`]. A partial batch is sent
//!   as soon as the ring is drained, so nothing lingers when traffic stops.
//! - The channel is never waited on: if it is full the batch is dropped and
//!   counted ([`InterfaceStats::frames_dropped_queue`]). The analyzer falling
//!   behind must not make the kernel ring overflow.
//! - An idle Linux capture blocks in `poll` forever (the read timeout only
//!   retires ring blocks that hold packets), so control goes through
//!   `pcap_breakloop` from other threads: [`LiveHandle::stop`] raises a flag
//!   and breaks the loop; [`LiveHandle::stats`] raises a request and breaks the
//!   loop, and the capture thread (the only owner of the handle) reads
//!   `pcap_stats` and publishes the counters into shared atomics.
//!   The thread also refreshes the kernel counters on its own about once a
//!   second while traffic flows.
//! - On stop the thread switches to non-blocking reads and drains the ring for
//!   one read timeout (plus a margin), so frames already captured, including
//!   the partly filled block the kernel retires on that timeout, still reach
//!   the pipeline.
//! - If the interface disappears (deleted, e.g. a mirror veth recreated), the
//!   thread reopens it with the same settings when it is back (back-off from
//!   100 ms to 2 s), carrying the kernel counters over; a stop interrupts the
//!   wait at once.
//! - Timestamps use nanosecond precision, which Linux supports for live
//!   captures.

use super::FrameBatch;
use pcap::{Active, BreakLoop, Capture, Precision};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of the live capture.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Interfaces to capture on (`any` works too and gives Linux cooked frames).
    pub interfaces: Vec<String>,
    /// TCP ports whose traffic is wanted; used to derive the BPF filter
    /// (`tcp port 5555 or tcp port 8080`). Empty means all TCP.
    pub ports: Vec<u16>,
    /// A BPF filter that replaces the derived one.
    pub filter: Option<String>,
    /// Largest number of bytes kept per frame.
    pub snaplen: i32,
    /// Kernel ring buffer size per interface, bytes.
    pub buffer_bytes: i32,
    /// libpcap immediate mode. Off by default: on Linux it forces TPACKET_V2,
    /// which dropped 40-60% of frames at 160k frames/s on the test machines.
    pub immediate: bool,
    /// Put the interface in promiscuous mode (needed on a real mirror port,
    /// whose frames are addressed to other hosts).
    pub promisc: bool,
    /// Most frames per batch sent to the pipeline.
    pub batch: usize,
    /// libpcap read timeout: how long a partly filled ring block may wait
    /// before it is handed over. Bounds the delivery latency under light load.
    pub read_timeout: Duration,
    /// Refresh the kernel counters at least this often while frames flow.
    pub stats_interval: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            interfaces: Vec::new(),
            ports: vec![5555],
            filter: None,
            snaplen: 262_144,
            buffer_bytes: 64 << 20,
            immediate: false,
            promisc: true,
            batch: 256,
            read_timeout: Duration::from_millis(50),
            stats_interval: Duration::from_secs(1),
        }
    }
}

impl LiveConfig {
    /// The BPF filter actually installed: the user's, or one derived from the ports.
    pub fn filter_expression(&self) -> String {
        if let Some(f) = &self.filter {
            return f.clone();
        }
        if self.ports.is_empty() {
            return "tcp".to_owned();
        }
        self.ports
            .iter()
            .map(|p| format!("tcp port {p}"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// Why a live capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The configuration names no interface.
    #[error("no capture interface configured")]
    NoInterface,
    /// The interface does not exist.
    #[error("capture interface {interface:?} not found (available: {available}): {detail}")]
    InterfaceNotFound {
        /// Interface asked for.
        interface: String,
        /// Interfaces libpcap can see, comma-separated.
        available: String,
        /// libpcap's message.
        detail: String,
    },
    /// The process may not capture.
    #[error(
        "permission denied capturing on {interface:?}: {detail}; run as root or grant the \
         binary CAP_NET_RAW and CAP_NET_ADMIN (setcap cap_net_raw,cap_net_admin=eip BINARY, \
         or AmbientCapabilities= in the systemd unit)"
    )]
    PermissionDenied {
        /// Interface asked for.
        interface: String,
        /// libpcap's message.
        detail: String,
    },
    /// The BPF filter does not compile.
    #[error("bad capture filter {filter:?} on {interface:?}: {detail}")]
    BadFilter {
        /// Interface concerned.
        interface: String,
        /// The filter expression.
        filter: String,
        /// libpcap's message.
        detail: String,
    },
    /// Any other libpcap failure while opening the capture.
    #[error("cannot open capture on {interface:?}: {detail}")]
    Open {
        /// Interface concerned.
        interface: String,
        /// libpcap's message.
        detail: String,
    },
    /// The capture thread could not be spawned.
    #[error("cannot start the capture thread for {interface:?}: {source}")]
    Thread {
        /// Interface concerned.
        interface: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Counters of one interface's capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InterfaceStats {
    /// Interface name.
    pub interface: String,
    /// pcap LINKTYPE_* of the capture (1 Ethernet, 113 Linux cooked...).
    pub linktype: u32,
    /// Frames read from the kernel.
    pub frames: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Batches handed to the pipeline.
    pub batches: u64,
    /// Batches dropped because the pipeline's queue was full.
    pub batches_dropped_queue: u64,
    /// Frames in those dropped batches.
    pub frames_dropped_queue: u64,
    /// Kernel counter: frames that passed the filter (`ps_recv`).
    pub kernel_received: u64,
    /// Kernel counter: frames dropped because the ring was full (`ps_drop`).
    pub kernel_dropped: u64,
    /// Kernel counter: frames dropped by the interface or driver (`ps_ifdrop`).
    pub if_dropped: u64,
    /// Read errors (other than stop/stats interruptions).
    pub read_errors: u64,
    /// Last read error, if any.
    pub last_error: Option<String>,
    /// Times the capture was reopened after its interface disappeared.
    pub reopens: u64,
    /// False once the capture thread has ended.
    pub running: bool,
}

/// Counters shared between a capture thread and the handle.
#[derive(Debug, Default)]
struct Shared {
    frames: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    batches_dropped: AtomicU64,
    frames_dropped_queue: AtomicU64,
    kernel_received: AtomicU64,
    kernel_dropped: AtomicU64,
    if_dropped: AtomicU64,
    read_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    linktype: AtomicU32,
    /// Set by the handle: the thread must end.
    stop: AtomicBool,
    /// Incremented by the handle to ask for fresh kernel counters.
    stats_requested: AtomicU64,
    /// The last request the thread has answered.
    stats_published: AtomicU64,
    /// Set by the thread when it ends.
    finished: AtomicBool,
    /// Incremented by the handle before every `pcap_breakloop`, so the thread
    /// can tell an interruption from a read error.
    breaks: AtomicU64,
    /// Breakloop handle of the capture currently open (replaced on reopen).
    breaker: Mutex<Option<Breaker>>,
    /// Times the capture was reopened after its interface disappeared.
    reopens: AtomicU64,
}

/// A `pcap_breakloop` handle (the pcap type has no `Debug`).
struct Breaker(BreakLoop);

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Breaker")
    }
}

/// Extends libpcap's wrapping 32-bit counters to 64 bits.
#[derive(Debug, Default)]
struct Wide {
    last: u32,
    total: u64,
}

impl Wide {
    fn update(&mut self, now: u32) -> u64 {
        self.total += u64::from(now.wrapping_sub(self.last));
        self.last = now;
        self.total
    }
}

struct Worker {
    interface: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Makes the capture thread's blocking read return.
    fn interrupt(&self) {
        self.shared.breaks.fetch_add(1, Ordering::SeqCst);
        if let Ok(b) = self.shared.breaker.lock() {
            if let Some(b) = b.as_ref() {
                b.0.breakloop();
            }
        }
    }
}

/// A running live capture. Dropping it stops the capture threads.
pub struct LiveHandle {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for LiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHandle")
            .field(
                "interfaces",
                &self
                    .workers
                    .iter()
                    .map(|w| &w.interface)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How long [`LiveHandle::stats`] waits for a capture thread to answer.
const STATS_WAIT: Duration = Duration::from_millis(250);
/// How long [`LiveHandle::stop`] waits for a capture thread before detaching it.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Opens a capture on every configured interface and starts one capture thread
/// per interface, sending frame batches to `tx`.
///
/// All interfaces are opened (and their filters compiled) before any thread
/// starts, so a bad interface or filter fails the whole call.
pub fn start(cfg: LiveConfig, tx: SyncSender<FrameBatch>) -> Result<LiveHandle, LiveError> {
    if cfg.interfaces.is_empty() {
        return Err(LiveError::NoInterface);
    }
    let filter = cfg.filter_expression();
    let mut caps = Vec::with_capacity(cfg.interfaces.len());
    for iface in &cfg.interfaces {
        caps.push((iface.clone(), open(&cfg, iface, &filter)?));
    }
    let mut handle = LiveHandle {
        workers: Vec::with_capacity(caps.len()),
    };
    for (iface, mut cap) in caps {
        let shared = Arc::new(Shared::default());
        let linktype = cap.get_datalink().0 as u32;
        shared.linktype.store(linktype, Ordering::Relaxed);
        if let Ok(mut b) = shared.breaker.lock() {
            *b = Some(Breaker(cap.breakloop_handle()));
        }
        let reader = Reader {
            iface: iface.clone(),
            linktype,
            shared: Arc::clone(&shared),
            tx: tx.clone(),
            batch: FrameBatch::default(),
            batch_size: cfg.batch.max(1),
            connected: true,
        };
        let timing = Timing {
            stats_interval: cfg.stats_interval,
            drain: cfg.read_timeout + Duration::from_millis(50),
        };
        let reopen = (cfg.clone(), filter.clone());
        let thread = std::thread::Builder::new()
            .name(format!("cap-{iface}"))
            .spawn(move || capture_loop(cap, reader, timing, reopen))
            .map_err(|source| LiveError::Thread {
                interface: iface.clone(),
                source,
            })?;
        tracing::info!(interface = %iface, linktype, filter = %filter,
            snaplen = cfg.snaplen, buffer_bytes = cfg.buffer_bytes,
            immediate = cfg.immediate, "live capture started");
        if let Some(msg) = small_snaplen_warning(cfg.snaplen) {
            tracing::warn!(interface = %iface, snaplen = cfg.snaplen, "{msg}");
        }
        handle.workers.push(Worker {
            interface: iface,
            shared,
            thread: Some(thread),
        });
    }
    Ok(handle)
}

/// The warning for a snap length small enough to cut TCP payloads (frames
/// cut short are counted as `snaplen_truncated`, their missing bytes become
/// gaps), or None.
pub fn small_snaplen_warning(snaplen: i32) -> Option<String> {
    let small =
        u32::try_from(snaplen).is_ok_and(|s| s > 0 && s < crate::source::pcap_file::SMALL_SNAPLEN);
    small.then(|| {
        format!(
            "snap length {snaplen} cuts frames longer than {snaplen} bytes: TCP payloads \
             will be missing (counted as snaplen_truncated) and exchanges incomplete; \
             use 262144"
        )
    })
}

/// Opens and configures one interface's capture.
fn open(cfg: &LiveConfig, iface: &str, filter: &str) -> Result<Capture<Active>, LiveError> {
    let classify = |e: pcap::Error| -> LiveError {
        let detail = e.to_string();
        let lower = detail.to_ascii_lowercase();
        if lower.contains("permission")
            || lower.contains("not permitted")
            || lower.contains("cap_net_raw")
        {
            LiveError::PermissionDenied {
                interface: iface.to_owned(),
                detail,
            }
        } else if lower.contains("no such device") {
            let available = pcap::Device::list()
                .map(|l| l.into_iter().map(|d| d.name).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            LiveError::InterfaceNotFound {
                interface: iface.to_owned(),
                available,
                detail,
            }
        } else {
            LiveError::Open {
                interface: iface.to_owned(),
                detail,
            }
        }
    };
    let timeout_ms = cfg.read_timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut cap = Capture::from_device(iface)
        .map_err(classify)?
        .snaplen(cfg.snaplen)
        .buffer_size(cfg.buffer_bytes)
        .promisc(cfg.promisc)
        .immediate_mode(cfg.immediate)
        .timeout(timeout_ms)
        // Linux supports nanosecond stamps on live captures; the header's
        // "microseconds" field then holds nanoseconds.
        .precision(Precision::Nano)
        .open()
        .map_err(classify)?;
    cap.filter(filter, true).map_err(|e| LiveError::BadFilter {
        interface: iface.to_owned(),
        filter: filter.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(cap)
}

/// What a capture thread needs besides the capture itself.
struct Reader {
    iface: String,
    linktype: u32,
    shared: Arc<Shared>,
    tx: SyncSender<FrameBatch>,
    batch: FrameBatch,
    batch_size: usize,
    /// False once the pipeline's receiver is gone.
    connected: bool,
}

/// Time settings of a capture thread.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Refresh the kernel counters at least this often while frames flow.
    stats_interval: Duration,
    /// On stop, keep reading this long so the kernel retires (and we hand
    /// over) the partly filled ring block.
    drain: Duration,
}

impl Reader {
    /// Sends the current batch without waiting; counts it if the queue is full.
    fn flush(&mut self) {
        if self.batch.is_empty() || !self.connected {
            return;
        }
        // The next batch starts as large as this one ended.
        let next = FrameBatch::with_capacity(self.batch_size, self.batch.bytes());
        let full = std::mem::replace(&mut self.batch, next);
        let n = full.len() as u64;
        match self.tx.try_send(full) {
            Ok(()) => {
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.shared.batches_dropped.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .frames_dropped_queue
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.connected = false,
        }
    }

    /// One `pcap_dispatch`: everything the ring holds, then the partial batch
    /// is handed over too.
    fn read(&mut self, cap: &mut Capture<Active>) -> Result<usize, pcap::Error> {
        let mut frames = 0u64;
        let mut bytes = 0u64;
        let result = cap.dispatch(None, |pkt| {
            let h = pkt.header;
            // Nanosecond precision: the "microseconds" field holds nanoseconds.
            let ts_ns = (h.ts.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(h.ts.tv_usec as u64);
            frames += 1;
            bytes += pkt.data.len() as u64;
            self.batch.push(&crate::source::pcap_file::Packet {
                ts_ns,
                linktype: self.linktype,
                data: pkt.data,
                orig_len: h.len,
            });
            if self.batch.len() >= self.batch_size {
                self.flush();
            }
        });
        self.flush();
        self.shared.frames.fetch_add(frames, Ordering::Relaxed);
        self.shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        result
    }
}

/// libpcap's counters, widened to 64 bits and published to the handle.
#[derive(Debug, Default)]
struct KernelCounters {
    received: Wide,
    dropped: Wide,
    if_dropped: Wide,
}

impl KernelCounters {
    /// Counters for a new capture handle that continue these totals.
    fn carried_over(&self) -> KernelCounters {
        let keep = |w: &Wide| Wide {
            last: 0,
            total: w.total,
        };
        KernelCounters {
            received: keep(&self.received),
            dropped: keep(&self.dropped),
            if_dropped: keep(&self.if_dropped),
        }
    }

    fn publish(&mut self, cap: &mut Capture<Active>, shared: &Shared, iface: &str) {
        match cap.stats() {
            Ok(s) => {
                shared
                    .kernel_received
                    .store(self.received.update(s.received), Ordering::Relaxed);
                shared
                    .kernel_dropped
                    .store(self.dropped.update(s.dropped), Ordering::Relaxed);
                shared
                    .if_dropped
                    .store(self.if_dropped.update(s.if_dropped), Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(interface = %iface, error = %e, "pcap_stats failed"),
        }
    }
}

/// True for read errors after which the capture handle is dead for good
/// (the interface was deleted; a recreated one is a new interface).
fn is_gone(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("disappeared") || m.contains("no such device")
}

/// Least and most time between two attempts to reopen a vanished interface.
const REOPEN_MIN: Duration = Duration::from_millis(100);
const REOPEN_MAX: Duration = Duration::from_secs(2);

/// Reopens a capture whose interface disappeared, until it works or the
/// handle asks to stop. Returns None when stopped.
fn reopen(cfg: &LiveConfig, filter: &str, r: &mut Reader) -> Option<Capture<Active>> {
    let shared = Arc::clone(&r.shared);
    let mut wait = REOPEN_MIN;
    let mut logged = false;
    loop {
        // Sleep in small steps so a stop is noticed at once.
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match open(cfg, &r.iface, filter) {
            Ok(mut cap) => {
                r.linktype = cap.get_datalink().0 as u32;
                shared.linktype.store(r.linktype, Ordering::Relaxed);
                if let Ok(mut b) = shared.breaker.lock() {
                    *b = Some(Breaker(cap.breakloop_handle()));
                }
                shared.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(interface = %r.iface, linktype = r.linktype, "capture reopened");
                return Some(cap);
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(interface = %r.iface, error = %e,
                        "interface gone; retrying until it is back");
                    logged = true;
                } else {
                    tracing::debug!(interface = %r.iface, error = %e, "reopen failed");
                }
                wait = (wait * 2).min(REOPEN_MAX);
            }
        }
    }
}

/// The body of a capture thread.
fn capture_loop(
    mut cap: Capture<Active>,
    mut r: Reader,
    timing: Timing,
    (cfg, filter): (LiveConfig, String),
) {
    let shared = Arc::clone(&r.shared);
    let iface = r.iface.clone();
    let mut kernel = KernelCounters::default();
    let mut last_stats = Instant::now();
    let mut consecutive_errors = 0u32;
    let mut breaks_handled = 0u64;
    let mut last_msg = String::new();

    while r.connected && !shared.stop.load(Ordering::SeqCst) {
        let result = r.read(&mut cap);
        let requested = shared.stats_requested.load(Ordering::Acquire);
        let asked = requested != shared.stats_published.load(Ordering::Relaxed);
        match result {
            Ok(_) => consecutive_errors = 0,
            Err(e) => {
                // pcap_breakloop makes dispatch fail; that is expected when
                // the handle interrupted the read.
                let breaks = shared.breaks.load(Ordering::Acquire);
                let interrupted = breaks != breaks_handled;
                breaks_handled = breaks;
                if !interrupted && !shared.stop.load(Ordering::SeqCst) {
                    consecutive_errors += 1;
                    shared.read_errors.fetch_add(1, Ordering::Relaxed);
                    let msg = e.to_string();
                    if msg != last_msg {
                        tracing::warn!(interface = %iface, error = %msg, "capture read failed");
                    }
                    if let Ok(mut g) = shared.last_error.lock() {
                        *g = Some(msg.clone());
                    }
                    if is_gone(&msg) {
                        // The handle is dead: fold its counters into the
                        // totals and open the interface again when it is back.
                        kernel.publish(&mut cap, &shared, &iface);
                        kernel = kernel.carried_over();
                        match reopen(&cfg, &filter, &mut r) {
                            Some(c) => {
                                cap = c;
                                consecutive_errors = 0;
                                // A stop may have raced with the swap of the
                                // breakloop handle: the loop condition sees it.
                            }
                            None => break,
                        }
                    } else if consecutive_errors > 1 {
                        // Interface down: retry gently until stopped.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    last_msg = msg;
                }
            }
        }
        if asked || last_stats.elapsed() >= timing.stats_interval {
            kernel.publish(&mut cap, &shared, &iface);
            last_stats = Instant::now();
            shared.stats_published.store(requested, Ordering::Release);
        }
    }
    if r.connected {
        // Stopped: frames already in the ring (and in the block the kernel
        // retires within the read timeout) are still handed over.
        match cap.setnonblock() {
            Ok(c) => {
                cap = c;
                let end = Instant::now() + timing.drain;
                while r.connected && Instant::now() < end {
                    if let Ok(0) | Err(_) = r.read(&mut cap) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                kernel.publish(&mut cap, &shared, &iface);
            }
            Err(e) => {
                tracing::warn!(interface = %iface, error = %e, "cannot drain the capture ring")
            }
        }
    } else {
        tracing::info!(interface = %iface, "pipeline gone, capture thread ends");
        kernel.publish(&mut cap, &shared, &iface);
    }
    shared.stats_published.store(
        shared.stats_requested.load(Ordering::Acquire),
        Ordering::Release,
    );
    shared.finished.store(true, Ordering::Release);
    tracing::info!(
        interface = %iface,
        frames = shared.frames.load(Ordering::Relaxed),
        kernel_dropped = shared.kernel_dropped.load(Ordering::Relaxed),
        frames_dropped_queue = shared.frames_dropped_queue.load(Ordering::Relaxed),
        "live capture stopped"
    );
}

impl LiveHandle {
    /// Interfaces captured, in configuration order.
    pub fn interfaces(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.interface.clone()).collect()
    }

    /// Current counters of every interface. The kernel counters are refreshed
    /// first (each capture thread is interrupted briefly to read them); a
    /// thread that does not answer within 250 ms reports its last values.
    pub fn stats(&self) -> Vec<InterfaceStats> {
        let mut targets = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let target = w.shared.stats_requested.fetch_add(1, Ordering::AcqRel) + 1;
            w.interrupt();
            targets.push(target);
        }
        let deadline = Instant::now() + STATS_WAIT;
        for (w, target) in self.workers.iter().zip(targets) {
            while w.shared.stats_published.load(Ordering::Acquire) < target
                && !w.shared.finished.load(Ordering::Acquire)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.workers.iter().map(snapshot).collect()
    }

    /// Stops every capture thread and waits for them (at most about two
    /// seconds each; a thread that does not end in time is left detached).
    /// Returns the final counters. Frames read before the stop have been sent.
    pub fn stop(mut self) -> Vec<InterfaceStats> {
        self.shutdown();
        self.workers.iter().map(snapshot).collect()
    }

    fn shutdown(&mut self) {
        for w in &self.workers {
            w.shared.stop.store(true, Ordering::SeqCst);
            w.interrupt();
        }
        for w in &mut self.workers {
            let Some(thread) = w.thread.take() else {
                continue;
            };
            let started = Instant::now();
            let mut reissued = false;
            // One breakloop is enough (it is sticky); re-issue it once as a
            // safety net if the thread is still blocked after a while.
            while !thread.is_finished() && started.elapsed() < STOP_WAIT {
                std::thread::sleep(Duration::from_millis(2));
                if !reissued && started.elapsed() > Duration::from_millis(500) {
                    reissued = true;
                    w.interrupt();
                }
            }
            if thread.is_finished() {
                if thread.join().is_err() {
                    tracing::error!(interface = %w.interface, "capture thread panicked");
                }
            } else {
                tracing::error!(interface = %w.interface, "capture thread did not stop; detached");
            }
        }
    }
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn snapshot(w: &Worker) -> InterfaceStats {
    let s = &w.shared;
    InterfaceStats {
        interface: w.interface.clone(),
        linktype: s.linktype.load(Ordering::Relaxed),
        frames: s.frames.load(Ordering::Relaxed),
        bytes: s.bytes.load(Ordering::Relaxed),
        batches: s.batches.load(Ordering::Relaxed),
        batches_dropped_queue: s.batches_dropped.load(Ordering::Relaxed),
        frames_dropped_queue: s.frames_dropped_queue.load(Ordering::Relaxed),
        kernel_received: s.kernel_received.load(Ordering::Relaxed),
        kernel_dropped: s.kernel_dropped.load(Ordering::Relaxed),
        if_dropped: s.if_dropped.load(Ordering::Relaxed),
        read_errors: s.read_errors.load(Ordering::Relaxed),
        last_error: s.last_error.lock().ok().and_then(|g| g.clone()),
        reopens: s.reopens.load(Ordering::Relaxed),
        running: !s.finished.load(Ordering::Acquire),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_filters() {
        let mut c = LiveConfig::default();
        assert_eq!(c.filter_expression(), "tcp port 5555");
        c.ports = vec![5555, 8080];
        assert_eq!(c.filter_expression(), "tcp port 5555 or tcp port 8080");
        c.ports.clear();
        assert_eq!(c.filter_expression(), "tcp");
        c.filter = Some("host 10.0.0.1".into());
        assert_eq!(c.filter_expression(), "host 10.0.0.1");
    }

    #[test]
    fn small_snap_lengths_are_warned_about() {
        let w = small_snaplen_warning(96).expect("96 cuts payloads");
        assert!(w.contains("snap length 96"), "{w}");
        assert!(w.contains("snaplen_truncated"), "{w}");
        assert!(small_snaplen_warning(1513).is_some());
        assert_eq!(small_snaplen_warning(1514), None);
        assert_eq!(small_snaplen_warning(262_144), None);
        assert_eq!(
            small_snaplen_warning(0),
            None,
            "0: libpcap's default, not small"
        );
        assert_eq!(small_snaplen_warning(-1), None);
    }

    #[test]
    fn wide_counters_wrap() {
        let mut w = Wide::default();
        assert_eq!(w.update(10), 10);
        assert_eq!(w.update(u32::MAX), u64::from(u32::MAX));
        assert_eq!(w.update(4), u64::from(u32::MAX) + 5);
    }
}
