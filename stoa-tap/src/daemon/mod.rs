//! `stoa-tap run`: the long-running shadow-mode daemon.
//!
//! ```text
//! sources ──frames / relay events──> dispatcher ──(symmetric flow hash)──> worker 1..N
//!   pcap live | tproxy relay | file replay          each owns an Engine: no locks
//!                                                            │ exchange batches
//!                                                            v
//!                                  aggregator (Observations) ──> admin API, metrics, saves
//! ```
//! Every queue is bounded; when one is full the work is dropped and counted by
//! reason, never waited for (file replays excepted, which have no traffic to
//! slow down).

pub mod check;
pub mod config;
pub mod notify;
pub mod persist;
mod state;

pub use state::Shared;

use crate::decode::decode_tcp;
use crate::pipeline::{Engine, EngineConfig};
use crate::source::ebpf::{ProbeBatch, SegmentHead};
use crate::source::pcap_file::{Capture, Packet};
use crate::source::tproxy::TapReceiver;
use crate::source::{now_ns, OwnedFrame, TapEvent};
use crate::tcp::ServerPorts;
use config::{RunConfig, SourceConfig};
use contracts::{Exchange, InferenceConfig, Observations, TemplateHint};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Configuration problem discovered while starting.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A source could not start.
    #[error("source {index} ({kind}): {message}")]
    Source {
        /// Position in `sources`.
        index: usize,
        /// pcap, tproxy or file.
        kind: &'static str,
        /// Cause.
        message: String,
    },
    /// The admin server could not start.
    #[error("admin server: {0}")]
    Admin(String),
    /// Saved observations could not be read.
    #[error("state: {0}")]
    State(#[from] persist::PersistError),
    /// The publisher could not start.
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
}

/// Work handed to one worker.
enum Work {
    Frames(Vec<OwnedFrame>),
    Events(Vec<TapEvent>),
    /// A batch from the probe, shared by the workers: `None` takes all of
    /// its segments, `Some` the listed ones (this worker's connections), so
    /// that splitting a batch over the workers copies no payload.
    Segments(Arc<ProbeBatch>, Option<Vec<u32>>),
    Ports(ServerPorts),
}

/// Inference settings from the run configuration.
pub fn inference_config(cfg: &RunConfig) -> Result<InferenceConfig, config::ConfigError> {
    let mut ic = InferenceConfig::default();
    if let Some(path) = &cfg.hints_file {
        let text = std::fs::read_to_string(path).map_err(|source| config::ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        ic.hints = TemplateHint::parse_list(&text).map_err(|e| config::ConfigError::Invalid {
            key: "hints_file".into(),
            message: e.to_string(),
        })?;
    }
    ic.redaction.extra_field_patterns = cfg.redact_fields.clone();
    ic.tenant_id = cfg.tenant.clone();
    Ok(ic)
}

/// Symmetric hash of a connection: both directions pick the same worker.
fn shard_of_pair(src: SocketAddr, dst: SocketAddr, workers: usize) -> usize {
    let (a, b) = if src <= dst { (src, dst) } else { (dst, src) };
    let mut h = rustc_hash::FxHasher::default();
    (a, b).hash(&mut h);
    (h.finish() % workers as u64) as usize
}

/// The worker of a frame's connection.
fn shard_of(frame: &OwnedFrame, workers: usize) -> usize {
    match decode_tcp(frame.linktype, &frame.data) {
        Ok(seg) => shard_of_pair(seg.src, seg.dst, workers),
        // Undecodable frames are counted by worker 0.
        Err(_) => 0,
    }
}

fn event_conn(ev: &TapEvent) -> u64 {
    match ev {
        TapEvent::Open { conn, .. }
        | TapEvent::Data { conn, .. }
        | TapEvent::Gap { conn, .. }
        | TapEvent::End { conn, .. }
        | TapEvent::Close { conn, .. } => *conn,
    }
}

/// Hands work to worker `i`: blocking for lossless sources, else dropping (counted).
fn hand(
    workers: &[SyncSender<Work>],
    i: usize,
    work: Work,
    lossless: bool,
    shared: &Shared,
    items: u64,
) {
    let tx = &workers[i];
    if lossless {
        if tx.send(work).is_ok() {
            shared.worker_queued(i, 1);
        }
        return;
    }
    match tx.try_send(work) {
        Ok(()) => shared.worker_queued(i, 1),
        Err(TrySendError::Full(_)) => shared.drop_work("worker_queue_full", items),
        Err(TrySendError::Disconnected(_)) => shared.drop_work("worker_stopped", items),
    }
}

/// Splits frame batches over the workers.
fn dispatch_frames(
    rx: Receiver<Vec<OwnedFrame>>,
    workers: Vec<SyncSender<Work>>,
    lossless: bool,
    shared: Arc<Shared>,
) {
    let n = workers.len();
    for batch in rx {
        let mut per: Vec<Vec<OwnedFrame>> = (0..n).map(|_| Vec::new()).collect();
        for f in batch {
            per[shard_of(&f, n)].push(f);
        }
        for (i, frames) in per.into_iter().enumerate() {
            if !frames.is_empty() {
                let items = frames.len() as u64;
                hand(&workers, i, Work::Frames(frames), lossless, &shared, items);
            }
        }
    }
}

/// Events per batch handed to a worker.
const EVENT_BATCH: usize = 256;

/// Splits relay events over the workers by connection, in batches of up to
/// [`EVENT_BATCH`]. The relay's queue is polled (see [`TapReceiver`]), so the
/// relay never pays for waking this thread.
fn dispatch_events(mut rx: TapReceiver, workers: Vec<SyncSender<Work>>, shared: Arc<Shared>) {
    let n = workers.len();
    let mut per: Vec<Vec<TapEvent>> = (0..n).map(|_| Vec::new()).collect();
    let mut batch = Vec::new();
    let give = |i: usize, evs: Vec<TapEvent>| {
        let items = evs.len() as u64;
        hand(&workers, i, Work::Events(evs), false, &shared, items);
    };
    loop {
        let open = rx
            .recv_batch(&mut batch, Duration::from_millis(100))
            .is_ok();
        for ev in batch.drain(..) {
            let i = (event_conn(&ev) % n as u64) as usize;
            per[i].push(ev);
            if per[i].len() >= EVENT_BATCH {
                give(i, std::mem::take(&mut per[i]));
            }
        }
        for (i, evs) in per.iter_mut().enumerate() {
            if !evs.is_empty() {
                give(i, std::mem::take(evs));
            }
        }
        if !open {
            break;
        }
    }
}

fn send_exchanges(
    tx: &SyncSender<Vec<Exchange>>,
    batch: Vec<Exchange>,
    shared: &Shared,
    block: bool,
) {
    let n = batch.len() as u64;
    if block {
        match tx.send(batch) {
            Ok(()) => shared.aggregator_queued(1),
            Err(_) => shared.drop_exchanges("aggregator_stopped", n),
        }
        return;
    }
    match tx.try_send(batch) {
        Ok(()) => shared.aggregator_queued(1),
        Err(TrySendError::Full(_)) => shared.drop_exchanges("aggregator_queue_full", n),
        Err(TrySendError::Disconnected(_)) => shared.drop_exchanges("aggregator_stopped", n),
    }
}

/// One worker: owns its engine outright.
fn worker(
    index: usize,
    cfg: EngineConfig,
    rx: Receiver<Work>,
    agg: SyncSender<Vec<Exchange>>,
    shared: Arc<Shared>,
) {
    let mut engine = Engine::new(cfg);
    let mut last_publish = Instant::now();
    loop {
        let work = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(w) => {
                shared.worker_queued(index, -1);
                Some(w)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match work {
            Some(Work::Frames(frames)) => {
                for f in &frames {
                    engine.packet(&Packet {
                        ts_ns: f.ts_ns,
                        linktype: f.linktype,
                        data: &f.data,
                        orig_len: f.orig_len,
                    });
                }
            }
            Some(Work::Events(evs)) => {
                for ev in evs {
                    engine.tap_event(ev);
                }
            }
            Some(Work::Segments(batch, picks)) => {
                let mut feed = |(head, payload): (&SegmentHead, &[u8])| {
                    engine.segment_cut(&head.segment(payload), head.cut, head.ts_ns);
                };
                match picks {
                    None => batch.iter().for_each(&mut feed),
                    Some(picks) => picks
                        .iter()
                        .filter_map(|&i| batch.get(i as usize))
                        .for_each(&mut feed),
                }
            }
            Some(Work::Ports(p)) => engine.set_ports(p),
            None => {}
        }
        if engine.has_exchanges() {
            let batch: Vec<Exchange> = engine.take_exchanges().collect();
            send_exchanges(&agg, batch, &shared, false);
        }
        if last_publish.elapsed() >= Duration::from_secs(1) {
            // Live traffic: idle connections expire on the wall clock.
            engine.tick(now_ns());
            if engine.has_exchanges() {
                let batch: Vec<Exchange> = engine.take_exchanges().collect();
                send_exchanges(&agg, batch, &shared, false);
            }
            shared.publish_worker(index, &engine);
            last_publish = Instant::now();
        }
    }
    // Draining: everything still open is flushed and delivered.
    engine.finish();
    let batch: Vec<Exchange> = engine.take_exchanges().collect();
    if !batch.is_empty() {
        send_exchanges(&agg, batch, &shared, true);
    }
    shared.publish_worker(index, &engine);
}

/// The aggregator: the only writer of the observations.
fn aggregator(rx: Receiver<Vec<Exchange>>, shared: Arc<Shared>) {
    for batch in rx {
        shared.aggregator_queued(-1);
        shared.observe(&batch);
        shared.offer_snapshot();
    }
}

/// Replays a capture file as fast as the pipeline takes it.
fn file_source(
    path: PathBuf,
    tx: SyncSender<Vec<OwnedFrame>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut cap = match Capture::open(std::slice::from_ref(&path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "file source");
            shared.source_error(format!("{e}"));
            return;
        }
    };
    let mut batch = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        match cap.next_with(|p| OwnedFrame {
            ts_ns: p.ts_ns,
            linktype: p.linktype,
            orig_len: p.orig_len,
            data: p.data.to_vec(),
        }) {
            Ok(Some(f)) => {
                batch.push(f);
                if batch.len() >= 256 && tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "file source");
                shared.source_error(format!("{e}"));
                break;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    for w in cap.take_warnings() {
        tracing::warn!(warning = %w, "file source");
    }
    shared.file_done();
}

/// Applies new ports to a source that filters by port itself.
type PortUpdater = Box<dyn Fn(&[u16]) + Send>;

/// Things that must be stopped at shutdown.
enum Running {
    Thread(std::thread::JoinHandle<()>),
    Stopper(Box<dyn FnOnce() + Send>),
}

/// A started daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    stop_files: Arc<AtomicBool>,
    sources: Vec<Running>,
    dispatchers: Vec<std::thread::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    worker_tx: Vec<SyncSender<Work>>,
    /// Sources that filter by port themselves (the eBPF probe).
    port_updaters: Vec<PortUpdater>,
    aggregator: Option<std::thread::JoinHandle<()>>,
    saver: Option<std::thread::JoinHandle<()>>,
    admin: Option<Box<dyn FnOnce() + Send>>,
    publisher: Option<crate::publish::Publisher>,
    cfg: RunConfig,
}

impl Daemon {
    /// Starts sources, workers, aggregator, saver and admin server.
    pub fn start(cfg: RunConfig) -> Result<Daemon, DaemonError> {
        cfg.validate()?;
        let infer = inference_config(&cfg)?;
        let restored = persist::restore(&cfg.state_dir, &infer)?;
        if let Some(o) = &restored {
            tracing::info!(exchanges = o.exchanges(), dir = %cfg.state_dir.display(), "observations restored");
        }
        let obs = restored.unwrap_or_else(|| Observations::new(&infer));
        let shared = Arc::new(Shared::new(cfg.clone(), infer, obs));

        let n = cfg.workers;
        let mut engine_cfg = EngineConfig::default();
        engine_cfg.tcp.ports = ServerPorts::List(cfg.ports.clone());
        engine_cfg.tcp.idle_timeout_ns = cfg.idle_timeout_s.saturating_mul(1_000_000_000);
        engine_cfg.tcp.memory_cap = (cfg.memory_cap_mb << 20) / n;
        engine_cfg.tcp.max_flows = (cfg.max_flows / n).max(1);

        let (agg_tx, agg_rx) = mpsc::sync_channel::<Vec<Exchange>>(cfg.exchange_queue);
        let aggregator = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stoa-aggregator".into())
                .spawn(move || aggregator(agg_rx, shared))
                .map_err(|e| DaemonError::Admin(e.to_string()))?
        };
        let mut worker_tx = Vec::new();
        let mut workers = Vec::new();
        for i in 0..n {
            let (tx, rx) = mpsc::sync_channel::<Work>(cfg.worker_queue);
            worker_tx.push(tx);
            let (shared, agg, ecfg) = (shared.clone(), agg_tx.clone(), engine_cfg.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("stoa-worker-{i}"))
                    .spawn(move || worker(i, ecfg, rx, agg, shared))
                    .map_err(|e| DaemonError::Admin(e.to_string()))?,
            );
        }
        drop(agg_tx);

        // The publisher starts before the sources: setting up its TLS client
        // (root certificates, the HTTP runtime) never competes with capture.
        let publisher = match &cfg.control_plane {
            Some(cp) => {
                let p = crate::publish::Publisher::start(
                    cp,
                    &cfg.state_dir,
                    &cfg.admin.bind,
                    &cfg.tenant,
                    shared.publisher_snapshots(),
                )?;
                shared.set_publisher(p.status().clone());
                Some(p)
            }
            None => None,
        };
        let stop_files = Arc::new(AtomicBool::new(false));
        let mut sources = Vec::new();
        let mut dispatchers = Vec::new();
        let mut port_updaters = Vec::new();
        for (index, src) in cfg.sources.iter().enumerate() {
            match src {
                SourceConfig::File { path } => {
                    let (tx, rx) = mpsc::sync_channel::<Vec<OwnedFrame>>(64);
                    let (w, s) = (worker_tx.clone(), shared.clone());
                    dispatchers.push(std::thread::spawn(move || dispatch_frames(rx, w, true, s)));
                    let (path, stop, s) = (path.clone(), stop_files.clone(), shared.clone());
                    shared.file_started();
                    sources.push(Running::Thread(std::thread::spawn(move || {
                        file_source(path, tx, stop, s)
                    })));
                }
                SourceConfig::Pcap { .. }
                | SourceConfig::Tproxy { .. }
                | SourceConfig::Ebpf { .. } => {
                    let started = sources::start(
                        index,
                        src,
                        &cfg,
                        &worker_tx,
                        &shared,
                        &mut dispatchers,
                        &mut port_updaters,
                    )?;
                    sources.push(Running::Stopper(started));
                }
            }
        }

        let saver = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stoa-saver".into())
                .spawn(move || shared.save_loop())
                .map_err(|e| DaemonError::Admin(e.to_string()))?
        };
        let admin = state::start_admin(&cfg, shared.clone()).map_err(DaemonError::Admin)?;
        shared.set_ready(true);
        Ok(Daemon {
            shared,
            stop_files,
            sources,
            dispatchers,
            workers,
            worker_tx,
            port_updaters,
            aggregator: Some(aggregator),
            saver: Some(saver),
            admin: Some(admin),
            publisher,
            cfg,
        })
    }

    /// State shared with the admin server.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies a reloaded configuration: ports, templates and redaction rules.
    /// Sources, workers and the admin address need a restart.
    pub fn reload(&mut self, new: RunConfig) -> Result<(), DaemonError> {
        new.validate()?;
        let infer = inference_config(&new)?;
        if new.ports != self.cfg.ports {
            for tx in &self.worker_tx {
                let _ = tx.send(Work::Ports(ServerPorts::List(new.ports.clone())));
            }
            for update in &self.port_updaters {
                update(&new.ports);
            }
        }
        if new.sources != self.cfg.sources
            || new.admin != self.cfg.admin
            || new.workers != self.cfg.workers
            || new.control_plane != self.cfg.control_plane
        {
            tracing::warn!(
                "sources, workers, admin and control_plane settings change only on restart"
            );
        }
        self.shared.reconfigure(infer);
        self.cfg = new;
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Drains everything, saves, and stops.
    pub fn shutdown(mut self) {
        self.shared.set_ready(false);
        self.stop_files.store(true, Ordering::Relaxed);
        for s in self.sources.drain(..) {
            match s {
                Running::Thread(t) => {
                    let _ = t.join();
                }
                Running::Stopper(stop) => stop(),
            }
        }
        for d in self.dispatchers.drain(..) {
            let _ = d.join();
        }
        self.worker_tx.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(a) = self.aggregator.take() {
            let _ = a.join();
        }
        self.shared.stop_saving();
        if let Some(s) = self.saver.take() {
            let _ = s.join();
        }
        if let Err(e) = self.shared.save_now() {
            tracing::error!(error = %e, "final save failed");
        }
        if let Some(p) = self.publisher.take() {
            // A call in flight is abandoned after a while: the outbox keeps
            // the report for the next start.
            p.stop(Duration::from_secs(2));
        }
        if let Some(stop) = self.admin.take() {
            stop();
        }
        tracing::info!("stopped");
    }
}

mod sources;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration via `reload`.
pub fn run_until_signal(
    cfg: RunConfig,
    reload: impl Fn() -> Result<RunConfig, config::ConfigError>,
) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Admin(format!("signals: {e}")))?;
    let mut daemon = Daemon::start(cfg)?;
    tracing::info!("running");
    let notifier = notify::Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        n.send("READY=1");
        if let Some(period) = notify::watchdog_period() {
            let (n, shared) = (n.clone(), daemon.shared().clone());
            let spawned = std::thread::Builder::new()
                .name("stoa-watchdog".into())
                .spawn(move || {
                    let mut last = Vec::new();
                    loop {
                        std::thread::sleep(period);
                        if notify::all_advanced(&mut last, &shared.heartbeats()) {
                            n.send("WATCHDOG=1");
                        } else {
                            tracing::error!(
                                "a relay loop stopped ticking; withholding the watchdog keep-alive"
                            );
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the watchdog thread");
            }
        }
    }
    for sig in signals.forever() {
        match sig {
            SIGHUP => match reload() {
                Ok(new) => {
                    if let Err(e) = daemon.reload(new) {
                        tracing::error!(error = %e, "reload refused; keeping the running configuration");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; keeping the running configuration")
                }
            },
            _ => {
                tracing::info!(signal = sig, "shutting down");
                break;
            }
        }
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    daemon.shutdown();
    Ok(())
}
