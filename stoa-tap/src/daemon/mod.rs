//! `stoa-tap run`: the long-running shadow-mode daemon.
//!
//! ```text
//! sources ──frames / relay events──> dispatcher ──(symmetric flow hash)──> worker 1..N
//!   pcap live | tproxy relay | file replay          each owns an Engine: no locks
//!   ebpf probe                                               │ its exchanges, in place
//!                                                            v
//!                           Observations (one RwLock) ──> admin API, metrics, saves
//! ```
//! Every queue is bounded; when one is full the work is dropped and counted by
//! reason, never waited for (file replays excepted, which have no traffic to
//! slow down). Each worker learns its own exchanges under the observations'
//! write lock, taken with `try_write` per batch: when a reader or another
//! worker holds it, the worker keeps its exchanges (up to `exchange_queue` x
//! 64) and goes on capturing. No exchange crosses a thread, and nothing
//! wakes an extra thread per batch: a separate learning thread cost a third of
//! the workers' time in hand-over (`tests/bench/daemon_ab.sh`).

pub mod check;
pub mod config;
pub mod notify;
pub mod persist;
mod state;

pub use state::{Shared, SourceHealth, SourceProbe};

use crate::decode::decode_tcp;
use crate::http1::ResponseHeaders;
use crate::pipeline::{Engine, EngineConfig};
use crate::source::ebpf::{ProbeBatch, SegmentHead};
use crate::source::pcap_file::{Capture, Packet};
use crate::source::tproxy::TapReceiver;
use crate::source::{now_ns, FrameBatch, TapEvent};
use crate::tcp::ServerPorts;
use config::{RunConfig, SourceConfig};
use contracts::{Exchange, InferenceConfig, Observations, TemplateHint};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
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
    /// A batch of frames, shared like [`Work::Segments`]: `None` takes all
    /// of them, `Some` the listed ones.
    Frames(Arc<FrameBatch>, Option<Vec<u32>>),
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
fn shard_of(frame: &Packet<'_>, workers: usize) -> usize {
    match decode_tcp(frame.linktype, frame.data) {
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

/// Splits frame batches over the workers. With one worker the batch goes
/// as it is: no frame is decoded twice.
fn dispatch_frames(
    rx: Receiver<FrameBatch>,
    workers: Vec<SyncSender<Work>>,
    lossless: bool,
    shared: Arc<Shared>,
) {
    let n = workers.len();
    for batch in rx {
        let items = batch.len() as u64;
        if n == 1 {
            hand(
                &workers,
                0,
                Work::Frames(Arc::new(batch), None),
                lossless,
                &shared,
                items,
            );
            continue;
        }
        let mut picks: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
        for (i, f) in batch.iter().enumerate() {
            picks[shard_of(&f, n)].push(i as u32);
        }
        let batch = Arc::new(batch);
        for (i, p) in picks.into_iter().enumerate() {
            if !p.is_empty() {
                let items = p.len() as u64;
                hand(
                    &workers,
                    i,
                    Work::Frames(batch.clone(), Some(p)),
                    lossless,
                    &shared,
                    items,
                );
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

/// Exchanges a worker holds, waiting for the observations' lock, per batch
/// of `exchange_queue`: past that it waits for the lock (and its own queue
/// takes the backlog, counted as usual if it overflows).
const PENDING_PER_BATCH: usize = 64;

/// A worker's exchanges on their way into the observations.
struct Learner {
    pending: Vec<Exchange>,
    bound: usize,
}

impl Learner {
    fn new(exchange_queue: usize) -> Self {
        Learner {
            pending: Vec::new(),
            bound: exchange_queue.saturating_mul(PENDING_PER_BATCH).max(1),
        }
    }

    /// Takes the engine's exchanges and learns everything held, unless the
    /// lock is busy and the bound not reached (or `wait`).
    fn learn(&mut self, engine: &mut Engine, shared: &Shared, wait: bool) {
        let before = self.pending.len();
        engine.take_exchanges_into(&mut self.pending);
        if self.pending.is_empty() {
            return;
        }
        let wait = wait || self.pending.len() >= self.bound;
        if shared.learn(&mut self.pending, wait) {
            shared.learn_pending(-(before as i64));
            shared.offer_snapshot();
        } else {
            shared.learn_pending((self.pending.len() - before) as i64);
        }
    }
}

/// One worker: owns its engine outright.
fn worker(
    index: usize,
    cfg: EngineConfig,
    rx: Receiver<Work>,
    exchange_queue: usize,
    shared: Arc<Shared>,
) {
    let mut engine = Engine::new(cfg);
    let mut learner = Learner::new(exchange_queue);
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
            Some(Work::Frames(batch, picks)) => match picks {
                None => batch.iter().for_each(|p| engine.packet(&p)),
                Some(picks) => picks
                    .iter()
                    .filter_map(|&i| batch.get(i as usize))
                    .for_each(|p| engine.packet(&p)),
            },
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
        learner.learn(&mut engine, &shared, false);
        if last_publish.elapsed() >= Duration::from_secs(1) {
            // Live traffic: idle connections expire on the wall clock.
            engine.tick(now_ns());
            learner.learn(&mut engine, &shared, false);
            shared.publish_worker(index, &engine);
            last_publish = Instant::now();
        }
    }
    // Draining: everything still open is flushed and learned.
    engine.finish();
    learner.learn(&mut engine, &shared, true);
    shared.publish_worker(index, &engine);
}

/// Replays a capture file as fast as the pipeline takes it.
fn file_source(
    path: PathBuf,
    tx: SyncSender<FrameBatch>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    health: Arc<Mutex<SourceHealth>>,
) {
    let failed = |e: String| {
        tracing::error!(path = %path.display(), error = %e, "file source");
        shared.source_error(e.clone());
        if let Ok(mut h) = health.lock() {
            *h = SourceHealth::Down(e);
        }
    };
    let mut cap = match Capture::open(std::slice::from_ref(&path)) {
        Ok(c) => c,
        Err(e) => {
            failed(e.to_string());
            shared.file_done();
            return;
        }
    };
    let mut error = None;
    let mut batch = FrameBatch::default();
    while !stop.load(Ordering::Relaxed) {
        match cap.next_with(|p| batch.push(&p)) {
            Ok(Some(())) => {
                if batch.len() >= 256 {
                    let next = FrameBatch::with_capacity(256, batch.bytes());
                    if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
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
    match error {
        Some(e) => failed(e),
        None => {
            if let Ok(mut h) = health.lock() {
                *h = SourceHealth::Done;
            }
        }
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
    saver: Option<std::thread::JoinHandle<()>>,
    admin: Option<Box<dyn FnOnce() + Send>>,
    publisher: Option<crate::publish::Publisher>,
    cfg: RunConfig,
}

impl Daemon {
    /// Starts sources, workers, saver and admin server.
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
        // Exchanges go nowhere but into the observations.
        engine_cfg.http.response_headers =
            ResponseHeaders::Only(contracts::LEARNED_RESPONSE_HEADERS);

        let mut worker_tx = Vec::new();
        let mut workers = Vec::new();
        for i in 0..n {
            let (tx, rx) = mpsc::sync_channel::<Work>(cfg.worker_queue);
            worker_tx.push(tx);
            let (shared, ecfg, xq) = (shared.clone(), engine_cfg.clone(), cfg.exchange_queue);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("stoa-worker-{i}"))
                    .spawn(move || worker(i, ecfg, rx, xq, shared))
                    .map_err(|e| DaemonError::Admin(e.to_string()))?,
            );
        }

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
                    let (tx, rx) = mpsc::sync_channel::<FrameBatch>(64);
                    let (w, s) = (worker_tx.clone(), shared.clone());
                    dispatchers.push(std::thread::spawn(move || dispatch_frames(rx, w, true, s)));
                    let health = Arc::new(Mutex::new(SourceHealth::Up));
                    let probe = health.clone();
                    shared.add_source_health(
                        index,
                        "file",
                        path.display().to_string(),
                        Box::new(move || probe.lock().map_or(SourceHealth::Up, |h| h.clone())),
                    );
                    let (path, stop, s) = (path.clone(), stop_files.clone(), shared.clone());
                    shared.file_started();
                    sources.push(Running::Thread(std::thread::spawn(move || {
                        file_source(path, tx, stop, s, health)
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
