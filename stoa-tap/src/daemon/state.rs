//! State shared by the daemon's threads and read by the admin server.

use super::config::RunConfig;
use crate::decode::DecodeStats;
use crate::http1::Http1Stats;
use crate::metrics::{MetricKind, MetricsText};
use crate::pipeline::{CaptureStats, Engine, ExchangeStats};
use crate::server::{AdminConfig, AdminState, ApiResponse, Readiness};
use crate::tcp::TcpStats;
use contracts::{Exchange, InferenceConfig, Observations};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Counters a worker publishes about once a second.
#[derive(Debug, Clone, Default)]
struct WorkerSnapshot {
    capture: CaptureStats,
    decode: DecodeStats,
    tcp: TcpStats,
    http: Http1Stats,
    exchanges: ExchangeStats,
    open_flows: u64,
    relay_unknown_events: u64,
}

/// Stats of a running source, rendered into /metrics on demand.
pub type SourceMetrics = Box<dyn Fn(&mut MetricsText) + Send + Sync>;

/// A loop's tick counter, for the service watchdog.
pub type Heartbeat = Box<dyn Fn() -> u64 + Send + Sync>;
/// A source's own losses, read on demand: `(lost, delivered)` frames,
/// events or records (kernel ring drops, a full hand-over queue...).
pub type SourceDrops = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// How a source is doing, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceHealth {
    /// Capturing (or relaying).
    Up,
    /// Finished its work (a replayed file read to the end).
    Done,
    /// Not capturing, with the reason: failed to open, ended with an error,
    /// or its interface is gone.
    Down(String),
}

/// Tells how a source is doing; called on each `/readyz`, so it must be cheap.
pub type SourceProbe = Box<dyn Fn() -> SourceHealth + Send + Sync>;

/// A configured source, for readiness.
struct SourceEntry {
    index: usize,
    kind: &'static str,
    name: String,
    probe: SourceProbe,
}

/// Everything the threads share. Workers only touch it once a second.
pub struct Shared {
    cfg: RunConfig,
    infer: RwLock<InferenceConfig>,
    obs: RwLock<Observations>,
    workers: Mutex<Vec<WorkerSnapshot>>,
    drops: Mutex<BTreeMap<&'static str, u64>>,
    exchange_drops: Mutex<BTreeMap<&'static str, u64>>,
    sources: Mutex<Vec<SourceMetrics>>,
    heartbeats: Mutex<Vec<Heartbeat>>,
    source_drops: Mutex<Vec<SourceDrops>>,
    ready: AtomicBool,
    started: Instant,
    files_running: AtomicU64,
    source_errors: Mutex<Vec<String>>,
    source_health: Mutex<Vec<SourceEntry>>,
    saves: AtomicU64,
    save_errors: AtomicU64,
    last_save_bytes: AtomicU64,
    stop_saving: (Mutex<bool>, Condvar),
    exchanges_observed: AtomicU64,
    /// Batches waiting in each worker's queue.
    worker_queue: Vec<std::sync::atomic::AtomicI64>,
    /// Exchanges parsed by the workers and not yet learned (held while
    /// another thread has the observations locked).
    learn_pending: std::sync::atomic::AtomicI64,
    /// Last time a worker saw traffic (frames, events or exchanges), seconds
    /// since the epoch (0: never).
    last_traffic_unix: AtomicU64,
    /// The publisher's status, when one runs.
    publisher: std::sync::OnceLock<Arc<crate::publish::Status>>,
    /// The publisher asked for a copy of the observations.
    snapshot_wanted: AtomicBool,
    /// Where the aggregator hands that copy (capacity one, never waited on).
    snapshot_slot: Mutex<Option<std::sync::mpsc::SyncSender<Observations>>>,
}

impl Shared {
    pub(super) fn new(cfg: RunConfig, infer: InferenceConfig, obs: Observations) -> Self {
        let n = cfg.workers;
        Shared {
            cfg,
            infer: RwLock::new(infer),
            obs: RwLock::new(obs),
            workers: Mutex::new(vec![WorkerSnapshot::default(); n]),
            drops: Mutex::default(),
            exchange_drops: Mutex::default(),
            sources: Mutex::default(),
            heartbeats: Mutex::default(),
            source_drops: Mutex::default(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            files_running: AtomicU64::new(0),
            source_errors: Mutex::default(),
            source_health: Mutex::default(),
            saves: AtomicU64::new(0),
            save_errors: AtomicU64::new(0),
            last_save_bytes: AtomicU64::new(0),
            stop_saving: (Mutex::new(false), Condvar::new()),
            exchanges_observed: AtomicU64::new(0),
            worker_queue: (0..n)
                .map(|_| std::sync::atomic::AtomicI64::new(0))
                .collect(),
            learn_pending: std::sync::atomic::AtomicI64::new(0),
            last_traffic_unix: AtomicU64::new(0),
            publisher: std::sync::OnceLock::new(),
            snapshot_wanted: AtomicBool::new(false),
            snapshot_slot: Mutex::new(None),
        }
    }

    /// A batch entered (`+1`) or left (`-1`) worker `i`'s queue.
    pub(super) fn worker_queued(&self, i: usize, delta: i64) {
        if let Some(q) = self.worker_queue.get(i) {
            q.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Exchanges entered (`+n`) or left (`-n`) a worker's pending list.
    pub(super) fn learn_pending(&self, delta: i64) {
        self.learn_pending.fetch_add(delta, Ordering::Relaxed);
    }

    pub(super) fn drop_work(&self, reason: &'static str, items: u64) {
        if let Ok(mut d) = self.drops.lock() {
            *d.entry(reason).or_default() += items;
        }
    }

    pub(super) fn drop_exchanges(&self, reason: &'static str, n: u64) {
        if let Ok(mut d) = self.exchange_drops.lock() {
            *d.entry(reason).or_default() += n;
        }
    }

    /// Registers a source's metrics renderer.
    pub fn add_source_metrics(&self, f: SourceMetrics) {
        if let Ok(mut s) = self.sources.lock() {
            s.push(f);
        }
    }

    /// Registers a loop whose ticks the service watchdog requires.
    pub fn add_heartbeat(&self, f: Heartbeat) {
        if let Ok(mut h) = self.heartbeats.lock() {
            h.push(f);
        }
    }

    /// Current tick counts of the registered loops.
    pub fn heartbeats(&self) -> Vec<u64> {
        self.heartbeats
            .lock()
            .map(|h| h.iter().map(|f| f()).collect())
            .unwrap_or_default()
    }

    /// Registers a source's loss counters (part of the drop rate).
    pub fn add_source_drops(&self, f: SourceDrops) {
        if let Ok(mut s) = self.source_drops.lock() {
            s.push(f);
        }
    }

    /// Registers a configured source (`index` in `sources`) for `/readyz`.
    pub(super) fn add_source_health(
        &self,
        index: usize,
        kind: &'static str,
        name: String,
        probe: SourceProbe,
    ) {
        if let Ok(mut s) = self.source_health.lock() {
            s.push(SourceEntry {
                index,
                kind,
                name,
                probe,
            });
        }
    }

    /// Every registered source with its health, in configuration order.
    fn source_states(&self) -> Vec<(usize, &'static str, String, SourceHealth)> {
        let Ok(s) = self.source_health.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = s
            .iter()
            .map(|e| (e.index, e.kind, e.name.clone(), (e.probe)()))
            .collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// Ready when started (and not stopping) and no source is down: one source
    /// down is enough for `503`, since part of the traffic goes unseen and the
    /// contracts and figures learned from the rest would mislead.
    pub fn readiness(&self) -> Readiness {
        let started = self.ready.load(Ordering::Relaxed);
        let mut notes = Vec::new();
        if !started {
            notes.push("starting or stopping".to_owned());
        }
        let mut sources = Vec::new();
        let mut down = Vec::new();
        for (index, kind, name, health) in self.source_states() {
            let (state, error) = match health {
                SourceHealth::Up => ("up", None),
                SourceHealth::Done => ("done", None),
                SourceHealth::Down(e) => ("down", Some(e)),
            };
            let entry = serde_json::json!({
                "index": index,
                "kind": kind,
                "name": name,
                "state": state,
                "error": error,
            });
            if let Some(e) = &error {
                notes.push(format!("source {index} ({kind} {name}) is down: {e}"));
                down.push(entry.clone());
            }
            sources.push(entry);
        }
        notes.extend(self.publisher.get().and_then(|p| p.ready_detail()));
        let ready = started && down.is_empty();
        let mut extra = serde_json::Map::new();
        extra.insert("sources".into(), sources.into());
        extra.insert("down".into(), down.into());
        Readiness {
            ready,
            notes,
            extra,
        }
    }

    pub(super) fn source_error(&self, e: String) {
        if let Ok(mut s) = self.source_errors.lock() {
            s.push(e);
        }
    }

    pub(super) fn file_started(&self) {
        self.files_running.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn file_done(&self) {
        self.files_running.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn publish_worker(&self, i: usize, e: &Engine) {
        let snap = WorkerSnapshot {
            capture: e.capture.clone(),
            decode: e.decode.clone(),
            tcp: e.tcp_stats().clone(),
            http: e.http_stats().clone(),
            exchanges: e.exchanges.clone(),
            open_flows: e.open_flows() as u64,
            relay_unknown_events: e.relay_unknown_events,
        };
        if let Ok(mut w) = self.workers.lock() {
            if let Some(slot) = w.get_mut(i) {
                let activity = |s: &WorkerSnapshot| s.capture.packets + s.exchanges.total;
                if activity(&snap) > activity(slot) {
                    self.last_traffic_unix.store(unix_now(), Ordering::Relaxed);
                }
                *slot = snap;
            }
        }
    }

    /// Learns a worker's exchanges and empties `batch`. Workers learn in
    /// place, under the write lock, instead of handing exchanges to another
    /// thread: no copy, no wake-up and no cross-thread free per batch (a
    /// third of a worker's time went there). Without `wait`, a lock held by
    /// another worker or a reader (a save, an API view) leaves `batch` as it
    /// is and returns false: the worker keeps the exchanges and captures on.
    pub(super) fn learn(&self, batch: &mut Vec<Exchange>, wait: bool) -> bool {
        let guard = if wait {
            self.obs.write().ok()
        } else {
            match self.obs.try_write() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::WouldBlock) => return false,
                Err(std::sync::TryLockError::Poisoned(_)) => None,
            }
        };
        let n = batch.len() as u64;
        if let Some(mut obs) = guard {
            for ex in batch.iter() {
                obs.observe(ex);
            }
            // The counter moves under the lock so readers see it agree with
            // the observations.
            self.exchanges_observed.fetch_add(n, Ordering::Relaxed);
        } else {
            self.drop_exchanges("observations_poisoned", n);
        }
        // Freed here, by the thread that allocated them: their buffers go
        // back to this thread's pool for the next exchanges it parses.
        crate::http1::recycle::recycle_all(batch);
        true
    }

    pub(super) fn reconfigure(&self, infer: InferenceConfig) {
        if let Ok(mut obs) = self.obs.write() {
            obs.set_config(&infer);
        }
        if let Ok(mut i) = self.infer.write() {
            *i = infer;
        }
    }

    pub(super) fn set_ready(&self, r: bool) {
        self.ready.store(r, Ordering::Relaxed);
    }

    /// Saves the observations now.
    pub fn save_now(&self) -> Result<u64, super::persist::PersistError> {
        // Serialise under the read lock, write outside it.
        let snapshot = match self.obs.read() {
            Ok(o) => o.clone(),
            Err(_) => return Ok(0),
        };
        match super::persist::save(&self.cfg.state_dir, &snapshot) {
            Ok(n) => {
                self.saves.fetch_add(1, Ordering::Relaxed);
                self.last_save_bytes.store(n, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.save_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    pub(super) fn save_loop(&self) {
        let interval = Duration::from_secs(self.cfg.save_interval_s);
        let (lock, cv) = &self.stop_saving;
        let Ok(mut stopped) = lock.lock() else {
            return;
        };
        loop {
            let Ok((guard, _)) = cv.wait_timeout(stopped, interval) else {
                return;
            };
            stopped = guard;
            if *stopped {
                return;
            }
            if let Err(e) = self.save_now() {
                tracing::error!(error = %e, "saving observations failed");
            }
        }
    }

    pub(super) fn stop_saving(&self) {
        let (lock, cv) = &self.stop_saving;
        if let Ok(mut s) = lock.lock() {
            *s = true;
        }
        cv.notify_all();
    }

    /// Attaches the publisher's status (shown by the admin API and metrics).
    pub(super) fn set_publisher(&self, status: Arc<crate::publish::Status>) {
        let _ = self.publisher.set(status);
    }

    /// Called by a worker after it learned a batch: when the publisher asked
    /// for a copy, a writer takes it between two batches, so the publisher
    /// never holds the lock the workers need.
    /// The hand-over never waits: if the publisher still has not taken the
    /// previous copy, this one is dropped.
    pub(super) fn offer_snapshot(&self) {
        if !self.snapshot_wanted.load(Ordering::Relaxed)
            || !self.snapshot_wanted.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let Some(obs) = self.obs.read().ok().map(|o| o.clone()) else {
            return;
        };
        if let Ok(slot) = self.snapshot_slot.lock() {
            if let Some(tx) = slot.as_ref() {
                let _ = tx.try_send(obs);
            }
        }
    }

    /// The publisher's source of observation copies: asks the workers for
    /// one; if no batch comes within half a second (no traffic, so no
    /// writer to hold up), copies them itself.
    pub(super) fn publisher_snapshots(self: &Arc<Self>) -> crate::publish::SnapshotFn {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Observations>(1);
        if let Ok(mut slot) = self.snapshot_slot.lock() {
            *slot = Some(tx);
        }
        let shared = self.clone();
        Box::new(move || {
            // A copy left over from an earlier request is stale.
            while rx.try_recv().is_ok() {}
            shared.snapshot_wanted.store(true, Ordering::Release);
            let obs = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(o) => o,
                Err(_) => {
                    shared.snapshot_wanted.store(false, Ordering::Release);
                    shared.obs.read().ok()?.clone()
                }
            };
            let infer = shared.infer.read().ok()?.clone();
            Some(crate::publish::Snapshot {
                obs,
                infer,
                uptime_s: shared.started.elapsed().as_secs(),
            })
        })
    }

    /// The largest of three loss fractions: what the sources lost (kernel
    /// rings, their own queues), frames/events dropped before analysis over
    /// those read, and exchanges dropped over those produced. Cumulative
    /// since start.
    fn drop_rate(&self, w: &[WorkerSnapshot]) -> (u64, f64) {
        let frames: u64 = w.iter().map(|s| s.capture.packets).sum();
        let exchanges: u64 = w.iter().map(|s| s.exchanges.total).sum();
        let dropped: u64 = self.drops.lock().map(|d| d.values().sum()).unwrap_or(0);
        let xdropped: u64 = self
            .exchange_drops
            .lock()
            .map(|d| d.values().sum())
            .unwrap_or(0);
        let frac = |d: u64, n: u64| {
            if d + n == 0 {
                0.0
            } else {
                d as f64 / (d + n) as f64
            }
        };
        let (mut src_lost, mut src_delivered) = (0u64, 0u64);
        if let Ok(fs) = self.source_drops.lock() {
            for f in fs.iter() {
                let (l, d) = f();
                src_lost += l;
                src_delivered += d;
            }
        }
        (
            dropped + xdropped + src_lost,
            frac(dropped, frames)
                .max(frac(xdropped, exchanges))
                .max(frac(src_lost, src_delivered)),
        )
    }

    /// `/api/v1/publisher`.
    fn publisher_view(&self) -> serde_json::Value {
        match self.publisher.get() {
            Some(p) => {
                let mut v = serde_json::to_value(p.view()).unwrap_or_default();
                v["enabled"] = serde_json::Value::Bool(true);
                v
            }
            None => serde_json::json!({ "enabled": false }),
        }
    }

    /// Exchanges observed since start (restored ones not included).
    pub fn exchanges_observed(&self) -> u64 {
        self.exchanges_observed.load(Ordering::Relaxed)
    }

    fn workers(&self) -> Vec<WorkerSnapshot> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn summary(&self) -> serde_json::Value {
        let w = self.workers();
        let sum = |f: &dyn Fn(&WorkerSnapshot) -> u64| w.iter().map(f).sum::<u64>();
        let drops = self.drops.lock().map(|d| d.clone()).unwrap_or_default();
        let xdrops = self
            .exchange_drops
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let (total_obs, observed, apis) = match self.obs.read() {
            Ok(o) => (o.exchanges(), self.exchanges_observed(), o.clone()),
            Err(_) => (0, 0, Observations::new(&InferenceConfig::default())),
        };
        let infer = self.infer.read().map(|i| i.clone()).unwrap_or_default();
        let model = contracts::model::build(&apis, &infer);
        let (dropped_total, drop_rate) = self.drop_rate(&w);
        let last_traffic = self.last_traffic_unix.load(Ordering::Relaxed);
        let publisher = self.publisher.get().map(|p| p.view());
        let readiness = self.readiness();
        serde_json::json!({
            "uptime_seconds": self.started.elapsed().as_secs(),
            "ready": readiness.ready,
            "sources": readiness.extra.get("sources"),
            "workers": self.cfg.workers,
            "packets": sum(&|s| s.capture.packets),
            "bytes": sum(&|s| s.capture.bytes),
            "open_flows": sum(&|s| s.open_flows),
            "exchanges_seen": sum(&|s| s.exchanges.total),
            "exchanges_observed": observed,
            "observations_total": total_obs,
            "apis": model.apis.len(),
            "operations": model.apis.iter().map(|a| a.endpoints.iter().map(|e| e.operations.len()).sum::<usize>()).sum::<usize>(),
            "gaps": sum(&|s| s.tcp.gaps),
            "parse_errors": sum(&|s| s.http.parse_errors),
            "evictions": sum(&|s| s.tcp.flows_evicted),
            "dropped_work": drops,
            "dropped_exchanges": xdrops,
            "saves": self.saves.load(Ordering::Relaxed),
            "save_errors": self.save_errors.load(Ordering::Relaxed),
            "source_errors": self.source_errors.lock().map(|s| s.clone()).unwrap_or_default(),
            "file_sources_running": self.files_running.load(Ordering::Relaxed),
            "dropped_total": dropped_total,
            "drop_rate": drop_rate,
            "last_traffic_unix": (last_traffic > 0).then_some(last_traffic),
            "last_traffic_age_seconds": (last_traffic > 0).then(|| unix_now().saturating_sub(last_traffic)),
            "publisher": publisher,
        })
    }

    fn operations(&self) -> serde_json::Value {
        let (obs, infer) = match (self.obs.read(), self.infer.read()) {
            (Ok(o), Ok(i)) => (o.clone(), i.clone()),
            _ => return serde_json::json!([]),
        };
        let model = contracts::model::build(&obs, &infer);
        let mut ops = Vec::new();
        for api in &model.apis {
            for e in &api.endpoints {
                for op in &e.operations {
                    ops.push(serde_json::json!({
                        "api": api.name,
                        "method": op.method,
                        "path": e.path,
                        "operation_id": op.operation_id,
                        "stats": op.stats,
                    }));
                }
            }
        }
        serde_json::Value::Array(ops)
    }

    fn render_metrics(&self) -> String {
        let mut m = MetricsText::new();
        let w = self.workers();
        let mut decode = DecodeStats::default();
        for s in &w {
            decode.merge(&s.decode);
        }
        let open: u64 = w.iter().map(|s| s.open_flows).sum();
        let relay_unknown: u64 = w.iter().map(|s| s.relay_unknown_events).sum();
        m.gauge("stoa_tap_up", "1 while the daemon runs.", 1u64);
        m.gauge(
            "stoa_tap_ready",
            "1 when started and no source is down.",
            u64::from(self.readiness().ready),
        );
        for (index, kind, name, health) in self.source_states() {
            m.gauge_with(
                "stoa_tap_source_down",
                "1 while a source is down (failed, ended with an error, interface gone).",
                &[
                    ("index", index.to_string().as_str()),
                    ("kind", kind),
                    ("name", name.as_str()),
                ],
                u64::from(matches!(health, SourceHealth::Down(_))),
            );
        }
        m.gauge(
            "stoa_tap_uptime_seconds",
            "Seconds since start.",
            self.started.elapsed().as_secs(),
        );
        m.stats("capture", &sum_counters(w.iter().map(|s| &s.capture)), &[]);
        m.labeled_map(
            MetricKind::Counter,
            "stoa_tap_decode_skipped_total",
            "Frames skipped by the decoder, by reason.",
            "reason",
            &decode,
        );
        m.stats(
            "tcp",
            &sum_counters(w.iter().map(|s| &s.tcp)),
            &["buffered_bytes", "peak_memory_bytes"],
        );
        m.stats("http", &sum_counters(w.iter().map(|s| &s.http)), &[]);
        m.stats(
            "exchanges",
            &sum_counters(w.iter().map(|s| &s.exchanges)),
            &[],
        );
        m.gauge("stoa_tap_open_flows", "Connections tracked.", open);
        for (i, q) in self.worker_queue.iter().enumerate() {
            m.gauge_with(
                "stoa_tap_worker_queue_depth",
                "Batches waiting in a worker's queue.",
                &[("worker", i.to_string().as_str())],
                q.load(Ordering::Relaxed).max(0) as u64,
            );
        }
        m.gauge(
            "stoa_tap_learn_pending_exchanges",
            "Exchanges parsed and held by the workers while the observations are locked.",
            self.learn_pending.load(Ordering::Relaxed).max(0) as u64,
        );
        m.counter(
            "stoa_tap_relay_unknown_events_total",
            "Relay events for connections whose open was lost.",
            relay_unknown,
        );
        let drops = self.drops.lock().map(|d| d.clone()).unwrap_or_default();
        m.labeled_map(
            MetricKind::Counter,
            "stoa_tap_dropped_work_items_total",
            "Frames or relay events dropped before analysis, by reason.",
            "reason",
            &drops,
        );
        let xdrops = self
            .exchange_drops
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        m.labeled_map(
            MetricKind::Counter,
            "stoa_tap_dropped_exchanges_total",
            "Exchanges dropped before contract learning, by reason.",
            "reason",
            &xdrops,
        );
        m.counter(
            "stoa_tap_exchanges_observed_total",
            "Exchanges added to the observations.",
            self.exchanges_observed(),
        );
        m.counter(
            "stoa_tap_saves_total",
            "Observation saves.",
            self.saves.load(Ordering::Relaxed),
        );
        m.counter(
            "stoa_tap_save_errors_total",
            "Failed observation saves.",
            self.save_errors.load(Ordering::Relaxed),
        );
        if let Ok(sources) = self.sources.lock() {
            for f in sources.iter() {
                f(&mut m);
            }
        }
        if let Some(p) = self.publisher.get() {
            p.render(&mut m);
        }
        self.operation_metrics(&mut m);
        m.render()
    }

    /// Per-operation counts, errors and latency histograms, labelled by API,
    /// method and template (never the raw path).
    fn operation_metrics(&self, m: &mut MetricsText) {
        let (obs, infer) = match (self.obs.read(), self.infer.read()) {
            (Ok(o), Ok(i)) => (o.clone(), i.clone()),
            _ => return,
        };
        let model = contracts::model::build(&obs, &infer);
        const BOUNDS_S: [f64; 12] = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        for api in &model.apis {
            for e in &api.endpoints {
                for op in &e.operations {
                    let labels = [
                        ("api", api.name.as_str()),
                        ("method", op.method.as_str()),
                        ("template", e.path.as_str()),
                    ];
                    m.counter_with(
                        "stoa_tap_operation_requests_total",
                        "Requests per operation.",
                        &labels,
                        op.stats.count,
                    );
                    m.counter_with(
                        "stoa_tap_operation_errors_total",
                        "Responses 4xx/5xx and unanswered requests per operation.",
                        &labels,
                        op.stats.client_errors + op.stats.server_errors + op.stats.unanswered,
                    );
                    let h = op.latency_histogram();
                    let buckets: Vec<(f64, u64)> = BOUNDS_S
                        .iter()
                        .map(|b| (*b, h.count_le((b * 1e9) as u64)))
                        .collect();
                    m.histogram_buckets(
                        "stoa_tap_operation_latency_seconds",
                        "Server latency (response first byte - request last byte) per operation.",
                        &labels,
                        &buckets,
                        h.sum() as f64 / 1e9,
                        h.count(),
                    );
                }
            }
        }
    }

    fn document(&self, which: &str) -> Option<ApiResponse> {
        let (obs, infer) = match (self.obs.read(), self.infer.read()) {
            (Ok(o), Ok(i)) => (o.clone(), i.clone()),
            _ => return None,
        };
        let json = |v: Vec<u8>| ApiResponse {
            status: 200,
            content_type: "application/json",
            body: v,
        };
        match which {
            "openapi" | "openapi.json" => {
                let docs = contracts::openapi::emit(&obs, &infer);
                Some(json(
                    contracts::openapi::combine(&docs, &infer)
                        .to_json()
                        .into_bytes(),
                ))
            }
            "openapi.yaml" => {
                let docs = contracts::openapi::emit(&obs, &infer);
                Some(ApiResponse {
                    status: 200,
                    content_type: "application/yaml",
                    body: contracts::openapi::combine(&docs, &infer)
                        .to_yaml()
                        .into_bytes(),
                })
            }
            "uac" => {
                let map: serde_json::Map<String, serde_json::Value> =
                    contracts::uac::emit(&obs, &infer).into_iter().collect();
                Some(json(serde_json::to_vec_pretty(&map).unwrap_or_default()))
            }
            "observations" => Some(json(obs.to_json().into_bytes())),
            _ => None,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sums the numeric fields of serialisable counter structs (timestamps and
/// other non-counters are left out).
fn sum_counters<'a, T: serde::Serialize + 'a>(
    items: impl Iterator<Item = &'a T>,
) -> serde_json::Value {
    let mut total = serde_json::Map::new();
    for item in items {
        let Ok(serde_json::Value::Object(m)) = serde_json::to_value(item) else {
            continue;
        };
        for (k, v) in m {
            if k.ends_with("_ts_ns") {
                continue;
            }
            if let Some(n) = v.as_u64() {
                let cur = total.get(&k).and_then(|c| c.as_u64()).unwrap_or(0);
                total.insert(k, serde_json::Value::from(cur + n));
            }
        }
    }
    serde_json::Value::Object(total)
}

impl AdminState for Shared {
    fn metrics(&self) -> String {
        self.render_metrics()
    }

    fn healthy(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        Shared::readiness(self).ready
    }

    fn readiness(&self) -> Readiness {
        Shared::readiness(self)
    }

    fn api(&self, path: &str) -> Option<ApiResponse> {
        let json = |v: serde_json::Value| ApiResponse {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec_pretty(&v).unwrap_or_default(),
        };
        match path.trim_end_matches('/') {
            "summary" => Some(json(self.summary())),
            "view" => {
                let (obs, infer) = match (self.obs.read(), self.infer.read()) {
                    (Ok(o), Ok(i)) => (o.clone(), i.clone()),
                    _ => return None,
                };
                Some(json(crate::view::build(self.summary(), &obs, &infer)))
            }
            "publisher" => Some(json(self.publisher_view())),
            "operations" | "endpoints" => Some(json(self.operations())),
            other => self.document(other),
        }
    }
}

/// Starts the admin server; returns its stopper.
pub(super) fn start_admin(
    cfg: &RunConfig,
    shared: Arc<Shared>,
) -> Result<Box<dyn FnOnce() + Send>, String> {
    let token = match (&cfg.admin.token, &cfg.admin.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let admin_cfg = AdminConfig {
        bind: cfg.admin_bind(),
        token,
        ..AdminConfig::default()
    };
    let handle = crate::server::start(admin_cfg, shared).map_err(|e| e.to_string())?;
    tracing::info!(addr = %handle.local_addr(), "admin server listening");
    Ok(Box::new(move || handle.shutdown()))
}
