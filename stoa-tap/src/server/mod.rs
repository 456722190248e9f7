//! The admin HTTP/1.1 server: `/metrics`, `/healthz`, `/readyz`, `/api/v1/...` and a
//! small observe-only dashboard at `/`.
//!
//! HTTP/1.1 itself (parsing, keep-alive, pipelining, `HEAD`, automatic `400`/`431`)
//! is hyper's. The server runs on a small tokio runtime of its own, owned by the
//! [`AdminHandle`]: one thread drives every connection, and a bounded blocking
//! pool runs the [`AdminState`] calls, which may take a while (building JSON views
//! and contracts), so they never hold up the connection thread.
//!
//! Robustness against slow and idle clients (slowloris):
//! - a request head must be complete within [`AdminConfig::read_timeout`],
//!   counted from the moment the server starts waiting for it (connection
//!   accepted, or previous response sent): connections that send nothing,
//!   trickle a head byte by byte, or sit idle between keep-alive requests are
//!   closed after that time;
//! - state calls hold permits: [`AdminConfig::workers`] for API views and the
//!   report, two more for `/metrics` and `/readyz`, and the blocking pool has
//!   one thread per permit, so the probes never queue behind slow views.
//!   `/healthz` and the dashboard page are answered on the connection thread
//!   without any slow call;
//! - at most [`AdminConfig::max_connections`] connections are open. A connection
//!   arriving at the limit takes the place of the open connection that has been
//!   inactive longest among those not executing a state call (reading a head,
//!   idle between requests, waiting for a permit, or being written a response;
//!   a request that just ended counts as activity), which is closed. So idle and
//!   slow clients can never lock a probe out: a new connection is admitted unless
//!   every slot is executing a state call (at most `workers + 2` can, so never
//!   with the defaults), and then it gets `503` at once. The limit is a table of
//!   open connections rather than a bare semaphore, because making room needs to
//!   know which connection to close;
//! - a response write that makes no progress for [`AdminConfig::write_timeout`]
//!   (a client that does not read) closes the connection;
//! - a head larger than [`AdminConfig::max_head_bytes`] gets `431`, more than 64
//!   header fields `431`, garbage `400`; request bodies are never read (only
//!   `GET` and `HEAD` are served): a request with one gets its answer and the
//!   connection is closed;
//! - a panic in the state is answered with `500`; every response carries
//!   `Content-Length`.
//!
//! Security: binding a non-loopback address requires a bearer token; with a token,
//! every path except `/healthz` and `/readyz` requires `Authorization: Bearer
//! <token>` (compared in constant time). Without a token, requests other than the
//! health checks must name an IP literal or `localhost` in `Host` (else `403`), so a
//! web page cannot read the API of a loopback-bound server through DNS rebinding.

mod http;
#[cfg(test)]
mod tests;

use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

/// State calls for `/metrics` and `/readyz` at once, besides the API's.
const PROBE_SLOTS: usize = 2;
/// Most header fields accepted in one request head.
const MAX_HEADERS: usize = 64;
/// Smallest head limit hyper accepts.
const MIN_HEAD_BYTES: usize = 8192;
/// How long shutting down waits for a state call in progress.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

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

/// The `/readyz` answer: `200` when `ready`, else `503`, with the JSON body
/// `{"status": "ready" | "not ready", "notes": [...], ...extra}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readiness {
    /// Whether the daemon is ready.
    pub ready: bool,
    /// Lines for a person: why it is not ready, or what needs attention although
    /// it is.
    pub notes: Vec<String>,
    /// More fields of the JSON body (the daemon lists its sources here).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What the admin server exposes. Implemented by the daemon. `healthy` is called
/// on the connection thread and must be instant; the other calls run on a
/// blocking pool and may take a while, but should not block for long.
pub trait AdminState: Send + Sync + 'static {
    /// The `/metrics` document in Prometheus text format 0.0.4 (see
    /// [`crate::metrics::MetricsText`]).
    fn metrics(&self) -> String;
    /// `/healthz`: false answers `503`. Must not block.
    fn healthy(&self) -> bool;
    /// Whether the daemon is ready (used by the default [`AdminState::readiness`]).
    fn ready(&self) -> bool;
    /// A line added to the default `/readyz` answer when something needs
    /// attention although the daemon is ready (e.g. the control plane refused the key).
    fn ready_detail(&self) -> Option<String> {
        None
    }
    /// The `/readyz` answer. The default is built from [`AdminState::ready`] and
    /// [`AdminState::ready_detail`].
    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.ready(),
            notes: self.ready_detail().into_iter().collect(),
            extra: serde_json::Map::new(),
        }
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
    /// API views and reports computed at once (default 4); the blocking pool has
    /// two threads more, kept for `/metrics` and `/readyz`.
    pub workers: usize,
    /// Open connections at most (default 32); see the module documentation for
    /// what happens at the limit.
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted (default 16 KiB,
    /// at least 8 KiB).
    pub max_head_bytes: usize,
    /// Time allowed for a whole request head to arrive, counted from the moment
    /// the server waits for it: a new connection, or one idle after a response
    /// (default 5 s).
    pub read_timeout: Duration,
    /// Time a response write may make no progress (a client that does not
    /// read) before the connection is closed (default 10 s).
    pub write_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            token: None,
            workers: 4,
            max_connections: 32,
            max_head_bytes: 16 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
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
    /// A limit is out of range.
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
    /// The runtime could not be started.
    #[error("admin server: cannot start the runtime: {0}")]
    Spawn(#[source] io::Error),
}

/// One open connection, as the admission table sees it.
struct ConnSlot {
    /// A request is executing a state call.
    busy: AtomicBool,
    /// Last time (ms since the server started) a request ended or, before the
    /// first one, the connection was accepted.
    last_active_ms: AtomicU64,
    /// Told when the connection must close to make room for a new one.
    evict: Notify,
}

/// Open connections by id (ids grow with acceptance order).
#[derive(Default)]
struct ConnTable {
    next_id: u64,
    open: HashMap<u64, Arc<ConnSlot>>,
}

/// State shared by the accept loop and the connections.
struct Shared {
    state: Arc<dyn AdminState>,
    cfg: AdminConfig,
    conns: Mutex<ConnTable>,
    /// Permits for API views and reports.
    api_slots: Semaphore,
    /// Permits for `/metrics` and `/readyz`: the blocking pool has one thread
    /// per permit, so a state call never waits for a thread.
    probe_slots: Semaphore,
    started: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new connection, closing the one idle longest when at the limit.
    /// `None` when every slot is executing a request.
    fn admit(&self) -> Option<(u64, Arc<ConnSlot>)> {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if t.open.len() >= self.cfg.max_connections {
            let victim = t
                .open
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::Acquire))
                .min_by_key(|(id, c)| (c.last_active_ms.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id)?;
            if let Some(c) = t.open.remove(&victim) {
                tracing::debug!(
                    conn = victim,
                    "admin server: at the connection limit, closing the longest idle connection"
                );
                c.evict.notify_one();
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let slot = Arc::new(ConnSlot {
            busy: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        t.open.insert(id, slot.clone());
        Some((id, slot))
    }

    fn release(&self, id: u64) {
        let mut t = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        t.open.remove(&id);
    }
}

/// A running admin server. Dropping it shuts it down.
pub struct AdminHandle {
    local_addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
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

    /// Stops accepting and closes every connection at once; waits at most half a
    /// second for a state call in progress.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Dropping the tasks closes the listener and every connection.
            rt.shutdown_timeout(SHUTDOWN_WAIT);
            tracing::info!(addr = %self.local_addr, "admin server stopped");
        }
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
    if cfg.max_head_bytes < MIN_HEAD_BYTES {
        return Err(AdminError::InvalidConfig(
            "max_head_bytes must be at least 8192",
        ));
    }
    if cfg.read_timeout.is_zero() || cfg.write_timeout.is_zero() {
        return Err(AdminError::InvalidConfig("timeouts must be positive"));
    }
    Ok(())
}

/// Binds the listener and starts the server on its own runtime.
///
/// Refuses a non-loopback `bind` without a token ([`AdminError::NonLoopbackWithoutToken`]).
pub fn start(cfg: AdminConfig, state: Arc<dyn AdminState>) -> Result<AdminHandle, AdminError> {
    validate(&cfg)?;
    let bind_err = |source| AdminError::Bind {
        addr: cfg.bind,
        source,
    };
    // Bound here, outside the runtime, so that a bind error is this call's error.
    let listener = std::net::TcpListener::bind(cfg.bind).map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(cfg.workers + PROBE_SLOTS)
        .thread_name("stoa-admin")
        .enable_io()
        .enable_time()
        .build()
        .map_err(AdminError::Spawn)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(bind_err)?
    };
    let (auth, workers, max_connections) = (cfg.token.is_some(), cfg.workers, cfg.max_connections);
    let shared = Arc::new(Shared {
        state,
        api_slots: Semaphore::new(cfg.workers),
        probe_slots: Semaphore::new(PROBE_SLOTS),
        cfg,
        conns: Mutex::default(),
        started: Instant::now(),
    });
    runtime.spawn(accept_loop(shared, listener));
    tracing::info!(
        addr = %local_addr,
        auth,
        workers,
        max_connections,
        "admin server listening"
    );
    Ok(AdminHandle {
        local_addr,
        runtime: Some(runtime),
    })
}

async fn accept_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.read_timeout)
        .max_buf_size(shared.cfg.max_head_bytes)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // E.g. EMFILE: back off rather than spin.
                tracing::warn!(error = %e, "admin server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((id, slot)) = shared.admit() else {
            tracing::warn!(%peer, max_connections = shared.cfg.max_connections, "admin server: every connection is executing a state call, refusing");
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        tokio::spawn(serve(
            shared.clone(),
            builder.clone(),
            stream,
            peer,
            id,
            slot,
        ));
    }
}

/// Drives one connection until it ends, times out or is evicted.
async fn serve(
    shared: Arc<Shared>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    id: u64,
    slot: Arc<ConnSlot>,
) {
    let svc = {
        let (shared, slot) = (shared.clone(), slot.clone());
        hyper::service::service_fn(move |req| {
            let (shared, slot) = (shared.clone(), slot.clone());
            async move {
                Ok::<_, std::convert::Infallible>(http::handle(&shared, &slot, peer, req).await)
            }
        })
    };
    let io = WriteDeadline {
        io: TokioIo::new(stream),
        limit: shared.cfg.write_timeout,
        stalled: None,
    };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "admin server: connection ended with an error");
            }
        }
        () = slot.evict.notified() => {
            if slot.busy.load(Ordering::Acquire) {
                // Picked just as a request came in: finish it, then close.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(shared.cfg.read_timeout, conn.as_mut()).await;
            }
        }
    }
    shared.release(id);
}

/// A connection's socket whose writes fail once they have made no progress
/// for `limit`: hyper has no write timeout, and a client that never reads
/// would otherwise keep its response (and its slot) forever.
struct WriteDeadline {
    io: TokioIo<tokio::net::TcpStream>,
    limit: Duration,
    /// Running while writes are pending.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn check(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Read for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Answers `503` to a connection when every slot is executing a request.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    const BODY: &str = "too many connections\n";
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Unread request bytes at close would reset the connection, possibly
        // before the client reads the answer: drain until it closes.
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
