//! End-to-end tests of the publisher: `stoa-tap run` with the file-replay
//! source, pointed at a real HTTP control plane (tests/controlplane_server.py)
//! that fails on command; directory mode with `publish --from`; and `check`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;
use support::{poll_until, repo, temp_dir};

const KEY: &str = "gw-key-7f3a9c";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stoa-tap")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures/real").join(name)
}

/// One HTTP/1.0 request over a plain socket; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The test control plane; killed on drop.
struct Server {
    child: Child,
    api: u16,
    control: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(down: bool) -> Server {
        let dir = temp_dir("cp-server");
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/controlplane_server.py"))
            .args(["--key", KEY, "--schema"])
            // A copy of STOA's schema, checked identical by the contracts tests.
            .arg(repo().join("contracts/schemas/uac-contract-v1.schema.json"))
            .arg("--log")
            .arg(dir.path().join("log.json"));
        if down {
            cmd.arg("--down");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 control plane");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let port = |k: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        };
        let (api, control) = (port("api="), port("control="));
        if api == 0 || control == 0 {
            let _ = child.kill();
            panic!("control plane did not start: {line:?}");
        }
        Server {
            child,
            api,
            control: SocketAddr::from(([127, 0, 0, 1], control)),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    fn ctl(&self, path: &str, body: &str) {
        let (status, text) = http(self.control, "POST", path, body);
        assert_eq!(status, 200, "control {path}: {text}");
    }

    fn log(&self) -> Value {
        let (status, body) = http(self.control, "GET", "/log", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("log JSON")
    }

    fn accepted(&self, kind: &str) -> Vec<Value> {
        self.log()["accepted"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["kind"] == kind).cloned().collect())
            .unwrap_or_default()
    }
}

/// A running `stoa-tap run` logging JSON; killed on drop.
struct Tap {
    child: Child,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file with a `control_plane:` section and short intervals.
fn config(dir: &Path, name: &str, control_plane: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("save_interval_s: 1\ncontrol_plane:\n{control_plane}"),
    )
    .expect("config");
    p
}

fn http_cp(url: &str, key_file: &Path) -> String {
    format!(
        "  url: {url}\n  key_file: {}\n  heartbeat_interval_s: 1\n  discovery_interval_s: 1\n  \
         request_timeout_s: 1\n  backoff_max_s: 1\n  hostname: tap-test-host\n",
        key_file.display()
    )
}

impl Tap {
    fn start(config: &Path, replay: &Path, state: &Path) -> Tap {
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "-v", "run", "--config"])
            .arg(config)
            .arg("--replay")
            .arg(replay)
            .arg("--state-dir")
            .arg(state)
            .args(["--admin-bind", "127.0.0.1:0"])
            .env_remove("STOA_TAP_CONFIG")
            .env_remove("STOA_GATEWAY_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stoa-tap run");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if v["fields"]["message"] == "admin server listening" {
                    if let (Some(t), Some(a)) = (tx.take(), v["fields"]["addr"].as_str()) {
                        let _ = t.send(a.to_string());
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(v);
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tap did not start: {:?}", log.lock().map(|l| l.clone()));
        };
        Tap {
            child,
            admin: addr.parse().expect("admin address"),
            log,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, "")
    }

    fn publisher(&self) -> Value {
        let (status, body) = self.get("/api/v1/publisher");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("publisher JSON")
    }

    fn summary(&self) -> Value {
        let (status, body) = self.get("/api/v1/summary");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("summary JSON")
    }

    /// `(key, kind, name)` of every report this tap queued.
    fn queued(&self) -> Vec<(String, String, String)> {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|v| v["fields"]["message"] == "report queued")
                    .map(|v| {
                        let f = |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
                        (f("key"), f("kind"), f("name"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .map(|l| l.iter().any(|v| v.to_string().contains(needle)))
            .unwrap_or(false)
    }

    fn kill9(self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill -9");
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let done = poll_until(20, || self.child.try_wait().ok().flatten(), Option::is_some);
        assert!(done.is_some(), "no exit after SIGTERM");
    }
}

fn check(args: &[&str]) -> (i32, String) {
    let out: Output = Command::new(bin())
        .arg("check")
        .args(args)
        .output()
        .expect("stoa-tap check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn num(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    let p = dir.join("key");
    std::fs::write(&p, format!("{key}\n")).expect("key file");
    p
}

#[test]
fn outages_restarts_and_failures_lose_and_duplicate_nothing() {
    let srv = Server::start(true);
    let dir = temp_dir("publish-outage");
    let state = dir.path().join("state");
    let kf = key_file(dir.path(), KEY);
    let cfg = config(dir.path(), "tap.yaml", &http_cp(&srv.url(), &kf));

    // 1. The control plane refuses connections: reports wait in the outbox.
    let tap = Tap::start(&cfg, &fixture("fidelity.pcap"), &state);
    let apis = num(
        &poll_until(30, || tap.summary(), |s| s["exchanges_observed"] == 926),
        &["apis"],
    );
    assert!(apis >= 2, "fidelity.pcap has several APIs");
    let p = poll_until(
        30,
        || tap.publisher(),
        |p| num(p, &["backlog_reports"]) > apis && num(p, &["errors", "connect"]) > 0,
    );
    assert!(num(&p, &["backlog_reports"]) > apis, "{p}");
    assert!(p["last_success_unix"].is_null(), "{p}");
    let admin = format!("http://{}", tap.admin);
    let (code, out) = check(&[
        "--url",
        &admin,
        "-w",
        "backlog=0",
        "-c",
        "backlog=off,age=off",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("STOA-TAP WARNING") && out.contains("publish backlog"),
        "{out}"
    );
    assert!(out.contains("| drop_rate=0;"), "{out}");
    let (code, out) = check(&["--url", &admin, "-c", "backlog=1"]);
    assert_eq!(code, 2, "{out}");
    // The outbox is on disk, one file per report, mode 0600.
    let files: Vec<_> = std::fs::read_dir(state.join("outbox"))
        .expect("outbox")
        .filter_map(Result::ok)
        .collect();
    assert!(files.len() as u64 > apis);
    for f in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{:?}", f.path());
    }
    let mut queued = tap.queued();
    // 2. kill -9 mid-outage, restart on the same state with more traffic.
    tap.kill9();
    let tap = Tap::start(&cfg, &fixture("curl_methods.pcap"), &state);
    poll_until(30, || tap.summary(), |s| s["exchanges_observed"] == 10);
    let p = poll_until(
        30,
        || tap.publisher(),
        |p| num(p, &["backlog_reports"]) > apis,
    );
    assert!(num(&p, &["backlog_reports"]) > apis, "outbox restored: {p}");
    // 3. The control plane comes back: everything arrives.
    srv.ctl("/up", "{}");
    let p = poll_until(
        30,
        || tap.publisher(),
        |p| num(p, &["backlog_reports"]) == 0 && p["state"] == "registered",
    );
    assert_eq!(num(&p, &["backlog_reports"]), 0, "{p}");
    // 4. 503: retried slowly, then delivered again.
    let hb = |srv: &Server| srv.accepted("heartbeat").len();
    srv.ctl("/mode", r#"{"mode": "503"}"#);
    poll_until(
        20,
        || tap.publisher(),
        |p| num(p, &["errors", "unavailable"]) > 0,
    );
    assert!(num(&tap.publisher(), &["errors", "unavailable"]) > 0);
    srv.ctl("/mode", r#"{"mode": "ok"}"#);
    let before = hb(&srv);
    assert!(
        poll_until(20, || hb(&srv), |n| *n > before) > before,
        "heartbeats resume after 503"
    );
    // 5. The control plane forgets the instance: 404, registered again.
    let regs = num(&tap.publisher(), &["registrations"]);
    srv.ctl("/forget", "{}");
    let p = poll_until(
        20,
        || tap.publisher(),
        |p| num(p, &["registrations"]) > regs,
    );
    assert!(
        num(&p, &["registrations"]) > regs,
        "re-registered after 404: {p}"
    );
    // 6. Slow answers to draft submissions (beyond the 1 s timeout) while a
    // restarted tap submits new drafts: retries carry the same idempotency keys.
    queued.extend(tap.queued());
    tap.terminate();
    srv.ctl(
        "/mode",
        r#"{"mode": "slow", "delay": 1.6, "match": "/contracts"}"#,
    );
    let tap = Tap::start(&cfg, &fixture("pipeline.pcap"), &state);
    poll_until(
        30,
        || tap.publisher(),
        |p| num(p, &["errors", "timeout"]) >= 2,
    );
    assert!(num(&tap.publisher(), &["errors", "timeout"]) >= 2);
    srv.ctl("/mode", r#"{"mode": "ok"}"#);
    let p = poll_until(
        30,
        || tap.publisher(),
        |p| num(p, &["backlog_reports"]) == 0 && num(p, &["delivered"]) > 0,
    );
    assert_eq!(num(&p, &["backlog_reports"]), 0, "{p}");
    queued.extend(tap.queued());
    let summary = tap.summary();
    let log = srv.log();

    // Nothing lost: every queued discovery list and draft was accepted.
    let accepted = log["accepted"].as_array().cloned().unwrap_or_default();
    let accepted_keys: Vec<&str> = accepted.iter().filter_map(|a| a["key"].as_str()).collect();
    let unique: BTreeSet<&str> = accepted_keys.iter().copied().collect();
    assert_eq!(unique.len(), accepted_keys.len(), "a key accepted twice");
    let documents: Vec<_> = queued.iter().filter(|q| q.1 != "heartbeat").collect();
    assert!(documents.len() as u64 > apis, "{documents:?}");
    for (key, kind, name) in &documents {
        assert!(
            unique.contains(key.as_str()),
            "{kind} {name} ({key}) never arrived"
        );
    }
    // Nothing duplicated: an unchanged draft is never submitted again (not
    // even by a restarted tap), and retried calls were absorbed by their key.
    let mut drafts: BTreeMap<(String, String), u32> = BTreeMap::new();
    for a in accepted.iter().filter(|a| a["kind"] == "contract") {
        *drafts
            .entry((a["body"]["name"].to_string(), a["body"].to_string()))
            .or_default() += 1;
    }
    assert!(
        drafts.values().all(|n| *n == 1),
        "same draft twice: {drafts:?}"
    );
    assert!(
        !log["duplicates"].as_array().is_none_or(Vec::is_empty),
        "slow answers caused retries with the same key: {}",
        log["duplicates"]
    );
    // Every draft and list passed the control plane's validation (UAC schema).
    for r in log["rejected"].as_array().cloned().unwrap_or_default() {
        assert_eq!(r["why"], "unknown instance", "rejected: {r}");
    }
    // The heartbeat carries the daemon's figures.
    let last = accepted
        .iter()
        .rev()
        .find(|a| a["kind"] == "heartbeat")
        .expect("a heartbeat");
    assert_eq!(last["body"]["discovered_apis"], summary["apis"], "{last}");
    assert_eq!(
        last["body"]["requests_total"],
        summary["observations_total"]
    );
    assert!(last["body"]["uptime_seconds"].as_u64().is_some());
    // The key never shows in logs or endpoints.
    assert!(!tap.logged(KEY));
    for path in ["/api/v1/publisher", "/api/v1/summary", "/metrics"] {
        assert!(!tap.get(path).1.contains(KEY), "{path} shows the key");
    }
    let metrics = tap.get("/metrics").1;
    for needle in [
        "stoa_tap_publish_backlog_reports 0",
        "stoa_tap_publish_errors_total{kind=\"timeout\"}",
        "stoa_tap_publish_dropped_reports_total{reason=\"superseded\"}",
        "stoa_tap_publish_last_success_timestamp_seconds",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    tap.terminate();
}

#[test]
fn unauthorized_stops_delivery_and_says_so() {
    let srv = Server::start(false);
    let dir = temp_dir("publish-401");
    let kf = key_file(dir.path(), "wrong-key");
    let cfg = config(dir.path(), "tap.yaml", &http_cp(&srv.url(), &kf));
    let tap = Tap::start(
        &cfg,
        &fixture("curl_methods.pcap"),
        &dir.path().join("state"),
    );
    let p = poll_until(20, || tap.publisher(), |p| p["unauthorized"] == true);
    assert_eq!(p["state"], "unauthorized", "{p}");
    let (status, ready) = tap.get("/readyz");
    assert_eq!(status, 200);
    assert!(ready.contains("unauthorized"), "{ready}");
    let metrics = tap.get("/metrics").1;
    assert!(
        metrics.contains("stoa_tap_publish_unauthorized 1"),
        "{metrics}"
    );
    assert!(metrics.contains("stoa_tap_publish_errors_total{kind=\"unauthorized\"} 1"));
    assert!(tap.logged("delivery STOPPED"));
    // No more calls once refused.
    let calls = num(&srv.log(), &["requests"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(num(&srv.log(), &["requests"]), calls, "retried after 401");
    let (code, out) = check(&["--url", &format!("http://{}", tap.admin)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("STOA-TAP CRITICAL") && out.contains("401"),
        "{out}"
    );
    // The dashboard, rendered by a real browser, shows it too.
    if let Some(dom) = dashboard_dom(tap.admin, dir.path()) {
        let start = dom
            .find("<div id=\"publisher\">")
            .expect("publisher section");
        let section = &dom[start..];
        assert!(section.contains("refused the gateway key"), "{section}");
        assert!(
            section.contains("<th>state</th><td>unauthorized</td>"),
            "{section}"
        );
        assert!(
            section.contains("<th>last success</th><td>never</td>"),
            "{section}"
        );
    }
    tap.terminate();
}

/// The dashboard's DOM after its script ran, from headless Chromium (`None`
/// with `STOA_TAP_SKIP_BROWSER=1` and no browser; the test command installs it).
fn dashboard_dom(admin: SocketAddr, dir: &Path) -> Option<String> {
    let browser = support::chromium("the dashboard check")?;
    let out = support::headless(browser, &dir.join("profile"))
        .arg("--dump-dom")
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn directory_mode_then_replay_is_idempotent() {
    let srv = Server::start(false);
    let dir = temp_dir("publish-dir");
    let out_dir = dir.path().join("reports");
    let cfg = config(
        dir.path(),
        "tap.yaml",
        &format!(
            "  discovery_interval_s: 1\n  publish:\n    mode: directory\n    directory: {}\n",
            out_dir.display()
        ),
    );
    let tap = Tap::start(&cfg, &fixture("fidelity.pcap"), &dir.path().join("state"));
    let apis = num(
        &poll_until(30, || tap.summary(), |s| s["exchanges_observed"] == 926),
        &["apis"],
    ) as usize;
    let count = |suffix: &str| {
        std::fs::read_dir(&out_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    .count()
            })
            .unwrap_or(0)
    };
    poll_until(20, || count("-contract.json"), |n| *n >= apis);
    let p = tap.publisher();
    assert_eq!(p["mode"], "directory", "{p}");
    tap.terminate();
    assert!(out_dir.join("register.json").exists());
    assert_eq!(count("-heartbeat.json"), 0, "no heartbeats offline");
    let files = count("-contract.json") + count("-discovery.json");
    assert!(files > apis);
    let kf = key_file(dir.path(), KEY);
    let replay = |key: &Path| {
        let out = Command::new(bin())
            .args(["publish", "--from"])
            .arg(&out_dir)
            .args(["--url", &srv.url(), "--key-file"])
            .arg(key)
            .output()
            .expect("publish --from");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = replay(&kf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches(": accepted (").count(), files, "{out}");
    let log = srv.log();
    let docs = |l: &Value| {
        l["accepted"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["kind"] != "register").count())
    };
    assert_eq!(docs(&log), files);
    // Replaying again changes nothing on the control plane.
    let (code, out) = replay(&kf);
    assert_eq!(code, 0, "{out}");
    let log = srv.log();
    assert_eq!(docs(&log), files, "second replay absorbed");
    assert_eq!(log["duplicates"].as_array().map(Vec::len), Some(files));
    // A wrong key stops at once and says so.
    let bad = dir.path().join("bad-key");
    std::fs::write(&bad, "nope\n").expect("key");
    let (code, _) = replay(&bad);
    assert_eq!(code, 1);
}

#[test]
fn check_reports_reachability_traffic_and_token() {
    // Nothing listens: the tap is down, CRITICAL.
    let (code, out) = check(&["--url", "http://127.0.0.1:9", "-t", "2"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("STOA-TAP CRITICAL - tap unreachable"),
        "{out}"
    );
    // A bad command line is UNKNOWN.
    let (code, out) = check(&["-w", "bogus=1"]);
    assert_eq!(code, 3, "{out}");
    let srv = Server::start(false);
    let dir = temp_dir("publish-check");
    let kf = key_file(dir.path(), KEY);
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "adm-t0ken\n").expect("token");
    let cfg = config(dir.path(), "tap.yaml", &http_cp(&srv.url(), &kf));
    let mut text = std::fs::read_to_string(&cfg).expect("cfg");
    text.push_str(&format!(
        "admin:\n  bind: 127.0.0.1:0\n  token_file: {}\n",
        token.display()
    ));
    std::fs::write(&cfg, text).expect("cfg");
    let tap = Tap::start(
        &cfg,
        &fixture("curl_methods.pcap"),
        &dir.path().join("state"),
    );
    let admin = format!("http://{}", tap.admin);
    let tok = token.to_str().expect("path");
    // Without the token the answer cannot be judged: UNKNOWN.
    let (code, out) = check(&["--url", &admin]);
    assert_eq!(code, 3, "{out}");
    let ok = poll_until(
        30,
        || check(&["--url", &admin, "--token-file", tok]),
        |(c, _)| *c == 0,
    );
    assert_eq!(ok.0, 0, "{}", ok.1);
    assert!(ok.1.starts_with("STOA-TAP OK"), "{}", ok.1);
    assert!(ok.1.contains("publish_age="), "{}", ok.1);
    // The replay ended: after a few seconds without traffic, WARNING then CRITICAL.
    let warn = poll_until(
        20,
        || {
            check(&[
                "--url",
                &admin,
                "--token-file",
                tok,
                "-w",
                "idle=0.02",
                "-c",
                "idle=off",
            ])
        },
        |(c, _)| *c == 1,
    );
    assert_eq!(warn.0, 1, "{}", warn.1);
    assert!(warn.1.contains("no traffic for"), "{}", warn.1);
    let (code, out) = check(&["--url", &admin, "--token-file", tok, "-c", "idle=0.02"]);
    assert_eq!(code, 2, "{out}");
    tap.terminate();
}

#[test]
fn check_judges_the_daemons_drop_rate() {
    // One exchange batch queued for contract learning: a replay at full
    // speed overflows it, and the overflow is counted as dropped.
    let dir = temp_dir("publish-drops");
    let cfg = dir.path().join("tap.yaml");
    std::fs::write(&cfg, "exchange_queue: 1\nworkers: 1\n").expect("config");
    let tap = Tap::start(&cfg, &fixture("wrk_short.pcap"), &dir.path().join("state"));
    let s = poll_until(
        60,
        || tap.summary(),
        |s| num(s, &["exchanges_observed"]) + num(s, &["dropped_total"]) >= 3639,
    );
    let rate = s["drop_rate"].as_f64().expect("drop_rate");
    let shown = (rate * 1e4).round() / 1e4;
    let dropped = num(&s, &["dropped_total"]);
    assert_eq!(dropped > 0, rate > 0.0, "{s}");
    let admin = format!("http://{}", tap.admin);
    let (code, out) = check(&[
        "--url",
        &admin,
        "-w",
        "drop=0,idle=off",
        "-c",
        "drop=off,idle=off",
    ]);
    assert!(
        out.contains(&format!("| drop_rate={shown};0;")),
        "{out} vs {rate}"
    );
    if dropped > 0 {
        assert_eq!(code, 1, "{out}");
        assert!(out.starts_with("STOA-TAP WARNING - drop rate"), "{out}");
        let (code, out) = check(&["--url", &admin, "-c", "drop=0,idle=off"]);
        assert_eq!(code, 2, "{out}");
        assert!(out.starts_with("STOA-TAP CRITICAL - drop rate"), "{out}");
    } else {
        // A machine fast enough to learn every exchange in time: no drops,
        // and the check agrees.
        assert_eq!(code, 0, "{out}");
    }
    tap.terminate();
}
