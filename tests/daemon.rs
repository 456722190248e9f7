//! End-to-end tests of `stoa-tap run` with the file-replay source: admin API,
//! metrics, configuration precedence and errors, persistence across restarts
//! (SIGTERM and kill -9), and SIGHUP reload.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::temp_dir;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stoa-tap")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn fixture(name: &str) -> String {
    root()
        .join("fixtures/real")
        .join(name)
        .display()
        .to_string()
}

/// A running daemon; killed on drop, then its configuration file removed.
struct Daemon {
    child: Child,
    admin: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _config: tempfile::TempPath,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Daemon {
    // An empty configuration file: the flags say everything. It lives as long
    // as the daemon, which reads it again on SIGHUP.
    let cfg = tempfile::Builder::new()
        .prefix("stoa-tap-daemon-")
        .suffix("-empty.yaml")
        .tempfile()
        .expect("empty config")
        .into_temp_path();
    let mut child = Command::new(bin())
        .args(["-v", "run", "--config"])
        .arg(&cfg)
        .args(args)
        .env_remove("STOA_TAP_CONFIG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn stoa-tap run");
    // Reads the log until the admin address shows, then keeps collecting it.
    let stderr = child.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("addr=") {
                if let Some(t) = tx.take() {
                    let addr: String = line[at + 5..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = t.send(addr);
                }
            }
            if let Ok(mut l) = sink.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            // Never leave a daemon behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon did not start: {}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            )
        }
    };
    let parsed = addr
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
        .parse();
    let Ok(admin) = parsed else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unreadable admin address {addr:?}");
    };
    Daemon {
        child,
        admin,
        log,
        _config: cfg,
    }
}

/// GET over a plain socket; returns (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn summary(d: &Daemon) -> Value {
    let (status, body) = get(d.admin, "/api/v1/summary", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("summary JSON")
}

fn wait_for(d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let s = summary(d);
        if pred(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn terminate(mut d: Daemon) -> i32 {
    let pid = d.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = d.child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const ADMIN: &str = "127.0.0.1:0";

#[test]
fn serves_summary_metrics_and_documents() {
    let state = temp_dir("daemon-serve");
    // Two workers whatever the machine (the default depends on its CPUs), so
    // that sharding the replay over workers is what gives the counts below.
    let d = start(&[
        "--replay",
        &fixture("fidelity.pcap"),
        "--state-dir",
        state.path().to_str().expect("p"),
        "--admin-bind",
        ADMIN,
        "--set",
        "workers=2",
    ]);
    let s = wait_for(&d, "926 exchanges", |s| s["exchanges_observed"] == 926);
    assert_eq!(s["operations"], 35, "{s}");
    assert_eq!(get(d.admin, "/healthz", None).0, 200);
    assert_eq!(get(d.admin, "/readyz", None).0, 200);
    // Workers publish their counters about once a second.
    let t0 = Instant::now();
    let metrics = loop {
        let (status, metrics) = get(d.admin, "/metrics", None);
        assert_eq!(status, 200);
        if metrics.contains("stoa_tap_capture_packets_total 4497")
            || t0.elapsed() > Duration::from_secs(10)
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for needle in [
        "stoa_tap_capture_packets_total 4497",
        "stoa_tap_exchanges_observed_total 926",
        "stoa_tap_operation_requests_total{api=\"northwind-v1\",method=\"GET\",template=\"/api/v1/users/{userId}\"}",
        "stoa_tap_operation_latency_seconds_bucket{api=\"northwind-v1\",method=\"GET\",template=\"/api/v1/users/{userId}\",le=\"+Inf\"}",
        "stoa_tap_tcp_gaps_total 0",
        "stoa_tap_worker_queue_depth{worker=\"1\"}",
        "stoa_tap_learn_pending_exchanges",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    // Labels carry templates, never raw paths with ids.
    assert!(!metrics.contains("/api/v1/users/1"), "raw path in metrics");
    let (status, body) = get(d.admin, "/api/v1/operations", None);
    assert_eq!(status, 200);
    let ops: Value = serde_json::from_str(&body).expect("operations");
    assert_eq!(ops.as_array().map(Vec::len), Some(35));
    let (status, body) = get(d.admin, "/api/v1/openapi", None);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("openapi");
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(get(d.admin, "/api/v1/uac", None).0, 200);
    assert_eq!(get(d.admin, "/api/v1/observations", None).0, 200);
    assert_eq!(get(d.admin, "/api/v1/nope", None).0, 404);
    assert_eq!(terminate(d), 0);
}

#[test]
fn observations_survive_sigterm_and_kill_9_loses_at_most_one_interval() {
    let state = temp_dir("daemon-restart");
    let st = state.path().to_str().expect("p");
    // SIGTERM: drained and saved.
    let d = start(&[
        "--replay",
        &fixture("fidelity.pcap"),
        "--state-dir",
        st,
        "--admin-bind",
        ADMIN,
    ]);
    wait_for(&d, "926 exchanges", |s| s["exchanges_observed"] == 926);
    assert_eq!(terminate(d), 0);
    assert!(state.path().join("observations.json").exists());
    let d = start(&[
        "--replay",
        &fixture("curl_keepalive.pcap"),
        "--state-dir",
        st,
        "--admin-bind",
        ADMIN,
    ]);
    let s = wait_for(&d, "restored + 7", |s| s["exchanges_observed"] == 7);
    assert_eq!(s["observations_total"], 926 + 7, "{s}");
    // kill -9 after a save interval: the saved state has everything.
    let d2 = {
        assert_eq!(terminate(d), 0);
        start(&[
            "--replay",
            &fixture("pipeline.pcap"),
            "--state-dir",
            st,
            "--admin-bind",
            ADMIN,
            "--set",
            "save_interval_s=1",
        ])
    };
    wait_for(&d2, "3 more", |s| s["exchanges_observed"] == 3);
    wait_for(&d2, "a save", |s| s["saves"].as_u64().unwrap_or(0) >= 1);
    let pid = d2.child.id().to_string();
    Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill -9");
    drop(d2);
    let d = start(&[
        "--replay",
        &fixture("curl_methods.pcap"),
        "--state-dir",
        st,
        "--admin-bind",
        ADMIN,
    ]);
    let s = wait_for(&d, "restored", |s| s["exchanges_observed"] == 10);
    assert_eq!(s["observations_total"], 926 + 7 + 3 + 10, "{s}");
    assert_eq!(terminate(d), 0);
}

#[test]
fn configuration_precedence_and_errors() {
    let dir = temp_dir("daemon-config");
    let cfg = dir.path().join("stoa-tap.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  - kind: file\n    path: {}\nworkers: 3\nports: [5555]\nstate_dir: {}\n",
            fixture("curl_keepalive.pcap"),
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let check = |env: &[(&str, &str)], extra: &[&str]| {
        Command::new(bin())
            .args(["run", "--check", "--config", cfg.to_str().expect("p")])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .expect("run --check")
    };
    let out = check(&[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("workers: 3"));
    let out = check(&[("STOA_TAP_WORKERS", "4")], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("workers: 4"),
        "env beats file"
    );
    let out = check(&[("STOA_TAP_WORKERS", "4")], &["--set", "workers=5"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("workers: 5"),
        "flags beat env"
    );
    let out = check(&[("STOA_TAP_WROKERS", "4")], &[]);
    assert_eq!(out.status.code(), Some(8));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrokers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(&[], &["--admin-bind", "0.0.0.0:9090"]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.bind"));
    // The admin token is never printed back.
    let out = check(
        &[],
        &[
            "--admin-bind",
            "0.0.0.0:9090",
            "--set",
            "admin.token=s3cret-check-token",
        ],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shown.contains("s3cret-check-token"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    // The shipped example validates (its state directory is the host's).
    let out = Command::new(bin())
        .args(["run", "--check", "--config"])
        .arg(root().join("packaging/stoa-tap.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("check example");
    support::assert_example_checks(&out);
}

#[test]
fn admin_token_is_enforced_and_sighup_reloads() {
    let state = temp_dir("daemon-token");
    let d = start(&[
        "--replay",
        &fixture("curl_keepalive.pcap"),
        "--state-dir",
        state.path().to_str().expect("p"),
        "--admin-bind",
        ADMIN,
        "--set",
        "admin.token=s3cret-admin-token",
    ]);
    assert_eq!(
        get(d.admin, "/healthz", None).0,
        200,
        "health needs no token"
    );
    assert_eq!(get(d.admin, "/api/v1/summary", None).0, 401);
    assert_eq!(get(d.admin, "/api/v1/summary", Some("wrong")).0, 401);
    assert_eq!(
        get(d.admin, "/api/v1/summary", Some("s3cret-admin-token")).0,
        200
    );
    let pid = d.child.id().to_string();
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    let t0 = Instant::now();
    while !d
        .log
        .lock()
        .map(|l| l.contains("configuration reloaded"))
        .unwrap_or(false)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload: {}",
            d.log.lock().map(|l| l.clone()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still serving after the reload.
    assert_eq!(
        get(d.admin, "/api/v1/summary", Some("s3cret-admin-token")).0,
        200
    );
    assert_eq!(terminate(d), 0);
}

/// The `ebpf` source in a configuration: accepted (and printed) by a build
/// with the probe, refused with the reason and exit 8 by one without it.
#[test]
fn ebpf_source_check_says_whether_this_build_has_the_probe() {
    let dir = temp_dir("daemon-ebpf-check");
    let cfg = dir.path().join("empty.yaml");
    std::fs::write(&cfg, "").expect("write config");
    let out = Command::new(bin())
        .args(["run", "--check", "--config", cfg.to_str().expect("p")])
        .args(["--ebpf", "lo", "--port", "5555", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .expect("run --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "ebpf") {
        assert!(out.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("kind: ebpf"), "{stdout}");
        assert!(stdout.contains("direction: auto"), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(8), "{stderr}");
        assert!(stderr.contains("sources[0].kind"), "{stderr}");
        assert!(stderr.contains("--features ebpf"), "{stderr}");
    }
}

/// The shipped unit and the TPROXY drop-in pass `systemd-analyze verify`
/// (with the built binary in place of /usr/bin/stoa-tap), with no warning.
#[test]
fn systemd_unit_and_tproxy_dropin_verify() {
    let have = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        eprintln!("systemd-analyze not installed: unit verification skipped");
        return;
    }
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    let dir = support::temp_dir("unit-verify");
    let dropins = dir.path().join("stoa-tap.service.d");
    std::fs::create_dir_all(&dropins).expect("drop-in dir");
    for (from, to) in [
        (
            pkg.join("stoa-tap.service"),
            dir.path().join("stoa-tap.service"),
        ),
        (
            pkg.join("stoa-tap-tproxy.conf"),
            dropins.join("tproxy.conf"),
        ),
    ] {
        let text = std::fs::read_to_string(&from).expect("unit file");
        std::fs::write(&to, text.replace("/usr/bin/stoa-tap", bin())).expect("write unit");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("stoa-tap.service")
        .current_dir(dir.path())
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("stoa-tap")).collect();
    assert!(ours.is_empty(), "warnings about the unit: {ours:?}");
}
