//! TPROXY source: a transparent relay that accepts the connections a
//! netfilter TPROXY rule diverts to it, connects to their original
//! destination (the gateway), relays both directions byte for byte, and hands
//! a copy of every relayed chunk to the analyzer as [`TapEvent`]s.
//!
//! The relay never waits for the analyzer: copies go through
//! [`TapSender::try_send`] (a queue bounded in events and in payload bytes,
//! see [`channel`]), and when the analyzer's queue is full the copy is
//! dropped and counted by reason. The next event that does get through
//! for that direction is preceded by a [`TapEvent::Gap`] carrying the number
//! of bytes skipped, so the HTTP parser can stay in step inside bodies.
//!
//! Control events:
//! - `Open` is the first event of a connection. If it cannot be queued, the
//!   connection is relayed *untapped* (no event at all is sent for it, counted
//!   in [`TproxyStats::untapped_connections`]): the analyzer never sees a
//!   connection whose start it missed.
//! - `End` (and a `Gap` that must precede it) that cannot be queued are kept
//!   in a tiny per-connection pending list, retried before every later event
//!   of that connection and at close.
//! - `Close` is retried with a short bounded back-off after the sockets are
//!   closed and the connection's slot is released (so the retry never delays
//!   traffic); what still cannot be queued is counted in
//!   [`TproxyStats::tap_control_lost`].
//!
//! A connection with no bytes either way for [`TproxyConfig::idle_timeout`]
//! is closed both ways (counted in [`TproxyStats::connections_idle_closed`]);
//! its `End` and `Close` events are sent as for any other close.
//!
//! The netfilter rules that feed the relay are described in
//! `packaging/tproxy.md` and installed by `stoa-tap tproxy-rules`.

pub mod guard;
mod queue;
mod relay;
pub mod rules;
mod sock;
mod tap;

pub use guard::{GuardBackend, GuardSettings};
pub use queue::{channel, Disconnected, Refused, TapReceiver, TapSender};

use serde::Serialize;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Default idle timeout of relayed connections, seconds (above common
/// keep-alive timeouts of clients and gateways, so it only ends forgotten
/// connections).
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 900;

/// Default byte budget of the tap queue, MiB.
pub const DEFAULT_TAP_QUEUE_MB: usize = 32;

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct TproxyConfig {
    /// Where the transparent listener binds. An IPv6 address (default
    /// `[::]:15001`) gives a dual-stack socket (IPV6_V6ONLY off) that also
    /// accepts IPv4 connections as IPv4-mapped addresses; an IPv4 address
    /// gives an IPv4-only listener.
    pub listen: SocketAddr,
    /// Connect upstream from the client's own address (IP_TRANSPARENT on the
    /// upstream socket, bound to the client IP), so the gateway sees the
    /// client rather than the relay. Needs the `socket transparent` rule and
    /// the gateway's return route through this host; a gateway on this host
    /// (same network namespace) cannot work, its connections are reset and
    /// counted (`upstream_spoof_local`). See packaging/tproxy.md.
    pub spoof_client: bool,
    /// SO_MARK put on upstream sockets so the rules can exempt the relay's
    /// own traffic (0 = no mark). Must not share bits with the divert mark.
    pub upstream_mark: u32,
    /// Longest wait for the upstream connection.
    pub connect_timeout: Duration,
    /// Most connections relayed at once; beyond it, accepting waits (the
    /// kernel's listen backlog holds new connections meanwhile).
    pub max_connections: usize,
    /// Read buffer per direction and connection, bytes.
    pub read_buffer: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// Connection shards: threads each running a single-threaded runtime
    /// that keeps its connections to the end (see `relay`).
    pub worker_threads: usize,
    /// How long [`RelayHandle::shutdown`] lets live connections finish.
    pub shutdown_timeout: Duration,
    /// Total time a connection's final control events (`End`, `Close`) are
    /// retried when the tap queue is full, after the sockets are closed.
    pub control_retry: Duration,
    /// A connection with no bytes read either way for this long is closed
    /// both ways; `None` never closes idle connections.
    pub idle_timeout: Option<Duration>,
    /// The diversion guard (see [`guard`]): keeps the rules' set element
    /// alive while the relay is healthy. `None`: the rules divert for as long
    /// as they are installed (rules installed without the guard set).
    pub guard: Option<GuardSettings>,
}

impl Default for TproxyConfig {
    fn default() -> Self {
        TproxyConfig {
            listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, 15001)),
            spoof_client: false,
            upstream_mark: 0x2,
            connect_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            read_buffer: 64 * 1024,
            backlog: 1024,
            worker_threads: 2,
            shutdown_timeout: Duration::from_secs(5),
            control_retry: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(DEFAULT_IDLE_TIMEOUT_S)),
            guard: None,
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum TproxyError {
    /// The configuration is unusable.
    #[error("invalid tproxy configuration: {0}")]
    Config(String),
    /// A socket could not be created or configured.
    #[error("tproxy listener {addr}: {what}: {source}")]
    Socket {
        /// Listen address.
        addr: SocketAddr,
        /// The step that failed (e.g. `IP_TRANSPARENT`, which needs CAP_NET_ADMIN).
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or its thread could not be started.
    #[error("tproxy runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Counters of the relay, as a snapshot ([`RelayHandle::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TproxyStats {
    /// Connections accepted from clients.
    pub connections_accepted: u64,
    /// Connections being relayed now.
    pub connections_active: u64,
    /// Times accepting had to wait for a free slot (`max_connections`).
    pub connections_limit_waits: u64,
    /// Upstream connections that failed or timed out (the client was reset).
    pub upstream_connect_errors: u64,
    /// ... of which not attempted: `spoof_client` with the gateway's address
    /// on this host, whose answers to the client's address cannot come back
    /// to the relay (the client was reset at once).
    pub upstream_spoof_local: u64,
    /// Connections that ended with a reset or an I/O error.
    pub connections_reset: u64,
    /// Connections closed by the relay after `idle_timeout` without bytes.
    pub connections_idle_closed: u64,
    /// Bytes relayed client -> server.
    pub bytes_client_to_server: u64,
    /// Bytes relayed server -> client.
    pub bytes_server_to_client: u64,
    /// Events queued to the analyzer.
    pub tap_events_sent: u64,
    /// Data events not handed to the analyzer, all reasons (the three
    /// `tap_dropped_*` counters below add up to it).
    pub tap_events_dropped: u64,
    /// ... because the queue held its maximum number of events.
    pub tap_dropped_queue_full: u64,
    /// ... because the chunk did not fit in the queue's byte budget.
    pub tap_dropped_byte_budget: u64,
    /// ... because the analyzer had stopped.
    pub tap_dropped_analyzer_gone: u64,
    /// Bytes of those dropped data events (reported to the analyzer as gaps).
    pub tap_bytes_dropped: u64,
    /// Connections relayed without tap because their `Open` could not be queued.
    pub untapped_connections: u64,
    /// Bytes relayed on untapped connections.
    pub untapped_bytes: u64,
    /// Final control events (`End`, `Close`) that could not be queued even
    /// after the retries.
    pub tap_control_lost: u64,
    /// Ticks of the relay runtime's keep-alive task (the guard, or a plain
    /// ticker without it): stops advancing when the runtime is stuck.
    pub guard_ticks: u64,
    /// Refreshes of the diversion set element.
    pub guard_refreshes: u64,
    /// 1 while the guard keeps diversion on, 0 while new connections bypass
    /// the relay (or no guard).
    pub guard_diverting: u64,
    /// Times diversion was withdrawn because the runtime was saturated.
    pub guard_bypass_lag: u64,
    /// ... because accepting had stalled with connections waiting.
    pub guard_bypass_stalled: u64,
    /// ... because every connection slot was taken.
    pub guard_bypass_full: u64,
    /// Errors of the set refresher (rules not installed, tool missing...).
    pub guard_errors: u64,
}

/// Live counters shared by the relay's tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_limit_waits: AtomicU64,
    pub upstream_connect_errors: AtomicU64,
    pub upstream_spoof_local: AtomicU64,
    pub connections_reset: AtomicU64,
    pub connections_idle_closed: AtomicU64,
    pub bytes_c2s: AtomicU64,
    pub bytes_s2c: AtomicU64,
    pub tap_events_sent: AtomicU64,
    pub tap_events_dropped: AtomicU64,
    pub tap_dropped_queue_full: AtomicU64,
    pub tap_dropped_byte_budget: AtomicU64,
    pub tap_dropped_analyzer_gone: AtomicU64,
    pub tap_bytes_dropped: AtomicU64,
    pub untapped_connections: AtomicU64,
    pub untapped_bytes: AtomicU64,
    pub tap_control_lost: AtomicU64,
    pub guard_ticks: AtomicU64,
    pub guard_refreshes: AtomicU64,
    pub guard_diverting: AtomicU64,
    pub guard_bypass_lag: AtomicU64,
    pub guard_bypass_stalled: AtomicU64,
    pub guard_bypass_full: AtomicU64,
    pub guard_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TproxyStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TproxyStats {
            connections_accepted: g(&self.connections_accepted),
            connections_active: g(&self.connections_active),
            connections_limit_waits: g(&self.connections_limit_waits),
            upstream_connect_errors: g(&self.upstream_connect_errors),
            upstream_spoof_local: g(&self.upstream_spoof_local),
            connections_reset: g(&self.connections_reset),
            connections_idle_closed: g(&self.connections_idle_closed),
            bytes_client_to_server: g(&self.bytes_c2s),
            bytes_server_to_client: g(&self.bytes_s2c),
            tap_events_sent: g(&self.tap_events_sent),
            tap_events_dropped: g(&self.tap_events_dropped),
            tap_dropped_queue_full: g(&self.tap_dropped_queue_full),
            tap_dropped_byte_budget: g(&self.tap_dropped_byte_budget),
            tap_dropped_analyzer_gone: g(&self.tap_dropped_analyzer_gone),
            tap_bytes_dropped: g(&self.tap_bytes_dropped),
            untapped_connections: g(&self.untapped_connections),
            untapped_bytes: g(&self.untapped_bytes),
            tap_control_lost: g(&self.tap_control_lost),
            guard_ticks: g(&self.guard_ticks),
            guard_refreshes: g(&self.guard_refreshes),
            guard_diverting: g(&self.guard_diverting),
            guard_bypass_lag: g(&self.guard_bypass_lag),
            guard_bypass_stalled: g(&self.guard_bypass_stalled),
            guard_bypass_full: g(&self.guard_bypass_full),
            guard_errors: g(&self.guard_errors),
        }
    }
}

/// A running relay. Dropping it shuts it down (see [`RelayHandle::shutdown`]).
#[derive(Debug)]
pub struct RelayHandle {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    guard_stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> TproxyStats {
        self.counters.snapshot()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets live connections finish for up to
    /// `shutdown_timeout`, closes the rest, and returns when the relay's
    /// runtime is gone (every tap sender is then dropped).
    pub fn shutdown(&mut self) {
        // Diversion off first: new connections go straight to the gateway
        // while the live ones drain.
        if let Some(g) = self.guard_stop.take() {
            let _ = g.send(());
            let t0 = std::time::Instant::now();
            while self.counters.guard_diverting.load(Ordering::Relaxed) != 0
                && t0.elapsed() < Duration::from_millis(500)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("tproxy relay thread panicked");
            }
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the relay on its own runtime thread and returns once the listener
/// is bound (bind and socket option errors are returned here).
pub fn start(cfg: TproxyConfig, tap: TapSender) -> Result<RelayHandle, TproxyError> {
    validate(&cfg)?;
    if tap.max_bytes() < cfg.read_buffer {
        return Err(TproxyError::Config(format!(
            "the tap queue's byte budget ({} B) must hold one read_buffer ({} B)",
            tap.max_bytes(),
            cfg.read_buffer
        )));
    }
    let listener = sock::listener(&cfg)?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| TproxyError::Socket {
            addr: cfg.listen,
            what: "getsockname",
            source,
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads.max(1))
        .thread_name("stoa-tproxy")
        .enable_io()
        .enable_time()
        .build()
        .map_err(TproxyError::Runtime)?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (guard_tx, guard_rx) = tokio::sync::oneshot::channel();
    // The keep-alive runs on the relay's runtime: when that runtime is stuck,
    // the set element expires and the watchdog stops being fed.
    match &cfg.guard {
        Some(g) => {
            let watch = listener.try_clone().map_err(|source| TproxyError::Socket {
                addr: cfg.listen,
                what: "dup",
                source,
            })?;
            match guard::arm_once(g) {
                Ok(()) => {
                    counters.guard_diverting.store(1, Ordering::Relaxed);
                    Counters::add(&counters.guard_refreshes, 1);
                }
                Err(e) => {
                    Counters::add(&counters.guard_errors, 1);
                    tracing::warn!(error = %e, "tproxy guard: cannot arm the diversion set \
                        (are the rules installed?); new connections bypass the relay until it can");
                }
            }
            rt.spawn(guard::run(
                g.clone(),
                watch,
                cfg.max_connections,
                counters.clone(),
                guard_rx,
            ));
        }
        None => {
            rt.spawn(guard::ticker(counters.clone(), guard_rx));
        }
    }
    let c = counters.clone();
    let thread = std::thread::Builder::new()
        .name("stoa-tproxy-main".into())
        .spawn(move || {
            let grace = cfg.shutdown_timeout;
            rt.block_on(relay::run(cfg, listener, tap, c, stop_rx));
            // Whatever is still running after the grace period is dropped
            // (its sockets close).
            rt.shutdown_timeout(grace.min(Duration::from_millis(100)));
        })
        .map_err(TproxyError::Runtime)?;
    tracing::info!(listen = %local_addr, "tproxy relay started");
    Ok(RelayHandle {
        local_addr,
        counters,
        stop: Some(stop_tx),
        guard_stop: Some(guard_tx),
        thread: Some(thread),
    })
}

/// Lowers the scheduling priority of the calling thread to `nice` (Linux
/// applies `setpriority` on a thread id to that thread only). Analyzer
/// threads fed by the relay call it so that, when the CPUs are saturated,
/// the relay and the traffic it carries win: the analyzer then falls behind,
/// its queue fills and the relay skips and counts what does not fit, instead
/// of the analyzer taking CPU from the traffic. Optional: since the queue
/// stopped waking the analyzer per event, its share is small enough that
/// the benchmark showed no gain from it.
pub fn lower_thread_priority(nice: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
        .map_err(std::io::Error::from)
}

fn validate(cfg: &TproxyConfig) -> Result<(), TproxyError> {
    if cfg.max_connections == 0 {
        return Err(TproxyError::Config("max_connections must be > 0".into()));
    }
    if cfg.read_buffer < 512 {
        return Err(TproxyError::Config("read_buffer must be >= 512".into()));
    }
    if cfg.max_connections > tokio::sync::Semaphore::MAX_PERMITS
        || u32::try_from(cfg.max_connections).is_err()
    {
        return Err(TproxyError::Config("max_connections is too large".into()));
    }
    if let Some(g) = &cfg.guard {
        g.validate().map_err(TproxyError::Config)?;
    }
    if cfg.idle_timeout.is_some_and(|d| d.is_zero()) {
        return Err(TproxyError::Config(
            "idle_timeout must be positive (None disables it)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
