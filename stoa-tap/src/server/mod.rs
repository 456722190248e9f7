//! The admin HTTP/1.1 server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/...` and a
//! small observe-only dashboard at `/`.
//!
//! It is deliberately small and dependency-free: one accept thread plus a fixed pool
//! of worker threads, each serving one connection at a time (keep-alive and
//! pipelining supported). What it serves comes from an [`AdminState`] supplied by
//! the caller.
//!
//! Robustness:
//! - a request head larger than [`AdminConfig::max_head_bytes`] gets `431`;
//! - a head that does not arrive within [`AdminConfig::read_timeout`] gets `408`,
//!   an idle keep-alive connection is closed after
//!   [`AdminConfig::keep_alive_timeout`], and a response that cannot be written
//!   within [`AdminConfig::write_timeout`] is abandoned, so slow clients cannot hold
//!   workers;
//! - at most [`AdminConfig::max_connections`] connections are open at once; excess
//!   ones get `503` and are closed;
//! - garbage gets `400` and the connection is closed; a panic in the state is caught
//!   and answered with `500`;
//! - every response carries `Content-Length`.
//!
//! Security: binding a non-loopback address requires a bearer token; with a token,
//! every path except `/healthz` and `/readyz` requires `Authorization: Bearer
//! <token>` (compared in constant time). Without a token, requests other than the
//! health checks must name an IP literal or `localhost` in `Host` (else `403`), so a
//! web page cannot read the API of a loopback-bound server through DNS rebinding.

mod http;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A response produced by [`AdminState::api`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status, 200..=599 except 204 and 304 (other values are answered with 500).
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The body (left out of `HEAD` responses).
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// `application/json` content type.
    pub const JSON: &'static str = "application/json";

    /// A JSON response from already-serialised bytes.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        ApiResponse {
            status,
            content_type: Self::JSON,
            body,
        }
    }

    /// A `200` JSON response serialising `value` (a `500` JSON error if that fails).
    pub fn json_value<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::json(200, body),
            Err(e) => Self::json(500, error_json("serialization failed", &e.to_string())),
        }
    }

    /// A response of another type (`text/plain; charset=utf-8`, `application/yaml`...).
    pub fn with_type(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        ApiResponse {
            status,
            content_type,
            body,
        }
    }
}

/// `{"error": ..., "detail": ...}` as bytes.
fn error_json(error: &str, detail: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": error, "detail": detail }))
        .unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec())
}

/// What the admin server exposes. Implemented by the daemon; called from worker
/// threads, so implementations must be cheap to call concurrently and must not
/// block for long.
pub trait AdminState: Send + Sync + 'static {
    /// The `/metrics` document in Prometheus text format 0.0.4 (see
    /// [`crate::metrics::MetricsText`]).
    fn metrics(&self) -> String;
    /// `/healthz`: false answers `503`.
    fn healthy(&self) -> bool;
    /// `/readyz`: false answers `503`.
    fn ready(&self) -> bool;
    /// A line added to the `/readyz` answer when something needs attention
    /// although the daemon is ready (e.g. the control plane refused the key).
    fn ready_detail(&self) -> Option<String> {
        None
    }
    /// `GET /api/v1/<path>`: `path` is what follows `/api/v1/`, without the query
    /// string (e.g. `summary`, `operations`, `openapi.yaml`; empty for `/api/v1` and
    /// `/api/v1/`). `None` answers a `404` JSON error.
    fn api(&self, path: &str) -> Option<ApiResponse>;
    /// Like [`AdminState::api`] with the raw query string (after `?`, not decoded),
    /// if any. The default ignores the query and calls [`AdminState::api`].
    fn api_with_query(&self, path: &str, query: Option<&str>) -> Option<ApiResponse> {
        let _ = query;
        self.api(path)
    }
}

/// Admin server settings. Build with `AdminConfig { bind, token, ..Default::default() }`.
#[derive(Clone)]
pub struct AdminConfig {
    /// Listen address (default `127.0.0.1:9090`).
    pub bind: SocketAddr,
    /// Bearer token; required when `bind` is not a loopback address.
    pub token: Option<String>,
    /// Worker threads, each serving one connection at a time (default 4).
    pub workers: usize,
    /// Open connections at most, being served or waiting for a worker; more get
    /// `503` (default 32).
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted (default 16 KiB).
    pub max_head_bytes: usize,
    /// Time allowed for a whole request head to arrive once it started (default 10 s).
    pub read_timeout: Duration,
    /// Time allowed to write a whole response (default 10 s).
    pub write_timeout: Duration,
    /// Idle time after which a keep-alive connection (or a new connection that
    /// sent nothing) is closed (default 5 s).
    pub keep_alive_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            token: None,
            workers: 4,
            max_connections: 32,
            max_head_bytes: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("workers", &self.workers)
            .field("max_connections", &self.max_connections)
            .field("max_head_bytes", &self.max_head_bytes)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .finish()
    }
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A non-loopback bind without a token.
    #[error(
        "admin server: refusing to listen on non-loopback address {addr} without a token \
         (configure a bearer token, or bind 127.0.0.1 / ::1)"
    )]
    NonLoopbackWithoutToken {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The token is empty or contains characters that cannot appear in a header.
    #[error("admin server: invalid token: {0}")]
    InvalidToken(&'static str),
    /// A limit is zero.
    #[error("admin server: invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The listening socket could not be set up.
    #[error("admin server: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A thread could not be spawned.
    #[error("admin server: cannot spawn thread: {0}")]
    Spawn(#[source] io::Error),
}

/// State shared by the accept thread and the workers.
struct Shared {
    state: Arc<dyn AdminState>,
    cfg: AdminConfig,
    stop: AtomicBool,
    /// Open connections (accepted and not yet closed).
    active: AtomicUsize,
    /// Connections accepted and waiting for a worker.
    queued: AtomicUsize,
}

/// Decrements the open-connection count when a connection is done with.
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

type Conn = (TcpStream, SocketAddr, ConnSlot);

/// A running admin server. Dropping it shuts it down.
pub struct AdminHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AdminHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes connections and joins every thread (within about
    /// 100 ms plus any state call in progress).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("admin server: a thread panicked");
            }
        }
        tracing::info!(addr = %self.local_addr, "admin server stopped");
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn validate(cfg: &AdminConfig) -> Result<(), AdminError> {
    if let Some(t) = &cfg.token {
        if t.is_empty() {
            return Err(AdminError::InvalidToken("empty"));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminError::InvalidToken(
                "only visible ASCII characters are allowed (no spaces)",
            ));
        }
    } else if !is_loopback(cfg.bind.ip()) {
        return Err(AdminError::NonLoopbackWithoutToken { addr: cfg.bind });
    }
    if cfg.workers == 0 {
        return Err(AdminError::InvalidConfig("workers must be at least 1"));
    }
    if cfg.max_connections == 0 {
        return Err(AdminError::InvalidConfig(
            "max_connections must be at least 1",
        ));
    }
    if cfg.max_head_bytes < 256 {
        return Err(AdminError::InvalidConfig(
            "max_head_bytes must be at least 256",
        ));
    }
    if cfg.read_timeout.is_zero() || cfg.write_timeout.is_zero() || cfg.keep_alive_timeout.is_zero()
    {
        return Err(AdminError::InvalidConfig("timeouts must be positive"));
    }
    Ok(())
}

/// Binds the listener and starts the server threads.
///
/// Refuses a non-loopback `bind` without a token ([`AdminError::NonLoopbackWithoutToken`]).
pub fn start(cfg: AdminConfig, state: Arc<dyn AdminState>) -> Result<AdminHandle, AdminError> {
    validate(&cfg)?;
    let listener = TcpListener::bind(cfg.bind).map_err(|source| AdminError::Bind {
        addr: cfg.bind,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| AdminError::Bind {
        addr: cfg.bind,
        source,
    })?;
    // Non-blocking accept, so the accept thread can notice shutdown.
    listener
        .set_nonblocking(true)
        .map_err(|source| AdminError::Bind {
            addr: cfg.bind,
            source,
        })?;

    let workers = cfg.workers;
    let max_connections = cfg.max_connections;
    let auth = cfg.token.is_some();
    let shared = Arc::new(Shared {
        state,
        cfg,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
    });
    let (tx, rx) = mpsc::sync_channel::<Conn>(max_connections);
    let rx = Arc::new(Mutex::new(rx));

    let mut handle = AdminHandle {
        local_addr,
        shared: Arc::clone(&shared),
        threads: Vec::with_capacity(workers + 1),
    };
    for i in 0..workers {
        let shared = Arc::clone(&shared);
        let rx = Arc::clone(&rx);
        let t = std::thread::Builder::new()
            .name(format!("stoa-admin-{i}"))
            .spawn(move || worker_loop(&shared, &rx))
            .map_err(AdminError::Spawn)?; // `handle` drop stops the spawned ones
        handle.threads.push(t);
    }
    let accept_shared = Arc::clone(&shared);
    let t = std::thread::Builder::new()
        .name("stoa-admin-accept".into())
        .spawn(move || accept_loop(&accept_shared, &listener, tx))
        .map_err(AdminError::Spawn)?;
    handle.threads.push(t);
    tracing::info!(
        addr = %local_addr,
        auth,
        workers,
        max_connections,
        "admin server listening"
    );
    Ok(handle)
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, tx: mpsc::SyncSender<Conn>) {
    let max = shared.cfg.max_connections;
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, peer)) => {
                // Only this thread increments `active`, so check-then-add is exact.
                if shared.active.load(Ordering::Acquire) >= max {
                    tracing::warn!(%peer, max_connections = max, "admin server: connection limit reached, refusing");
                    http::refuse_busy(stream);
                    continue;
                }
                shared.active.fetch_add(1, Ordering::AcqRel);
                let slot = ConnSlot(Arc::clone(shared));
                shared.queued.fetch_add(1, Ordering::AcqRel);
                match tx.try_send((stream, peer, slot)) {
                    Ok(()) => {}
                    Err(TrySendError::Full((stream, peer, _slot))) => {
                        shared.queued.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(%peer, "admin server: queue full, refusing");
                        http::refuse_busy(stream);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        shared.queued.fetch_sub(1, Ordering::AcqRel);
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 2),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. EMFILE: back off rather than spin.
                tracing::warn!(error = %e, "admin server: accept failed");
                std::thread::sleep(POLL);
            }
        }
    }
    // Dropping `tx` (and the listener) lets the workers finish.
}

fn worker_loop(shared: &Arc<Shared>, rx: &Mutex<mpsc::Receiver<Conn>>) {
    loop {
        let next = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(POLL)
        };
        match next {
            Ok((stream, peer, slot)) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                if !shared.stop.load(Ordering::Acquire) {
                    http::serve_connection(shared, stream, peer);
                }
                drop(slot);
            }
            Err(RecvTimeoutError::Timeout) => {
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}
