//! The publisher: reports what the daemon learned to the STOA control plane.
//!
//! It runs on its own thread and only reads snapshots of the observations
//! (the same clone the periodic save takes), so capture never waits for it.
//! Every report goes through the on-disk [`outbox`] first; the thread then
//! delivers the outbox in order over [`client`]:
//! - registers as a `shadow` instance, and again when the control plane
//!   answers 404 (it forgot the instance or retired it);
//! - a heartbeat every `heartbeat_interval_s` with the daemon's figures (a
//!   newer heartbeat supersedes queued ones, counted);
//! - the full discovery list and the UAC drafts, each only when its content
//!   hash changed (hashes kept in the state directory across restarts);
//! - failures back off exponentially with jitter; 503 waits the longest
//!   interval; 401/403 stops delivery for good (error log, metric, `/readyz`
//!   detail) until a restart with a correct key.
//!
//! In `directory` mode the same reports are written as files to a folder and
//! nothing is sent; `stoa-tap publish --from` replays such a folder.

pub mod client;
pub mod outbox;

use crate::daemon::config::{ControlPlaneSettings, PublishMode, DEFAULT_KEY_ENV};
use client::{Client, ErrorKind, Key, Outcome, Registered};
use contracts::{InferenceConfig, Observations};
use outbox::{Outbox, ReportKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the publisher reads from the daemon.
pub struct Snapshot {
    /// A copy of the observations.
    pub obs: Observations,
    /// Inference settings (tenant, hints, redaction).
    pub infer: InferenceConfig,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
}

/// Supplies snapshots; `None` when unavailable (a poisoned lock).
pub type SnapshotFn = Box<dyn Fn() -> Option<Snapshot> + Send>;

/// Publisher state, as shown by `/api/v1/publisher`, `/metrics` and `check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusView {
    /// `http` or `directory`.
    pub mode: &'static str,
    /// `starting`, `registered`, `retrying`, `unavailable`, `unauthorized`
    /// or `directory`.
    pub state: &'static str,
    /// The control plane's id for this instance.
    pub instance_id: Option<String>,
    /// True after a 401/403: delivery stopped until a restart.
    pub unauthorized: bool,
    /// Last accepted report or registration, seconds since the epoch.
    pub last_success_unix: Option<u64>,
    /// Seconds since then.
    pub last_success_age_seconds: Option<u64>,
    /// Last failure, with its kind and status.
    pub last_error: Option<String>,
    /// Reports waiting in the outbox (or written, in directory mode).
    pub backlog_reports: u64,
    /// Their bytes.
    pub backlog_bytes: u64,
    /// Age of the oldest waiting report, seconds.
    pub oldest_report_age_seconds: Option<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Reports superseded by newer ones before delivery.
    pub dropped_superseded: u64,
    /// Reports dropped at the outbox bound although nothing superseded them.
    pub dropped_overflow: u64,
    /// Unreadable outbox files.
    pub dropped_corrupt: u64,
    /// Reports the control plane refused (4xx), dropped.
    pub rejected: u64,
    /// Reports accepted by the control plane.
    pub delivered: u64,
    /// Reports queued since start.
    pub queued: u64,
    /// Successful registrations since start.
    pub registrations: u64,
}

/// Shared, cheap-to-read publisher status.
#[derive(Debug, Default)]
pub struct Status {
    view: Mutex<StatusView>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Status {
    fn update(&self, f: impl FnOnce(&mut StatusView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    /// The current state, with ages computed now.
    pub fn view(&self) -> StatusView {
        let mut v = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let now = unix_now();
        v.last_success_age_seconds = v.last_success_unix.map(|t| now.saturating_sub(t));
        v
    }

    /// `/readyz` detail: set only when something needs a person.
    pub fn ready_detail(&self) -> Option<String> {
        let v = self.view();
        v.unauthorized.then(|| {
            format!(
                "publisher: control plane answered unauthorized, delivery stopped ({})",
                v.last_error.unwrap_or_default()
            )
        })
    }

    /// Renders the publisher metrics.
    pub fn render(&self, m: &mut crate::metrics::MetricsText) {
        let v = self.view();
        m.gauge(
            "stoa_tap_publish_unauthorized",
            "1 when the control plane refused the key (delivery stopped).",
            u64::from(v.unauthorized),
        );
        m.gauge(
            "stoa_tap_publish_registered",
            "1 while registered with the control plane.",
            u64::from(v.instance_id.is_some()),
        );
        m.gauge(
            "stoa_tap_publish_last_success_timestamp_seconds",
            "Last report or registration accepted, seconds since the epoch (0: never).",
            v.last_success_unix.unwrap_or(0),
        );
        m.gauge(
            "stoa_tap_publish_backlog_reports",
            "Reports waiting in the outbox.",
            v.backlog_reports,
        );
        m.gauge(
            "stoa_tap_publish_backlog_bytes",
            "Bytes of the reports waiting in the outbox.",
            v.backlog_bytes,
        );
        for k in ErrorKind::ALL {
            m.counter_with(
                "stoa_tap_publish_errors_total",
                "Failed control-plane calls, by kind.",
                &[("kind", k.label())],
                v.errors.get(k.label()).copied().unwrap_or(0),
            );
        }
        for (reason, n) in [
            ("superseded", v.dropped_superseded),
            ("overflow", v.dropped_overflow),
            ("corrupt", v.dropped_corrupt),
            ("rejected", v.rejected),
        ] {
            m.counter_with(
                "stoa_tap_publish_dropped_reports_total",
                "Reports that left the outbox undelivered, by reason.",
                &[("reason", reason)],
                n,
            );
        }
        m.counter(
            "stoa_tap_publish_delivered_total",
            "Reports accepted by the control plane.",
            v.delivered,
        );
        m.counter(
            "stoa_tap_publish_registrations_total",
            "Registrations with the control plane.",
            v.registrations,
        );
    }
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No key, or an unreadable key file.
    #[error("control_plane key: {0}")]
    Key(String),
    /// The HTTP client could not be built.
    #[error("control_plane: {0}")]
    Client(#[from] client::ClientError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// The thread could not start.
    #[error("publisher thread: {0}")]
    Spawn(std::io::Error),
}

/// Reads the key from `key_file`, else from the variable `key_env` (default
/// [`DEFAULT_KEY_ENV`]).
pub fn load_key(cp: &ControlPlaneSettings) -> Result<Key, PublishError> {
    if let Some(path) = &cp.key_file {
        return Key::from_file(path).map_err(PublishError::Key);
    }
    let var = cp.key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
    let raw = std::env::var(var).map_err(|_| {
        PublishError::Key(format!(
            "set control_plane.key_file, or the variable {var} (control_plane.key_env)"
        ))
    })?;
    Key::new(&raw).ok_or_else(|| PublishError::Key(format!("{var} holds no usable key")))
}

/// The registration body.
pub fn registration(
    cp: &ControlPlaneSettings,
    admin_bind: &str,
    tenant: &str,
) -> serde_json::Value {
    let hostname = cp.hostname.clone().unwrap_or_else(host_name);
    let mut body = serde_json::json!({
        "hostname": hostname,
        "mode": "shadow",
        "version": env!("CARGO_PKG_VERSION"),
        "environment": cp.environment,
        "capabilities": ["discovery", "contracts", "metrics"],
        "admin_url": cp.admin_url.clone().unwrap_or_else(|| format!("http://{admin_bind}")),
        "tenant_id": tenant,
        "deployment_mode": "shadow",
    });
    if let Some(t) = &cp.target_gateway_type {
        body["target_gateway_type"] = serde_json::Value::from(t.as_str());
    }
    body
}

/// `url` without `user:password@` (never logged).
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`), `stoa-tap` if unknown.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "stoa-tap".into())
}

/// Reports built from one snapshot.
struct Built {
    heartbeat: serde_json::Value,
    discovery: serde_json::Value,
    contracts: Vec<(String, serde_json::Value)>,
}

fn build(snap: &Snapshot, tenant: &str) -> Built {
    let model = contracts::model::build(&snap.obs, &snap.infer);
    let (mut requests, mut errors, mut operations) = (0u64, 0u64, 0u64);
    for api in &model.apis {
        for e in &api.endpoints {
            for op in &e.operations {
                operations += 1;
                requests += op.stats.count;
                errors += op.stats.client_errors + op.stats.server_errors + op.stats.unanswered;
            }
        }
    }
    let total = snap.obs.exchanges();
    let error_rate = if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    };
    let heartbeat = serde_json::json!({
        "uptime_seconds": snap.uptime_s,
        "routes_count": operations,
        "policies_count": 0,
        "discovered_apis": model.apis.len(),
        "requests_total": total,
        "error_rate": (error_rate * 1e4).round() / 1e4,
    });
    let uacs = contracts::uac::emit_model(&model, &snap.infer, &snap.obs.limits);
    let version_of = |name: &str| {
        uacs.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, u)| u.get("version").and_then(|v| v.as_str()))
            .unwrap_or("1.0.0")
            .to_owned()
    };
    let apis: Vec<serde_json::Value> = model
        .apis
        .iter()
        .map(|a| {
            let mut methods: Vec<&str> = a
                .endpoints
                .iter()
                .flat_map(|e| e.operations.iter().map(|o| o.method.as_str()))
                .collect();
            methods.sort_unstable();
            methods.dedup();
            serde_json::json!({
                "name": a.name,
                "version": version_of(&a.name),
                "backend_url": a.server_url(),
                "paths": a.endpoints.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
                "methods": methods,
                "policies": [],
                "is_active": true,
            })
        })
        .collect();
    let contracts = uacs
        .into_iter()
        .map(|(name, mut u)| {
            if let Some(o) = u.as_object_mut() {
                o.insert("tenant_id".into(), serde_json::Value::from(tenant));
            }
            (name, u)
        })
        .collect();
    Built {
        heartbeat,
        discovery: serde_json::json!({ "apis": apis }),
        contracts,
    }
}

fn content_hash(v: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hashes of the last queued discovery list and contracts, kept across
/// restarts so an unchanged draft is not submitted again. They hold for one
/// destination (control-plane URL or folder): another one gets everything.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Sent {
    #[serde(default)]
    target: String,
    discovery: Option<String>,
    contracts: BTreeMap<String, String>,
}

/// Jittered exponential backoff.
struct Backoff {
    failures: u32,
    max: Duration,
    rng: u64,
}

impl Backoff {
    const BASE_MS: u64 = 500;

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: jitter only needs to spread taps apart.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The next delay: base x 2^failures, capped, times a factor in [0.5, 1).
    fn fail(&mut self) -> Duration {
        let exp = Self::BASE_MS.saturating_mul(1u64 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        let cap = exp.min(self.max.as_millis() as u64).max(1);
        let jitter = cap / 2 + self.next_random() % (cap / 2 + 1);
        Duration::from_millis(jitter.max(1))
    }

    /// The longest delay (503: the control plane asked us to stay away).
    fn slow(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = self.max.as_millis() as u64;
        Duration::from_millis((cap * 3 / 4 + self.next_random() % (cap / 4 + 1)).max(1))
    }
}

/// A running publisher; stopping it is `stop()` (or drop).
pub struct Publisher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Status>,
}

/// Everything the loop owns.
struct Worker {
    cp: ControlPlaneSettings,
    tenant: String,
    client: Option<Client>,
    outbox: Outbox,
    register_body: serde_json::Value,
    snapshot: SnapshotFn,
    status: Arc<Status>,
    sent: Sent,
    sent_path: PathBuf,
    instance: Option<String>,
    backoff: Backoff,
    retry_at: Instant,
    unauthorized: bool,
}

impl Publisher {
    /// Starts the publisher for `cp`; the outbox lives in `state_dir/outbox`
    /// (in directory mode, the configured folder).
    pub fn start(
        cp: &ControlPlaneSettings,
        state_dir: &Path,
        admin_bind: &str,
        default_tenant: &str,
        snapshot: SnapshotFn,
    ) -> Result<Publisher, PublishError> {
        let tenant = cp
            .tenant_id
            .clone()
            .unwrap_or_else(|| default_tenant.to_owned());
        let register_body = registration(cp, admin_bind, &tenant);
        let max = cp.outbox_max_kb.saturating_mul(1024);
        let (client, outbox) = match (cp.publish.mode, &cp.publish.directory) {
            (PublishMode::Directory, Some(dir)) => {
                let ob = Outbox::open(dir, max)?;
                // The folder carries the registration for the replay.
                let bytes =
                    serde_json::to_vec_pretty(&register_body).map_err(outbox::OutboxError::from)?;
                outbox::write_atomic(&dir.join("register.json"), &bytes)?;
                (None, ob)
            }
            _ => {
                let key = load_key(cp)?;
                let client = Client::new(
                    &cp.url,
                    key,
                    cp.ca_bundle.as_deref(),
                    Duration::from_secs(cp.request_timeout_s),
                )?;
                (Some(client), Outbox::open(&state_dir.join("outbox"), max)?)
            }
        };
        let sent_path = state_dir.join("publisher-sent.json");
        let target = match (&client, &cp.publish.directory) {
            (None, Some(dir)) => format!("directory:{}", dir.display()),
            _ => format!("url:{}|tenant:{tenant}", cp.url),
        };
        let sent = std::fs::read(&sent_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Sent>(&b).ok())
            .filter(|s| s.target == target)
            .unwrap_or(Sent {
                target,
                ..Sent::default()
            });
        let status = Arc::new(Status::default());
        let directory = client.is_none();
        status.update(|v| {
            v.mode = if directory { "directory" } else { "http" };
            v.state = if directory { "directory" } else { "starting" };
        });
        let seed = u64::from_str_radix(&outbox::random_hex(), 16).unwrap_or(0x9e37_79b9) | 1;
        let mut worker = Worker {
            cp: cp.clone(),
            tenant,
            client,
            outbox,
            register_body,
            snapshot,
            status: status.clone(),
            sent,
            sent_path,
            instance: None,
            backoff: Backoff {
                failures: 0,
                max: Duration::from_secs(cp.backoff_max_s),
                rng: seed,
            },
            retry_at: Instant::now(),
            unauthorized: false,
        };
        worker.publish_backlog();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stoa-publisher".into())
            .spawn(move || worker.run(rx))
            .map_err(PublishError::Spawn)?;
        tracing::info!(
            mode = if directory { "directory" } else { "http" },
            url = %without_userinfo(&cp.url),
            "publisher started"
        );
        Ok(Publisher {
            stop: Some(tx),
            thread: Some(thread),
            status,
        })
    }

    /// Its status.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stops the thread, waiting up to `wait` for a call in flight (the
    /// outbox is consistent at any point, so an abandoned call loses nothing).
    pub fn stop(mut self, wait: Duration) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + wait;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Worker {
    fn run(&mut self, stop: mpsc::Receiver<()>) {
        // Building the model and the drafts is background work: the lowest
        // CPU priority leaves the capture threads first in line. (It holds
        // no lock the capture path needs: copies come from the workers.)
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
            tracing::debug!(error = %e, "publisher thread priority unchanged");
        }
        let hb_every = Duration::from_secs(self.cp.heartbeat_interval_s);
        let disc_every = Duration::from_secs(self.cp.discovery_interval_s);
        let mut next_hb = Instant::now();
        let mut next_disc = Instant::now();
        loop {
            let now = Instant::now();
            let docs_due = now >= next_disc;
            let hb_due = self.client.is_some() && now >= next_hb;
            if docs_due || hb_due {
                // One copy of the observations per round, whatever is due:
                // the copy is taken by a worker, between two batches.
                if let Some(snap) = (self.snapshot)() {
                    let built = build(&snap, &self.tenant);
                    drop(snap);
                    if hb_due {
                        self.queue_heartbeat(built.heartbeat.clone());
                    }
                    if docs_due {
                        self.queue_documents(built);
                    }
                }
                if docs_due {
                    next_disc = now + disc_every;
                }
                if hb_due {
                    next_hb = now + hb_every;
                }
            }
            if self.client.is_some() && !self.unauthorized && Instant::now() >= self.retry_at {
                self.deliver(&stop);
            }
            self.publish_backlog();
            let mut wake = next_disc;
            if self.client.is_some() {
                wake = wake.min(next_hb);
                if !self.unauthorized && !self.outbox.is_empty() {
                    wake = wake.min(self.retry_at);
                }
            }
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        tracing::info!(backlog = self.outbox.len(), "publisher stopped");
    }

    fn save_sent(&self) {
        match serde_json::to_vec(&self.sent) {
            Ok(b) => {
                if let Err(e) = outbox::write_atomic(&self.sent_path, &b) {
                    tracing::warn!(error = %e, "cannot save the publisher's content hashes");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the publisher's content hashes"),
        }
    }

    fn push(&mut self, kind: ReportKind, body: serde_json::Value) -> bool {
        let label = kind.label();
        let name = match &kind {
            ReportKind::Contract { name, .. } => name.clone(),
            _ => String::new(),
        };
        match self.outbox.push(kind, body, unix_ms()) {
            Ok(r) => {
                tracing::info!(key = %r.key, kind = label, name = %name, seq = r.seq, "report queued");
                self.status.update(|v| v.queued += 1);
                true
            }
            Err(e) => {
                tracing::error!(kind = label, name = %name, error = %e, "report not queued");
                false
            }
        }
    }

    fn queue_heartbeat(&mut self, heartbeat: serde_json::Value) {
        if self.push(ReportKind::Heartbeat, heartbeat) {
            // Only the newest heartbeat means anything.
            self.outbox.drop_superseded("heartbeat");
        }
    }

    fn queue_documents(&mut self, built: Built) {
        let mut changed = false;
        let h = content_hash(&built.discovery);
        if self.sent.discovery.as_deref() != Some(h.as_str())
            && self.push(ReportKind::Discovery, built.discovery)
        {
            self.sent.discovery = Some(h);
            changed = true;
        }
        for (name, uac) in built.contracts {
            let h = content_hash(&uac);
            if self.sent.contracts.get(&name) == Some(&h) {
                continue;
            }
            let kind = ReportKind::Contract {
                name: name.clone(),
                tenant: self.tenant.clone(),
            };
            if self.push(kind, uac) {
                self.sent.contracts.insert(name, h);
                changed = true;
            }
        }
        if changed {
            self.save_sent();
        }
    }

    fn publish_backlog(&mut self) {
        let (n, bytes) = (self.outbox.len() as u64, self.outbox.bytes());
        let oldest = self
            .outbox
            .oldest_ms()
            .map(|ms| unix_ms().saturating_sub(ms) / 1000);
        let drops = self.outbox.drops().clone();
        self.status.update(|v| {
            v.backlog_reports = n;
            v.backlog_bytes = bytes;
            v.oldest_report_age_seconds = oldest;
            v.dropped_superseded = drops.superseded;
            v.dropped_overflow = drops.overflow;
            v.dropped_corrupt = drops.corrupt;
        });
    }

    fn failed(&mut self, kind: ErrorKind, status: u16, detail: &str) {
        let msg = format!("{} (HTTP {status}): {detail}", kind.label());
        self.status.update(|v| {
            *v.errors.entry(kind.label()).or_default() += 1;
            v.last_error = Some(msg.clone());
        });
        let delay = match kind {
            ErrorKind::Unauthorized => {
                self.unauthorized = true;
                tracing::error!(
                    status,
                    detail,
                    url = %self.cp.url,
                    "control plane refused the gateway key: delivery STOPPED until restart with a valid key"
                );
                self.status.update(|v| {
                    v.unauthorized = true;
                    v.state = "unauthorized";
                    v.instance_id = None;
                });
                return;
            }
            ErrorKind::Unavailable => {
                self.status.update(|v| v.state = "unavailable");
                self.backoff.slow()
            }
            _ => {
                self.status.update(|v| v.state = "retrying");
                self.backoff.fail()
            }
        };
        tracing::warn!(
            kind = kind.label(),
            status,
            detail,
            retry_in_ms = delay.as_millis() as u64,
            "control plane call failed"
        );
        self.retry_at = Instant::now() + delay;
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        let now = unix_now();
        let id = self.instance.clone();
        self.status.update(|v| {
            v.last_success_unix = Some(now);
            v.state = "registered";
            v.instance_id = id;
        });
    }

    fn register(&mut self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        match client.register(&self.register_body) {
            Registered::Id(id) => {
                tracing::info!(instance = %id, "registered with the control plane");
                self.instance = Some(id);
                self.status.update(|v| v.registrations += 1);
                self.succeeded();
                true
            }
            Registered::Failed(kind, status, detail) => {
                self.failed(kind, status, &detail);
                false
            }
        }
    }

    /// Sends the outbox in order until it is empty, a call fails, or stop.
    fn deliver(&mut self, stop: &mpsc::Receiver<()>) {
        let mut forgotten = 0;
        loop {
            if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
            if self.instance.is_none() && !self.register() {
                return;
            }
            let Some(report) = self.outbox.head() else {
                return;
            };
            let (Some(client), Some(instance)) = (&self.client, &self.instance) else {
                return;
            };
            match client.send(instance, &report) {
                Outcome::Accepted(status) => {
                    tracing::debug!(key = %report.key, kind = report.kind.label(), status, "report delivered");
                    self.outbox.ack(report.seq);
                    self.status.update(|v| v.delivered += 1);
                    self.succeeded();
                }
                Outcome::UnknownInstance => {
                    tracing::warn!(instance = %instance, "control plane does not know this instance: registering again");
                    self.instance = None;
                    self.status.update(|v| v.instance_id = None);
                    forgotten += 1;
                    if forgotten > 2 {
                        // Registered, then forgotten again at once: wait.
                        self.failed(
                            ErrorKind::ServerError,
                            404,
                            "instance forgotten right after registering",
                        );
                        return;
                    }
                }
                Outcome::Failed(ErrorKind::Rejected, status, detail) => {
                    tracing::error!(key = %report.key, kind = report.kind.label(), status, detail = %detail, "control plane rejected a report; dropped");
                    self.outbox.ack(report.seq);
                    self.status.update(|v| {
                        v.rejected += 1;
                        *v.errors.entry(ErrorKind::Rejected.label()).or_default() += 1;
                        v.last_error = Some(format!("rejected (HTTP {status}): {detail}"));
                    });
                }
                Outcome::Failed(kind, status, detail) => {
                    self.failed(kind, status, &detail);
                    return;
                }
            }
            self.publish_backlog();
        }
    }
}

/// Result of replaying one file with `stoa-tap publish --from`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayResult {
    /// Accepted with this status.
    Accepted(u16),
    /// Refused or failed: kind, status, detail.
    Failed(&'static str, u16, String),
}

/// Replays a directory written in `directory` mode (or an outbox) to a
/// control plane: registers with the folder's `register.json` (or
/// `fallback_register`), then sends every report in order with its own
/// idempotency key, so a second replay is absorbed by the control plane.
/// Calls `each` per file; stops at the first 401.
pub fn replay(
    dir: &Path,
    client: &Client,
    fallback_register: serde_json::Value,
    mut each: impl FnMut(&Path, &ReplayResult),
) -> Result<(usize, usize), String> {
    let files = outbox::report_files(dir).map_err(|e| e.to_string())?;
    let register_body = std::fs::read(dir.join("register.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(fallback_register);
    let mut instance = match client.register(&register_body) {
        Registered::Id(id) => id,
        Registered::Failed(kind, status, detail) => {
            return Err(format!(
                "registration failed: {} (HTTP {status}): {detail}",
                kind.label()
            ))
        }
    };
    let (mut ok, mut failed) = (0, 0);
    for path in files {
        let report = match outbox::read_report(&path) {
            Ok(r) => r,
            Err(e) => {
                each(&path, &ReplayResult::Failed("unreadable", 0, e.to_string()));
                failed += 1;
                continue;
            }
        };
        let mut outcome = client.send(&instance, &report);
        if outcome == Outcome::UnknownInstance {
            if let Registered::Id(id) = client.register(&register_body) {
                instance = id;
                outcome = client.send(&instance, &report);
            }
        }
        let result = match outcome {
            Outcome::Accepted(s) => ReplayResult::Accepted(s),
            Outcome::UnknownInstance => {
                ReplayResult::Failed("unknown_instance", 404, String::new())
            }
            Outcome::Failed(k, s, d) => ReplayResult::Failed(k.label(), s, d),
        };
        each(&path, &result);
        match result {
            ReplayResult::Accepted(_) => ok += 1,
            ReplayResult::Failed("unauthorized", ..) => {
                return Err("the control plane refused the key (unauthorized); stopped".into())
            }
            ReplayResult::Failed(..) => failed += 1,
        }
    }
    Ok((ok, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_not_logged() {
        assert_eq!(
            without_userinfo("https://u:p4ss@cp.example.com/x?a=b@c"),
            "https://<redacted>@cp.example.com/x?a=b@c"
        );
        assert_eq!(without_userinfo("http://cp:8000/a@b"), "http://cp:8000/a@b");
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff {
            failures: 0,
            max: Duration::from_secs(10),
            rng: 12345,
        };
        let d: Vec<u64> = (0..8).map(|_| b.fail().as_millis() as u64).collect();
        assert!((250..=500).contains(&d[0]), "{d:?}");
        assert!((500..=1000).contains(&d[1]), "{d:?}");
        assert!(d.iter().all(|&x| x <= 10_000), "{d:?}");
        assert!(d[7] >= 5_000, "capped near the maximum: {d:?}");
        let s = b.slow().as_millis() as u64;
        assert!((7_500..=10_000).contains(&s), "{s}");
        b.reset();
        assert!(b.fail() <= Duration::from_millis(500));
    }

    #[test]
    fn reports_from_observations_are_schema_shaped() {
        let infer = InferenceConfig::default();
        let snap = Snapshot {
            obs: Observations::new(&infer),
            infer,
            uptime_s: 7,
        };
        let b = build(&snap, "acme");
        assert_eq!(b.heartbeat["uptime_seconds"], 7);
        assert_eq!(b.heartbeat["discovered_apis"], 0);
        assert_eq!(b.discovery, serde_json::json!({"apis": []}));
        assert!(b.contracts.is_empty());
        assert_eq!(
            content_hash(&b.discovery),
            content_hash(&serde_json::json!({"apis": []}))
        );
    }
}
