//! Requests: routing, authentication, and the answers (hyper does the HTTP/1.1).

use super::{error_json, AdminState, ApiResponse, ConnSlot, Readiness, Shared};
use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The dashboard page (self-contained).
const DASHBOARD: &str = include_str!("dashboard.html");

/// An answer, before it becomes a hyper response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Extra headers.
    headers: Vec<(HeaderName, &'static str)>,
    /// Close the connection after this answer.
    close: bool,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            close: false,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, TEXT, format!("{body}\n"))
    }

    fn header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// A state call, run on the blocking pool.
enum Job {
    Metrics,
    Ready,
    Report,
    Api { path: String, query: Option<String> },
}

impl Job {
    /// API views and the report may be heavy: they hold one of the
    /// `workers` permits, so the probes always find a blocking thread.
    fn heavy(&self) -> bool {
        matches!(self, Job::Report | Job::Api { .. })
    }

    fn run(self, state: &dyn AdminState) -> Reply {
        match self {
            Job::Metrics => Reply::new(200, crate::metrics::CONTENT_TYPE, state.metrics()),
            Job::Ready => ready_reply(state.readiness()),
            Job::Report => {
                // The page with the current data embedded: a file to keep.
                let view = state
                    .api("view")
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok());
                match view {
                    Some(v) => Reply::new(200, HTML, crate::view::report_html(&v).into_bytes())
                        .header(
                            header::CONTENT_DISPOSITION,
                            "attachment; filename=\"stoa-tap-report.html\"",
                        )
                        .header(header::X_FRAME_OPTIONS, "DENY")
                        .header(header::REFERRER_POLICY, "no-referrer"),
                    None => Reply::text(503, "no data yet"),
                }
            }
            Job::Api { path, query } => match state.api_with_query(&path, query.as_deref()) {
                Some(r) => api_response(r),
                None => Reply::new(
                    404,
                    ApiResponse::JSON,
                    error_json("not found", &format!("no API resource {path:?}")),
                ),
            },
        }
    }
}

/// What a request needs: an answer now, or a state call.
enum Plan {
    Now(Reply),
    Later(Job),
}

/// Marks a connection active when its request ends, so that it is the last
/// to be closed to make room.
struct Activity<'a> {
    shared: &'a Shared,
    slot: &'a ConnSlot,
}

impl Drop for Activity<'_> {
    fn drop(&mut self) {
        self.slot
            .last_active_ms
            .store(self.shared.now_ms(), Ordering::Relaxed);
    }
}

/// Marks a connection busy (never closed to make room) while its request
/// holds a state-call permit.
struct Busy<'a>(&'a ConnSlot);

impl<'a> Busy<'a> {
    fn enter(slot: &'a ConnSlot) -> Self {
        slot.busy.store(true, Ordering::Release);
        Busy(slot)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Answers one request.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    slot: &ConnSlot,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let _activity = Activity { shared, slot };
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    // Bodies are never read: answering and closing bounds them at zero bytes.
    let has_body = !body.is_end_stream();
    drop(body);
    let keep_alive = wants_keep_alive(&parts) && !has_body;
    let reply = match catch_unwind(AssertUnwindSafe(|| plan(shared, &parts))) {
        Ok(Plan::Now(r)) => r,
        Ok(Plan::Later(job)) => run_job(shared, slot, job).await,
        Err(_) => {
            tracing::error!(%peer, method = %parts.method, path = parts.uri.path(), "admin server: handler panicked");
            Reply::text(500, "internal error").closing()
        }
    };
    tracing::debug!(
        %peer,
        method = %parts.method,
        path = parts.uri.path(),
        status = reply.status,
        bytes = reply.body.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "admin request"
    );
    let close = reply.close || !keep_alive;
    into_response(reply, close)
}

/// Runs a state call on the blocking pool; a panic in it is a `500`. While
/// it waits for a permit, the connection may still be closed to make room.
async fn run_job(shared: &Arc<Shared>, slot: &ConnSlot, job: Job) -> Reply {
    let permits = if job.heavy() {
        &shared.api_slots
    } else {
        &shared.probe_slots
    };
    let Ok(_permit) = permits.acquire().await else {
        return Reply::text(503, "shutting down").closing();
    };
    let _busy = Busy::enter(slot);
    let state = shared.state.clone();
    match tokio::task::spawn_blocking(move || job.run(&*state)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin server: state call failed");
            Reply::text(500, "internal error").closing()
        }
    }
}

/// Whether the client keeps the connection open after the answer.
fn wants_keep_alive(parts: &hyper::http::request::Parts) -> bool {
    let tokens = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    let (mut close, mut keep) = (false, false);
    for t in tokens {
        close |= t.eq_ignore_ascii_case(b"close");
        keep |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    match parts.version {
        Version::HTTP_11 => !close,
        Version::HTTP_10 => keep && !close,
        _ => false,
    }
}

fn into_response(r: Reply, close: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(r.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static(if close { "close" } else { "keep-alive" }),
    );
    for (name, value) in r.headers {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// The `/readyz` answer.
fn ready_reply(r: Readiness) -> Reply {
    let mut body = r.extra;
    body.insert(
        "status".into(),
        (if r.ready { "ready" } else { "not ready" }).into(),
    );
    body.insert("notes".into(), r.notes.into());
    let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    Reply::new(if r.ready { 200 } else { 503 }, ApiResponse::JSON, bytes)
}

fn plan(shared: &Shared, parts: &hyper::http::request::Parts) -> Plan {
    let method_ok = parts.method == Method::GET || parts.method == Method::HEAD;
    let not_allowed =
        || Plan::Now(Reply::text(405, "method not allowed").header(header::ALLOW, "GET, HEAD"));
    let path = parts.uri.path();
    if !path.starts_with('/') {
        // `*` (OPTIONS) or authority form.
        if !method_ok {
            return not_allowed();
        }
        return Plan::Now(Reply::text(400, "bad request: unsupported request target").closing());
    }
    // Health endpoints never require the token (probes).
    match path {
        "/healthz" | "/readyz" if !method_ok => return not_allowed(),
        "/healthz" => {
            return Plan::Now(if shared.state.healthy() {
                Reply::text(200, "ok")
            } else {
                Reply::text(503, "unhealthy")
            });
        }
        "/readyz" => return Plan::Later(Job::Ready),
        _ => {}
    }
    let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
    match &shared.cfg.token {
        Some(token) => {
            if !bearer_ok(header(header::AUTHORIZATION), token) {
                return Plan::Now(
                    Reply::text(401, "unauthorized")
                        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"stoa-tap\""),
                );
            }
        }
        None => {
            if !host_allowed(header(header::HOST)) {
                return Plan::Now(Reply::text(
                    403,
                    "forbidden: without a token, use an IP address or localhost as host",
                ));
            }
        }
    }
    if !method_ok {
        return not_allowed();
    }
    match path {
        "/" | "/index.html" => Plan::Now(
            Reply::new(200, HTML, DASHBOARD.as_bytes())
                .header(
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                )
                .header(header::X_FRAME_OPTIONS, "DENY")
                .header(header::REFERRER_POLICY, "no-referrer"),
        ),
        "/metrics" => Plan::Later(Job::Metrics),
        "/report.html" => Plan::Later(Job::Report),
        _ => {
            let api = if path == "/api/v1" {
                Some("")
            } else {
                path.strip_prefix("/api/v1/")
            };
            match api {
                Some(p) => Plan::Later(Job::Api {
                    path: p.to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                }),
                None => Plan::Now(Reply::text(404, "not found")),
            }
        }
    }
}

/// Constant-time byte string comparison (the length is not hidden).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    std::hint::black_box(diff) == 0
}

/// True if `header` is `Bearer <token>` (scheme case-insensitive).
fn bearer_ok(header: Option<&[u8]>, token: &str) -> bool {
    let Some(h) = header else {
        return false;
    };
    let h = h.trim_ascii();
    if h.len() < 7 || !h[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    ct_eq(h[7..].trim_ascii_start(), token.as_bytes())
}

/// Without a token, only a `Host` that is an IP literal or `localhost` (any port)
/// is served, so a web page cannot read the API through DNS rebinding. A missing
/// `Host` (HTTP/1.0) is allowed.
fn host_allowed(host: Option<&[u8]>) -> bool {
    let Some(h) = host else {
        return true;
    };
    let Ok(h) = std::str::from_utf8(h.trim_ascii()) else {
        return false;
    };
    let name = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn api_response(r: ApiResponse) -> Reply {
    if !(200..=599).contains(&r.status) || r.status == 204 || r.status == 304 {
        tracing::error!(
            status = r.status,
            "admin server: state returned an unsupported status"
        );
        return Reply::new(
            500,
            ApiResponse::JSON,
            error_json("internal error", "unsupported status"),
        );
    }
    let content_type = if r
        .content_type
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_control())
    {
        r.content_type
    } else {
        "application/octet-stream"
    };
    Reply::new(r.status, content_type, r.body)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn server_ct_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"", b"a"));
    }

    #[test]
    fn server_bearer_parsing() {
        assert!(bearer_ok(Some(b"Bearer tok"), "tok"));
        assert!(bearer_ok(Some(b"bearer  tok "), "tok"));
        assert!(!bearer_ok(Some(b"Basic tok"), "tok"));
        assert!(!bearer_ok(Some(b"Bearer"), "tok"));
        assert!(!bearer_ok(Some(b"Bearer tok2"), "tok"));
        assert!(!bearer_ok(None, "tok"));
    }

    #[test]
    fn server_host_check() {
        for ok in [
            &b"127.0.0.1:9090"[..],
            b"localhost",
            b"LOCALHOST:1",
            b"localhost.:9090",
            b"[::1]:9090",
            b"[::1]",
            b"10.0.0.5",
        ] {
            assert!(host_allowed(Some(ok)), "{:?}", String::from_utf8_lossy(ok));
        }
        assert!(host_allowed(None));
        for bad in [
            &b"evil.example:9090"[..],
            b"evil.example",
            b"localhost.evil.example",
            b"[::1",
            b"[evil]:1",
            b"\xff",
        ] {
            assert!(
                !host_allowed(Some(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
