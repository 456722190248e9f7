//! Redaction: decides, before anything is stored, whether a value may be
//! kept (as an enum member) or only its type and shape.
//!
//! The observations never hold header values, cookie values, credentials,
//! raw bodies or path segments that look like identifiers or secrets. The
//! only free-text values kept are members of small enums (query parameters,
//! headers, form fields, JSON strings) and literal path segments; both go
//! through [`Redactor::may_keep`], which refuses values of sensitive names and
//! values that are credentials or personal data by their shape.

use crate::config::RedactionConfig;
use serde::{Deserialize, Serialize};

/// Kinds of sensitive data recognised by their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// JSON Web Token.
    Jwt,
    /// Payment card number (Luhn-valid, 13-19 digits).
    Card,
    /// International bank account number (mod-97 valid).
    Iban,
    /// Email address.
    Email,
    /// PEM private key or certificate.
    Pem,
    /// An `Authorization`-style credential (`Bearer ...`, `Basic ...`).
    Credential,
    /// Long random-looking token.
    Token,
    /// A field whose name says it is a secret (password, token, ...).
    SecretField,
}

/// Classifies a value that is sensitive by its shape.
pub fn secret_kind(v: &str) -> Option<SecretKind> {
    let t = v.trim();
    let b = t.as_bytes();
    if b.len() < 6 {
        return None;
    }
    match b[0] {
        b'e' if is_jwt(t) => return Some(SecretKind::Jwt),
        b'-' if t.contains("-----BEGIN") => return Some(SecretKind::Pem),
        b'b' | b'B'
            if (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer "))
                || (b.len() > 6 && b[..6].eq_ignore_ascii_case(b"basic ")) =>
        {
            return Some(SecretKind::Credential)
        }
        b'0'..=b'9' if is_card(t) => return Some(SecretKind::Card),
        _ => {}
    }
    if b[0].is_ascii_alphabetic() && b[1].is_ascii_alphabetic() && is_iban(t) {
        return Some(SecretKind::Iban);
    }
    if b.contains(&b'@') && crate::shape::is_email(t) {
        return Some(SecretKind::Email);
    }
    if b.len() >= 16 && !is_uuid(b) && crate::shape::looks_random(t) {
        return Some(SecretKind::Token);
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `xxxxx.yyyyy.zzzzz` with a base64url JSON header.
pub fn is_jwt(t: &str) -> bool {
    t.len() >= 20
        && t.starts_with("eyJ")
        && t.bytes().filter(|c| *c == b'.').count() == 2
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'.'))
}

/// 13 to 19 digits (spaces and dashes allowed) passing the Luhn check.
pub fn is_card(t: &str) -> bool {
    let mut ds = [0u8; 19];
    let mut n = 0;
    for c in t.bytes() {
        match c {
            b'0'..=b'9' => {
                if n == 19 {
                    return false;
                }
                ds[n] = c - b'0';
                n += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    if !(13..=19).contains(&n) {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in ds[..n].iter().rev().enumerate() {
        let mut d = u32::from(*d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Country code, check digits, BBAN; mod-97 must be 1.
pub fn is_iban(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() < 15 || b.len() > 42 || !b[0].is_ascii_alphabetic() || !b[1].is_ascii_alphabetic() {
        return false;
    }
    let mut s = [0u8; 34];
    let mut n = 0;
    for &c in b {
        if c == b' ' {
            continue;
        }
        if n == 34 || !c.is_ascii_alphanumeric() {
            return false;
        }
        s[n] = c;
        n += 1;
    }
    let s = &s[..n];
    if n < 15 || !s[2].is_ascii_digit() || !s[3].is_ascii_digit() {
        return false;
    }
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(s[..4].iter()) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c.to_ascii_uppercase() - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

const SENSITIVE_SUBSTRINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "authorization",
    "authentication",
    "cookie",
    "session",
    "creditcard",
    "cardnumber",
    "cardno",
    "iban",
    "socialsecurity",
    "signature",
    "bearer",
    "jwt",
];

const SENSITIVE_WORDS: &[&str] = &[
    "pwd", "pass", "pin", "pan", "sid", "auth", "key", "sig", "card", "otp", "ssn", "cvv", "cvc",
    "cvv2", "email", "mail", "phone", "mobile", "iban", "bic", "account", "salt", "hash", "nonce",
    "code",
];

/// Compiled redaction rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    enabled: bool,
    extra: Vec<String>,
}

impl Redactor {
    pub fn new(cfg: &RedactionConfig) -> Self {
        Redactor {
            enabled: cfg.enabled,
            extra: cfg
                .extra_field_patterns
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        }
    }

    /// A field, parameter or header name that announces a sensitive value.
    pub fn sensitive_name(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        let compact: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
        if SENSITIVE_SUBSTRINGS.iter().any(|s| compact.contains(s)) {
            return true;
        }
        if crate::util::words(name)
            .iter()
            .any(|w| SENSITIVE_WORDS.contains(&w.as_str()))
        {
            return true;
        }
        self.extra.iter().any(|p| glob_match(p, &lower))
    }

    /// Whether `value` may be stored as an enum member, given whether its
    /// field name is sensitive.
    pub fn may_keep(&self, name_sensitive: bool, value: &str, max_len: usize) -> bool {
        if value.len() > max_len || secret_kind(value).is_some() {
            return false;
        }
        // Long digit runs (account numbers, phone numbers) are never kept.
        if value.bytes().filter(u8::is_ascii_digit).count() >= 9 {
            return false;
        }
        !(self.enabled && name_sensitive)
    }
}

/// Case-sensitive glob with `*`; a pattern without `*` matches as a substring.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return text.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors() {
        assert!(is_card("4111 1111 1111 1111"));
        assert!(is_card("5500-0000-0000-0004"));
        assert!(!is_card("4111 1111 1111 1112"));
        assert!(!is_card("12345"));
        assert!(is_iban("DE89 3704 0044 0532 0130 00"));
        assert!(is_iban("GB82WEST12345698765432"));
        assert!(!is_iban("GB82WEST12345698765433"));
        assert!(is_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"));
        assert_eq!(secret_kind("alice@example.com"), Some(SecretKind::Email));
        assert_eq!(secret_kind("Bearer abc.def"), Some(SecretKind::Credential));
        assert_eq!(secret_kind("a8Fk29xLq0Zm3Nv7Rt5W"), Some(SecretKind::Token));
        assert_eq!(secret_kind("pending"), None);
        assert_eq!(secret_kind("completed"), None);
    }

    #[test]
    fn names() {
        let r = Redactor::new(&RedactionConfig {
            enabled: true,
            extra_field_patterns: vec!["*_ref".into(), "acct".into()],
        });
        for n in [
            "password",
            "newPassword",
            "api_key",
            "X-API-Key",
            "client_secret",
            "accessToken",
            "JSESSIONID",
            "card_number",
            "cvv",
            "pin",
            "user_email",
            "order_ref",
            "acctNo",
        ] {
            assert!(r.sensitive_name(n), "{n}");
        }
        for n in [
            "status", "shipping", "author", "name", "page", "limit", "currency",
        ] {
            assert!(!r.sensitive_name(n), "{n}");
        }
        assert!(r.may_keep(false, "pending", 40));
        assert!(!r.may_keep(true, "pending", 40));
        assert!(!r.may_keep(false, "4111111111111111", 40));
        assert!(glob_match("a*c", "abbc"));
        assert!(!glob_match("a*c", "abbd"));
    }
}

/// Placeholder written where a value was removed.
pub const REDACTED: &str = "<redacted>";

/// Headers whose values are credentials or session state whatever they hold.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-gateway-apikey",
    "apikey",
];

/// A copy of `ex` fit to leave the host: credential headers, sensitive query
/// values, path segments that are personal data, and secrets inside JSON or
/// form bodies are replaced by [`REDACTED`]; a body sample that is neither
/// JSON nor a form is dropped (its sizes stay). Structure, names and
/// non-sensitive values are kept so the exchange stays useful for debugging.
pub fn redact_exchange(ex: &crate::Exchange, cfg: &RedactionConfig) -> crate::Exchange {
    let r = Redactor::new(cfg);
    let mut out = ex.clone();
    if !cfg.enabled {
        return out;
    }
    out.request.target = redact_target(&r, &ex.request.target);
    if !ex.request.raw_target.is_empty() {
        out.request.raw_target = redact_target(&r, &ex.request.raw_target).into();
    }
    redact_headers(&r, &mut out.request.headers);
    redact_body(&r, &mut out.request.body, &ex.request.headers);
    if let Some(resp) = out.response.as_mut() {
        redact_headers(&r, &mut resp.headers);
        let headers = resp.headers.clone();
        redact_body(&r, &mut resp.body, &headers);
    }
    out
}

fn redact_headers(r: &Redactor, headers: &mut [crate::Header]) {
    for h in headers {
        let lower = h.name.to_ascii_lowercase();
        if CREDENTIAL_HEADERS.contains(&lower.as_str())
            || r.sensitive_name(&h.name)
            || secret_kind(&h.value).is_some()
        {
            h.value = REDACTED.into();
        }
    }
}

fn redact_value(r: &Redactor, name: &str, value: &str) -> bool {
    r.sensitive_name(name) || secret_kind(value).is_some() || decoded_secret(value)
}

/// Percent-encoded secrets (`a%40b.example`) are checked decoded as well.
fn decoded_secret(value: &str) -> bool {
    value.contains('%') && secret_kind(&percent_decode(value)).is_some()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = [*h, *l];
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|t| u8::from_str_radix(t, 16).ok())
                    .unwrap_or(b'?');
                out.push(v);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn redact_pairs(r: &Redactor, query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if redact_value(r, &percent_decode(k), v) => format!("{k}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Redacts a request target: sensitive query values, and path segments that
/// are secrets or personal data. Routing information stays: ordinary
/// identifiers (numbers, UUIDs, ULIDs, hex object ids, short random ids) are
/// kept, since templates already tell them apart and the path is how an
/// exchange is found again; only credentials (JWT, bearer, PEM, long random
/// tokens), personal data (emails, card numbers with a card-network prefix,
/// IBANs) and random-looking values right after a segment that names a
/// secret (`/reset-token/<x>`, `/sessions/<x>`) are replaced. Matrix
/// parameters with a sensitive name (`;jsessionid=...`) are dropped.
fn redact_target(r: &Redactor, target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out = String::with_capacity(target.len());
    let mut prev: Option<&str> = None;
    for (k, seg) in path.split('/').enumerate() {
        if k > 0 {
            out.push('/');
        }
        let mut params = seg.split(';');
        let base = params.next().unwrap_or(seg);
        if path_segment_is_secret(r, prev, base) {
            out.push_str(REDACTED);
        } else {
            out.push_str(base);
        }
        for param in params {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if r.sensitive_name(&percent_decode(name)) {
                continue;
            }
            out.push(';');
            out.push_str(name);
            if param.contains('=') {
                out.push('=');
                if redact_value(r, name, value) {
                    out.push_str(REDACTED);
                } else {
                    out.push_str(value);
                }
            }
        }
        if !base.is_empty() {
            prev = Some(base);
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_pairs(r, q));
    }
    out
}

/// Path segments whose name announces that the next segment is a secret
/// (besides the names [`Redactor::sensitive_name`] recognises).
const SECRET_CONTEXT_SEGMENTS: &[&str] = &[
    "reset",
    "verify",
    "verification",
    "confirm",
    "activate",
    "activation",
    "invite",
    "invitation",
    "magic",
    "unsubscribe",
    "keys",
    "apikeys",
    "tokens",
    "secrets",
];

/// Whether one path segment (matrix parameters removed) must be redacted;
/// `prev` is the segment before it.
fn path_segment_is_secret(r: &Redactor, prev: Option<&str>, seg: &str) -> bool {
    if seg.len() < 6 {
        return false;
    }
    let decoded;
    let seg = if seg.contains('%') {
        decoded = percent_decode(seg);
        decoded.as_str()
    } else {
        seg
    };
    match secret_kind(seg) {
        Some(
            SecretKind::Jwt
            | SecretKind::Pem
            | SecretKind::Credential
            | SecretKind::Email
            | SecretKind::Iban
            | SecretKind::SecretField,
        ) => true,
        Some(SecretKind::Card) => card_network_prefix(seg),
        Some(SecretKind::Token) | None => {
            let tokenish = seg.len() >= 16 && !is_uuid(seg.as_bytes()) && random_like(seg);
            if !tokenish {
                return false;
            }
            let named_secret = prev.is_some_and(|p| {
                let lower = p.to_ascii_lowercase();
                r.sensitive_name(p)
                    || SECRET_CONTEXT_SEGMENTS
                        .iter()
                        .any(|c| lower.split(['-', '_', '.']).any(|w| w == *c))
            });
            // Long random strings are credentials wherever they are (API
            // keys, signed links); hex is left out: digests and object ids.
            let long_key = seg.len() >= 32 && !seg.bytes().all(|c| c.is_ascii_hexdigit());
            named_secret || long_key
        }
    }
}

/// Random-looking by shape, hex digests and ids included (which
/// [`crate::shape::looks_random`] may not flag).
fn random_like(s: &str) -> bool {
    crate::shape::looks_random(s)
        || (s.len() >= 16
            && s.bytes().all(|c| c.is_ascii_hexdigit())
            && s.bytes().any(|c| c.is_ascii_digit()))
}

/// A Luhn-valid number is a card number in a path only with the prefix and
/// length of a card network (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay, Maestro): long numeric ids (snowflakes, order numbers) pass the
/// Luhn check one time in ten and must stay.
fn card_network_prefix(t: &str) -> bool {
    let d: Vec<u8> = t
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| c - b'0')
        .collect();
    let n = d.len();
    let p = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x));
    match d.first() {
        Some(4) => matches!(n, 13 | 16 | 19),
        Some(5) => {
            (51..=55).contains(&p(2)) && n == 16
                || (p(1) == 5 && (12..=19).contains(&n) && matches!(p(2), 50 | 56..=58))
        }
        Some(2) => (2221..=2720).contains(&p(4)) && n == 16,
        Some(3) => {
            (matches!(p(2), 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
                || ((matches!(p(2), 36 | 38 | 39) || (300..=305).contains(&p(3)))
                    && (14..=19).contains(&n))
        }
        Some(6) => {
            (p(4) == 6011
                || p(2) == 65
                || (644..=649).contains(&p(3))
                || p(2) == 62
                || matches!(p(2), 63 | 67))
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

fn redact_json(r: &Redactor, key: &str, v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                redact_json(r, k, item);
            }
        }
        Value::Array(a) => {
            for item in a {
                redact_json(r, key, item);
            }
        }
        Value::String(s) => {
            if redact_value(r, key, s) {
                *s = REDACTED.to_owned();
            }
        }
        Value::Number(_) => {
            let text = v.to_string();
            if redact_value(r, key, &text) {
                *v = Value::String(REDACTED.to_owned());
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn redact_body(r: &Redactor, body: &mut crate::Body, headers: &[crate::Header]) {
    if body.sample.is_empty() {
        return;
    }
    let ctype = crate::exchange::find_header(headers, "content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let redacted = if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body.sample) {
        redact_json(r, "", &mut v);
        Some(serde_json::to_vec(&v).unwrap_or_default())
    } else if ctype.contains("x-www-form-urlencoded") {
        std::str::from_utf8(&body.sample)
            .ok()
            .map(|t| redact_pairs(r, t).into_bytes())
    } else {
        None
    };
    match redacted {
        Some(bytes) => body.sample = bytes,
        None => {
            // Unknown or partial content cannot be checked field by field.
            body.sample.clear();
            body.sample_truncated = true;
        }
    }
}

#[cfg(test)]
mod exchange_tests {
    use super::*;
    use crate::{Anomalies, Body, Exchange, FlowId, Header, HttpVersion, Request, Timing};

    fn body(s: &str) -> Body {
        Body {
            wire_len: s.len() as u64,
            decoded_len: s.len() as u64,
            sample: s.as_bytes().to_vec(),
            sample_truncated: false,
        }
    }

    #[test]
    fn path_redaction_keeps_identifiers_and_removes_secrets() {
        let r = Redactor::new(&RedactionConfig::default());
        // A Luhn-valid 19-digit snowflake id, and one that is not.
        let snowflake = (0..10u32)
            .map(|d| format!("154181560360603648{d}"))
            .find(|s| is_card(s))
            .expect("a Luhn-valid snowflake");
        for keep in [
            "/api/v1/payments/01HZ9KVS80EK132SMTNCHVDQ3T",
            "/api/v1/accounts/eb109491-9e46-5589-8510-c1680a232ecd/transactions/e1174cdcd7addc9cf2513d22",
            "/repos/stoa/commits/3f786850e387550fdab836ed7e6dc881de23001b",
            &format!("/tweets/{snowflake}"),
            "/customers/cus_NffrFeUfNV2Hib/orders/1234",
            "/docs/getting-started-with-the-api;v=2",
            "/api/v1/orders/42?page=2",
        ] {
            assert_eq!(redact_target(&r, keep), keep);
        }
        for (secret, want) in [
            (
                "/api/v1/customers/mila.silva.1001@mail.example.org/preferences",
                "/api/v1/customers/<redacted>/preferences",
            ),
            ("/cards/4111111111111111", "/cards/<redacted>"),
            (
                "/reset-password/a8Fk29xLq0Zm3Nv7Rt5W",
                "/reset-password/<redacted>",
            ),
            (
                "/invite/3f786850e387550fdab836ed7e6dc881",
                "/invite/<redacted>",
            ),
            (
                "/hooks/Zx9kLq2Wm8Np4Rt6Vb1Yc3Hd5Jf7Gs0Ka2Qe4",
                "/hooks/<redacted>",
            ),
            (
                "/v/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl/x",
                "/v/<redacted>/x",
            ),
            ("/cart;jsessionid=ABC123DEF;v=1", "/cart;v=1"),
        ] {
            assert_eq!(redact_target(&r, secret), want);
        }
    }

    #[test]
    fn secrets_leave_no_trace_in_a_redacted_exchange() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let ex = Exchange {
            flow: FlowId {
                client: "127.0.0.1:1000".parse().expect("addr"),
                server: "127.0.0.1:5555".parse().expect("addr"),
            },
            seq_on_flow: 0,
            request: Request {
                method: "POST".into(),
                target: "/users/alice%40example.com/cards;jsessionid=abc?api_key=k3y-s3cret&page=2&q=bob@example.org".into(),
                raw_target: "/users/alice%40example.com/cards;jsessionid=abc?api_key=k3y-s3cret&page=2&q=bob@example.org".into(),
                version: HttpVersion::Http11,
                headers: vec![
                    Header { name: "Authorization".into(), value: format!("Bearer {jwt}").into() },
                    Header { name: "Cookie".into(), value: "SESSION=deadbeefcafe".into() },
                    Header { name: "Content-Type".into(), value: "application/json".into() },
                ],
                body: body(r#"{"user":{"password":"hunter2","card":"4111111111111111","iban":"DE89370400440532013000","age":41,"note":"ok"}}"#),
            },
            response: Some(crate::Response {
                status: 200,
                reason: "OK".into(),
                version: HttpVersion::Http11,
                headers: vec![Header { name: "Set-Cookie".into(), value: "SESSION=feedface; HttpOnly".into() }],
                body: body("<xml>secret 4111111111111111</xml>"),
                interim: vec![],
            }),
            timing: Timing::default(),
            anomalies: Anomalies::default(),
        };
        let red = redact_exchange(&ex, &RedactionConfig::default());
        let text = serde_json::to_string(&red).expect("json");
        for secret in [
            jwt,
            "hunter2",
            "4111111111111111",
            "DE89370400440532013000",
            "deadbeefcafe",
            "feedface",
            "k3y-s3cret",
            "alice%40example.com",
            "bob@example.org",
            "jsessionid",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        // Structure and harmless values stay.
        let sample = String::from_utf8_lossy(&red.request.body.sample).into_owned();
        assert!(
            sample.contains("\"age\":41") && sample.contains("\"note\":\"ok\""),
            "{sample}"
        );
        assert!(
            red.request.target.contains("page=2"),
            "{}",
            red.request.target
        );
        let off = RedactionConfig {
            enabled: false,
            ..RedactionConfig::default()
        };
        assert_eq!(redact_exchange(&ex, &off), ex);
    }
}
