//! The offline HTML report in a real browser: `analyze --report` on a fixture
//! capture, opened from disk by headless Chromium behind a proxy that counts
//! every connection. The page must show the operations and figures of the
//! capture, draw its charts, and make no network request; a screenshot is
//! kept in `target/test-artifacts/report.png`.
//!
//! Needs Chromium (`/usr/bin/chromium`; the test command installs it). Without
//! it the test fails with a clear message, unless `STOA_TAP_SKIP_BROWSER=1`.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

mod support;
use support::repo;

/// The part of `dom` inside `<div id="ID">...</div>` up to the next `<h2>`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<div id=\"{id}\">");
    let start = dom.find(&open).map(|i| i + open.len()).unwrap_or(dom.len());
    let end = dom[start..].find("<h2>").map_or(dom.len(), |i| start + i);
    &dom[start..end]
}

/// Headless Chromium whose every request would go through the proxy.
fn browser(path: &str, profile: &Path, proxy_port: u16) -> Command {
    let mut c = support::headless(path, profile);
    c.arg(format!("--proxy-server=http://127.0.0.1:{proxy_port}"))
        .arg("--proxy-bypass-list=<-loopback>");
    c
}

#[test]
fn report_shows_the_capture_offline_in_chromium() {
    let Some(chrome) = support::chromium("the report test") else {
        return;
    };
    let tmp = support::temp_dir("report");
    let dir = tmp.path();
    let report = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
        .args(["analyze", "--no-progress", "--report"])
        .arg(&report)
        .arg(repo().join("fixtures/real/fidelity.pcap"))
        .output()
        .expect("run analyze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "no external script"
    );

    let proxy = TcpListener::bind("127.0.0.1:0").expect("proxy port");
    let proxy_port = proxy.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for mut conn in proxy.incoming().map_while(Result::ok) {
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n]);
            let host = request_host(line.lines().next().unwrap_or(""));
            if let Ok(mut s) = sink.lock() {
                s.push(host);
            }
        }
    });
    // What Chromium itself contacts (time, updates, accounts) with an empty
    // page: the report may not add anything to it.
    let empty = dir.join("empty.html");
    std::fs::write(&empty, "<!doctype html><title>empty</title>").expect("empty page");
    let out = browser(chrome, &dir.join("profile0"), proxy_port)
        .arg("--dump-dom")
        .arg(format!("file://{}", empty.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let baseline: std::collections::BTreeSet<String> = seen
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let url = format!("file://{}", report.display());
    let dom = support::dump_dom(
        browser(chrome, &dir.join("profile"), proxy_port)
            .arg("--dump-dom")
            .arg(&url),
    );
    assert!(
        dom.contains("stoa-tap report: everything below"),
        "script did not run: {dom}"
    );

    // Summary and health of the capture.
    let summary = section(&dom, "summary");
    assert!(
        summary.contains("<th>exchanges</th><td class=\"num\">926</td>"),
        "{summary}"
    );
    assert!(summary.contains("<th>gaps</th>"), "{summary}");
    // The operations table: one header and one row per learned operation.
    let ops = section(&dom, "operations");
    assert_eq!(ops.matches("<tr>").count(), 36, "{ops}");
    for template in [
        "/api/v1/users/{userId}/sessions",
        "/api/v1/customers/{customerEmail}/preferences",
        "/api/v1/accounts/{accountId}/transactions",
    ] {
        assert!(ops.contains(template), "{template} missing: {ops}");
    }
    // Charts drawn: the timeline and a latency histogram per operation.
    let timeline = section(&dom, "timeline");
    assert!(timeline.matches("<rect").count() >= 1, "{timeline}");
    let details = section(&dom, "details");
    assert!(details.matches("<svg").count() >= 35 * 2 - 5, "{details}");
    assert!(
        details.matches("class=\"bar").count() >= 35,
        "charts have no bars"
    );
    assert!(
        details.contains("class=\"bar err\""),
        "error statuses are drawn"
    );
    // Security schemes and the embedded contracts.
    let security = section(&dom, "security");
    assert!(
        security.contains("bearer") || security.contains("http"),
        "{security}"
    );
    let contracts = section(&dom, "contracts");
    assert!(contracts.contains("openapi: "), "{contracts}");
    assert!(contracts.contains("UAC draft: "), "{contracts}");
    // Redacted like every other output.
    let secrets = std::fs::read_to_string(repo().join("fixtures/fidelity/secrets.txt"))
        .expect("secrets list");
    for s in secrets.lines().filter(|s| s.len() >= 8) {
        assert!(!html.contains(s), "a secret reached the report: {s}");
    }

    // A screenshot to look at.
    let shots = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).expect("artifacts dir");
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    let out = browser(chrome, &dir.join("profile2"), proxy_port)
        .arg("--window-size=1400,2400")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(len > 10_000, "screenshot missing or empty ({len} bytes)");
    let extra: Vec<String> = seen
        .lock()
        .map(|s| {
            s.iter()
                .filter(|h| !baseline.contains(*h))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    assert!(
        extra.is_empty(),
        "the report made network requests: {extra:?}"
    );
}

/// `CONNECT host:443 HTTP/1.1` or `GET http://host/path HTTP/1.1` -> host.
fn request_host(line: &str) -> String {
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    rest.split(['/', ':']).next().unwrap_or("").to_string()
}
