//! End-to-end tests of inference: exchanges in, documents out.

use crate::config::{InferenceConfig, Limits, TemplateHint};
use crate::exchange::{
    Anomalies, Body, Exchange, FlowId, Header, HttpVersion, Request, Response, Timing,
};
use crate::model::{build, Model};
use crate::{diff, openapi, summary, uac, Observations};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Builder of test exchanges.
#[derive(Clone)]
pub(crate) struct Ex(pub Exchange);

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn req(method: &str, target: &str) -> Ex {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t0 = 1_700_000_000_000_000_000u64 + n * 7_000_000;
    Ex(Exchange {
        flow: FlowId {
            client: format!("10.0.0.1:{}", 10_000 + n % 50_000)
                .parse()
                .expect("addr"),
            server: "10.0.0.2:5555".parse().expect("addr"),
        },
        seq_on_flow: (n % 7) as u32,
        request: Request {
            method: method.into(),
            target: target.to_string(),
            raw_target: Default::default(),
            version: HttpVersion::Http11,
            headers: vec![Header {
                name: "Host".into(),
                value: "gw.example.com:5555".into(),
            }],
            body: Body::default(),
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            version: HttpVersion::Http11,
            headers: vec![],
            body: Body::default(),
            interim: vec![],
        }),
        timing: Timing {
            request_first_ns: t0,
            request_last_ns: t0 + 1_000,
            response_first_ns: Some(t0 + 1_000 + 2_000_000 + (n % 13) * 100_000),
            response_last_ns: Some(t0 + 3_000_000 + (n % 13) * 100_000),
        },
        anomalies: Anomalies::default(),
    })
}

pub(crate) fn get(target: &str) -> Ex {
    req("GET", target)
}

fn body(b: &[u8]) -> Body {
    Body {
        wire_len: b.len() as u64,
        decoded_len: b.len() as u64,
        sample: b.to_vec(),
        sample_truncated: false,
    }
}

impl Ex {
    pub fn host(mut self, h: &str) -> Self {
        self.0
            .request
            .headers
            .retain(|x| !x.name.eq_ignore_ascii_case("host"));
        self.0.request.headers.push(Header {
            name: "Host".into(),
            value: h.into(),
        });
        self
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.0.request.headers.push(Header {
            name: n.into(),
            value: v.into(),
        });
        self
    }
    pub fn status(mut self, s: u16) -> Self {
        if let Some(r) = self.0.response.as_mut() {
            r.status = s;
        }
        self
    }
    pub fn no_response(mut self) -> Self {
        self.0.response = None;
        self.0.timing.response_first_ns = None;
        self.0.timing.response_last_ns = None;
        self
    }
    pub fn req_body(mut self, ct: &str, b: &[u8]) -> Self {
        self.0.request.headers.push(Header {
            name: "Content-Type".into(),
            value: ct.into(),
        });
        self.0.request.body = body(b);
        self
    }
    pub fn resp_body(mut self, ct: &str, b: &[u8]) -> Self {
        if let Some(r) = self.0.response.as_mut() {
            r.headers.push(Header {
                name: "Content-Type".into(),
                value: ct.into(),
            });
            r.body = body(b);
        }
        self
    }
    pub fn latency_ms(mut self, ms: u64) -> Self {
        let t = self.0.timing.request_last_ns;
        self.0.timing.response_first_ns = Some(t + ms * 1_000_000);
        self.0.timing.response_last_ns = Some(t + ms * 1_000_000 + 10);
        self
    }
    pub fn at_ns(mut self, t: u64) -> Self {
        self.0.timing.request_first_ns = t;
        self.0.timing.request_last_ns = t + 1_000;
        self.0.timing.response_first_ns = Some(t + 2_000_000);
        self.0.timing.response_last_ns = Some(t + 3_000_000);
        self
    }
}

fn observe_all(cfg: &InferenceConfig, xs: &[Ex]) -> Observations {
    let mut o = Observations::new(cfg);
    for x in xs {
        o.observe(&x.0);
    }
    o
}

fn model(xs: &[Ex]) -> Model {
    let cfg = InferenceConfig::default();
    build(&observe_all(&cfg, xs), &cfg)
}

fn paths(m: &Model) -> Vec<String> {
    let mut v: Vec<String> = m
        .apis
        .iter()
        .flat_map(|a| a.endpoints.iter().map(|e| e.path.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn version_segments_are_never_parameters() {
    let mut xs = Vec::new();
    for v in ["v1", "v2", "v3"] {
        xs.push(get(&format!("/{v}/users/1")));
        xs.push(get(&format!("/catalog/{v}/items")));
    }
    let m = model(&xs);
    let p = paths(&m);
    for v in ["v1", "v2", "v3"] {
        assert!(p.contains(&format!("/{v}/users/{{userId}}")), "{p:?}");
        assert!(p.contains(&format!("/catalog/{v}/items")), "{p:?}");
    }
    // One API per version base path.
    let names: Vec<&str> = m.apis.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&"example-v2"), "{names:?}");
}

#[test]
fn me_stays_beside_user_id() {
    let mut xs = Vec::new();
    for i in 0..50 {
        xs.push(get(&format!("/users/{}", 1000 + i)));
    }
    for _ in 0..3 {
        xs.push(get("/users/me"));
    }
    xs.push(get("/users/me/settings"));
    let m = model(&xs);
    assert_eq!(
        paths(&m),
        vec!["/users/me", "/users/me/settings", "/users/{userId}"]
    );
    let e = &m.apis[0]
        .endpoints
        .iter()
        .find(|e| e.path == "/users/{userId}")
        .expect("ep");
    assert_eq!(e.params[0].rule, "id-shape:int");
    assert_eq!(e.params[0].distinct_values, 50);
    assert_eq!(e.params[0].schema_type, "integer");
    assert_eq!(e.params[0].literal_siblings, vec!["me"]);
}

#[test]
fn id_shaped_segments_become_parameters() {
    let cases = [
        (
            "/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "/orders/{orderId}",
            Some("uuid"),
        ),
        (
            "/commits/5f43a1c2b9e8d7f6a5b4c3d2",
            "/commits/{commitId}",
            None,
        ),
        (
            "/events/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "/events/{eventId}",
            None,
        ),
        ("/reports/2024-03-01", "/reports/{reportDate}", Some("date")),
        (
            "/accounts/alice@example.com",
            "/accounts/{accountEmail}",
            Some("email"),
        ),
        (
            "/sessions/a8Fk29xLq0Zm3Nv7Rt5WpQ",
            "/sessions/{sessionId}",
            None,
        ),
    ];
    for (p, want, fmt) in cases {
        let m = model(&[get(p)]);
        assert_eq!(paths(&m), vec![want.to_string()], "{p}");
        let param = &m.apis[0].endpoints[0].params[0];
        assert_eq!(param.format.as_deref(), fmt, "{p}");
        assert!(param.rule.starts_with("id-shape:"), "{p}: {}", param.rule);
    }
    // Several positions: names from each parent, never reused.
    let m = model(&[get("/customers/42/orders/7/lines/1")]);
    assert_eq!(
        paths(&m),
        vec!["/customers/{customerId}/orders/{orderId}/lines/{lineId}"]
    );
    let m = model(&[get("/a/1/2")]);
    assert_eq!(paths(&m), vec!["/a/{aId}/{id}"]);
    let m = model(&[get("/1/2")]);
    assert_eq!(paths(&m), vec!["/{id}/{id2}"]);
}

#[test]
fn hints_win_over_guesses() {
    let cfg = InferenceConfig {
        hints: vec![
            TemplateHint::new("/items/{sku}"),
            TemplateHint::new("/users/{id}"),
            TemplateHint::new("/users/me"),
        ],
        ..InferenceConfig::default()
    };
    let xs = [
        get("/items/blue-shirt"),
        get("/items/red-hat"),
        get("/users/me"),
        get("/users/12"),
        get("/users/bob"),
    ];
    let o = observe_all(&cfg, &xs);
    let m = build(&o, &cfg);
    assert_eq!(paths(&m), vec!["/items/{sku}", "/users/me", "/users/{id}"]);
    let e = m.apis[0]
        .endpoints
        .iter()
        .find(|e| e.path == "/users/{id}")
        .expect("ep");
    assert_eq!(e.params[0].rule, "hint");
    assert_eq!(e.operations[0].stats.count, 2, "12 and bob");
}

#[test]
fn large_alike_literal_siblings_become_a_parameter_and_frequent_literals_stay() {
    let mut xs = Vec::new();
    let words = [
        "blue", "red", "green", "black", "white", "pink", "gold", "gray", "navy", "teal", "lime",
        "plum", "rose", "sand", "snow", "jade", "ruby", "onyx", "opal", "mint",
    ];
    for w in words {
        xs.push(get(&format!("/products/{w}-shirt")));
        xs.push(get(&format!("/products/{w}-shirt/reviews")));
    }
    for _ in 0..200 {
        xs.push(get("/products/search"));
    }
    // Resource names at the root are never collapsed.
    for w in words {
        xs.push(get(&format!("/{w}")));
    }
    let m = model(&xs);
    let p = paths(&m);
    assert!(p.contains(&"/products/{productId}".to_string()), "{p:?}");
    assert!(
        p.contains(&"/products/{productId}/reviews".to_string()),
        "{p:?}"
    );
    assert!(p.contains(&"/products/search".to_string()), "{p:?}");
    assert!(
        p.contains(&"/blue".to_string()) && p.contains(&"/mint".to_string()),
        "{p:?}"
    );
    let e = m.apis[0]
        .endpoints
        .iter()
        .find(|e| e.path == "/products/{productId}")
        .expect("ep");
    assert_eq!(e.params[0].rule, "sibling-set");
    assert_eq!(e.params[0].distinct_values, 20);
    assert_eq!(e.operations[0].stats.count, 20);
    // A small sibling set stays literal.
    let m = model(&[
        get("/colors/red"),
        get("/colors/blue"),
        get("/colors/green"),
    ]);
    assert_eq!(paths(&m).len(), 3);
}

#[test]
fn a_million_distinct_ids_do_not_grow_memory() {
    let cfg = InferenceConfig::default();
    let mut o = Observations::new(&cfg);
    let mut x = get("/orders/1");
    let mut sizes = Vec::new();
    for i in 0..1_000_000u64 {
        x.0.request.target = match i % 4 {
            0 => format!("/orders/{i}"),
            1 => format!("/orders/{i}/items/{}", i * 7),
            2 => format!("/files/doc-{}-{}", i % 100_003, i % 7),
            _ => format!(
                "/tags/{}",
                ["alpha", "beta", "gamma"][(i % 3) as usize]
                    .repeat(1 + (i % 5_000) as usize / 1000)
                    + &format!("-x{}", i % 9_973)
            ),
        };
        x.0.seq_on_flow = i as u32;
        x.0.timing.request_first_ns += 1_000;
        o.observe(&x.0);
        if i == 200_000 || i == 999_999 {
            sizes.push(o.to_json().len());
        }
    }
    assert_eq!(o.exchanges(), 1_000_000);
    let api = o.apis.values().next().expect("api");
    assert!(api.root.node_count() < 400, "{}", api.root.node_count());
    // Size after 200k and after 1M: bounded (rate series and sketches
    // saturate), not proportional.
    assert!(sizes[1] < 400_000, "{sizes:?}");
    assert!(sizes[1] < sizes[0] * 2, "{sizes:?}");
    let m = build(&o, &cfg);
    let p = paths(&m);
    assert!(
        p.contains(&"/orders/{orderId}/items/{itemId}".to_string()),
        "{p:?}"
    );
    assert!(p.contains(&"/files/{fileId}".to_string()), "{p:?}");
    assert!(p.contains(&"/tags/{tagId}".to_string()), "{p:?}");
    let files = m.apis[0]
        .endpoints
        .iter()
        .find(|e| e.path == "/files/{fileId}")
        .expect("files");
    assert!(
        files.params[0].distinct_values > 200_000,
        "{:?}",
        files.params[0]
    );
    assert!(!files.params[0].distinct_exact);
    assert_eq!(files.operations[0].stats.count, 250_000);
    assert!(m.caps.literal_overflow_positions >= 1);
}

#[test]
fn scanner_404s_stay_out_of_contracts_and_known_404s_join_their_endpoint() {
    let mut xs = vec![
        get("/users/1"),
        get("/users/2"),
        get("/users/3").status(404),
    ];
    for p in [
        "/wp-login.php",
        "/.env",
        "/admin/config.php",
        "/.git/config",
    ] {
        xs.push(get(p).status(404));
    }
    xs.push(req("DELETE", "/users/1").status(405));
    xs.push(get("/users/9").no_response());
    let m = model(&xs);
    assert_eq!(paths(&m), vec!["/users/{userId}"]);
    let op = &m.apis[0].endpoints[0].operations[0];
    assert_eq!(op.stats.count, 4);
    assert_eq!(op.stats.statuses.get(&404), Some(&1));
    assert_eq!(op.stats.unanswered, 1);
    let un = &m.apis[0].unmatched;
    assert_eq!(un.exchanges, 5);
    assert!(un.top_paths.iter().any(|p| p.path == "/.env"), "{un:?}");
    // An API only ever answered 404 is no contract.
    let m = model(&[get("/nothing/here").host("other.example.com").status(404)]);
    assert!(m.apis.is_empty());
    assert_eq!(m.unmatched.exchanges, 1);
}

#[test]
fn apis_are_grouped_by_host_and_base_path() {
    let xs = [
        get("/rest/OrderManagement/orders/1"),
        get("/restv2/BillingAPI/invoices"),
        get("/ws/acme.services:CustomerService/getCustomer"),
        get("/gateway/PetStore/1.0/pets/1"),
        get("/api/v1/things").host("shop.example.com"),
        get("/health").host("10.1.2.3:5555"),
    ];
    let m = model(&xs);
    let mut names: Vec<(String, String)> = m
        .apis
        .iter()
        .map(|a| (a.name.clone(), a.server_url()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            (
                "acme-services-customer-service".into(),
                "http://gw.example.com:5555/ws/acme.services:CustomerService".into()
            ),
            ("api".into(), "http://10.1.2.3:5555".into()),
            (
                "billing-api".into(),
                "http://gw.example.com:5555/restv2/BillingAPI".into()
            ),
            (
                "order-management".into(),
                "http://gw.example.com:5555/rest/OrderManagement".into()
            ),
            (
                "pet-store-1-0".into(),
                "http://gw.example.com:5555/gateway/PetStore/1.0".into()
            ),
            ("shop-v1".into(), "http://shop.example.com/api/v1".into()),
        ]
    );
}

/// Base64url without padding, for building test JWTs.
pub(crate) fn b64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for ch in b.chunks(3) {
        let n = (u32::from(ch[0]) << 16)
            | (u32::from(*ch.get(1).unwrap_or(&0)) << 8)
            | u32::from(*ch.get(2).unwrap_or(&0));
        for i in 0..=ch.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn jwt(claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-real-signature-but-long-enough")
    )
}

#[test]
fn security_schemes_are_detected() {
    let token = jwt(
        &json!({"sub": "user-1", "iss": "https://idp.example.com", "aud": "orders-api", "scope": "orders:read orders:write"}),
    );
    let xs = [
        get("/orders/1").header("Authorization", &format!("Bearer {token}")),
        get("/orders/2").header("authorization", "Basic dXNlcjpwYXNzd29yZA=="),
        get("/orders/3").header("X-API-Key", "k3y-0123456789abcdef"),
        get("/orders/4?api_key=abc123abc123abc123"),
        get("/orders/5").header("Cookie", "JSESSIONID=ABCDEF0123456789; theme=dark"),
        get("/orders/6"),
    ];
    let cfg = InferenceConfig::default();
    let docs = openapi::emit(&observe_all(&cfg, &xs), &cfg);
    let v = serde_json::to_value(&docs[0].openapi).expect("json");
    let schemes = &v["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    let jwtx = &schemes["bearer"]["x-stoa-evidence"]["jwt"];
    assert_eq!(jwtx["alg"], json!(["RS256"]));
    assert_eq!(jwtx["iss"], json!(["https://idp.example.com"]));
    assert_eq!(jwtx["aud"], json!(["orders-api"]));
    assert_eq!(jwtx["scopes"], json!(["orders:read", "orders:write"]));
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["apikey-header-x-api-key"]["in"], "header");
    assert_eq!(schemes["apikey-header-x-api-key"]["name"], "X-API-Key");
    assert_eq!(schemes["apikey-query-api_key"]["in"], "query");
    assert_eq!(schemes["cookie-jsessionid"]["in"], "cookie");
    assert_eq!(schemes["cookie-jsessionid"]["name"], "JSESSIONID");
    let op = &v["paths"]["/orders/{orderId}"]["get"];
    let sec = op["security"].as_array().expect("security");
    assert_eq!(sec.len(), 6, "five schemes and anonymous access: {sec:?}");
    assert!(sec.contains(&json!({})));
    // theme is an ordinary cookie parameter; the session cookie is not.
    let params = op["parameters"].as_array().expect("params");
    assert!(params
        .iter()
        .any(|p| p["in"] == "cookie" && p["name"] == "theme"));
    assert!(!params
        .iter()
        .any(|p| p["name"] == "JSESSIONID" || p["name"] == "api_key"));
}

/// Every secret the test sends; none may appear in any output.
const SECRETS: &[&str] = &[
    "hunter2-Secret!",
    "4111 1111 1111 1111",
    "4111111111111111",
    "DE89370400440532013000",
    "alice.secret@corp.example",
    "k3y-0123456789abcdef0123",
    "ABCDEF0123456789SESSION",
    "dXNlcjpwYXNzd29yZA==",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "Tr0ub4dor&3",
    "refresh-9f8e7d6c5b4a",
    "user-secret-subject-42",
    "555-12-3456",
];

fn secret_traffic() -> Vec<Ex> {
    let token = jwt(
        &json!({"sub": "user-secret-subject-42", "iss": "https://idp.example.com", "scope": "a b"}),
    );
    let mut xs = Vec::new();
    for i in 0..20 {
        xs.push(
            req("POST", &format!("/accounts/{i}/payments?api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc&token=refresh-9f8e7d6c5b4a&note=ok"))
                .header("Authorization", &format!("Bearer {token}"))
                .header("X-API-Key", "k3y-0123456789abcdef0123")
                .header("Cookie", "JSESSIONID=ABCDEF0123456789SESSION; pref=1")
                .header("X-Customer-Email", "alice.secret@corp.example")
                .header("X-Password", "Tr0ub4dor&3")
                .req_body(
                    "application/json",
                    json!({
                        "password": "hunter2-Secret!",
                        "card": {"number": "4111 1111 1111 1111", "pan": 4111111111111111u64, "cvv": "123"},
                        "iban": "DE89370400440532013000",
                        "email": "alice.secret@corp.example",
                        "ssn": "555-12-3456",
                        "nested": [{"token": "refresh-9f8e7d6c5b4a", "kind": "refresh"}],
                        "state": "pending",
                    })
                    .to_string()
                    .as_bytes(),
                )
                .resp_body(
                    "application/json",
                    json!({"access_token": token, "refresh_token": "refresh-9f8e7d6c5b4a", "owner": "alice.secret@corp.example", "status": "ok"})
                        .to_string()
                        .as_bytes(),
                ),
        );
        xs.push(
            req("POST", "/login")
                .header("Authorization", "Basic dXNlcjpwYXNzd29yZA==")
                .req_body(
                    "application/x-www-form-urlencoded",
                    b"user=alice&password=Tr0ub4dor%263&remember=yes",
                ),
        );
        xs.push(get("/accounts/alice.secret@corp.example/profile"));
        xs.push(get(&format!("/reset/{token}")));
        xs.push(get(
            "/sessions/sk_live_4eC39HqLyjWDarjtT1zdp7dc;jsessionid=ABCDEF0123456789SESSION",
        ));
        xs.push(
            req("POST", "/ws/Legacy/soap")
                .header("SOAPAction", "\"urn:getBalance\"")
                .req_body(
                    "text/xml",
                    b"<soap:Envelope><soap:Body><getBalance><password>hunter2-Secret!</password></getBalance></soap:Body></soap:Envelope>",
                ),
        );
    }
    xs
}

#[test]
fn no_secret_appears_in_any_output() {
    let cfg = InferenceConfig::default();
    let o = observe_all(&cfg, &secret_traffic());
    let mut outputs = vec![o.to_json()];
    for d in openapi::emit(&o, &cfg) {
        outputs.push(d.to_yaml());
        outputs.push(d.to_json());
    }
    for (_, u) in uac::emit(&o, &cfg) {
        outputs.push(u.to_string());
    }
    outputs.push(summary::endpoint_table(&o));
    let spec = openapi::parse_spec("openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: {}\n")
        .expect("spec");
    let report = diff::diff(&spec, &o);
    outputs.push(serde_json::to_string(&report).expect("ser"));
    outputs.push(report.to_text());
    let all = outputs.join("\n");
    assert!(all.contains("/payments"), "sanity: outputs are not empty");
    for s in SECRETS {
        assert!(!all.contains(s), "secret {s:?} leaked");
    }
    // Also the non-trivial parts of the JWT.
    let token = jwt(
        &json!({"sub": "user-secret-subject-42", "iss": "https://idp.example.com", "scope": "a b"}),
    );
    for part in token.split('.') {
        assert!(!all.contains(part), "JWT part leaked");
    }
    // ... while shapes survive: formats, enums of harmless fields, flags.
    assert!(all.contains("\"pending\""), "harmless enum kept");
    assert!(all.contains("email"));
    assert!(all.contains("x-stoa-sensitive"));
    // The classification notices card data.
    let drafts = uac::emit(&o, &cfg);
    assert!(drafts.iter().any(|(_, u)| u["classification"] == "VVH"));
}

#[test]
fn xml_soap_form_and_multipart_bodies() {
    let mut xs = Vec::new();
    for op in ["GetOrder", "CancelOrder"] {
        xs.push(
            req("POST", "/ws/OrderService")
                .header("SOAPAction", &format!("urn:{op}"))
                .req_body(
                    "text/xml; charset=utf-8",
                    format!(r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:{op} xmlns:m="urn:x"><id>1</id></m:{op}></s:Body></s:Envelope>"#).as_bytes(),
                )
                .resp_body("text/xml", format!("<s:Envelope><s:Body><{op}Response/></s:Body></s:Envelope>").as_bytes()),
        );
    }
    for i in 0..4 {
        xs.push(req("POST", "/forms/contact").req_body(
            "application/x-www-form-urlencoded",
            format!("name=n{i}&topic=sales&n={i}").as_bytes(),
        ));
    }
    xs.push(req("POST", "/uploads").req_body(
        "multipart/form-data; boundary=BND",
        b"--BND\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhi\r\n--BND\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.pdf\"\r\n\r\n%PDF\r\n--BND--\r\n",
    ));
    let cfg = InferenceConfig::default();
    let o = observe_all(&cfg, &xs);
    let docs = openapi::emit(&o, &cfg);
    let combined = openapi::combine(&docs, &cfg);
    let cv = serde_json::to_value(&combined.openapi).expect("v");
    assert!(
        cv["paths"]["/ws/OrderService"]["post"].is_object(),
        "{cv:#}"
    );
    assert_eq!(cv["paths"]["/uploads"]["post"]["tags"], json!(["example"]));
    assert_eq!(
        openapi::parse_spec(&combined.to_yaml()).expect("yaml"),
        combined.openapi
    );
    let mut all = Value::Null;
    for d in &docs {
        let v = serde_json::to_value(&d.openapi).expect("v");
        if d.name == "order-service" {
            let op = &v["paths"]["/"]["post"];
            assert_eq!(
                op["x-stoa-soap"]["actions"],
                json!({"urn:CancelOrder": 1, "urn:GetOrder": 1})
            );
            assert_eq!(
                op["x-stoa-soap"]["operations"],
                json!({"CancelOrder": 1, "GetOrder": 1})
            );
            let x = &op["requestBody"]["content"]["text/xml"]["schema"]["x-stoa-xml"];
            assert_eq!(x["roots"], json!({"Envelope": 2}));
        } else {
            all = v;
        }
    }
    let form = &all["paths"]["/forms/contact"]["post"]["requestBody"]["content"]
        ["application/x-www-form-urlencoded"]["schema"];
    assert_eq!(form["properties"]["n"]["type"], "integer");
    assert_eq!(form["properties"]["topic"]["enum"], json!(["sales"]));
    assert_eq!(form["required"], json!(["n", "name", "topic"]));
    let mp = &all["paths"]["/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"]
        ["schema"];
    assert_eq!(mp["properties"]["doc"]["format"], "binary");
    assert_eq!(mp["properties"]["title"]["type"], "string");
}

#[test]
fn truncated_and_invalid_json_are_counted_not_inferred() {
    let mut t = req("POST", "/x").req_body("application/json", b"{\"a\":1");
    t.0.request.body.sample_truncated = true;
    let bad = req("POST", "/x").req_body("application/json", b"{not json");
    let good = req("POST", "/x").req_body("application/json", b"{\"a\":1}");
    let cfg = InferenceConfig::default();
    let o = observe_all(&cfg, &[t, bad, good]);
    let j = o.to_json();
    assert!(j.contains("\"truncated\":1"), "{j}");
    assert!(j.contains("\"invalid\":1"), "{j}");
    let docs = openapi::emit(&o, &cfg);
    let v = serde_json::to_value(&docs[0].openapi).expect("v");
    let s = &v["paths"]["/x"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(s["properties"]["a"]["type"], "integer");
    assert_eq!(s["x-stoa-samples"], 1);
}

#[test]
fn per_operation_statistics() {
    let mut xs = Vec::new();
    let t0 = 1_700_000_000_000_000_000u64;
    for i in 0..100u64 {
        let mut x = get("/items?limit=10&sort=asc")
            .latency_ms(i + 1)
            .at_ns(t0 + i * 10_000_000);
        x = x.latency_ms(i + 1);
        if i % 10 == 0 {
            x = x.status(500);
        }
        xs.push(x);
    }
    let m = model(&xs);
    let op = &m.apis[0].endpoints[0].operations[0];
    let s = &op.stats;
    assert_eq!(s.count, 100);
    assert_eq!(s.server_errors, 10);
    assert!((s.error_rate - 0.1).abs() < 1e-9);
    let l = s.latency.as_ref().expect("latency");
    assert!((l.p50 - 50.0).abs() / 50.0 < 0.02, "{l:?}");
    assert!((l.p99 - 99.0).abs() / 99.0 < 0.02, "{l:?}");
    assert_eq!(l.max, 100.0);
    assert_eq!(s.peak_per_second.requests, 100.0, "all within one second");
    assert!(s.peak_per_second.exact);
    assert_eq!(s.peak_per_minute.requests, 100.0);
    assert!(s
        .first_seen
        .as_deref()
        .is_some_and(|f| f.starts_with("2023-11-14T22:13:20")));
    // Query parameters: types, enums, required.
    let cfg = InferenceConfig::default();
    let doc = &openapi::emit_model(&m, &cfg, &Limits::default())[0];
    let v = serde_json::to_value(&doc.openapi).expect("v");
    let params = v["paths"]["/items"]["get"]["parameters"]
        .as_array()
        .expect("params")
        .clone();
    let limit = params.iter().find(|p| p["name"] == "limit").expect("limit");
    assert_eq!(limit["schema"]["type"], "integer");
    assert_eq!(limit["required"], true);
    let sort = params.iter().find(|p| p["name"] == "sort").expect("sort");
    assert_eq!(sort["schema"]["enum"], json!(["asc"]));
    let table = summary::endpoint_table_of(&m);
    assert!(
        table.contains("GET") && table.contains("/items") && table.contains("100"),
        "{table}"
    );
}

/// A varied corpus for determinism tests.
fn corpus() -> Vec<Ex> {
    let token = jwt(&json!({"iss": "https://idp", "aud": ["a", "b"], "scp": ["x", "y"]}));
    let mut xs = Vec::new();
    for i in 0..12u64 {
        xs.push(get(&format!("/users/{i}")).latency_ms(i % 5 + 1));
        xs.push(get(&format!(
            "/products/word{}x",
            ["a", "b", "c", "d", "e", "f", "g"][(i % 7) as usize]
        )));
        xs.push(
            req("POST", &format!("/orders?src={}&k{}=1", ["web", "app", "pos", "api", "kiosk"][(i % 5) as usize], i % 6))
                .header("Authorization", &format!("Bearer {token}"))
                .header("X-Tenant", ["t1", "t2", "t3", "t4", "t5"][(i % 5) as usize])
                .req_body(
                    "application/json",
                    json!({"id": i, "qty": if i % 2 == 0 { json!(1) } else { json!(1.5) }, "note": if i % 3 == 0 { Value::Null } else { json!(format!("n{}", i % 4)) }, format!("f{}", i % 9): {"deep": [i]}})
                        .to_string()
                        .as_bytes(),
                )
                .resp_body("application/json", json!({"ok": true, "id": format!("{i}")}).to_string().as_bytes())
                .status(if i % 4 == 0 { 201 } else { 200 })
                .at_ns(1_700_000_000_000_000_000 + (i * i * 37 % 200) * 1_000_000_000),
        );
        xs.push(get(&format!("/missing/{i}")).status(404));
        xs.push(req("PUT", &format!("/users/{i}")).no_response());
    }
    xs
}

fn small_limits_config() -> InferenceConfig {
    InferenceConfig {
        limits: Limits {
            max_literal_children: 3,
            max_schema_nodes: 8,
            body_sample_budget: 4,
            max_enum_values: 3,
            max_rate_buckets: 8,
            max_query_params: 3,
            max_headers: 2,
            distinct_sketch: 4,
            ..Limits::default()
        },
        ..InferenceConfig::default()
    }
}

fn outputs(o: &Observations, cfg: &InferenceConfig) -> Vec<String> {
    let mut v = vec![o.to_json()];
    for d in openapi::emit(o, cfg) {
        v.push(d.to_yaml());
    }
    for (_, u) in uac::emit(o, cfg) {
        v.push(u.to_string());
    }
    v.push(summary::endpoint_table(o));
    v
}

fn shuffled(keys: &[u32], xs: &[Ex]) -> Vec<Ex> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by_key(|i| (keys.get(*i).copied().unwrap_or(0), *i));
    idx.into_iter().map(|i| xs[i].clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Shuffled, split, merged in any order and grouping: byte-identical
    /// observations and documents.
    #[test]
    fn merge_is_associative_commutative_and_order_independent(
        keys in prop::collection::vec(any::<u32>(), 60),
        parts in prop::collection::vec(0usize..4, 60),
        order in prop::collection::vec(any::<u32>(), 4),
        right_fold in any::<bool>(),
        small in any::<bool>(),
    ) {
        let cfg = if small { small_limits_config() } else { InferenceConfig::default() };
        let xs = corpus();
        let baseline = outputs(&observe_all(&cfg, &xs), &cfg);
        let shuffled = shuffled(&keys, &xs);
        let mut pieces: Vec<Observations> = (0..4).map(|_| Observations::new(&cfg)).collect();
        for (i, x) in shuffled.iter().enumerate() {
            pieces[parts.get(i).copied().unwrap_or(0)].observe(&x.0);
        }
        // Round-trip some pieces through JSON, as `stoa-tap merge` does.
        for p in pieces.iter_mut().step_by(2) {
            *p = Observations::from_json(&p.to_json()).expect("round trip");
        }
        let mut idx: Vec<usize> = (0..4).collect();
        idx.sort_by_key(|i| (order[*i], *i));
        let merged = if right_fold {
            let mut acc = pieces[idx[3]].clone();
            for &i in idx[..3].iter().rev() {
                let mut p = pieces[i].clone();
                p.merge(&acc);
                acc = p;
            }
            acc
        } else {
            let (a, b) = (idx[0], idx[1]);
            let mut left = pieces[a].clone();
            left.merge(&pieces[b]);
            let mut right = pieces[idx[2]].clone();
            right.merge(&pieces[idx[3]]);
            left.merge(&right);
            left
        };
        let got = outputs(&merged, &cfg);
        prop_assert_eq!(got.len(), baseline.len());
        for (g, b) in got.iter().zip(&baseline) {
            prop_assert_eq!(g, b);
        }
    }
}

#[test]
fn caps_are_exercised_by_the_determinism_corpus() {
    let cfg = small_limits_config();
    let o = observe_all(&cfg, &corpus());
    let m = build(&o, &cfg);
    assert!(m.caps.literal_overflow_positions > 0, "{:?}", m.caps);
    assert!(m.caps.entries_dropped > 0, "{:?}", m.caps);
    assert!(m.caps.schema_values_dropped > 0, "{:?}", m.caps);
    let j = o.to_json();
    assert!(
        (1..10).any(|l| j.contains(&format!("\"level\":{l},"))),
        "sampling levels rose"
    );
}

fn uac_validator() -> jsonschema::Validator {
    let text = include_str!("../schemas/uac-contract-v1.schema.json");
    let schema: Value = serde_json::from_str(text).expect("schema");
    jsonschema::validator_for(&schema).expect("validator")
}

#[test]
fn uac_drafts_validate_against_the_shared_schema() {
    // The committed copy must equal the shared reference when it is there.
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/stoa/uac-contract-v1.schema.json"
    );
    if let Ok(t) = std::fs::read_to_string(shared) {
        assert_eq!(t, include_str!("../schemas/uac-contract-v1.schema.json"));
    }
    let v = uac_validator();
    let example_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/stoa/uac-example-rest.json"
    );
    let example: Value = std::fs::read_to_string(example_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({
            "name": "payment-service", "version": "1.0.0", "tenant_id": "t", "classification": "VH", "status": "draft"
        }));
    assert!(v.is_valid(&example));
    assert!(!v.is_valid(&json!({"name": "Bad Name", "version": "1", "tenant_id": "t", "classification": "X", "status": "draft"})));
    let cfg = InferenceConfig {
        tenant_id: "acme".into(),
        ..InferenceConfig::default()
    };
    let mut xs = corpus();
    xs.extend(secret_traffic());
    xs.push(req("TRACE", "/debug"));
    xs.push(get("/x").host("y.example.org"));
    let o = observe_all(&cfg, &xs);
    let drafts = uac::emit(&o, &cfg);
    assert!(drafts.len() >= 3);
    for (name, d) in &drafts {
        let errors: Vec<String> = v
            .iter_errors(d)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}\n{d:#}");
        assert_eq!(d["status"], "draft");
        assert_eq!(d["tenant_id"], "acme");
        assert_eq!(&d["name"], name);
    }
    let d = &drafts
        .iter()
        .find(|(_, d)| {
            d["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["path"] == "/orders"))
        })
        .expect("orders")
        .1;
    let ep = d["endpoints"]
        .as_array()
        .expect("eps")
        .iter()
        .find(|e| e["path"] == "/orders")
        .expect("ep");
    assert_eq!(ep["methods"], json!(["POST"]));
    assert_eq!(ep["input_schema"]["type"], "object");
    assert_eq!(ep["output_schema"]["properties"]["ok"]["type"], "boolean");
}

#[test]
fn openapi_documents_are_typed_round_trip_and_deterministic() {
    let cfg = InferenceConfig::default();
    let xs = corpus();
    let o = observe_all(&cfg, &xs);
    let docs = openapi::emit(&o, &cfg);
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    let yaml = d.to_yaml();
    let back = openapi::parse_spec(&yaml).expect("yaml parses");
    assert_eq!(back, d.openapi);
    let back = openapi::parse_spec(&d.to_json()).expect("json parses");
    assert_eq!(back, d.openapi);
    assert_eq!(d.openapi.openapi, "3.0.3");
    let v = serde_json::to_value(&d.openapi).expect("v");
    // Every path parameter is declared, required, and operation ids are unique.
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in v["paths"].as_object().expect("paths") {
        let declared: Vec<String> = item["parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            assert!(
                declared.contains(&seg[1..seg.len() - 1].to_string()),
                "{path}"
            );
        }
        for (m, op) in item.as_object().expect("item") {
            if m == "parameters" || m.starts_with("x-") {
                continue;
            }
            assert!(ids.insert(op["operationId"].as_str().expect("id").to_string()));
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            for (_, r) in op["responses"].as_object().expect("r") {
                assert!(r["description"].is_string());
            }
        }
    }
    let post = &v["paths"]["/orders"]["post"];
    let schema = &post["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["properties"]["qty"]["type"], "number");
    assert_eq!(schema["properties"]["note"]["nullable"], true);
    assert!(post["x-stoa-stats"]["latency"]["p99"].is_number());
    assert_eq!(post["responses"]["201"]["description"], "Created");
    // Unanswered PUTs never reached an endpoint: no operation for them.
    assert!(v["paths"]["/users/{userId}"].get("put").is_none());
    // Same input, same bytes.
    let again = openapi::emit(&observe_all(&cfg, &xs), &cfg);
    assert_eq!(again[0].to_yaml(), yaml);
}

#[test]
fn drift_against_a_declared_spec() {
    let declared = r#"
openapi: 3.0.3
info: {title: shop, version: 1.0.0}
servers:
  - url: http://gw.example.com:5555
paths:
  /users/{id}:
    get:
      operationId: getUser
      responses:
        '200': {description: ok}
  /orders:
    post:
      operationId: createOrder
      parameters:
        - {name: src, in: query, schema: {type: string}}
      requestBody:
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Order'}
      responses:
        '201':
          description: created
          content:
            application/json:
              schema:
                type: object
                properties:
                  ok: {type: boolean}
                  id: {type: integer}
  /health:
    get:
      responses:
        default: {description: any}
components:
  schemas:
    Order:
      type: object
      properties:
        id: {type: integer}
        qty: {type: integer}
"#;
    let spec = openapi::parse_spec(declared).expect("spec");
    let cfg = InferenceConfig::default();
    let o = observe_all(&cfg, &corpus());
    let r = diff::diff(&spec, &o);
    let has = |k: diff::DriftKind, method: &str, path: &str, detail: &str| {
        r.findings.iter().any(|f| {
            f.kind == k && f.method == method && f.path == path && f.detail.contains(detail)
        })
    };
    use diff::DriftKind::*;
    assert!(
        has(UndocumentedEndpoint, "GET", "/products/wordax", ""),
        "{}",
        r.to_text()
    );
    assert!(
        has(NewStatusCode, "POST", "/orders", "status 200"),
        "{}",
        r.to_text()
    );
    assert!(
        has(UnknownField, "POST", "/orders", "query parameter k1"),
        "{}",
        r.to_text()
    );
    assert!(
        has(UnknownField, "POST", "/orders", "request field note"),
        "{}",
        r.to_text()
    );
    assert!(
        has(
            TypeChange,
            "POST",
            "/orders",
            "request field qty: declared integer, observed number"
        ),
        "{}",
        r.to_text()
    );
    assert!(
        has(
            TypeChange,
            "POST",
            "/orders",
            "response 201 field id: declared integer, observed string"
        ),
        "{}",
        r.to_text()
    );
    assert!(has(NeverSeen, "GET", "/health", ""), "{}", r.to_text());
    assert!(!has(UndocumentedEndpoint, "GET", "/users/{userId}", ""));
    assert!(r.has_drift());
    assert_eq!(r.summary.matched_operations, 2);
    let back: diff::DriftReport =
        serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
    assert_eq!(back, r);
    // A spec describing the traffic has no drift but what it never saw.
    let docs = openapi::emit(&o, &cfg);
    let r = diff::diff(&docs[0].openapi, &o);
    assert!(!r.has_drift(), "{}", r.to_text());
}

#[test]
fn observations_schema_describes_the_serialised_document() {
    let schema: Value =
        serde_json::from_str(include_str!("../schemas/observations.schema.json")).expect("schema");
    let v = jsonschema::validator_for(&schema).expect("validator");
    let cfg = small_limits_config();
    let mut xs = corpus();
    xs.extend(secret_traffic());
    let o = observe_all(&cfg, &xs);
    let doc: Value = serde_json::from_str(&o.to_json()).expect("json");
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .take(10)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(Observations::from_json(&o.to_json()).is_ok());
    assert!(matches!(
        Observations::from_json(r#"{"format_version": 99}"#),
        Err(crate::ObservationsError::Version(Some(99)))
    ));
}

/// `stoa-tap analyze --json` output of a synthetic capture.
const SUMMARY_SAMPLE: &str = r#"{"files":["fixtures/synth/decode_ethernet.pcap"],"packets":10,"bytes":798,"flows":1,"exchanges":1,"unanswered":0,"gaps":0,"gap_bytes":0,"retransmits":0,"parse_errors":0,"evictions":0,"skipped_frames":0,"capture_seconds":0.009,"elapsed_seconds":0.00022265,"throughput_mb_per_s":3.5841006063328096,"packets_per_s":44913.54143274197,"exchanges_per_s":4491.354143274198,"warnings":[],"counters":{"capture":{"packets":10,"bytes":798,"snaplen_truncated":0,"out_of_order_timestamps":0,"first_ts_ns":1700000000000000000,"last_ts_ns":1700000000009000000},"decode":{},"tcp":{"segments":10,"segments_other_ports":0,"segments_not_http":0,"flows_opened":1,"flows_midstream":0,"flows_closed":1,"flows_idle_timeout":0,"flows_evicted":0,"flows_open_at_end":0,"bytes_delivered":210,"retransmitted_segments":0,"retransmitted_bytes":0,"out_of_order_segments":0,"overlap_conflict_bytes":0,"gaps":0,"gap_bytes":0,"snaplen_gaps":0,"buffer_overflows":0,"resets":0,"segments_after_close":0,"buffered_bytes":0,"peak_memory_bytes":2212},"http":{"requests":1,"responses":1,"interim_responses":0,"exchanges":1,"unanswered":0,"orphan_responses":0,"pending_overflow":0,"upgrades":0,"upgraded_bytes_ignored":0,"ambiguous_framing":0,"gaps":0,"gap_bytes":0,"gaps_in_body_synced":0,"resyncs":0,"resync_skipped_bytes":0,"truncated_messages":0,"truncated_header_blocks":0,"request_body_bytes":0,"response_body_bytes":29,"decoded_bodies":0,"decode_errors":0,"decode_limit_exceeded":0,"decode_unsupported":0,"parse_errors":0,"parse_error_header_too_large":0,"parse_error_too_many_headers":0,"parse_error_token":0,"parse_error_version":0,"parse_error_status":0,"parse_error_header_name":0,"parse_error_header_value":0,"parse_error_new_line":0,"parse_error_content_length":0,"parse_error_chunk_size":0,"parse_error_chunk_line_too_long":0,"parse_error_chunk_data_end":0,"parse_error_trailers_too_large":0},"exchanges":{"total":1,"answered":1,"unanswered":0,"with_gap":0,"truncated":0,"reset":0,"upgraded":0,"ambiguous_framing":0,"decode_failed":0}}}"#;

#[test]
fn summary_schema_describes_analyze_json() {
    let schema: Value =
        serde_json::from_str(include_str!("../schemas/summary.schema.json")).expect("schema");
    let v = jsonschema::validator_for(&schema).expect("validator");
    let doc: Value = serde_json::from_str(SUMMARY_SAMPLE).expect("sample");
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = doc.clone();
    bad["packets"] = json!(-1);
    assert!(!v.is_valid(&bad));
}

#[test]
fn closed_vocabulary_segments_become_parameters_and_literal_siblings_stay() {
    let ccy = ["EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK"];
    let mut xs = Vec::new();
    for (i, a) in ccy.iter().enumerate() {
        // EUR far more frequent than the rest: still a currency, not a literal.
        let reps = if i == 0 { 60 } else { 1 };
        for _ in 0..reps {
            for b in ccy.iter().filter(|b| *b != a).take(3) {
                xs.push(get(&format!("/api/v1/fx/rates/{a}/{b}")));
            }
        }
    }
    xs.push(get("/api/v1/fx/rates/latest"));
    for code in ["ZRH01", "GVA01", "BSL02"] {
        xs.push(get(&format!("/api/v1/branches/{code}")));
        xs.push(get(&format!("/api/v1/branches/{code}/atms")));
    }
    // Sparse traffic: this branch was only seen through one sub-resource.
    xs.push(get("/api/v1/branches/LUG01/atms"));
    for l in ["en", "de", "fr", "it"] {
        xs.push(get(&format!("/api/v1/i18n/{l}/messages")));
    }
    for l in ["en-GB", "de-CH"] {
        xs.push(get(&format!("/api/v1/content/{l}/pages")));
    }
    for id in 1..30 {
        xs.push(get(&format!("/api/v1/customers/{id}")));
    }
    for _ in 0..5 {
        xs.push(get("/api/v1/customers/me"));
        xs.push(get("/api/v1/accounts/summary"));
        xs.push(get("/api/v1/accounts/export"));
        xs.push(get("/api/v1/accounts/search"));
    }
    let m = model(&xs);
    let p = paths(&m);
    let want = [
        "/api/v1/accounts/export",
        "/api/v1/accounts/search",
        "/api/v1/accounts/summary",
        "/api/v1/branches/{branchCode}",
        "/api/v1/branches/{branchCode}/atms",
        "/api/v1/content/{contentCode}/pages",
        "/api/v1/customers/me",
        "/api/v1/customers/{customerId}",
        "/api/v1/fx/rates/latest",
        "/api/v1/fx/rates/{rateCode}/{code}",
        "/api/v1/i18n/{i18nCode}/messages",
    ];
    assert_eq!(p, want);
    let e = m.apis[0]
        .endpoints
        .iter()
        .find(|e| e.path == "/api/v1/fx/rates/{rateCode}/{code}")
        .expect("fx endpoint");
    assert_eq!(e.params[0].rule, "code-vocabulary");
    assert_eq!(e.operations[0].stats.count, 60 * 3 + 6 * 3);
}

#[test]
fn code_shaped_siblings_with_different_structures_stay_apart() {
    // OData-style service names: upper-case codes, but each its own API.
    let mut xs = Vec::new();
    for (svc, set) in [
        ("ZSD_ORDER_SRV", "SalesOrderSet"),
        ("ZMM_PO_SRV", "PurchaseOrderSet"),
        ("ZFI_DOC_SRV", "AccountingDocumentSet"),
    ] {
        xs.push(get(&format!("/sap/opu/odata/sap/{svc}/{set}")));
        xs.push(get(&format!("/sap/opu/odata/sap/{svc}/$metadata")));
    }
    // Two lower-case ISO-looking words are not enough evidence.
    xs.push(get("/search/by"));
    xs.push(get("/search/in"));
    let p = paths(&model(&xs));
    assert!(
        p.contains(&"/sap/opu/odata/sap/ZMM_PO_SRV/PurchaseOrderSet".to_string()),
        "{p:?}"
    );
    assert!(p.contains(&"/search/by".to_string()), "{p:?}");
    assert!(p.contains(&"/search/in".to_string()), "{p:?}");
}

#[test]
fn objects_keyed_by_codes_or_message_keys_are_maps() {
    let bodies = [
        json!({"base": "EUR", "rates": {"CHF": 0.94, "USD": 1.08, "GBP": 0.86}}),
        json!({"base": "USD", "rates": {"CHF": 0.87, "EUR": 0.93, "GBP": 0.79, "JPY": 151.2}}),
        json!({"base": "CHF", "rates": {"EUR": 1.06, "USD": 1.15, "GBP": 0.91}}),
    ];
    let msgs =
        json!({"messages": {"booking.title": "Book", "booking.cta": "Go", "search.empty": "None"}});
    let record = json!({"ID": 1, "NAME": "x", "CITY": "y"});
    let mut xs: Vec<Ex> = bodies
        .iter()
        .map(|b| get("/rates").resp_body("application/json", b.to_string().as_bytes()))
        .collect();
    xs.push(get("/messages").resp_body("application/json", msgs.to_string().as_bytes()));
    xs.push(get("/record").resp_body("application/json", record.to_string().as_bytes()));
    let cfg = InferenceConfig::default();
    let docs = openapi::emit(&observe_all(&cfg, &xs), &cfg);
    let doc: Value = serde_json::from_str(&docs[0].to_json()).expect("json");
    let schema = |p: &str| {
        doc["paths"][p]["get"]["responses"]["200"]["content"]["application/json"]["schema"].clone()
    };
    let rates = &schema("/rates")["properties"]["rates"];
    assert_eq!(rates["additionalProperties"]["type"], "number", "{rates}");
    assert!(rates.get("properties").is_none(), "{rates}");
    let m = &schema("/messages")["properties"]["messages"];
    assert_eq!(m["additionalProperties"]["type"], "string", "{m}");
    // Upper-case field names of mixed types stay a record.
    let r = schema("/record");
    assert!(r["properties"]["NAME"].is_object(), "{r}");
}

#[test]
fn soap_action_header_is_a_parameter() {
    let mut xs = Vec::new();
    for a in ["GetOrder", "CancelOrder"] {
        xs.push(
            req("POST", "/ws/Orders")
                .header("SOAPAction", &format!("\"urn:orders/{a}\""))
                .req_body("text/xml", b"<Envelope/>"),
        );
    }
    let cfg = InferenceConfig::default();
    let docs = openapi::emit(&observe_all(&cfg, &xs), &cfg);
    let doc: Value = serde_json::from_str(&docs[0].to_json()).expect("json");
    let op = doc["paths"]
        .as_object()
        .and_then(|p| p.values().next())
        .map(|p| p["post"].clone())
        .expect("operation");
    let p = op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "SOAPAction"))
        .expect("SOAPAction parameter");
    assert_eq!(p["in"], "header");
    assert_eq!(p["required"], true);
    assert_eq!(p["x-stoa-actions"]["urn:orders/GetOrder"], 1);
}

#[test]
fn malformed_http09_and_tunnel_exchanges_never_create_operations() {
    let mut bad = req("CCM_POST", "/edge/x").status(405);
    bad.0.anomalies.malformed_request = true;
    let mut old = get("/edge/page").status(0);
    old.0.anomalies.http09 = true;
    let mut tunnel = req("CONNECT", "example.com:443");
    tunnel.0.anomalies.tunnel = true;
    tunnel.0.anomalies.upgraded = true;
    let m = model(&[bad, old, tunnel, get("/edge/1"), get("/edge/2")]);
    assert_eq!(paths(&m), vec!["/edge/{edgeId}".to_string()]);
    let ops: Vec<&str> = m.apis[0].endpoints[0]
        .operations
        .iter()
        .map(|o| o.method.as_str())
        .collect();
    assert_eq!(
        ops,
        vec!["GET"],
        "only the well-formed requests make operations"
    );
    assert_eq!(m.apis[0].endpoints[0].operations[0].stats.count, 2);
    let cfg = InferenceConfig::default();
    let mut bad = req("BREW", "/pot").status(400);
    bad.0.anomalies.malformed_request = true;
    assert_eq!(observe_all(&cfg, &[bad]).totals.not_learned, 1);
}
