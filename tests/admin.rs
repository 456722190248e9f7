//! End-to-end tests of the daemon's admin server: probes answer at once while
//! idle and slowloris clients hold the admin port, and `/readyz` names the
//! sources that are down.

use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod support;
use support::{line_reader, poll_until, temp_dir, wait_line};

/// Idle connections and slowloris clients thrown at the admin port.
const IDLE: usize = 50;
const SLOWLORIS: usize = 20;
/// What a probe may take while they do.
const PROBE_BUDGET: Duration = Duration::from_millis(100);

/// A running `stoa-tap run`; killed on drop.
struct Daemon {
    child: Child,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the daemon with `source_args`, the admin server on an ephemeral
    /// loopback port, and returns once it listens.
    fn start(name: &str, source_args: &[&str]) -> Daemon {
        let dir = temp_dir(name);
        let cfg = dir.path().join("empty.yaml");
        std::fs::write(&cfg, "").expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
            .args(["-v", "run", "--config"])
            .arg(&cfg)
            .args(source_args)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--admin-bind", "127.0.0.1:0"])
            .env_remove("STOA_TAP_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stoa-tap run");
        let lines = line_reader(child.stderr.take().expect("stderr"));
        let line = wait_line(&lines, "the admin server", |l| {
            l.contains("admin server listening")
        });
        // Keep draining the log so the daemon never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.parse().ok());
        let Some(admin) = admin else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no admin address in {line:?}");
        };
        Daemon {
            child,
            admin,
            _dir: dir,
        }
    }

    /// GET on a new connection: (status, body, time taken).
    fn get(&self, path: &str) -> (u16, String, Duration) {
        let t = Instant::now();
        let mut s = TcpStream::connect(self.admin).expect("connect admin");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
        let elapsed = t.elapsed();
        let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body, elapsed)
    }

    fn json(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = self.get(path);
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, v)
    }

    fn exchanges_observed(&self) -> u64 {
        self.json("/api/v1/summary").1["exchanges_observed"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// A small HTTP/1.1 server on loopback, one request per connection: the
/// traffic the daemon watches.
fn gateway() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind gateway");
    let addr = listener.local_addr().expect("gateway addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let body = format!("{{\"id\":{},\"name\":\"widget\"}}", head.len());
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    addr
}

/// Keeps requesting the gateway until `stop`, one connection per request.
fn traffic(gw: SocketAddr, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            if let Ok(mut s) = TcpStream::connect(gw) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!(
                    "GET /api/widgets/{} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
                    i % 7
                );
                let mut sink = Vec::new();
                if s.write_all(req.as_bytes()).is_ok() && s.read_to_end(&mut sink).is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// `IDLE` connections that never send a byte, reopened whenever the server
/// closes them. Returns the number of reopenings when stopped.
fn idle_clients(admin: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let open = || {
            let s = TcpStream::connect(admin).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        let mut conns: Vec<Option<TcpStream>> = (0..IDLE).map(|_| open()).collect();
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for c in &mut conns {
                let gone = match c {
                    Some(s) => {
                        !matches!(s.read(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock)
                    }
                    None => true,
                };
                if gone {
                    *c = open();
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        reopened
    })
}

/// A slowloris client: sends a request head one byte per second, never
/// finishing it, and starts over whenever the server closes the connection.
/// Returns the number of connections it opened.
fn slowloris(admin: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let mut opened = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect(admin) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            opened += 1;
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if s.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                // One byte a second, looking at the stop flag in between.
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        opened
    })
}

/// With 50 idle connections and 20 slowloris clients on the admin port (more
/// than its 32-connection limit, and kept up as the server closes them),
/// `/healthz` and `/metrics` answer within 100 ms each, for longer than the
/// 5 s head deadline, while the capture keeps counting exchanges.
#[test]
fn probes_answer_within_100ms_under_idle_and_slowloris_clients() {
    if !support::require_root("the admin slowloris test captures live on lo (root)") {
        return;
    }
    let gw = gateway();
    let port = gw.port().to_string();
    let d = Daemon::start(
        "admin-slowloris",
        &["--interface", "lo", "--port", &port, "--set", "workers=1"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load = traffic(gw, stop.clone(), done.clone());
    let before = poll_until(20, || d.exchanges_observed(), |n| *n >= 20);
    assert!(before >= 20, "capture did not start counting: {before}");

    let attack = Arc::new(AtomicBool::new(false));
    let idle = idle_clients(d.admin, attack.clone());
    let slow: Vec<_> = (0..SLOWLORIS)
        .map(|_| slowloris(d.admin, attack.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let during = d.exchanges_observed();

    let mut worst = [Duration::ZERO; 2];
    let mut probes = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) {
        for (i, path) in ["/healthz", "/metrics"].into_iter().enumerate() {
            let (status, body, took) = d.get(path);
            assert_eq!(status, 200, "{path}: {body}");
            assert!(
                took < PROBE_BUDGET,
                "{path} took {took:?} with idle and slowloris clients connected"
            );
            if path == "/metrics" {
                assert!(body.contains("stoa_tap_up 1"), "{body}");
            }
            worst[i] = worst[i].max(took);
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = poll_until(10, || d.exchanges_observed(), |n| *n > during);
    attack.store(true, Ordering::Relaxed);
    let reopened = idle.join().expect("idle clients");
    let opened: u64 = slow
        .into_iter()
        .map(|t| t.join().expect("slowloris client"))
        .sum();
    stop.store(true, Ordering::Relaxed);
    load.join().expect("traffic");
    eprintln!(
        "{probes} probes; worst /healthz {:?}, /metrics {:?}; exchanges observed {before} -> \
         {during} -> {after}; idle connections reopened {reopened}, slowloris connections {opened}",
        worst[0], worst[1]
    );
    assert!(
        after > during,
        "capture stopped counting under the attack: {during} -> {after}"
    );
    // The server cut the slow heads and made room by closing idle connections.
    assert!(
        opened > SLOWLORIS as u64,
        "no slowloris connection was closed"
    );
    assert!(reopened > 0, "no idle connection was closed");
    let (status, _, _) = d.get("/healthz");
    assert_eq!(status, 200);
}

/// A replayed file that is not a capture: the daemon runs, but `/readyz`
/// answers 503 naming the source and its error.
#[test]
fn readyz_names_a_failed_file_source() {
    let dir = temp_dir("admin-readyz-file");
    let bad = dir.path().join("not-a-capture.pcap");
    std::fs::write(&bad, "this is text, not a capture\n").expect("write");
    let bad = bad.to_str().expect("utf-8 path");
    let d = Daemon::start("admin-readyz-file", &["--replay", bad]);
    // Started (the daemon is not ready while starting either) with the source down.
    let started_and_down = |(s, v): &(u16, Value)| {
        *s == 503
            && v["down"].as_array().is_some_and(|d| !d.is_empty())
            && !v["notes"].to_string().contains("starting")
    };
    let (status, v) = poll_until(10, || d.json("/readyz"), started_and_down);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "not ready");
    assert_eq!(v["down"].as_array().map(Vec::len), Some(1), "{v}");
    let down = &v["down"][0];
    assert_eq!(down["kind"], "file");
    assert_eq!(down["name"], bad);
    assert_eq!(down["index"], 0);
    let err = down["error"].as_str().unwrap_or_default();
    assert!(err.contains("not a pcap or pcapng capture"), "{v}");
    assert_eq!(v["notes"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(
        v["notes"][0].as_str().unwrap_or_default().contains(bad),
        "{v}"
    );
    // The health check is about the process, not its sources.
    assert_eq!(d.get("/healthz").0, 200);
    let metrics = d.get("/metrics").1;
    assert!(metrics.contains("stoa_tap_ready 0"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "stoa_tap_source_down{{index=\"0\",kind=\"file\",name=\"{bad}\"}} 1"
        )),
        "{metrics}"
    );
}

/// A veth pair created for the test, deleted on drop.
struct Veth(String);

impl Veth {
    fn create(name: &str) -> Veth {
        let ok = Command::new("ip")
            .args(["link", "add", name, "type", "veth", "peer", "name"])
            .arg(format!("{name}p"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot create veth {name}");
        for dev in [name.to_owned(), format!("{name}p")] {
            let _ = Command::new("ip")
                .args(["link", "set", &dev, "up"])
                .status();
        }
        Veth(name.to_owned())
    }

    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A live capture whose interface is deleted: `/readyz` turns 503 naming the
/// source and the interface, and ready again once the interface is back.
#[test]
fn readyz_names_a_live_source_whose_interface_is_gone() {
    if !support::require_root("the admin readiness test creates a veth (root)") {
        return;
    }
    let name = format!("stoa-rz{}", std::process::id() % 100_000);
    let veth = Veth::create(&name);
    let d = Daemon::start(
        "admin-readyz-live",
        &["--interface", &name, "--port", "5555"],
    );
    let (status, v) = poll_until(10, || d.json("/readyz"), |(s, _)| *s == 200);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sources"][0]["state"], "up", "{v}");
    assert_eq!(v["sources"][0]["kind"], "pcap", "{v}");

    veth.delete();
    let (status, v) = poll_until(10, || d.json("/readyz"), |(s, _)| *s == 503);
    assert_eq!(status, 503, "{v}");
    let down = &v["down"][0];
    assert_eq!(down["kind"], "pcap", "{v}");
    assert_eq!(down["name"], name.as_str(), "{v}");
    let err = down["error"].as_str().unwrap_or_default();
    assert!(err.contains(&format!("interface {name} gone")), "{v}");
    assert_eq!(d.get("/healthz").0, 200);

    let _back = Veth::create(&name);
    let (status, v) = poll_until(10, || d.json("/readyz"), |(s, _)| *s == 200);
    assert_eq!(status, 200, "ready again once the interface is back: {v}");
}
