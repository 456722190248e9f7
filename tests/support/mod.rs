//! Helpers shared by the end-to-end tests (`mod support;` in each), most of
//! them for tests that run programs in network namespaces. Each test uses a
//! subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A fresh temporary directory named `stoa-tap-<name>-...`, removed (with
/// what the test wrote into it) when dropped, also when the test fails.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("stoa-tap-{name}-"))
        .tempdir()
        .expect("temporary directory")
}

/// True if the test may go on; false to skip (`STOA_TAP_SKIP_NETNS=1` when
/// not root); panics otherwise. `what` names the tests and what they need.
pub fn require_root(what: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid == "0" {
        return true;
    }
    if std::env::var("STOA_TAP_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("skipping: not root and STOA_TAP_SKIP_NETNS=1");
        return false;
    }
    panic!("{what}; run them as root or set STOA_TAP_SKIP_NETNS=1 to skip");
}

/// Builds example `name` of stoa-tap (with `features`) in the profile and
/// target directory of the running test, and returns its path.
pub fn build_example(name: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/TEST-HASH -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "stoa-tap", "--example", name])
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"))
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        );
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the {name} example failed");
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// Reads lines from a child in a thread, so waits can have deadlines.
pub fn line_reader(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // Keep draining after the receiver is gone, so the child never
            // blocks on a full pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

/// The first line matching `pred` within 30 s; panics naming `what` otherwise.
pub fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return l,
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Calls `probe` every 200 ms until `done` holds for its value or `secs`
/// seconds pass; returns the last value either way (the caller asserts).
pub fn poll_until<T>(secs: u64, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Debian's Chromium, for the browser tests; `None` (skip) only with
/// `STOA_TAP_SKIP_BROWSER=1`, otherwise a missing browser fails `what`.
pub fn chromium(what: &str) -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        if std::env::var("STOA_TAP_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("skipping {what}: no Chromium and STOA_TAP_SKIP_BROWSER=1");
            return None;
        }
        panic!("{what} needs Chromium (apt-get install chromium)");
    }
    found
}

/// Headless Chromium with a fresh profile in `profile` and the flags that
/// keep it quiet on a closed network; the caller adds `--dump-dom URL` or
/// `--screenshot`.
pub fn headless(browser: &str, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Runs a Chromium command ending in `--dump-dom URL`; the rendered DOM.
pub fn dump_dom(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !dom.is_empty(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The failed checks of a `run --check` (its `error` lines on stderr).
pub fn failed_checks(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("error "))
        .map(str::to_owned)
        .collect()
}

/// Asserts that `run --check` on the shipped example passed, or failed only
/// because this host has no `eth1` (the example's capture interface, which a
/// site edits): the rest of the example must hold on any host.
pub fn assert_example_checks(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return;
    }
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    let failed = failed_checks(&stderr);
    assert!(
        !failed.is_empty()
            && failed.iter().all(|l| {
                l.starts_with("error sources[0].interfaces[0]: ") && l.contains("\"eth1\"")
            }),
        "only the example's interface may be missing here: {stderr}"
    );
}
