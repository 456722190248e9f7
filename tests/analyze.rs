//! End-to-end tests of `stoa-tap analyze`: they run the built binary on the
//! committed fixtures and compare with the expected exchanges recorded beside
//! them (derived from what the clients and servers did, not from stoa-tap).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn analyze(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("analyze")
        .arg("--no-progress")
        .args(args)
        .output()
        .expect("run stoa-tap")
}

/// The comparable view of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct View {
    method: String,
    target: String,
    /// The target as sent (the expected files give it where it differs from
    /// the normalised `target`).
    raw_target: String,
    status: Option<u64>,
    request_body_len: u64,
    response_body_len: Option<u64>,
    anomalies: BTreeSet<String>,
}

fn expected_views(path: &Path) -> Vec<View> {
    let text = std::fs::read_to_string(path).expect("expected file");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("expected line is JSON");
        let mut anomalies: BTreeSet<String> = v["anomalies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if v["unanswered"].as_bool() == Some(true) {
            anomalies.insert("unanswered".into());
        }
        let status = v["status"].as_u64();
        let target = v["target"].as_str().unwrap_or_default().to_string();
        out.push(View {
            method: v["method"].as_str().unwrap_or_default().to_string(),
            raw_target: v["raw_target"]
                .as_str()
                .map_or_else(|| target.clone(), String::from),
            target,
            status,
            request_body_len: v["request_body_len"].as_u64().unwrap_or(0),
            response_body_len: status.map(|_| v["response_body_len"].as_u64().unwrap_or(0)),
            anomalies,
        });
    }
    out
}

fn actual_views(jsonl: &str) -> Vec<View> {
    jsonl
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("exchange line is JSON");
            let anomalies = v["anomalies"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, b)| b.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            let target = v["request"]["target"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            View {
                method: v["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                raw_target: v["request"]["raw_target"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                    .map_or_else(|| target.clone(), String::from),
                target,
                status: v["response"]["status"].as_u64(),
                request_body_len: v["request"]["body"]["decoded_len"].as_u64().unwrap_or(0),
                response_body_len: v["response"]["body"]["decoded_len"].as_u64(),
                anomalies,
            }
        })
        .collect()
}

/// Every capture under fixtures/ that has an expected file, with that file.
fn fixtures_with_expectations() -> Vec<(PathBuf, PathBuf)> {
    let fx = root().join("fixtures");
    let mut out = Vec::new();
    for sub in ["real", "synth"] {
        let Ok(rd) = std::fs::read_dir(fx.join(sub)) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let stem = name
                .trim_end_matches(".gz")
                .trim_end_matches(".pcapng")
                .trim_end_matches(".pcap")
                .to_string();
            let exp = fx.join("expected").join(format!("{stem}.jsonl"));
            if exp.exists() {
                out.push((p, exp));
            }
        }
    }
    out
}

fn run_views(input: &Path, extra: &[&str]) -> (Output, Vec<View>) {
    // Tests run in parallel: every call writes its own file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_dir("e2e-views");
    let name = input.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let out_path = dir.path().join(format!("{name}.{n}.jsonl"));
    let mut args = vec![
        input.to_str().expect("utf-8 path"),
        "--json",
        "--exchanges",
        out_path.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = analyze(&args);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (out, actual_views(&text))
}

#[test]
fn every_fixture_gives_its_expected_exchanges() {
    let cases = fixtures_with_expectations();
    assert!(cases.len() >= 10, "fixtures missing: found {}", cases.len());
    let mut failures = Vec::new();
    for (pcap, exp) in &cases {
        let (out, mut actual) = run_views(pcap, &[]);
        // Where counters matter, `<name>.counters.json` states their bounds.
        let counters = exp.with_extension("counters.json");
        if let Ok(text) = std::fs::read_to_string(&counters) {
            let want: Value = serde_json::from_str(&text).expect("counters file is JSON");
            let got: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let min = want["parse_errors_min"].as_u64().unwrap_or(0);
            if got["parse_errors"].as_u64().unwrap_or(0) < min {
                failures.push(format!(
                    "{}: parse_errors below {min}: {}",
                    pcap.display(),
                    got["parse_errors"]
                ));
            }
            // Exact values of HTTP counters (`counters.http.NAME` in the summary).
            if let Some(http) = want["http"].as_object() {
                for (name, n) in http {
                    let have = &got["counters"]["http"][name];
                    if have != n {
                        failures.push(format!(
                            "{}: counter http.{name} is {have}, expected {n}",
                            pcap.display()
                        ));
                    }
                }
            }
            if let Some(n) = want["exchanges"].as_u64() {
                if got["exchanges"].as_u64() != Some(n) {
                    failures.push(format!(
                        "{}: exchanges {} != {n}",
                        pcap.display(),
                        got["exchanges"]
                    ));
                }
            }
        }
        if !out.status.success() {
            failures.push(format!(
                "{}: exit {:?}: {}",
                pcap.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let mut expected = expected_views(exp);
        actual.sort();
        expected.sort();
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected {expected:#?}\n  actual   {actual:#?}",
                pcap.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_directory_of_rotated_files_reads_as_one_capture() {
    let dir = root().join("fixtures/real/rotated");
    let exp = root().join("fixtures/expected/rotated.jsonl");
    assert!(dir.is_dir() && exp.exists(), "rotation fixture missing");
    let (out, mut actual) = run_views(&dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = expected_views(&exp);
    actual.sort();
    expected.sort();
    assert_eq!(actual, expected);
}

#[test]
fn json_summary_has_the_headline_counters() {
    let pcap = root().join("fixtures/real/curl_keepalive.pcap");
    let out = analyze(&[pcap.to_str().expect("path"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    for key in [
        "packets",
        "bytes",
        "flows",
        "exchanges",
        "unanswered",
        "gaps",
        "retransmits",
        "parse_errors",
        "evictions",
        "throughput_mb_per_s",
        "packets_per_s",
        "exchanges_per_s",
    ] {
        assert!(v.get(key).is_some(), "summary lacks {key}: {v}");
    }
    assert!(v["packets"].as_u64().unwrap_or(0) > 0);
    assert!(v["exchanges"].as_u64().unwrap_or(0) > 0);
    assert_eq!(v["gaps"].as_u64(), Some(0));
}

#[test]
fn table_summary_is_readable() {
    let pcap = root().join("fixtures/real/curl_keepalive.pcap");
    let out = analyze(&[pcap.to_str().expect("path")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "packets",
        "tcp flows",
        "http exchanges",
        "unanswered",
        "gaps",
        "throughput",
    ] {
        assert!(text.contains(label), "table lacks {label}:\n{text}");
    }
}

#[test]
fn gzip_capture_equals_plain() {
    let plain = root().join("fixtures/real/curl_keepalive.pcap");
    let gz = root().join("fixtures/real/curl_keepalive.pcap.gz");
    let (_, mut a) = run_views(&plain, &[]);
    let (out, mut b) = run_views(&gz, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.sort();
    b.sort();
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn port_any_finds_the_same_exchanges() {
    let pcap = root().join("fixtures/real/curl_methods.pcap");
    let (_, mut a) = run_views(&pcap, &[]);
    let (out, mut b) = run_views(&pcap, &["--port", "any"]);
    assert!(out.status.success());
    a.sort();
    b.sort();
    assert!(!a.is_empty());
    assert_eq!(a, b);
    // And a port nobody used finds nothing.
    let (_, c) = run_views(&pcap, &["--port", "8080"]);
    assert!(c.is_empty());
}

#[test]
fn bad_inputs_get_distinct_exit_codes_and_clear_messages() {
    let dir = temp_dir("e2e-bad");
    let missing = dir.path().join("nope.pcap");
    let out = analyze(&[missing.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"GET / HTTP/1.1\r\nthis is no capture\r\n").expect("write");
    let out = analyze(&[garbage.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap"));

    let out = analyze(&["--port", "99999", garbage.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));

    // Truncated last record: a warning, exit 0, everything before it kept.
    let src = std::fs::read(root().join("fixtures/real/curl_keepalive.pcap")).expect("fixture");
    let truncated = dir.path().join("truncated.pcap");
    std::fs::write(&truncated, &src[..src.len() - 7]).expect("write");
    let (out, views) = run_views(&truncated, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    let warnings = summary["warnings"].to_string();
    assert!(warnings.contains("truncated"), "{warnings}");
    let (_, full) = run_views(&root().join("fixtures/real/curl_keepalive.pcap"), &[]);
    assert!(views.len() + 1 >= full.len() && !views.is_empty());

    // Corrupt record in the middle: distinct exit code, summary still printed.
    let mut corrupt = src.clone();
    let mid = 24 + 16 + 200;
    if corrupt.len() > mid + 16 {
        // Overwrite a region with a record header claiming 2 GiB.
        let at = first_record_after(&src, mid);
        corrupt[at + 8..at + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        corrupt[at + 12..at + 16].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    }
    let bad = dir.path().join("corrupt.pcap");
    std::fs::write(&bad, &corrupt).expect("write");
    let out = analyze(&[bad.to_str().expect("path"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary still printed");
    assert!(summary["packets"].as_u64().unwrap_or(0) > 0);
}

/// Offset of the first classic-pcap record header at or after `min`.
fn first_record_after(pcap: &[u8], min: usize) -> usize {
    let mut at = 24;
    while at + 16 <= pcap.len() {
        if at >= min {
            return at;
        }
        let caplen = u32::from_le_bytes([pcap[at + 8], pcap[at + 9], pcap[at + 10], pcap[at + 11]]);
        at += 16 + caplen as usize;
    }
    24
}

/// `1700000000.123456000` -> nanoseconds.
fn epoch_ns(s: &str) -> u64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    secs.parse::<u64>().unwrap_or(0) * 1_000_000_000 + frac.parse::<u64>().unwrap_or(0)
}

/// (request time, method, target, status) of each exchange as tshark pairs them.
fn tshark_sequence(pcap: &Path) -> Option<Vec<(u64, String, String, String)>> {
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str()?, "-n", "-d", "tcp.port==5555,http"])
        .args(["-o", "tcp.reassemble_out_of_order:TRUE"])
        .args(["-Y", "http", "-T", "fields", "-E", "separator=\t"])
        .args([
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
        ])
        .args(["-e", "http.response.code", "-e", "http.request_in"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut requests: std::collections::BTreeMap<String, (u64, String, String, String)> =
        Default::default();
    let mut order = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 6 {
            continue;
        }
        let ts = epoch_ns(f[1]);
        if !f[2].is_empty() {
            // A frame may carry several pipelined requests (comma-separated).
            for (m, u) in f[2].split(',').zip(f[3].split(',')) {
                let key = format!("{}#{}", f[0], order.len());
                requests.insert(
                    key.clone(),
                    (ts, m.to_string(), u.to_string(), String::new()),
                );
                order.push((f[0].to_string(), key));
            }
        }
        if !f[4].is_empty() {
            for (code, req_frame) in f[4].split(',').zip(f[5].split(',')) {
                // Fill the first request of that frame still without a status.
                if let Some((_, key)) = order
                    .iter()
                    .find(|(fr, k)| fr == req_frame && requests[k].3.is_empty())
                {
                    if let Some(r) = requests.get_mut(key) {
                        r.3 = code.to_string();
                    }
                }
            }
        }
    }
    Some(order.iter().map(|(_, k)| requests[k].clone()).collect())
}

#[test]
fn tshark_agrees_on_method_target_status() {
    if Command::new("tshark").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("STOA_TAP_SKIP_TSHARK").is_some(),
            "tshark is not installed (run tests/run-all.sh, or set STOA_TAP_SKIP_TSHARK=1)"
        );
        return;
    }
    // Captures tshark dissects correctly: real recordings without gaps or
    // protocol switches. (Not pipeline.pcap: tshark pairs every pipelined
    // response with the last request of the batch.)
    let names = [
        "curl_keepalive.pcap",
        "curl_methods.pcap",
        "curl_chunked_gzip.pcap",
        "curl_expect100.pcap",
        "wrk_short.pcap",
        "ipv6_curl.pcap",
    ];
    let mut compared = 0;
    for name in names {
        let pcap = root().join("fixtures/real").join(name);
        let mut seq = tshark_sequence(&pcap).expect("tshark ran");
        // Same order on both sides: request time, then the fields (for ties).
        seq.sort();
        let dir = temp_dir("e2e-tshark");
        let out_path = dir.path().join(format!("{name}.jsonl"));
        let out = analyze(&[
            pcap.to_str().expect("path"),
            "--exchanges",
            out_path.to_str().expect("path"),
        ]);
        assert!(out.status.success());
        let text = std::fs::read_to_string(&out_path).expect("exchanges");
        let mut ours: Vec<(u64, String, String, String)> = text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                (
                    // tshark reports a request on the frame that completes it.
                    v["timing"]["request_last_ns"].as_u64().unwrap_or(0),
                    v["request"]["method"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["request"]["target"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["response"]["status"]
                        .as_u64()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        ours.sort();
        let ours: Vec<_> = ours.into_iter().map(|(_, m, t, s)| (m, t, s)).collect();
        let seq: Vec<_> = seq.into_iter().map(|(_, m, t, s)| (m, t, s)).collect();
        assert!(!seq.is_empty(), "{name}: tshark saw no HTTP");
        assert_eq!(ours, seq, "{name}: stoa-tap and tshark disagree");
        compared += seq.len();
    }
    assert!(compared > 20, "too few exchanges compared: {compared}");
}

/// The HTTP edge-case fixtures (recorded against Python's http.server, nginx
/// and a strict server, plus the synthesised reordering and gap cases), one
/// row per expected exchange: found or not, and whether method, raw target
/// and status match. Printed for the record (`--nocapture`); every row must
/// match. The last column is what tshark shows for the same request line.
#[test]
fn edge_case_table() {
    let fixtures = [
        ("real", "edge_stdlib"),
        ("real", "edge_nginx"),
        ("real", "edge_strict"),
        ("synth", "tcp_reorder_status"),
        ("synth", "tcp_gap_body_status"),
        ("synth", "tcp_gap_resync"),
        ("synth", "http_hostile"),
        ("synth", "http_connect"),
    ];
    let tshark = Command::new("tshark").arg("--version").output().is_ok();
    let mut rows = vec![format!(
        "{:<20} {:<18} {:<9} {:<42} {:>4}/{:<4} {:<5} {:<6} {:<6} {:<6} tshark",
        "fixture",
        "case",
        "method",
        "raw target",
        "exp",
        "got",
        "found",
        "method",
        "target",
        "status"
    )];
    let (mut total, mut matched) = (0, 0);
    for (dir, name) in fixtures {
        let pcap = root()
            .join("fixtures")
            .join(dir)
            .join(format!("{name}.pcap"));
        let exp_path = root()
            .join("fixtures/expected")
            .join(format!("{name}.jsonl"));
        let expected = expected_views(&exp_path);
        let cases: Vec<String> = std::fs::read_to_string(&exp_path)
            .expect("expected file")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(k, l)| {
                let v: Value = serde_json::from_str(l).expect("json");
                v["case"]
                    .as_str()
                    .map_or_else(|| format!("#{}", k + 1), String::from)
            })
            .collect();
        let (out, actual) = run_views(&pcap, &[]);
        assert!(out.status.success(), "{name}: analyze failed");
        let seen = if tshark {
            tshark_sequence(&pcap).unwrap_or_default()
        } else {
            Vec::new()
        };
        // Expected exchanges are in request order; find each one among ours
        // (same method and raw target, first unused).
        let mut used = vec![false; actual.len()];
        for (e, case) in expected.iter().zip(&cases) {
            total += 1;
            let hit = actual.iter().enumerate().position(|(k, a)| {
                !used[k] && a.method == e.method && a.raw_target == e.raw_target
            });
            let (found, m, t, s) = match hit {
                Some(k) => {
                    used[k] = true;
                    let a = &actual[k];
                    (
                        true,
                        a.method == e.method,
                        a.target == e.target,
                        a.status == e.status,
                    )
                }
                None => (false, false, false, false),
            };
            if found && m && t && s {
                matched += 1;
            }
            let ts = seen
                .iter()
                .find(|(_, m, u, _)| *m == e.method && *u == e.raw_target)
                .map_or_else(
                    || "-".to_string(),
                    |(_, _, _, st)| {
                        if st.is_empty() {
                            "no status".into()
                        } else {
                            st.clone()
                        }
                    },
                );
            let yn = |b: bool| if b { "yes" } else { "NO" };
            let shown: String = e.raw_target.chars().take(42).collect();
            rows.push(format!(
                "{:<20} {:<18} {:<9} {:<42} {:>4}/{:<4} {:<5} {:<6} {:<6} {:<6} {}",
                name,
                case,
                e.method,
                shown,
                e.status.map_or_else(|| "-".into(), |s| s.to_string()),
                hit.and_then(|k| actual[k].status)
                    .map_or_else(|| "-".into(), |s| s.to_string()),
                yn(found),
                yn(m),
                yn(t),
                yn(s),
                ts
            ));
        }
        rows.push(format!(
            "{:<20} exchanges expected {} found {}",
            name,
            expected.len(),
            actual.len()
        ));
    }
    println!("{}", rows.join("\n"));
    println!("{matched} of {total} expected exchanges matched on method, target and status");
    assert_eq!(matched, total, "{}", rows.join("\n"));
}

/// Every file of the directory tree `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read output"));
            }
        }
    }
    out
}

#[test]
fn learning_alone_learns_the_same_as_with_every_response_field() {
    // Without --exchanges only the response fields the learner reads are
    // kept (content-type); with it, every one. The contracts and the
    // observations must be byte-identical, on captures of different shapes:
    // two generated APIs, three real servers' edge cases, hostile input,
    // gzip and chunked bodies.
    let tmp = temp_dir("analyze-fields");
    let dir = tmp.path();
    let mut dated = 0;
    for name in [
        "real/fidelity.pcap",
        "unseen/bank/traffic.pcap.gz",
        "unseen/travel/traffic.pcap.gz",
        "real/edge_nginx.pcap",
        "real/edge_stdlib.pcap",
        "real/edge_strict.pcap",
        "real/curl_chunked_gzip.pcap",
        "synth/http_hostile.pcap",
    ] {
        let input = root().join("fixtures").join(name);
        let (lean, full) = (dir.join("lean"), dir.join("full"));
        let _ = std::fs::remove_dir_all(&lean);
        let _ = std::fs::remove_dir_all(&full);
        let input_s = input.to_str().unwrap_or_default();
        let a = analyze(&[
            input_s,
            "--port",
            "any",
            "--out",
            lean.to_str().unwrap_or_default(),
        ]);
        let jsonl = dir.join("x.jsonl");
        let b = analyze(&[
            input_s,
            "--port",
            "any",
            "--out",
            full.to_str().unwrap_or_default(),
            "--exchanges",
            jsonl.to_str().unwrap_or_default(),
        ]);
        assert!(a.status.success() && b.status.success(), "{name}");
        let written = std::fs::read_to_string(&jsonl).expect("exchanges");
        assert!(written.lines().count() > 0, "{name}: no exchange");
        dated += usize::from(written.contains("\"Date\""));
        let (t_lean, t_full) = (tree(&lean), tree(&full));
        assert!(
            t_lean.contains_key(Path::new("observations.json")),
            "{name}"
        );
        assert_eq!(
            t_lean.keys().collect::<Vec<_>>(),
            t_full.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, v) in &t_lean {
            assert!(t_full.get(k) == Some(v), "{name}: {} differs", k.display());
        }
    }
    // The written exchanges do carry fields the learner was spared.
    assert!(dated >= 6, "{dated} captures with a Date field");
}
