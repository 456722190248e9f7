//! The observe-only dashboard in a real browser: `stoa-tap run` replays the
//! bundled capture of a real API, and headless Chromium loads `/`, runs its
//! script against the live admin API, and the rendered page must show the
//! summary and every learned operation.
//!
//! Needs Chromium (`/usr/bin/chromium`; the test command installs it). Without
//! it the test fails with a clear message, unless `STOA_TAP_SKIP_BROWSER=1`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

mod support;
use support::repo;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The part of `dom` inside `<div id="ID">...</div>` (no nested divs there).
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<div id=\"{id}\">");
    let start = dom.find(&open).map(|i| i + open.len()).unwrap_or(dom.len());
    let end = dom[start..].find("</div>").map_or(dom.len(), |i| start + i);
    &dom[start..end]
}

#[test]
fn dashboard_renders_the_live_summary_and_operations_in_chromium() {
    let Some(browser) = support::chromium("the dashboard test") else {
        return;
    };
    // Declared before the daemon, so removed after it is stopped.
    let tmp = support::temp_dir("dashboard");
    let dir = tmp.path();
    let config = dir.join("empty.yaml");
    std::fs::write(&config, "").expect("config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/");
    let _daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--replay")
            .arg(repo().join("fixtures/real/fidelity.pcap"))
            .args(["--admin-bind", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stoa-tap run"),
    );

    // The replay is done when the summary counts all 926 exchanges.
    let summary_url = format!("{base}api/v1/summary");
    let v = support::poll_until(
        30,
        || {
            let out = Command::new("curl")
                .args(["-s", &summary_url])
                .output()
                .expect("curl");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
        },
        |v| v["exchanges_observed"] == 926 && v["operations"] == 35,
    );
    assert!(
        v["exchanges_observed"] == 926 && v["operations"] == 35,
        "replay not done: {v}"
    );

    let dom = support::dump_dom(
        support::headless(browser, &dir.join("profile"))
            .arg("--dump-dom")
            .arg(&base),
    );

    // The script ran and both API calls succeeded.
    assert!(
        dom.contains("id=\"status\" class=\"note\">Updated "),
        "{dom}"
    );
    let summary = section(&dom, "summary");
    assert!(
        summary.contains("<th>exchanges_observed</th><td class=\"num\">926</td>"),
        "{summary}"
    );
    assert!(
        summary.contains("<th>operations</th><td class=\"num\">35</td>"),
        "{summary}"
    );
    // One header row and one row per learned operation, templates as text.
    let ops = section(&dom, "operations");
    assert_eq!(ops.matches("<tr>").count(), 36, "{ops}");
    for template in [
        "/api/v1/users/{userId}/sessions",
        "/api/v1/customers/{customerEmail}/preferences",
        "/api/v1/accounts/{accountId}/transactions",
    ] {
        assert!(ops.contains(template), "{template} missing: {ops}");
    }
}
