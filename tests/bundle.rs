//! `stoa-tap bundle`, `bundle verify` and `bundle apply` end to end: bundles
//! built from committed captures, checked against their JSON Schema,
//! replayed against the traffic they came from and against drifted traffic,
//! and pushed to a real HTTP server that validates like the gateway's admin
//! API (tests/admin_api_server.py).

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{repo, temp_dir};

fn stoa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures/real").join(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run stoa-tap")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

fn validator(schema: &str) -> jsonschema::Validator {
    let schema = read_json(&repo().join(schema));
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `bundle INPUT... -o OUT` with the catalog's upstream name.
fn build_bundle(inputs: &[PathBuf], out: &Path, extra: &[&str]) -> Output {
    run(stoa()
        .arg("bundle")
        .args(inputs)
        .arg("-o")
        .arg(out)
        .args(["--tenant", "acme"])
        .args(extra))
}

fn verify_json(bundle: &Path, capture: &Path, extra: &[&str]) -> (Output, Value) {
    let out = run(stoa()
        .args(["bundle", "verify"])
        .arg(bundle)
        .arg(capture)
        .arg("--json")
        .args(extra));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify JSON: {e}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out, v)
}

/// Would-be blocks by precise reason, summed over the rules.
fn reasons(report: &Value) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for r in report["rules"].as_array().expect("rules") {
        for (k, v) in r["reasons"].as_object().expect("reasons") {
            *m.entry(k.clone()).or_default() += v.as_u64().expect("count");
        }
    }
    m
}

#[test]
fn fidelity_bundle_validates_and_replays_without_blocks() {
    let dir = temp_dir("bundle-fidelity");
    let out = dir.path().join("bundle.json");
    ok(&build_bundle(
        &[fixture("fidelity.pcap")],
        &out,
        &["--backend-url", "http://northwind.internal:5555"],
    ));
    let doc = read_json(&out);

    let v = validator("contracts/schemas/bundle.schema.json");
    let errors = schema_errors(&v, &doc);
    assert!(errors.is_empty(), "bundle vs its schema: {errors:?}");
    let uac = validator("contracts/schemas/uac-contract-v1.schema.json");
    let contracts = doc["contracts"].as_array().expect("contracts");
    assert_eq!(contracts.len(), 3, "one UAC per API");
    for c in contracts {
        let errors = schema_errors(&uac, c);
        assert!(errors.is_empty(), "UAC {}: {errors:?}", c["name"]);
    }

    // The rich capture gives routes with method allowlists, rate limits in
    // both spellings, JWT checks from the tokens seen, and evidence for all.
    let routes = doc["routes"].as_array().expect("routes");
    assert!(routes.len() >= 10, "{} routes", routes.len());
    let users = routes
        .iter()
        .map(|r| &r["route"])
        .find(|r| r["path_prefix"] == "/api/v1/users")
        .expect("users route");
    assert_eq!(
        users["methods"],
        serde_json::json!(["DELETE", "GET", "PATCH", "POST", "PUT"])
    );
    assert_eq!(
        users["backend_url"],
        "http://northwind.internal:5555/api/v1/users"
    );
    let policies = doc["policies"].as_array().expect("policies");
    let rate = policies
        .iter()
        .map(|p| &p["policy"])
        .find(|p| p["api_id"] == users["id"] && p["policy_type"] == "rate_limit")
        .expect("rate limit");
    assert!(rate["config"]["maxRequests"].as_u64().expect("max") >= 1);
    assert!(rate["config"]["requests_per_second"].as_u64().is_some());
    assert!(rate["config"]["intervalSeconds"].as_u64().is_some());
    let jwt = policies
        .iter()
        .map(|p| &p["policy"])
        .find(|p| p["policy_type"] == "jwt_validation")
        .expect("a JWT policy");
    assert!(!jwt["config"]["issuers"]
        .as_array()
        .expect("issuers")
        .is_empty());
    for p in policies {
        let e = &p["evidence"];
        assert!(e["requests"].as_u64().expect("count") > 0, "{p}");
        assert!(e["window"]["first_seen"].is_string(), "{p}");
    }

    // The traffic it came from passes.
    let (vout, report) = verify_json(&out, &fixture("fidelity.pcap"), &[]);
    ok(&vout);
    assert_eq!(report["exchanges"], 926);
    assert_eq!(report["would_block"], 0, "{report:#}");
}

#[test]
fn bundles_are_byte_identical_whatever_the_input_order() {
    let dir = temp_dir("bundle-order");
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let base = fixture("bundle_baseline.pcap");
    let drift = fixture("bundle_drift.pcap");
    ok(&build_bundle(&[base.clone(), drift.clone()], &a, &[]));
    ok(&build_bundle(&[drift, base], &b, &[]));
    let (ta, tb) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert!(ta == tb, "bundles differ with the input order");

    // From observation files: same routes, no CORS (origins are not kept
    // in observations), and a note that says so.
    let obs_dir = dir.path().join("obs");
    ok(&run(stoa()
        .arg("analyze")
        .arg(fixture("bundle_baseline.pcap"))
        .arg("--out")
        .arg(&obs_dir)));
    let c = dir.path().join("c.json");
    ok(&build_bundle(&[obs_dir.join("observations.json")], &c, &[]));
    let doc = read_json(&c);
    assert!(doc["source"]["origins_observed"] == false);
    assert!(!doc["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .any(|p| p["policy"]["policy_type"] == "cors"));
    assert!(doc["notes"].to_string().contains("CORS"));
    assert_eq!(doc["routes"].as_array().expect("routes").len(), 2);
}

#[test]
fn drifted_traffic_is_reported_under_the_right_rules() {
    let dir = temp_dir("bundle-drift");
    let out = dir.path().join("bundle.json");
    ok(&build_bundle(
        &[fixture("bundle_baseline.pcap")],
        &out,
        &["--backend-url", "http://catalog.internal:8080"],
    ));
    let doc = read_json(&out);
    let errors = schema_errors(&validator("contracts/schemas/bundle.schema.json"), &doc);
    assert!(errors.is_empty(), "{errors:?}");

    // Baseline against itself: nothing served would be blocked (the one
    // anonymous request was refused by the server anyway).
    let (vout, report) = verify_json(&out, &fixture("bundle_baseline.pcap"), &[]);
    ok(&vout);
    assert_eq!(report["would_block"], 0, "{report:#}");
    assert_eq!(report["already_refused"], 1);

    // Drift: each change under its own rule.
    let (vout, report) = verify_json(&out, &fixture("bundle_drift.pcap"), &[]);
    assert_eq!(vout.status.code(), Some(7), "{}", text(&vout.stderr));
    let by = reasons(&report);
    for (rule, n) in [
        ("route_not_found", 1),
        ("method_not_allowed", 1),
        ("body_too_large", 1),
        ("jwt_issuer", 1),
        ("cors_origin", 1),
    ] {
        assert_eq!(by.get(rule).copied(), Some(n), "{rule}: {by:?}");
    }
    // 60 reads back to back against a limit of ceil(1.5 x baseline peak).
    let burst = by.get("rate_limited").copied().unwrap_or(0);
    assert!(burst >= 30, "rate_limited {burst}: {by:?}");
    assert_eq!(report["exchanges"], 66);
    assert_eq!(report["would_block"].as_u64(), Some(5 + burst));
    let new_endpoint = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["rule"] == "route_not_found")
        .expect("route rule");
    assert_eq!(new_endpoint["examples"][0]["target"], "/api/v2/exports");
    assert_eq!(new_endpoint["examples"][0]["status"], 200);
    // Examples and reports never carry a credential.
    let all = text(&vout.stdout);
    assert!(!all.contains("eyJ"), "a token leaked into the report");

    // A threshold above the rate passes; the text report names the rules.
    let out_ok = run(stoa()
        .args(["bundle", "verify"])
        .arg(&out)
        .arg(fixture("bundle_drift.pcap"))
        .args(["--max-blocked", "0.9"]));
    ok(&out_ok);
    let t = text(&out_ok.stdout);
    for rule in [
        "route_not_found",
        "rate_limited",
        "body_too_large",
        "cors_origin",
    ] {
        assert!(t.contains(rule), "{rule} missing from:\n{t}");
    }
    let bad = run(stoa()
        .args(["bundle", "verify"])
        .arg(&out)
        .arg(fixture("bundle_drift.pcap"))
        .args(["--max-blocked", "2"]));
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a rate above 1 is a usage error"
    );
}

/// The admin API server, stopped on drop.
struct AdminServer {
    child: Child,
    port: u16,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AdminServer {
    fn start(dir: &Path, token_file: &Path, extra: &[&str]) -> AdminServer {
        let ready = dir.join(format!("ready-{}", extra.len()));
        let child = Command::new("python3")
            .arg(repo().join("tests/admin_api_server.py"))
            .arg("--token-file")
            .arg(token_file)
            .arg("--ready")
            .arg(&ready)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start admin_api_server.py");
        let start = Instant::now();
        let mut server = AdminServer { child, port: 0 };
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(p) = std::fs::read_to_string(&ready) {
                if let Ok(port) = p.trim().parse() {
                    server.port = port;
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("admin API server did not start");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET `path` (with the token when given): status and body.
    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
        (status, body)
    }

    /// POST a raw body with a content type (and the token when given).
    fn post(&self, path: &str, ctype: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
        (status, body)
    }

    /// Both listings, as served (bytes).
    fn state(&self, token: &str) -> String {
        let (s1, apis) = self.get("/admin/apis", Some(token));
        let (s2, policies) = self.get("/admin/policies", Some(token));
        assert_eq!((s1, s2), (200, 200));
        format!("{apis}\n{policies}")
    }

    fn writes(&self) -> u64 {
        let (_, body) = self.get("/health", None);
        let v: Value = serde_json::from_str(&body).expect("health JSON");
        v["writes"].as_u64().expect("writes")
    }
}

fn apply(bundle: &Path, server: &AdminServer, token_file: &Path, extra: &[&str]) -> Output {
    run(stoa()
        .args(["bundle", "apply"])
        .arg(bundle)
        .args(["--admin", &server.url()])
        .arg("--token-file")
        .arg(token_file)
        .args(extra))
}

fn totals(out: &Output) -> Value {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("apply JSON: {e}\n{}", text(&out.stdout)));
    v["totals"].clone()
}

#[test]
fn apply_creates_then_changes_nothing_and_reports_refusals() {
    let dir = temp_dir("bundle-apply");
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-s3cret\n").expect("token");
    let bad_token = dir.path().join("bad-token");
    std::fs::write(&bad_token, "not-the-token\n").expect("token");
    let bundle = dir.path().join("bundle.json");
    ok(&build_bundle(
        &[fixture("bundle_baseline.pcap")],
        &bundle,
        &["--backend-url", "http://catalog.internal:8080"],
    ));
    let doc = read_json(&bundle);
    let n_routes = doc["routes"].as_array().expect("routes").len() as u64;
    let n_policies = doc["policies"].as_array().expect("policies").len() as u64;
    let server = AdminServer::start(dir.path(), &token, &[]);

    // Dry run: prints the requests, sends nothing.
    let dry = run(stoa().args(["bundle", "apply"]).arg(&bundle).args([
        "--admin",
        &server.url(),
        "--dry-run",
    ]));
    ok(&dry);
    assert!(text(&dry.stdout).contains("POST http://127.0.0.1"));
    assert!(text(&dry.stdout).contains("\"maxRequests\""));
    assert_eq!(server.writes(), 0);

    // First apply creates everything.
    let first = apply(&bundle, &server, &token, &["--json"]);
    ok(&first);
    let t = totals(&first);
    assert_eq!(t["route"]["created"].as_u64(), Some(n_routes), "{t}");
    assert_eq!(t["policy"]["created"].as_u64(), Some(n_policies), "{t}");
    let state = server.state("admin-s3cret");
    let listed: Value =
        serde_json::from_str(state.split('\n').next().expect("apis")).expect("apis");
    assert_eq!(listed.as_array().map(Vec::len), Some(n_routes as usize));
    assert_eq!(listed[0]["tenant_id"], "acme");
    let writes = server.writes();
    assert_eq!(writes, n_routes + n_policies);

    // Second apply: nothing changes, and the report says so.
    let second = apply(&bundle, &server, &token, &["--json"]);
    ok(&second);
    let t = totals(&second);
    assert_eq!(t["route"]["unchanged"].as_u64(), Some(n_routes), "{t}");
    assert_eq!(t["policy"]["unchanged"].as_u64(), Some(n_policies), "{t}");
    assert_eq!(server.state("admin-s3cret"), state, "server state changed");
    assert_eq!(server.writes(), writes);

    // A bad token: non-zero exit and the API's own words.
    let refused = apply(&bundle, &server, &bad_token, &[]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("invalid or missing admin token"), "{err}");
    assert_eq!(server.state("admin-s3cret"), state);

    // Invalid objects: each reported as failed with the API's 400/422 text;
    // the others go through; the exit code is non-zero.
    let mut broken = doc.clone();
    broken["routes"][0]["route"]["path_prefix"] = Value::from("api/v2/catalog/items");
    broken["routes"][1]["route"]["backend_url"] = Value::from("http://127.0.0.1:9");
    broken["policies"][0]["policy"]["priority"] = Value::from("high");
    let broken_path = dir.path().join("broken.json");
    std::fs::write(
        &broken_path,
        serde_json::to_string_pretty(&broken).expect("json"),
    )
    .expect("write");
    let out = apply(&broken_path, &server, &token, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let objects = report["objects"].as_array().expect("objects");
    let failed: Vec<&Value> = objects.iter().filter(|o| o["result"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{report:#}");
    let by_id = |id: &Value| {
        failed
            .iter()
            .find(|o| o["id"] == *id)
            .unwrap_or_else(|| panic!("{id} not failed: {report:#}"))
    };
    let prefix = by_id(&doc["routes"][0]["route"]["id"]);
    assert_eq!(prefix["status"], 400);
    assert!(prefix["error"]
        .as_str()
        .expect("error")
        .contains("path_prefix must start with '/'"));
    let ssrf = by_id(&doc["routes"][1]["route"]["id"]);
    assert_eq!(ssrf["status"], 400);
    assert!(ssrf["error"].as_str().expect("error").contains("loopback"));
    let prio = by_id(&doc["policies"][0]["policy"]["id"]);
    assert_eq!(prio["status"], 422);
    assert!(prio["error"].as_str().expect("error").contains("priority"));
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["result"] == "unchanged")
            .count() as u64,
        n_routes + n_policies - 3
    );
}

#[test]
fn apply_without_a_listing_relies_on_the_status() {
    let dir = temp_dir("bundle-apply-nolist");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");
    let bundle = dir.path().join("bundle.json");
    ok(&build_bundle(
        &[fixture("bundle_baseline.pcap")],
        &bundle,
        &["--backend-url", "https://catalog.example.org"],
    ));
    let server = AdminServer::start(dir.path(), &token, &["--no-list"]);
    let first = apply(&bundle, &server, &token, &["--json"]);
    ok(&first);
    assert!(totals(&first)["route"]["created"].as_u64() > Some(0));
    let second = apply(&bundle, &server, &token, &[]);
    ok(&second);
    let t = text(&second.stdout);
    // 200 for a known id: accepted, nothing created.
    assert!(t.contains("accepted") && !t.contains("created"), "{t}");
}

/// The test admin API answers like the gateway's (the reference's observed
/// behaviour), so that `apply` is tested against the real contract.
#[test]
fn test_admin_api_validates_like_the_gateway() {
    let dir = temp_dir("bundle-admin-server");
    let token = dir.path().join("token");
    std::fs::write(&token, "tok").expect("token");
    let server = AdminServer::start(dir.path(), &token, &[]);
    let route = serde_json::json!({
        "id": "r1", "name": "orders", "tenant_id": "acme", "path_prefix": "/orders",
        "backend_url": "http://orders.internal:8080/orders", "methods": ["GET"],
        "spec_hash": "sha256:00", "activated": true,
    });
    let json = "application/json";
    let post = |body: &Value, ctype: &str, tok: Option<&str>| {
        server.post("/admin/apis", ctype, tok, &body.to_string())
    };
    assert_eq!(post(&route, json, None).0, 401);
    assert_eq!(post(&route, json, Some("nope")).0, 401);
    assert_eq!(post(&route, "text/plain", Some("tok")).0, 415);
    assert_eq!(post(&route, json, Some("tok")).0, 201);
    assert_eq!(post(&route, json, Some("tok")).0, 200);
    let mut missing = route.clone();
    missing.as_object_mut().expect("object").remove("spec_hash");
    let (status, body) = post(&missing, json, Some("tok"));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("spec_hash"), "{body}");
    let mut bad = route.clone();
    bad["name"] = Value::from("");
    bad["path_prefix"] = Value::from("orders");
    let (status, body) = post(&bad, json, Some("tok"));
    assert_eq!(status, 400);
    assert!(
        body.contains("name must not be empty") && body.contains("path_prefix"),
        "{body}"
    );
    for backend in [
        "http://10.0.0.5",
        "http://127.0.0.1:5555",
        "http://[::1]/",
        "http://localhost",
    ] {
        let mut b = route.clone();
        b["backend_url"] = Value::from(backend);
        assert_eq!(post(&b, json, Some("tok")).0, 400, "{backend}");
    }
    let policy = serde_json::json!({
        "id": "p1", "name": "orders-rl", "policy_type": "rate_limit",
        "config": {"maxRequests": 5, "intervalSeconds": 1}, "priority": "1", "api_id": "r1",
    });
    let (status, body) = server.post("/admin/policies", json, Some("tok"), &policy.to_string());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("priority"));
}
