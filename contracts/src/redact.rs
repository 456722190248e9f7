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
    sum % 10 == 0
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
