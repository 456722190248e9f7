//! Observations written in format 1 (fixtures/observations/v1, written by
//! the version before histograms moved to HdrHistogram) still load, merge,
//! and report the statistics they reported then, within the precision the
//! conversion documents (`contracts::stats::Histogram`).

use contracts::{InferenceConfig, Observations, FORMAT_VERSION};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn v1_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/observations/v1")
}

fn read(name: &str) -> String {
    let p = v1_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load(name: &str) -> Observations {
    Observations::from_json(&read(&format!("{name}.json"))).expect("format 1 loads")
}

/// `METHOD path` -> `x-stoa-stats`, from the combined OpenAPI document (as
/// `analyze --out` writes openapi.json).
fn stats(obs: &Observations) -> BTreeMap<String, Value> {
    let cfg = InferenceConfig::default();
    let docs = contracts::openapi::emit(obs, &cfg);
    let combined = contracts::openapi::combine(&docs, &cfg);
    let doc: Value = serde_json::from_str(&combined.to_json()).expect("openapi json");
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            if let Some(s) = op.get("x-stoa-stats") {
                out.insert(format!("{} {path}", method.to_uppercase()), s.clone());
            }
        }
    }
    out
}

/// Compares today's statistics with those format 1 reported: counts, min,
/// max and mean exact; quantiles at or up to one new bucket above the old
/// report (`rel`), plus the 0.001 rounding of the figures.
fn assert_close(name: &str, now: &BTreeMap<String, Value>) -> usize {
    let then: BTreeMap<String, Value> =
        serde_json::from_str(&read(&format!("{name}.stats.json"))).expect("stats json");
    assert_eq!(
        then.keys().collect::<Vec<_>>(),
        now.keys().collect::<Vec<_>>(),
        "{name}: operations"
    );
    let mut compared = 0;
    for (op, old) in &then {
        let new = &now[op];
        assert_eq!(old["count"], new["count"], "{name} {op}");
        for (dist, rel) in [
            ("latency", 1.0 / 128.0),
            ("request_bytes", 1.0 / 16.0),
            ("response_bytes", 1.0 / 16.0),
        ] {
            let (o, n) = (&old[dist], &new[dist]);
            if o.is_null() {
                assert!(n.is_null(), "{name} {op} {dist}: {n}");
                continue;
            }
            for k in ["count", "min", "max", "mean"] {
                assert_eq!(o[k], n[k], "{name} {op} {dist}.{k}");
            }
            for k in ["p50", "p90", "p99", "p999"] {
                let (a, b) = (
                    o[k].as_f64().expect("old figure"),
                    n[k].as_f64().expect("new figure"),
                );
                assert!(
                    b >= a - 0.001 && b <= a * (1.0 + rel) + 0.001,
                    "{name} {op} {dist}.{k}: {a} then, {b} now"
                );
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn format_1_snapshots_load_and_report_what_they_reported() {
    for name in ["wrk_short", "bundle_baseline", "bundle_drift"] {
        let obs = load(name);
        assert_eq!(obs.format_version, FORMAT_VERSION);
        let compared = assert_close(name, &stats(&obs));
        assert!(compared > 0, "{name}: nothing compared");
        // Written back in the current format, it reads back identically.
        let text = obs.to_json();
        assert!(text.contains(&format!("\"format_version\":{FORMAT_VERSION}")));
        assert!(
            !text.contains("\"bits\""),
            "format 1 histograms written back"
        );
        let again = Observations::from_json(&text).expect("current format loads");
        assert_eq!(again.to_json(), text, "{name}: round trip");
    }
}

#[test]
fn format_1_snapshots_merge_in_any_order_and_with_format_2() {
    let (a, b) = (load("bundle_baseline"), load("bundle_drift"));
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab.to_json(), ba.to_json(), "merge order");
    assert_eq!(ab.exchanges(), a.exchanges() + b.exchanges());
    // One side already rewritten in format 2: the same result.
    let b2 = Observations::from_json(&b.to_json()).expect("format 2");
    let mut ab2 = a.clone();
    ab2.merge(&b2);
    assert_eq!(ab2.to_json(), ab.to_json(), "format 1 + format 2");
    // And what `merge` reported from the two format-1 files then.
    assert!(assert_close("bundle_merged", &stats(&ab)) > 0);
}

#[test]
fn format_1_histograms_are_smaller_or_close_in_format_2() {
    // Compactness: the snapshot rewritten in format 2 is not larger than
    // 1.25 times the format-1 file (dense latency buckets shrink, sparse
    // ones carry the V2 header).
    for name in ["wrk_short", "bundle_baseline", "bundle_drift"] {
        let old = read(&format!("{name}.json"));
        let new = load(name).to_json();
        assert!(
            new.len() * 4 <= old.len() * 5,
            "{name}: {} bytes then, {} now",
            old.len(),
            new.len()
        );
    }
}
