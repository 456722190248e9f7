//! Bundle building and replay on plain exchanges.

use super::build::{derive_id, literal_prefix, private_or_loopback};
use super::*;
use crate::exchange::{Anomalies, Body, Exchange, FlowId, Header, HttpVersion, Request, Response};
use crate::tests::b64url;
use crate::{InferenceConfig, Observations, Timing};
use serde_json::Value;

const T0: u64 = 1_700_000_000_000_000_000;

fn jwt(iss: &str, aud: &str, alg: &str, sub: u32) -> String {
    let h = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
    let p = b64url(format!(r#"{{"sub":"u{sub}","iss":"{iss}","aud":"{aud}"}}"#).as_bytes());
    format!("{h}.{p}.c2lnbmF0dXJlLW9mLXRva2VuLXtzdWJ9LXBhZGRpbmc{sub}")
}

/// One exchange at `ms` milliseconds after T0.
fn ex(method: &str, target: &str, ms: u64, status: u16) -> Exchange {
    let t = T0 + ms * 1_000_000;
    Exchange {
        flow: FlowId {
            client: format!("10.1.0.1:{}", 20_000 + ms % 30_000)
                .parse()
                .expect("addr"),
            server: "10.1.0.2:5555".parse().expect("addr"),
        },
        seq_on_flow: 0,
        request: Request {
            method: method.into(),
            target: target.into(),
            raw_target: Default::default(),
            version: HttpVersion::Http11,
            headers: vec![Header {
                name: "Host".into(),
                value: "gw.example.com:5555".into(),
            }],
            body: Body::default(),
        },
        response: Some(Response {
            status,
            reason: "".into(),
            version: HttpVersion::Http11,
            headers: vec![],
            body: Body::default(),
            interim: vec![],
        }),
        timing: Timing {
            request_first_ns: t,
            request_last_ns: t + 1000,
            response_first_ns: Some(t + 2_000_000),
            response_last_ns: Some(t + 2_500_000),
        },
        anomalies: Anomalies::default(),
    }
}

fn with_header(mut e: Exchange, name: &str, value: &str) -> Exchange {
    e.request.headers.push(Header {
        name: name.into(),
        value: value.into(),
    });
    e
}

fn with_body(mut e: Exchange, n: usize) -> Exchange {
    let json = format!(r#"{{"note":"{}"}}"#, "x".repeat(n.saturating_sub(11)));
    e.request.body = Body {
        wire_len: json.len() as u64,
        decoded_len: json.len() as u64,
        sample: json.into_bytes(),
        sample_truncated: false,
    };
    with_header(e, "Content-Type", "application/json")
}

fn bearer(e: Exchange, token: &str) -> Exchange {
    with_header(e, "Authorization", &format!("Bearer {token}"))
}

/// Baseline traffic: orders with JWTs (one anonymous attempt refused),
/// a public health check, a browser origin, 10 requests a second at most.
fn baseline() -> Vec<Exchange> {
    let mut v = Vec::new();
    for i in 0..40u64 {
        let ms = i * 100; // 10 per second
        let tok = jwt("https://idp.example.com", "orders", "RS256", i as u32);
        let e = match i % 4 {
            0 => with_body(ex("POST", "/api/v1/orders", ms, 201), 2000 + i as usize),
            1 => ex("GET", &format!("/api/v1/orders/{}", 1000 + i), ms, 200),
            2 => ex("GET", "/api/v1/orders", ms, 200),
            _ => ex("DELETE", &format!("/api/v1/orders/{}", 1000 + i), ms, 204),
        };
        let e = with_header(bearer(e, &tok), "Origin", "https://shop.example.com");
        v.push(e);
        v.push(ex("GET", "/api/v1/health", ms + 50, 200));
    }
    // An anonymous attempt the backend refused: the token stays required.
    v.push(ex("GET", "/api/v1/orders", 4_500, 401));
    v
}

fn bundle_of(exchanges: &[Exchange]) -> Bundle {
    let cfg = InferenceConfig::default();
    let mut obs = Observations::new(&cfg);
    let mut origins = RequestEvidence::default();
    for e in exchanges {
        obs.observe(e);
        origins.observe(e);
    }
    let opts = BundleOptions {
        tenant_id: "acme".into(),
        backend_url: Some("http://orders.internal:8080/".into()),
        headroom: 1.5,
    };
    build(&obs, Some(&origins), &cfg, &opts).expect("bundle")
}

fn replay(b: &Bundle, exchanges: &[Exchange]) -> VerifyReport {
    let mut v = Verifier::new(b, &crate::RedactionConfig::default());
    for e in exchanges {
        v.observe(e);
    }
    v.finish()
}

fn policy<'a>(b: &'a Bundle, prefix: &str, ptype: &str) -> &'a Policy {
    let route = b
        .routes
        .iter()
        .find(|r| r.route.path_prefix == prefix)
        .expect("route");
    &b.policies
        .iter()
        .find(|p| p.policy.api_id == route.route.id && p.policy.policy_type == ptype)
        .expect("policy")
        .policy
}

#[test]
fn routes_and_policies_follow_the_evidence() {
    let b = bundle_of(&baseline());
    let prefixes: Vec<&str> = b
        .routes
        .iter()
        .map(|r| r.route.path_prefix.as_str())
        .collect();
    assert_eq!(prefixes, ["/api/v1/health", "/api/v1/orders"]);
    let orders = &b.routes[1].route;
    assert_eq!(orders.methods, ["DELETE", "GET", "POST"]);
    assert_eq!(
        orders.backend_url,
        "http://orders.internal:8080/api/v1/orders"
    );
    assert_eq!(orders.tenant_id, "acme");
    assert_eq!(orders.upstream_http_version, "h1");
    assert!(orders.spec_hash.starts_with("sha256:"));
    assert_eq!(
        orders.contract_key.as_deref(),
        Some(format!("acme:{}", b.contracts[0]["name"].as_str().expect("name")).as_str())
    );

    let rate = policy(&b, "/api/v1/orders", "rate_limit");
    // 10 orders requests a second at most (one 401 besides) -> ceil(10 x 1.5).
    assert_eq!(rate.config["maxRequests"], 15);
    assert_eq!(rate.config["intervalSeconds"], 1);
    assert_eq!(rate.config["requests_per_second"], 15);

    let jwt = policy(&b, "/api/v1/orders", "jwt_validation");
    assert_eq!(jwt.config["required"], true);
    assert_eq!(jwt.config["issuers"][0], "https://idp.example.com");
    assert_eq!(jwt.config["audiences"][0], "orders");
    assert_eq!(jwt.config["algorithms"][0], "RS256");

    let cors = policy(&b, "/api/v1/orders", "cors");
    assert_eq!(
        cors.config["allowed_origins"][0],
        "https://shop.example.com"
    );

    // The health route is public: no JWT policy there.
    let health = &b.routes[0].route;
    assert!(!b
        .policies
        .iter()
        .any(|p| p.policy.api_id == health.id && p.policy.policy_type == "jwt_validation"));

    // Every rule states its evidence.
    for p in &b.policies {
        assert!(!p.evidence.rule.is_empty());
        assert!(p.evidence.requests > 0, "{}", p.policy.name);
        assert!(!p.evidence.observed.is_empty());
    }
    let body = b
        .policies
        .iter()
        .find(|p| p.policy.name.ends_with("orders-body-limit"))
        .expect("body limit");
    let max = body.evidence.observed["max_bytes"].as_u64().expect("max");
    assert_eq!(
        body.policy.config["max_request_body_bytes"].as_u64(),
        Some(((max as f64) * 1.5).ceil() as u64)
    );
    assert_eq!(body.evidence.headroom, Some(1.5));
}

#[test]
fn bundle_is_deterministic_whatever_the_order_and_split() {
    let ex = baseline();
    let a = bundle_of(&ex).to_json();
    let mut rev = ex.clone();
    rev.reverse();
    assert_eq!(a, bundle_of(&rev).to_json());

    // Split and merged observations give the same bundle too.
    let cfg = InferenceConfig::default();
    let (mut o1, mut o2) = (Observations::new(&cfg), Observations::new(&cfg));
    let (mut g1, mut g2) = (RequestEvidence::default(), RequestEvidence::default());
    for (i, e) in ex.iter().enumerate() {
        if i % 3 == 0 {
            o1.observe(e);
            g1.observe(e);
        } else {
            o2.observe(e);
            g2.observe(e);
        }
    }
    o2.merge(&o1);
    g2.merge(&g1);
    let opts = BundleOptions {
        tenant_id: "acme".into(),
        backend_url: Some("http://orders.internal:8080".into()),
        headroom: 1.5,
    };
    let merged = build(&o2, Some(&g2), &cfg, &opts).expect("bundle");
    assert_eq!(a, merged.to_json());
    let back = Bundle::from_json(&a).expect("read back");
    assert_eq!(back.to_json(), a);
}

#[test]
fn built_bundle_validates_against_its_schema() {
    let text = include_str!("../../schemas/bundle.schema.json");
    let schema: Value = serde_json::from_str(text).expect("schema");
    let v = jsonschema::validator_for(&schema).expect("validator");
    let b = bundle_of(&baseline());
    let doc: Value = serde_json::from_str(&b.to_json()).expect("json");
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // And the schema has teeth: a path prefix without a slash is refused.
    let mut bad = doc.clone();
    bad["routes"][0]["route"]["path_prefix"] = Value::from("api");
    assert!(!v.is_valid(&bad));
    let mut bad = doc;
    bad["policies"][0]["policy"]["priority"] = Value::from("high");
    assert!(!v.is_valid(&bad));
}

#[test]
fn replaying_the_same_traffic_blocks_nothing() {
    let ex = baseline();
    let b = bundle_of(&ex);
    let r = replay(&b, &ex);
    assert_eq!(r.exchanges, ex.len() as u64);
    assert_eq!(r.would_block, 0, "{}", r.to_text());
    // The anonymous request was refused by the backend anyway.
    assert_eq!(r.already_refused, 1);
    assert!(!r.exceeds(0.0));
}

#[test]
fn replay_reports_each_violation_under_its_rule() {
    let b = bundle_of(&baseline());
    let tok = |iss: &str, aud: &str, alg: &str| jwt(iss, aud, alg, 7);
    let good = tok("https://idp.example.com", "orders", "RS256");
    let base = 100_000; // well after the baseline, new windows
    let mut drift = vec![
        ex("GET", "/api/v1/invoices/77", base, 200),
        bearer(ex("PATCH", "/api/v1/orders/5", base + 10, 200), &good),
        bearer(
            with_body(ex("POST", "/api/v1/orders", base + 20, 201), 50_000),
            &good,
        ),
        ex("GET", "/api/v1/orders", base + 30, 200),
        bearer(
            ex("GET", "/api/v1/orders", base + 40, 200),
            &tok("https://evil.example", "orders", "RS256"),
        ),
        bearer(
            ex("GET", "/api/v1/orders", base + 50, 200),
            &tok("https://idp.example.com", "billing", "RS256"),
        ),
        bearer(
            ex("GET", "/api/v1/orders", base + 60, 200),
            &tok("https://idp.example.com", "orders", "none"),
        ),
        with_header(
            bearer(ex("GET", "/api/v1/orders", base + 70, 200), &good),
            "Origin",
            "https://evil.example",
        ),
    ];
    // A burst: 40 good requests within 400 ms (limit 15 a second).
    for i in 0..40u64 {
        drift.push(bearer(
            ex("GET", "/api/v1/orders", base + 2_000 + i * 10, 200),
            &good,
        ));
    }
    let r = replay(&b, &drift);
    let by = r.by_reason();
    assert_eq!(by.get(rule::ROUTE_NOT_FOUND), Some(&1), "{by:?}");
    assert_eq!(by.get(rule::METHOD_NOT_ALLOWED), Some(&1));
    assert_eq!(by.get(rule::BODY_TOO_LARGE), Some(&1));
    assert_eq!(by.get(rule::JWT_MISSING), Some(&1));
    assert_eq!(by.get(rule::JWT_ISSUER), Some(&1));
    assert_eq!(by.get(rule::JWT_AUDIENCE), Some(&1));
    assert_eq!(by.get(rule::JWT_ALGORITHM), Some(&1));
    assert_eq!(by.get(rule::CORS_ORIGIN), Some(&1));
    assert_eq!(by.get(rule::RATE_LIMITED), Some(&25));
    assert_eq!(r.would_block, 33);
    assert!(r.exceeds(0.5));
    // Examples are redacted: a token or an email never shows.
    let rnf = &r.rules[0];
    assert_eq!(rnf.examples[0].target, "/api/v1/invoices/77");
    let text = r.to_text();
    assert!(!text.contains(&good), "{text}");
}

#[test]
fn examples_are_redacted() {
    let b = bundle_of(&baseline());
    let r = replay(
        &b,
        &[ex(
            "GET",
            "/api/v2/users/jane.doe@example.com?api_key=abcdef0123456789abcdef",
            1,
            200,
        )],
    );
    let e = &r.rules[0].examples[0];
    assert!(!e.target.contains("jane.doe"), "{}", e.target);
    assert!(!e.target.contains("abcdef0123456789"), "{}", e.target);
}

#[test]
fn options_are_checked() {
    let cfg = InferenceConfig::default();
    let obs = Observations::new(&cfg);
    let bad = |o: BundleOptions| build(&obs, None, &cfg, &o).is_err();
    assert!(bad(BundleOptions {
        headroom: 0.5,
        ..BundleOptions::default()
    }));
    assert!(bad(BundleOptions {
        headroom: f64::NAN,
        ..BundleOptions::default()
    }));
    assert!(bad(BundleOptions {
        backend_url: Some("ftp://x".into()),
        ..BundleOptions::default()
    }));
    for tenant in [" ", "a:b", "a b"] {
        assert!(bad(BundleOptions {
            tenant_id: tenant.into(),
            ..BundleOptions::default()
        }));
    }
    let empty = build(&obs, None, &cfg, &BundleOptions::default()).expect("empty");
    assert!(empty.routes.is_empty());
    assert!(empty.notes.iter().any(|n| n.contains("CORS")));
}

#[test]
fn loopback_and_private_backends_are_noted() {
    for u in [
        "http://127.0.0.1:5555",
        "http://10.2.3.4",
        "http://192.168.1.1:80/x",
        "http://[::1]:8080",
        "http://localhost:5555",
        "http://[fd00::1]",
    ] {
        assert!(private_or_loopback(u), "{u}");
    }
    for u in [
        "http://orders.internal:5555",
        "https://8.8.8.8",
        "http://[2001:db8::1]",
    ] {
        assert!(!private_or_loopback(u), "{u}");
    }
    let mut e = baseline();
    e.truncate(4);
    let cfg = InferenceConfig::default();
    let mut obs = Observations::new(&cfg);
    for x in &e {
        obs.observe(x);
    }
    let b = build(&obs, None, &cfg, &BundleOptions::default()).expect("bundle");
    // No --backend-url: the observed host, which is fine (a name) here.
    assert!(b.routes[0]
        .route
        .backend_url
        .starts_with("http://gw.example.com:5555/"));
}

#[test]
fn prefixes_and_ids() {
    assert_eq!(
        literal_prefix("/api/v1", "/users/{userId}/x"),
        "/api/v1/users"
    );
    assert_eq!(literal_prefix("", "/{id}"), "/");
    assert_eq!(literal_prefix("/rest/Orders", "/"), "/rest/Orders");
    let id = derive_id(&["route", "acme", "/x"]);
    assert_eq!(id, derive_id(&["route", "acme", "/x"]));
    assert_ne!(id, derive_id(&["route", "acme", "/y"]));
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "8");
}

#[test]
fn preflights_are_answered_by_the_cors_policy() {
    let b = bundle_of(&baseline());
    let preflight = |origin: &str, ms: u64| {
        with_header(
            with_header(ex("OPTIONS", "/api/v1/orders", ms, 204), "Origin", origin),
            "Access-Control-Request-Method",
            "POST",
        )
    };
    // OPTIONS was never observed, yet a preflight from a known origin passes.
    let r = replay(
        &b,
        &[
            preflight("https://shop.example.com", 200_000),
            preflight("https://evil.example", 200_100),
        ],
    );
    let by = r.by_reason();
    assert_eq!(by.get(rule::CORS_ORIGIN), Some(&1), "{by:?}");
    assert_eq!(r.would_block, 1);
    // A plain OPTIONS is not a preflight: the method allowlist applies.
    let r = replay(&b, &[ex("OPTIONS", "/api/v1/orders", 300_000, 200)]);
    assert_eq!(r.by_reason().get(rule::METHOD_NOT_ALLOWED), Some(&1));
}

#[test]
fn a_claim_some_token_lacked_is_not_enforced() {
    let mut ex = baseline();
    // Two served requests whose tokens carry no audience at all.
    let h = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let p = b64url(br#"{"sub":"svc","iss":"https://idp.example.com"}"#);
    let no_aud = format!("{h}.{p}.c2lnbmF0dXJlLW9mLXRoZS1zZXJ2aWNlLXRva2Vu");
    for ms in [5_000, 5_100] {
        ex.push(bearer(ex_get(ms), &no_aud));
    }
    let b = bundle_of(&ex);
    let jwt = policy(&b, "/api/v1/orders", "jwt_validation");
    assert_eq!(jwt.config["audiences"], Value::Null);
    assert_eq!(jwt.config["issuers"][0], "https://idp.example.com");
    let r = replay(&b, &ex);
    assert_eq!(r.would_block, 0, "{}", r.to_text());

    // From observations alone the absence is unknown: the audience list is
    // enforced, and a note says what is missing.
    let cfg = InferenceConfig::default();
    let mut obs = Observations::new(&cfg);
    for e in &ex {
        obs.observe(e);
    }
    let b = build(&obs, None, &cfg, &BundleOptions::default()).expect("bundle");
    let jwt = policy(&b, "/api/v1/orders", "jwt_validation");
    assert_eq!(jwt.config["audiences"][0], "orders");
    assert!(
        b.notes.iter().any(|n| n.contains("absent")),
        "{:?}",
        b.notes
    );
}

fn ex_get(ms: u64) -> Exchange {
    ex("GET", "/api/v1/orders", ms, 200)
}
