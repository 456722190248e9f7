//! Tests against a real server bound to 127.0.0.1:0 with a fake state.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Size of the `big` response: more than the socket buffers hold.
const BIG: usize = 64 << 20;

struct Fake {
    healthy: AtomicBool,
    ready: AtomicBool,
    detail: Mutex<Option<String>>,
}

impl AdminState for Fake {
    fn metrics(&self) -> String {
        "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n".into()
    }
    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn ready_detail(&self) -> Option<String> {
        self.detail.lock().unwrap().clone()
    }
    fn api(&self, path: &str) -> Option<ApiResponse> {
        match path {
            "summary" => Some(ApiResponse::json_value(
                &serde_json::json!({"exchanges": 3}),
            )),
            "openapi.yaml" => Some(ApiResponse::with_type(
                200,
                "application/yaml",
                b"openapi: 3.1.0\n".to_vec(),
            )),
            "" => Some(ApiResponse::json(200, b"[\"summary\"]".to_vec())),
            "boom" => panic!("state panicked"),
            "big" => Some(ApiResponse::json(200, vec![b' '; BIG])),
            "slow" => {
                std::thread::sleep(Duration::from_millis(1000));
                Some(ApiResponse::json(200, b"{}".to_vec()))
            }
            "teapot" => Some(ApiResponse::json(204, Vec::new())),
            _ => None,
        }
    }
    fn api_with_query(&self, path: &str, query: Option<&str>) -> Option<ApiResponse> {
        if path == "echo" {
            return Some(ApiResponse::json_value(&query));
        }
        self.api(path)
    }
}

fn fake() -> Arc<Fake> {
    Arc::new(Fake {
        healthy: AtomicBool::new(true),
        ready: AtomicBool::new(true),
        detail: Mutex::new(None),
    })
}

fn local() -> AdminConfig {
    AdminConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..AdminConfig::default()
    }
}

fn serve(cfg: AdminConfig) -> (AdminHandle, Arc<Fake>) {
    let state = fake();
    let h = start(cfg, state.clone()).expect("start");
    (h, state)
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads one response; `head_only` for responses to HEAD. `pending` keeps bytes
/// read past it.
fn read_resp(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Resp {
    let mut chunk = [0u8; 4096];
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = r.parse(pending).unwrap() {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let cl: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .expect("Content-Length present")
                .1
                .parse()
                .unwrap();
            let body_len = if head_only { 0 } else { cl };
            while pending.len() < len + body_len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "EOF in body");
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[len..len + body_len].to_vec();
            pending.drain(..len + body_len);
            return Resp {
                status,
                headers,
                body,
            };
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "EOF before response head: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// One request on a new connection (`Connection: close`).
fn get(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    read_resp(&mut s, &mut Vec::new(), false)
}

/// True once the server closed the connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn server_metrics_endpoint() {
    let (h, _) = serve(local());
    let r = get(h.local_addr(), "/metrics", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.text(),
        "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n"
    );
    assert_eq!(r.header("connection"), Some("close"));
    h.shutdown();
}

#[test]
fn server_health_and_ready() {
    let (h, st) = serve(local());
    let a = h.local_addr();
    let r = get(a, "/healthz", "");
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    let r = get(a, "/readyz", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"status": "ready", "notes": []}));
    st.ready.store(false, Ordering::Relaxed);
    *st.detail.lock().unwrap() = Some("source 0 is down".into());
    let r = get(a, "/readyz", "");
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "not ready");
    assert_eq!(v["notes"], serde_json::json!(["source 0 is down"]));
    assert_eq!(get(a, "/healthz", "").status, 200);
    st.healthy.store(false, Ordering::Relaxed);
    let r = get(a, "/healthz", "");
    assert_eq!((r.status, r.text()), (503, "unhealthy\n"));
}

#[test]
fn server_api_routing_and_404() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    let r = get(a, "/api/v1/summary", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), "{\"exchanges\":3}");
    // The query string is not part of the path given to `api`.
    assert_eq!(
        get(a, "/api/v1/summary?x=1", "").text(),
        "{\"exchanges\":3}"
    );
    assert_eq!(get(a, "/api/v1/echo?limit=5", "").text(), "\"limit=5\"");
    let r = get(a, "/api/v1/openapi.yaml", "");
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    assert_eq!(r.text(), "openapi: 3.1.0\n");
    assert_eq!(get(a, "/api/v1", "").text(), "[\"summary\"]");
    assert_eq!(get(a, "/api/v1/", "").text(), "[\"summary\"]");
    let r = get(a, "/api/v1/nope", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "not found");
    assert_eq!(get(a, "/nothing", "").status, 404);
    assert_eq!(get(a, "/api/v2/summary", "").status, 404);
    // Absolute-form target.
    assert_eq!(get(a, "http://x/api/v1/summary", "").status, 200);
    // Unsupported status from the state -> 500.
    assert_eq!(get(a, "/api/v1/teapot", "").status, 500);
}

#[test]
fn server_foreign_host_refused_without_token() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    let r = raw(
        a,
        b"GET /api/v1/summary HTTP/1.1\r\nHost: rebind.example:9090\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403);
    let r = raw(
        a,
        b"GET /healthz HTTP/1.1\r\nHost: rebind.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "health is not restricted");
    let r = raw(
        a,
        b"GET /metrics HTTP/1.1\r\nHost: localhost:9090\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // With a token, any host name is fine (the token authenticates).
    let (h, _) = serve(AdminConfig {
        token: Some("t".into()),
        ..local()
    });
    let r = raw(
        h.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: tap.example\r\nAuthorization: Bearer t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn server_dashboard_is_self_contained() {
    let (h, _) = serve(local());
    let r = get(h.local_addr(), "/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let t = r.text();
    assert!(t.contains("api/v1/view"));
    assert!(t.contains("setInterval"));
    // The SVG namespace is a name, not an asset.
    let t = t.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !t.contains("http://") && !t.contains("https://"),
        "no external assets"
    );
    assert!(!t.contains("innerHTML"));
    assert!(r.header("content-security-policy").is_some());
}

#[test]
fn server_token_required_except_health() {
    let cfg = AdminConfig {
        token: Some("s3cret-token".into()),
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    for path in ["/metrics", "/", "/api/v1/summary", "/nothing"] {
        let r = get(a, path, "");
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"stoa-tap\"")
        );
        assert_eq!(get(a, path, "Authorization: Bearer wrong\r\n").status, 401);
        assert_eq!(
            get(a, path, "Authorization: Bearer s3cret-toke\r\n").status,
            401
        );
        assert_eq!(
            get(a, path, "Authorization: Basic s3cret-token\r\n").status,
            401
        );
    }
    let ok = "Authorization: Bearer s3cret-token\r\n";
    assert_eq!(get(a, "/metrics", ok).status, 200);
    assert_eq!(get(a, "/api/v1/summary", ok).status, 200);
    assert_eq!(get(a, "/nothing", ok).status, 404);
    assert_eq!(get(a, "/healthz", "").status, 200);
    assert_eq!(get(a, "/readyz", "").status, 200);
}

#[test]
fn server_non_loopback_requires_token() {
    let cfg = AdminConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..AdminConfig::default()
    };
    let err = start(cfg.clone(), fake()).unwrap_err();
    assert!(matches!(err, AdminError::NonLoopbackWithoutToken { .. }));
    assert!(err.to_string().contains("without a token"), "{err}");
    let err = start(
        AdminConfig {
            bind: "[::]:0".parse().unwrap(),
            ..AdminConfig::default()
        },
        fake(),
    )
    .unwrap_err();
    assert!(matches!(err, AdminError::NonLoopbackWithoutToken { .. }));
    assert!(matches!(
        start(
            AdminConfig {
                token: Some(String::new()),
                ..cfg.clone()
            },
            fake()
        ),
        Err(AdminError::InvalidToken(_))
    ));
    assert!(matches!(
        start(
            AdminConfig {
                token: Some("a b".into()),
                ..cfg.clone()
            },
            fake()
        ),
        Err(AdminError::InvalidToken(_))
    ));
    let h = start(
        AdminConfig {
            token: Some("t".into()),
            ..cfg
        },
        fake(),
    )
    .expect("non-loopback with a token");
    let port = h.local_addr().port();
    let r = get(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "/metrics",
        "Authorization: Bearer t\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn server_oversized_head_431() {
    let (h, _) = serve(local());
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..40 {
        req.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(500)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(req.len() > 16 * 1024);
    let mut s = connect(h.local_addr());
    s.write_all(&req).unwrap();
    let r = read_resp(&mut s, &mut Vec::new(), false);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut s));
    // An endless header line without a terminator too.
    let mut s = connect(h.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nX: ").unwrap();
    s.write_all(&vec![b'a'; 20_000]).unwrap();
    assert_eq!(read_resp(&mut s, &mut Vec::new(), false).status, 431);
    // Too many header fields.
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        req.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert_eq!(raw(h.local_addr(), &req).status, 431);
}

#[test]
fn server_garbage_400_and_close() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    for garbage in [
        &b"\x00\x01\x02\x03garbage\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET example.com:443 HTTP/1.1\r\n\r\n",
    ] {
        let mut s = connect(a);
        s.write_all(garbage).unwrap();
        let r = read_resp(&mut s, &mut Vec::new(), false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(garbage));
        assert!(closed(&mut s));
    }
    // Still serving.
    assert_eq!(get(a, "/healthz", "").status, 200);
}

#[test]
fn server_head_like_get_without_body() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    let g = get(a, "/metrics", "");
    let mut s = connect(a);
    s.write_all(
        b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    let mut pending = Vec::new();
    let r = read_resp(&mut s, &mut pending, true);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length").unwrap(),
        g.body.len().to_string()
    );
    assert_eq!(r.header("content-type"), g.header("content-type"));
    // The next response follows immediately: the HEAD response had no body.
    let r2 = read_resp(&mut s, &mut pending, false);
    assert_eq!((r2.status, r2.text()), (200, "ok\n"));
}

#[test]
fn server_other_methods_405() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    for m in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = raw(
            a,
            format!("{m} /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(raw(a, b"OPTIONS * HTTP/1.1\r\n\r\n").status, 405);
    let r = raw(a, b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 405);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "body not read: close"
    );
}

#[test]
fn server_keep_alive_two_requests_and_close_honoured() {
    let (h, _) = serve(local());
    let mut s = connect(h.local_addr());
    let mut pending = Vec::new();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut pending, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut pending, false);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("x_total 1"));
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut pending, false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut s));
    // HTTP/1.0 closes unless asked otherwise.
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let r = read_resp(&mut s, &mut Vec::new(), false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut s));
}

#[test]
fn server_connection_limit_evicts_the_longest_idle() {
    let cfg = AdminConfig {
        max_connections: 2,
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(a);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_resp(&mut s, &mut Vec::new(), false).status, 200);
        held.push(s);
    }
    // At the limit, a new connection is served and the connection idle the
    // longest (the first) is closed to make room.
    let r = get(a, "/healthz", "");
    assert_eq!(r.status, 200);
    assert!(
        closed(&mut held[0]),
        "the oldest idle connection was closed"
    );
    held[1]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut held[1], &mut Vec::new(), false).status, 200);
}

#[test]
fn server_connection_limit_503_when_every_slot_is_executing() {
    let cfg = AdminConfig {
        max_connections: 2,
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(a, "/api/v1/slow", "").status))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut s = connect(a);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut Vec::new(), false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(closed(&mut s));
    for t in slow {
        assert_eq!(t.join().unwrap(), 200, "requests in progress finish");
    }
    assert_eq!(get(a, "/healthz", "").status, 200);
}

/// 40 silent connections and 20 that trickle a head byte by byte, against a
/// limit of 32: `/healthz` and `/metrics` still answer at once, and the
/// trickling ones are cut at the head deadline.
#[test]
fn server_idle_and_slowloris_clients_do_not_starve_probes() {
    let cfg = AdminConfig {
        read_timeout: Duration::from_secs(2),
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    let mut idle: Vec<TcpStream> = (0..40).map(|_| connect(a)).collect();
    let mut slow: Vec<TcpStream> = (0..20).map(|_| connect(a)).collect();
    for s in &mut slow {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    for path in ["/healthz", "/metrics", "/healthz", "/readyz"] {
        let t = Instant::now();
        let r = get(a, path, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    // The trickling clients never complete a head: closed after the deadline.
    let t = Instant::now();
    for s in &mut slow {
        let _ = s.write_all(b"s");
        assert!(closed(s));
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    idle.clear();
}

/// Slow API views occupying every API permit and queueing behind it do not
/// hold up the probes: `/healthz` is answered without a state call, `/metrics`
/// and `/readyz` have their own permits, and at the connection limit a
/// request still waiting for a permit makes room.
#[test]
fn server_probes_answer_while_the_api_is_saturated() {
    let cfg = AdminConfig {
        workers: 1,
        max_connections: 6,
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    let views: Vec<_> = (0..9)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(a);
                s.write_all(
                    b"GET /api/v1/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                )
                .ok()?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).ok()?;
                buf.get(9..12).map(|c| c.to_vec())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/healthz", "/metrics", "/readyz", "/healthz"] {
        let t = Instant::now();
        assert_eq!(get(a, path, "").status, 200, "{path}");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let answered = views
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .filter(|status| status == b"200")
        .count();
    assert!(answered >= 1, "the view holding the permit finished");
}

/// A client that asks for a large response and does not read it is cut off
/// once the write stalls for `write_timeout`.
#[test]
fn server_client_that_does_not_read_is_cut_off() {
    let cfg = AdminConfig {
        write_timeout: Duration::from_millis(300),
        ..local()
    };
    let (h, _) = serve(cfg);
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /api/v1/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got > 0 && got < BIG, "read {got} bytes of {BIG}");
    // The server goes on.
    assert_eq!(get(h.local_addr(), "/healthz", "").status, 200);
}

#[test]
fn server_slow_and_idle_clients_timed_out() {
    let cfg = AdminConfig {
        read_timeout: Duration::from_millis(300),
        ..local()
    };
    let (h, _) = serve(cfg);
    // A head that never completes: closed at the deadline.
    let mut s = connect(h.local_addr());
    let t = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    assert!(closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(3));
    // A connection that sends nothing is closed silently.
    let mut s = connect(h.local_addr());
    assert!(closed(&mut s));
    // So is one idle after a keep-alive response.
    let mut s = connect(h.local_addr());
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut s, &mut Vec::new(), false).status, 200);
    let t = Instant::now();
    assert!(closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn server_panicking_state_is_500_and_server_survives() {
    let cfg = AdminConfig {
        workers: 1,
        ..local()
    };
    let (h, _) = serve(cfg);
    let a = h.local_addr();
    assert_eq!(get(a, "/api/v1/boom", "").status, 500);
    assert_eq!(get(a, "/api/v1/summary", "").status, 200);
}

#[test]
fn server_shutdown_is_prompt_with_open_connections() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    let mut s = connect(a);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut s, &mut Vec::new(), false).status, 200);
    let _idle = connect(a);
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    h.shutdown();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(closed(&mut s));
    assert!(TcpStream::connect(a).is_err(), "listener closed");
}

#[test]
fn server_drop_shuts_down() {
    let (h, _) = serve(local());
    let a = h.local_addr();
    drop(h);
    assert!(TcpStream::connect(a).is_err());
}
