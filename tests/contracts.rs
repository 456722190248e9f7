//! End-to-end tests of contract learning: `analyze --out`, `merge`, `diff`
//! on the fidelity fixture (a real server with a declared OpenAPI spec,
//! recorded with tcpdump).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use stoa_tap::decode::decode_tcp;
use stoa_tap::source::pcap_file::Capture;

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

fn fidelity_pcap() -> PathBuf {
    root().join("fixtures/real/fidelity.pcap")
}

fn declared() -> PathBuf {
    root().join("fixtures/fidelity/declared-openapi.yaml")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stoa-tap")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `analyze --out DIR` on the given inputs; returns stdout.
fn learn(inputs: &[&Path], dir: &Path) -> String {
    let mut args = vec!["analyze", "--no-progress", "--out", s(dir)];
    args.extend(inputs.iter().map(|p| s(p)));
    let out = run(&args);
    ok(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn inferred_spec_scores_against_the_declared_one() {
    let dir = temp_dir("contracts-fidelity");
    let table = learn(&[&fidelity_pcap()], dir.path());
    assert!(
        table.contains("/api/v1/users/{userId}"),
        "endpoint table:\n{table}"
    );
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("tests/fidelity/score.py"))
        .arg(declared())
        .arg(dir.path().join("openapi.json"))
        .arg("--json")
        .output()
        .expect("python3 runs the scorer (tests/run-all.sh installs python3-yaml)");
    ok(&out);
    let score: Value = serde_json::from_slice(&out.stdout).expect("score JSON");
    println!("fidelity score: {score}");
    for (kind, min) in [("paths", 0.95), ("operations", 0.95), ("properties", 0.9)] {
        for m in ["precision", "recall"] {
            let v = score[kind][m].as_f64().unwrap_or(0.0);
            assert!(v >= min, "{kind} {m} = {v} < {min}: {score}");
        }
    }
}

/// Scores of `analyze --out` on a capture against a declared spec.
fn score_against(capture: &Path, declared: &Path, name: &str) -> Value {
    let dir = temp_dir(name);
    learn(&[capture], dir.path());
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("tests/fidelity/score.py"))
        .arg(declared)
        .arg(dir.path().join("openapi.json"))
        .arg("--json")
        .output()
        .expect("python3 runs the scorer");
    ok(&out);
    serde_json::from_slice(&out.stdout).expect("score JSON")
}

/// (method, status) -> exchanges, from JSON lines with `method` and `status`
/// at the top level or under `request`/`response`.
fn method_status_counts(jsonl: &str) -> std::collections::BTreeMap<(String, i64), u64> {
    let mut m = std::collections::BTreeMap::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        let method = v["method"]
            .as_str()
            .or_else(|| v["request"]["method"].as_str())
            .unwrap_or("")
            .to_string();
        let status = v["status"]
            .as_i64()
            .or_else(|| v["response"]["status"].as_i64())
            .unwrap_or(-1);
        *m.entry((method, status)).or_insert(0) += 1;
    }
    m
}

/// Two APIs the inference rules were not written against (fixtures/unseen/):
/// a bank with currency, country, branch and product codes in its paths, and a
/// travel API with airport and carrier codes, lower-case language and country
/// codes, locales, PNRs, versioned paths, a SOAP service and sparse errors.
/// Both keep literal siblings (`/accounts/summary`, `/customers/me`,
/// `/fx/rates/latest`, `/v2/airports/nearby`, `/v3/loyalty/members/me`).
#[test]
fn unseen_apis_score_against_their_declared_specs() {
    let mut report = String::new();
    for api in ["bank", "travel"] {
        let dir = root().join("fixtures/unseen").join(api);
        let score = score_against(
            &dir.join("traffic.pcap.gz"),
            &dir.join("declared-openapi.yaml"),
            &format!("contracts-unseen-{api}"),
        );
        // Every exchange the server logged is found, with its method and status.
        let expected = {
            use std::io::Read;
            let f = std::fs::File::open(dir.join("expected-exchanges.jsonl.gz")).expect("truth");
            let mut text = String::new();
            flate2::read::GzDecoder::new(f)
                .read_to_string(&mut text)
                .expect("gzip");
            method_status_counts(&text)
        };
        let out = run(&[
            "analyze",
            "--no-progress",
            "--exchanges",
            "-",
            s(&dir.join("traffic.pcap.gz")),
        ]);
        ok(&out);
        let found = method_status_counts(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(found, expected, "{api}: exchanges by method and status");
        for kind in [
            "paths",
            "operations",
            "properties",
            "responses",
            "query_params",
        ] {
            report.push_str(&format!(
                "{api:7} {kind:13} precision {:.3} recall {:.3}\n",
                score[kind]["precision"].as_f64().unwrap_or(0.0),
                score[kind]["recall"].as_f64().unwrap_or(0.0)
            ));
        }
        for (kind, min) in [
            ("paths", 0.95),
            ("operations", 0.95),
            ("responses", 0.95),
            ("query_params", 0.95),
            ("properties", 0.9),
        ] {
            for m in ["precision", "recall"] {
                let v = score[kind][m].as_f64().unwrap_or(0.0);
                assert!(v >= min, "{api}: {kind} {m} = {v} < {min}: {score}");
            }
        }
    }
    println!("{report}");
}

#[test]
fn emitted_documents_pass_third_party_validators() {
    let dir = temp_dir("contracts-validators");
    learn(&[&fidelity_pcap()], dir.path());
    let mut specs = vec![
        dir.path().join("openapi.yaml"),
        dir.path().join("openapi.json"),
    ];
    for e in std::fs::read_dir(dir.path().join("openapi"))
        .expect("openapi dir")
        .flatten()
    {
        specs.push(e.path());
    }
    assert!(specs.len() >= 4, "{specs:?}");
    for spec in &specs {
        let out = Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(spec)
            .output()
            .expect("openapi-spec-validator (installed by tests/run-all.sh)");
        ok(&out);
    }
    // UAC drafts against the STOA schema (draft 2020-12).
    let schema = root().join("contracts/schemas/uac-contract-v1.schema.json");
    let uacs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("uac"))
        .expect("uac dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(uacs.len() >= 3, "one UAC per API: {uacs:?}");
    let script = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1]))\n\
        v=jsonschema.Draft202012Validator(schema)\n\
        bad=0\n\
        for p in sys.argv[2:]:\n\
        \x20   errs=list(v.iter_errors(json.load(open(p))))\n\
        \x20   for e in errs: print(p, e.message)\n\
        \x20   bad+=len(errs)\n\
        sys.exit(1 if bad else 0)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .args(&uacs)
        .output()
        .expect("python jsonschema");
    ok(&out);
}

#[test]
fn no_secret_from_the_traffic_appears_in_any_output() {
    let dir = temp_dir("contracts-secrets");
    let exchanges = dir.path().join("exchanges.jsonl");
    let out = run(&[
        "analyze",
        "--no-progress",
        "--out",
        s(&dir.path().join("out")),
        "--exchanges",
        s(&exchanges),
        s(&fidelity_pcap()),
    ]);
    ok(&out);
    let json_summary = run(&["analyze", "--no-progress", "--json", s(&fidelity_pcap())]);
    ok(&json_summary);
    let diff = run(&[
        "diff",
        "--no-progress",
        "--spec",
        s(&declared()),
        s(&fidelity_pcap()),
    ]);
    let mut outputs: Vec<(String, Vec<u8>)> = tree(dir.path()).into_iter().collect();
    outputs.push(("analyze stdout".into(), out.stdout.clone()));
    outputs.push(("analyze stderr".into(), out.stderr.clone()));
    outputs.push(("analyze --json".into(), json_summary.stdout.clone()));
    outputs.push(("diff".into(), diff.stdout.clone()));
    let secrets = std::fs::read_to_string(root().join("fixtures/fidelity/secrets.txt"))
        .expect("secrets list");
    let secrets: Vec<&str> = secrets
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 6)
        .collect();
    assert!(secrets.len() > 100, "secrets list too short");
    // The exchanges file must exist and carry the traffic (redacted).
    assert!(std::fs::metadata(&exchanges).map(|m| m.len()).unwrap_or(0) > 100_000);
    let mut leaks = Vec::new();
    for (name, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            if text.contains(secret) {
                leaks.push(format!("{name}: {secret}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// Splits a capture into two by connection (alternating), as two taps would see it.
fn split_by_connection(src: &Path, a: &Path, b: &Path) {
    fn header() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&262_144u32.to_le_bytes());
        v.extend_from_slice(&[0; 4]); // link type, set below
        v
    }
    let mut files = [header(), header()];
    let mut linktype = None;
    let mut sides: std::collections::HashMap<u16, usize> = Default::default();
    let mut cap = Capture::open(&[src.to_path_buf()]).expect("open fixture");
    while let Some(()) = cap
        .next_with(|p| {
            linktype.get_or_insert(p.linktype);
            let side = match decode_tcp(p.linktype, p.data) {
                Ok(seg) => {
                    let client_port = if seg.dst.port() == 5555 {
                        seg.src.port()
                    } else {
                        seg.dst.port()
                    };
                    // Connections alternate between the two taps in order of appearance.
                    let n = sides.len();
                    *sides.entry(client_port).or_insert(n % 2)
                }
                Err(_) => 0,
            };
            let f = &mut files[side];
            let secs = (p.ts_ns / 1_000_000_000) as u32;
            let usecs = ((p.ts_ns % 1_000_000_000) / 1000) as u32;
            f.extend_from_slice(&secs.to_le_bytes());
            f.extend_from_slice(&usecs.to_le_bytes());
            f.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
            f.extend_from_slice(&p.orig_len.to_le_bytes());
            f.extend_from_slice(p.data);
        })
        .expect("read fixture")
    {}
    let lt = linktype.expect("packets");
    for f in &mut files {
        f[20..24].copy_from_slice(&lt.to_le_bytes());
    }
    std::fs::write(a, &files[0]).expect("write a");
    std::fs::write(b, &files[1]).expect("write b");
}

#[test]
fn split_and_merged_inputs_give_byte_identical_documents() {
    let tmp = temp_dir("contracts-merge");
    let base = tmp.path();
    let (a, b) = (base.join("a.pcap"), base.join("b.pcap"));
    split_by_connection(&fidelity_pcap(), &a, &b);
    assert!(std::fs::metadata(&a).expect("a").len() > 100_000);
    assert!(std::fs::metadata(&b).expect("b").len() > 100_000);

    let whole = base.join("whole");
    learn(&[&fidelity_pcap()], &whole);
    let both = base.join("both");
    learn(&[&b, &a], &both);
    let (da, db) = (base.join("da"), base.join("db"));
    learn(&[&a], &da);
    learn(&[&b], &db);

    let merged_ab = base.join("merged-ab");
    let merged_ba = base.join("merged-ba");
    for (dir, first, second) in [(&merged_ab, &da, &db), (&merged_ba, &db, &da)] {
        let out = run(&[
            "merge",
            s(&first.join("observations.json")),
            s(&second.join("observations.json")),
            "-o",
            s(&dir.with_extension("json")),
            "--out",
            s(dir),
        ]);
        ok(&out);
    }
    let reference = tree(&whole);
    assert!(
        reference.contains_key("openapi.yaml") && reference.keys().any(|k| k.starts_with("uac/"))
    );
    for (name, dir) in [
        ("both files", &both),
        ("merge a+b", &merged_ab),
        ("merge b+a", &merged_ba),
    ] {
        let got = tree(dir);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "{name}: different files"
        );
        for (file, bytes) in &reference {
            assert!(
                got[file] == *bytes,
                "{name}: {file} differs from the single run"
            );
        }
    }
    // Merging a snapshot with itself doubles counts but changes no structure.
    let again = run(&[
        "merge",
        s(&whole.join("observations.json")),
        s(&whole.join("observations.json")),
        "-o",
        s(&base.join("twice.json")),
    ]);
    ok(&again);
}

#[test]
fn diff_reports_drift_against_a_declared_spec() {
    // The declared spec describes the traffic: no drift, exit 0.
    let out = run(&[
        "diff",
        "--no-progress",
        "--spec",
        s(&declared()),
        s(&fidelity_pcap()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Remove two declared paths no other template covers: they become
    // undocumented endpoints (exit 7).
    let spec = std::fs::read_to_string(declared()).expect("spec");
    let mut cut: serde_json::Value = serde_yaml_from(&spec);
    let paths = cut["paths"].as_object_mut().expect("paths");
    let removed: Vec<String> = paths
        .keys()
        .filter(|k| k.ends_with("/health") || k.contains("warehouses"))
        .cloned()
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    for k in &removed {
        paths.remove(k);
    }
    let dir = temp_dir("contracts-diff");
    let cut_path = dir.path().join("cut.json");
    std::fs::write(&cut_path, serde_json::to_vec(&cut).expect("json")).expect("write");
    let out = run(&[
        "diff",
        "--no-progress",
        "--json",
        "--spec",
        s(&cut_path),
        s(&fidelity_pcap()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    assert_eq!(
        report["summary"]["undocumented_endpoints"].as_u64(),
        Some(2),
        "{report}"
    );
    // A text report names them.
    let out = run(&[
        "diff",
        "--no-progress",
        "--spec",
        s(&cut_path),
        s(&fidelity_pcap()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/health") && text.contains("warehouses"),
        "{text}"
    );
}

/// YAML -> JSON value through python (PyYAML), the same reader validators use.
fn serde_yaml_from(text: &str) -> Value {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys,yaml,json; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 yaml");
    serde_json::from_slice(&out.stdout).expect("yaml as json")
}

/// `METHOD path` -> latency figures of `x-stoa-stats` in `dir/openapi.json`.
fn latency_stats(dir: &Path) -> Vec<(String, String, Value)> {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("openapi.json")).expect("openapi.json"))
            .expect("openapi json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if let Some(l) = op.get("x-stoa-stats").map(|s| &s["latency"]) {
                if !l.is_null() {
                    out.push((method.to_uppercase(), path.clone(), l.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn histograms_export_an_interval_log_hdrhistogram_tools_read() {
    use contracts::hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use contracts::hdrhistogram::serialization::Deserializer;
    let tmp = temp_dir("contracts-hlog");
    let base = tmp.path();
    let (baseline, drift) = (
        root().join("fixtures/real/bundle_baseline.pcap"),
        root().join("fixtures/real/bundle_drift.pcap"),
    );
    let (da, db) = (base.join("a"), base.join("b"));
    learn(&[&baseline], &da);
    learn(&[&drift], &db);
    let merged = base.join("merged");
    ok(&run(&[
        "merge",
        s(&da.join("observations.json")),
        s(&db.join("observations.json")),
        "-o",
        s(&base.join("merged.json")),
        "--out",
        s(&merged),
    ]));
    // The same log from the learned directory, from the observation files in
    // either order, and from format-1 snapshots of the same captures.
    let v1 = root().join("fixtures/observations/v1");
    let hlog = |name: &str, inputs: &[&Path]| -> Vec<u8> {
        let out_path = base.join(name);
        let mut args = vec!["histograms", "--no-progress", "--hlog", s(&out_path)];
        args.extend(inputs.iter().map(|p| s(p)));
        let out = run(&args);
        ok(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("operation histograms ->"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::fs::read(&out_path).expect("hlog written")
    };
    let log = hlog("dir.hlog", &[&merged]);
    let (a_json, b_json) = (da.join("observations.json"), db.join("observations.json"));
    assert_eq!(log, hlog("ab.hlog", &[&a_json, &b_json]), "a+b");
    assert_eq!(log, hlog("ba.hlog", &[&b_json, &a_json]), "b+a");
    let (v1a, v1b) = (
        v1.join("bundle_baseline.json"),
        v1.join("bundle_drift.json"),
    );
    let from_v1 = hlog("v1.hlog", &[&v1a, &v1b]);
    assert_eq!(
        log.iter().filter(|b| **b == b'\n').count(),
        from_v1.iter().filter(|b| **b == b'\n').count(),
        "format-1 snapshots: same intervals"
    );

    // Read back with the crate's reader: one tagged interval per operation,
    // in start order, holding what the contracts report.
    let stats = latency_stats(&merged);
    assert!(stats.len() >= 4, "{stats:?}");
    let mut base_time = None;
    let mut intervals = Vec::new();
    for e in IntervalLogIterator::new(&log) {
        match e.expect("log entry") {
            LogEntry::BaseTime(t) => base_time = Some(t),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => intervals.push((
                i.tag().expect("tagged").as_str().to_string(),
                i.start_timestamp(),
                i.max(),
                i.encoded_histogram().to_string(),
            )),
        }
    }
    assert!(base_time.is_some_and(|t| t.as_secs() > 1_700_000_000));
    assert_eq!(intervals.len(), stats.len());
    assert!(
        intervals.windows(2).all(|w| w[0].1 <= w[1].1),
        "start order"
    );
    assert_eq!(intervals[0].1.as_nanos(), 0, "BaseTime is the first start");
    let b64 = |t: &str| -> Vec<u8> {
        // Standard base64 without the crate: the log's alphabet.
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in t.bytes().filter(|c| *c != b'=') {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    };
    for (tag, _, max_ms, encoded) in &intervals {
        let mut parts = tag.splitn(3, ':');
        let (_api, method, template) = (
            parts.next().expect("api"),
            parts.next().expect("method"),
            parts.next().expect("template"),
        );
        let matching: Vec<_> = stats
            .iter()
            .filter(|(m, p, _)| m == method && template.ends_with(p.as_str()))
            .collect();
        assert_eq!(matching.len(), 1, "{tag}: {matching:?}");
        let l = &matching[0].2;
        let h: contracts::hdrhistogram::Histogram<u64> = Deserializer::new()
            .deserialize(&mut b64(encoded).as_slice())
            .expect("compressed V2 histogram");
        assert_eq!(Some(h.len()), l["count"].as_u64(), "{tag}");
        let p50 = h.value_at_quantile(0.5) as f64 / 1e6;
        let want = l["p50"].as_f64().expect("p50");
        assert!(
            (p50 - want).abs() <= want / 128.0 + 0.001,
            "{tag}: {p50} vs {want}"
        );
        let max = l["max"].as_f64().expect("max");
        assert!(
            *max_ms >= max - 0.001 && *max_ms <= max * 1.01 + 0.001,
            "{tag}: {max_ms} vs {max}"
        );
    }

    // HdrHistogram's reference tool (Java, libhdrhistogram-java, installed
    // by tests/run-all.sh) reads it: the busiest operation's count and max.
    let busiest = intervals
        .iter()
        .map(|(tag, ..)| tag)
        .max_by_key(|tag| {
            stats
                .iter()
                .find(|(m, p, _)| tag.contains(&format!(":{m}:")) && tag.ends_with(p.as_str()))
                .and_then(|(_, _, l)| l["count"].as_u64())
        })
        .expect("an operation");
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/hdrhistogram.jar"])
        .arg("org.HdrHistogram.HistogramLogProcessor")
        .arg("-i")
        .arg(base.join("dir.hlog"))
        .args(["-tag", busiest])
        .output()
        .expect("java (libhdrhistogram-java, installed by tests/run-all.sh)");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text
        .lines()
        .find_map(|l| l.split("Total count    =").nth(1))
        .and_then(|v| v.trim().trim_end_matches(']').trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no total in HistogramLogProcessor output:\n{text}"));
    let (_, _, l) = stats
        .iter()
        .find(|(m, p, _)| busiest.contains(&format!(":{m}:")) && busiest.ends_with(p.as_str()))
        .expect("busiest stats");
    assert_eq!(Some(total), l["count"].as_u64(), "{text}");
    assert!(total >= 10, "{text}");
}
