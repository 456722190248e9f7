//! Authentication detection: Bearer (JWT header and claims decoded, never
//! verified), Basic, other `Authorization` schemes, API keys in headers or
//! query strings, and session cookies. Only scheme names, parameter names and
//! non-secret JWT claims (alg, iss, aud, scopes) are kept; never a credential.

use crate::config::Limits;
use crate::util::{BoundedMap, Merge};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Built-in header names that carry an API key (lowercase).
pub(crate) const API_KEY_HEADERS: &[&str] = &[
    "x-api-key",
    "api-key",
    "apikey",
    "x-apikey",
    "x-gateway-apikey",
    "x-gateway-api-key",
    "x-api-token",
    "x-auth-token",
    "x-access-token",
    "ocp-apim-subscription-key",
    "x-ibm-client-id",
    "x-ibm-client-secret",
    "client_id",
    "x-client-id",
    "x-client-secret",
];

/// Built-in query parameter names that carry an API key.
pub(crate) const API_KEY_QUERY: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "access_token",
    "subscription-key",
    "client_secret",
];

/// Query names that carry a key only when the value looks like one.
const MAYBE_KEY_QUERY: &[&str] = &["key", "token", "auth", "sig", "signature"];

/// Cookie names that hold a session.
pub(crate) fn is_session_cookie(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    matches!(
        l.as_str(),
        "jsessionid"
            | "phpsessid"
            | "asp.net_sessionid"
            | "connect.sid"
            | "sid"
            | "ssnid"
            | "session"
            | "sessionid"
            | "session_id"
            | "sess"
            | "_session"
            | "laravel_session"
    ) || l.ends_with("_session")
        || l.ends_with("sessionid")
        || l.ends_with("_sid")
        || l.starts_with("sess")
}

/// What the `Authorization` header holds.
pub(crate) enum AuthHeader<'a> {
    Bearer(&'a str),
    Basic,
    Other(&'a str),
}

pub(crate) fn parse_authorization(v: &str) -> Option<AuthHeader<'_>> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return None;
    }
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        AuthHeader::Bearer(rest.trim())
    } else if scheme.eq_ignore_ascii_case("basic") {
        AuthHeader::Basic
    } else {
        AuthHeader::Other(scheme)
    })
}

/// Whether a query parameter is an API key.
pub(crate) fn is_api_key_query(name: &str, value: &str, extra: &[String]) -> bool {
    // Compared without a lowercase copy: this runs for every query parameter.
    let is = |k: &&str| k.eq_ignore_ascii_case(name);
    API_KEY_QUERY.iter().any(is)
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
        || (MAYBE_KEY_QUERY.iter().any(is)
            && (crate::shape::looks_random(value) || crate::redact::is_jwt(value)))
}

/// Base64url (or standard base64) without padding requirements.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Non-secret facts read from a JWT (signature never checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JwtFacts {
    pub alg: Option<String>,
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub scopes: Vec<String>,
}

fn short_text(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| s.len() <= 200 && crate::redact::secret_kind(s).is_none())
        .map(str::to_string)
}

pub(crate) fn decode_jwt(token: &str) -> Option<JwtFacts> {
    let mut parts = token.split('.');
    let header = parts.next()?;
    let payload = parts.next()?;
    parts.next()?;
    let h: Value = serde_json::from_slice(&b64_decode(header)?).ok()?;
    let p: Value = serde_json::from_slice(&b64_decode(payload)?).ok()?;
    let mut f = JwtFacts {
        alg: h.get("alg").and_then(short_text),
        iss: p.get("iss").and_then(short_text),
        ..JwtFacts::default()
    };
    match p.get("aud") {
        Some(Value::Array(a)) => f.aud = a.iter().filter_map(short_text).collect(),
        Some(v) => f.aud.extend(short_text(v)),
        None => {}
    }
    for key in ["scope", "scp", "scopes", "roles"] {
        match p.get(key) {
            Some(Value::String(s)) => f.scopes.extend(
                s.split_whitespace()
                    .filter(|x| x.len() <= 100)
                    .map(str::to_string),
            ),
            Some(Value::Array(a)) => f.scopes.extend(a.iter().filter_map(short_text)),
            _ => {}
        }
    }
    Some(f)
}

/// Claims gathered over all JWTs of one scheme.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct JwtObs {
    /// Signing algorithms (`alg`).
    pub algs: BoundedMap<u64>,
    /// Issuers (`iss`).
    pub issuers: BoundedMap<u64>,
    /// Audiences (`aud`).
    pub audiences: BoundedMap<u64>,
    /// Scopes (`scope`, `scp`, `scopes`, `roles`).
    pub scopes: BoundedMap<u64>,
}

fn mark(m: &mut BoundedMap<u64>, k: &str, cap: usize) {
    // Sets: presence only, so that decoding a token once or many times gives
    // the same result (tokens are decoded once per distinct token).
    if m.slot(k, cap, || 1).is_none() {
        m.dropped = 1;
    }
    m.dropped = m.dropped.min(1);
}

impl JwtObs {
    pub fn add(&mut self, f: &JwtFacts, limits: &Limits) {
        let cap = limits.max_claim_values;
        if let Some(a) = &f.alg {
            mark(&mut self.algs, a, cap);
        }
        if let Some(i) = &f.iss {
            mark(&mut self.issuers, i, cap);
        }
        for a in &f.aud {
            mark(&mut self.audiences, a, cap);
        }
        for s in &f.scopes {
            mark(&mut self.scopes, s, limits.max_claim_values * 4);
        }
    }

    fn merge(&mut self, o: &JwtObs, limits: &Limits) {
        let cap = limits.max_claim_values;
        for (m, om, c) in [
            (&mut self.algs, &o.algs, cap),
            (&mut self.issuers, &o.issuers, cap),
            (&mut self.audiences, &o.audiences, cap),
            (&mut self.scopes, &o.scopes, cap * 4),
        ] {
            m.merge_capped(om, c, limits);
            for v in m.entries.values_mut() {
                *v = 1;
            }
            m.dropped = m.dropped.min(1);
        }
    }
}

/// One authentication scheme seen on an API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SchemeObs {
    /// `http`, `apiKey`.
    pub kind: String,
    /// HTTP scheme (`bearer`, `basic`, ...) for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// `header`, `query` or `cookie` for `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Header, query parameter or cookie name for `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests that carried it.
    pub count: u64,
    /// Bearer tokens that were JWTs.
    #[serde(default, skip_serializing_if = "crate::util::is_zero")]
    pub jwt_count: u64,
    /// JWT facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtObs>,
}

impl Merge for SchemeObs {
    fn merge_from(&mut self, o: &Self, limits: &Limits) {
        self.count += o.count;
        if let Some(n) = &o.name {
            self.note_name(n);
        }
        self.jwt_count += o.jwt_count;
        match (&mut self.jwt, &o.jwt) {
            (Some(a), Some(b)) => a.merge(b, limits),
            (None, Some(b)) => self.jwt = Some(b.clone()),
            _ => {}
        }
    }
    fn weight(&self) -> u64 {
        self.count
    }
}

impl SchemeObs {
    /// Keeps the smallest spelling of the name (header and cookie names vary
    /// in case), so that the result does not depend on order.
    pub fn note_name(&mut self, name: &str) {
        if self.name.as_deref().is_some_and(|n| name < n) {
            self.name = Some(name.to_string());
        }
    }

    pub fn http(scheme: &str) -> Self {
        SchemeObs {
            kind: "http".into(),
            scheme: Some(scheme.to_ascii_lowercase()),
            ..SchemeObs::default()
        }
    }

    pub fn api_key(location: &str, name: &str) -> Self {
        SchemeObs {
            kind: "apiKey".into(),
            location: Some(location.into()),
            name: Some(name.into()),
            ..SchemeObs::default()
        }
    }

    /// OpenAPI security scheme object.
    pub fn to_openapi(&self) -> Value {
        let mut v = if self.kind == "http" {
            let scheme = self.scheme.clone().unwrap_or_else(|| "bearer".into());
            let mut v = json!({"type": "http", "scheme": scheme});
            if scheme == "bearer" && self.jwt_count > 0 {
                v["bearerFormat"] = json!("JWT");
            }
            v
        } else {
            json!({"type": "apiKey", "in": self.location, "name": self.name})
        };
        let mut ext = json!({"requests": self.count});
        if let Some(j) = &self.jwt {
            let list = |m: &BoundedMap<u64>| -> Value {
                Value::Array(m.entries.keys().map(|k| json!(k)).collect())
            };
            ext["jwt"] = json!({
                "tokens": self.jwt_count,
                "alg": list(&j.algs),
                "iss": list(&j.issuers),
                "aud": list(&j.audiences),
                "scopes": list(&j.scopes),
                "verified": false,
            });
        }
        v["x-stoa-evidence"] = ext;
        v
    }
}

/// Scheme id used as the key in observations and as the OpenAPI scheme name
/// (`[A-Za-z0-9._-]`).
pub(crate) fn scheme_id(out: &mut String, prefix: &str, name: &str) {
    out.clear();
    out.push_str(prefix);
    for c in name.chars().take(64) {
        out.push(
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_facts() {
        // {"alg":"RS256","typ":"JWT"} . {"sub":"user-42","iss":"https://idp.example.com","aud":["orders"],"scope":"orders:read orders:write"}
        let h = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";
        let p = b64_encode(br#"{"sub":"user-42","iss":"https://idp.example.com","aud":["orders"],"scope":"orders:read orders:write"}"#);
        let t = format!("{h}.{p}.c2ln");
        let f = decode_jwt(&t).expect("jwt");
        assert_eq!(f.alg.as_deref(), Some("RS256"));
        assert_eq!(f.iss.as_deref(), Some("https://idp.example.com"));
        assert_eq!(f.aud, vec!["orders"]);
        assert_eq!(f.scopes, vec!["orders:read", "orders:write"]);
        assert!(decode_jwt("abc.def").is_none());
    }

    pub(crate) fn b64_encode(b: &[u8]) -> String {
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

    #[test]
    fn header_and_query_detection() {
        assert!(matches!(
            parse_authorization("Bearer abc"),
            Some(AuthHeader::Bearer("abc"))
        ));
        assert!(matches!(
            parse_authorization("basic dXNlcjpwYXNz"),
            Some(AuthHeader::Basic)
        ));
        assert!(matches!(
            parse_authorization("Digest x=1"),
            Some(AuthHeader::Other("Digest"))
        ));
        assert!(is_api_key_query("api_key", "x", &[]));
        assert!(is_api_key_query("key", "a8Fk29xLq0Zm3Nv7Rt5W", &[]));
        assert!(!is_api_key_query("key", "color", &[]));
        assert!(is_api_key_query("tenant_key", "x", &["TENANT_KEY".into()]));
        assert!(is_session_cookie("JSESSIONID"));
        assert!(is_session_cookie("myapp_session"));
        assert!(!is_session_cookie("theme"));
        assert_eq!(b64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
    }
}
