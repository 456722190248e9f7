//! Connection handling: reading request heads, routing, writing responses.

use super::{error_json, ApiResponse, Shared, POLL};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The dashboard page (self-contained).
const DASHBOARD: &str = include_str!("dashboard.html");

/// A response to write.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Extra headers (name, value).
    headers: Vec<(&'static str, String)>,
    /// Close the connection after this response.
    close: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
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

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// What was read from the socket.
enum Head {
    Request(Request),
    /// Answer this and close (malformed, too large, too slow).
    Reject(Response),
    /// Close silently (EOF, idle, shutdown, socket error).
    Close,
}

/// The parts of a request head the server uses.
struct Request {
    method: String,
    target: String,
    /// Keep the connection open after the response, as far as the client is concerned.
    keep_alive: bool,
    /// `Authorization` header value (first one).
    authorization: Option<Vec<u8>>,
    /// `Host` header value (first one).
    host: Option<Vec<u8>>,
    /// The request has a body (which the server does not read: it closes instead).
    has_body: bool,
}

/// Serves requests on one connection until it closes.
pub(super) fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let cfg = &shared.cfg;
    if let Err(e) = setup(&stream) {
        tracing::debug!(%peer, error = %e, "admin server: socket setup failed");
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut first = true;
    loop {
        let idle_limit = if first {
            cfg.read_timeout.min(cfg.keep_alive_timeout)
        } else {
            cfg.keep_alive_timeout
        };
        first = false;
        let head = read_head(shared, &mut stream, &mut buf, idle_limit);
        let req = match head {
            Head::Request(r) => r,
            Head::Reject(resp) => {
                tracing::debug!(%peer, status = resp.status, "admin server: bad request");
                let _ = write_response(shared, &mut stream, resp.closing(), false);
                close_gracefully(&mut stream);
                return;
            }
            Head::Close => return,
        };
        let started = Instant::now();
        let is_head = req.method == "HEAD";
        let mut resp = match catch_unwind(AssertUnwindSafe(|| route(shared, &req))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(%peer, method = %req.method, target = %req.target, "admin server: handler panicked");
                Response::text(500, "internal error").closing()
            }
        };
        // Close when the client asks, when a body was sent (not read), when other
        // connections wait for a worker (fairness), or on shutdown.
        if !req.keep_alive
            || req.has_body
            || shared.queued.load(Ordering::Acquire) > 0
            || shared.stop.load(Ordering::Acquire)
        {
            resp.close = true;
        }
        let close = resp.close;
        let status = resp.status;
        let bytes = resp.body.len();
        let written = write_response(shared, &mut stream, resp, is_head);
        tracing::debug!(
            %peer,
            method = %req.method,
            target = %req.target,
            status,
            bytes,
            elapsed_us = started.elapsed().as_micros() as u64,
            "admin request"
        );
        if let Err(e) = written {
            tracing::debug!(%peer, error = %e, "admin server: write failed");
            return;
        }
        if close {
            close_gracefully(&mut stream);
            return;
        }
    }
}

fn setup(stream: &TcpStream) -> io::Result<()> {
    // Accepted sockets do not inherit O_NONBLOCK on Linux, but be explicit.
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // Short per-call timeouts; the real limits are deadlines checked between calls.
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads until `buf` starts with a complete request head, which it consumes.
fn read_head(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idle_limit: Duration,
) -> Head {
    let cfg = &shared.cfg;
    let max = cfg.max_head_bytes;
    let idle_since = Instant::now();
    let mut started: Option<Instant> = (!buf.is_empty()).then(Instant::now);
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            match parse_head(buf, max) {
                Ok(Some((req, len))) => {
                    buf.drain(..len);
                    return Head::Request(req);
                }
                Ok(None) if buf.len() >= max => {
                    return Head::Reject(Response::text(431, "request header fields too large"));
                }
                Ok(None) => {}
                Err(resp) => return Head::Reject(resp),
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return Head::Close;
        }
        let now = Instant::now();
        match started {
            None if now.duration_since(idle_since) >= idle_limit => return Head::Close,
            Some(t) if now.duration_since(t) >= cfg.read_timeout => {
                return Head::Reject(Response::text(408, "request timeout"));
            }
            _ => {}
        }
        // Never hold more than the head limit (plus one read) in memory.
        let room = (max + chunk.len())
            .saturating_sub(buf.len())
            .min(chunk.len());
        match stream.read(&mut chunk[..room.max(1)]) {
            Ok(0) => return Head::Close,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                started.get_or_insert(now);
            }
            Err(e) if would_block(&e) => {}
            Err(_) => return Head::Close,
        }
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` if incomplete,
/// `Ok(Some((request, head length)))`, or the error response.
fn parse_head(buf: &[u8], max: usize) -> Result<Option<(Request, usize)>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::text(431, "too many header fields"));
        }
        Err(e) => return Err(Response::text(400, &format!("bad request: {e}"))),
    };
    if len > max {
        return Err(Response::text(431, "request header fields too large"));
    }
    let bad = |why: &str| Err(Response::text(400, &format!("bad request: {why}")));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return bad("incomplete request line");
    };
    let mut keep_alive = version >= 1;
    let mut authorization = None;
    let mut host = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_none() {
                authorization = Some(h.value.to_vec());
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            if host.is_none() {
                host = Some(h.value.to_vec());
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                return bad("invalid Content-Length");
            };
            if content_length.is_some_and(|c| c != n) {
                return bad("conflicting Content-Length");
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    Ok(Some((
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            keep_alive,
            authorization,
            host,
            has_body: chunked || content_length.unwrap_or(0) > 0,
        },
        len,
    )))
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

/// Splits a request target into path and query. Accepts origin form
/// (`/p?q`) and absolute form (`http://host/p?q`).
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return None;
        };
        match after.find(['/', '?']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            Some(i) => return Some(("/", Some(&after[i + 1..]))),
            None => "/",
        }
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    Some(match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    })
}

fn route(shared: &Shared, req: &Request) -> Response {
    let method_ok = req.method == "GET" || req.method == "HEAD";
    let not_allowed = || Response::text(405, "method not allowed").header("Allow", "GET, HEAD");
    let Some((path, query)) = split_target(&req.target) else {
        if !method_ok {
            return not_allowed(); // e.g. `OPTIONS *`
        }
        return Response::text(400, "bad request: unsupported request target").closing();
    };
    let state = &shared.state;
    // Health endpoints never require the token (probes).
    match path {
        "/healthz" | "/readyz" => {
            if !method_ok {
                return not_allowed();
            }
            let (ok, yes, no) = if path == "/healthz" {
                (state.healthy(), "ok", "unhealthy")
            } else {
                (state.ready(), "ready", "not ready")
            };
            let detail = if path == "/readyz" {
                state.ready_detail()
            } else {
                None
            };
            let text = |base: &str| match &detail {
                Some(d) => format!("{base}\n{d}"),
                None => base.to_owned(),
            };
            return if ok {
                Response::text(200, &text(yes))
            } else {
                Response::text(503, &text(no))
            };
        }
        _ => {}
    }
    match &shared.cfg.token {
        Some(token) => {
            if !bearer_ok(req.authorization.as_deref(), token) {
                return Response::text(401, "unauthorized")
                    .header("WWW-Authenticate", "Bearer realm=\"stoa-tap\"");
            }
        }
        None => {
            if !host_allowed(req.host.as_deref()) {
                return Response::text(
                    403,
                    "forbidden: without a token, use an IP address or localhost as host",
                );
            }
        }
    }
    if !method_ok {
        return not_allowed();
    }
    match path {
        "/" | "/index.html" => Response::new(200, HTML, DASHBOARD.as_bytes())
            .header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            )
            .header("X-Frame-Options", "DENY")
            .header("Referrer-Policy", "no-referrer"),
        "/metrics" => Response::new(200, crate::metrics::CONTENT_TYPE, state.metrics()),
        "/report.html" => {
            // The page with the current data embedded: a file to keep.
            let view = state
                .api("view")
                .filter(|r| r.status == 200)
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok());
            match view {
                Some(v) => Response::new(200, HTML, crate::view::report_html(&v).into_bytes())
                    .header(
                        "Content-Disposition",
                        "attachment; filename=\"stoa-tap-report.html\"",
                    )
                    .header("X-Frame-Options", "DENY")
                    .header("Referrer-Policy", "no-referrer"),
                None => Response::text(503, "no data yet"),
            }
        }
        _ => {
            let api = if path == "/api/v1" {
                Some("")
            } else {
                path.strip_prefix("/api/v1/")
            };
            match api {
                Some(p) => match state.api_with_query(p, query) {
                    Some(r) => api_response(r),
                    None => Response::new(
                        404,
                        ApiResponse::JSON,
                        error_json("not found", &format!("no API resource {p:?}")),
                    ),
                },
                None => Response::text(404, "not found"),
            }
        }
    }
}

fn api_response(r: ApiResponse) -> Response {
    if !(200..=599).contains(&r.status) || r.status == 204 || r.status == 304 {
        tracing::error!(
            status = r.status,
            "admin server: state returned an unsupported status"
        );
        return Response::new(
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
    Response::new(r.status, content_type, r.body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn serialize(resp: &Response, omit_body: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if resp.close { "close" } else { "keep-alive" },
    );
    for (name, value) in &resp.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !omit_body {
        out.extend_from_slice(&resp.body);
    }
    out
}

/// Writes a whole response within the write timeout (abandoned on shutdown).
fn write_response(
    shared: &Shared,
    stream: &mut TcpStream,
    resp: Response,
    omit_body: bool,
) -> io::Result<()> {
    let data = serialize(&resp, omit_body);
    let deadline = Instant::now() + shared.cfg.write_timeout;
    let mut off = 0;
    while off < data.len() {
        match stream.write(&data[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if would_block(&e) => {
                if Instant::now() >= deadline || shared.stop.load(Ordering::Acquire) {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes and drains briefly, so the peer reads the response before any
/// reset caused by unread data.
fn close_gracefully(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(250);
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < 256 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
    }
}

/// Answers `503` to a connection over the limit without blocking the accept thread.
pub(super) fn refuse_busy(mut stream: TcpStream) {
    let resp = Response::text(503, "too many connections")
        .header("Retry-After", "1")
        .closing();
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
        let _ = stream.write(&serialize(&resp, false));
        let _ = stream.shutdown(Shutdown::Write);
    }
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

    #[test]
    fn server_split_target() {
        assert_eq!(split_target("/a?b=1"), Some(("/a", Some("b=1"))));
        assert_eq!(split_target("/a"), Some(("/a", None)));
        assert_eq!(split_target("http://h:1/x/y?z"), Some(("/x/y", Some("z"))));
        assert_eq!(split_target("HTTPS://h"), Some(("/", None)));
        assert_eq!(split_target("http://h?q"), Some(("/", Some("q"))));
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("example.com:443"), None);
    }

    #[test]
    fn server_parse_head_limits() {
        let Ok(Some((r, len))) =
            parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nX", 1024)
        else {
            panic!("not parsed");
        };
        let r = r.keep_alive;
        assert!(r);
        assert_eq!(len, 42);
        let c = parse_head(b"GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n", 1024);
        assert!(matches!(c, Ok(Some((ref r, _))) if !r.keep_alive));
        let b = parse_head(
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            1024,
        );
        assert!(matches!(b, Err(ref r) if r.status == 400));
        let b = parse_head(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 1024);
        assert!(matches!(b, Err(ref r) if r.status == 400));
        let t = parse_head(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            1024,
        );
        assert!(matches!(t, Ok(Some((ref r, _))) if r.has_body));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nA: b", 1024),
            Ok(None)
        ));
    }
}
