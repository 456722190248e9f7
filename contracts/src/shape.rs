//! Shapes of path segments and scalar values: the order-independent rules
//! applied at observe time.

use serde::{Deserialize, Serialize};

/// What a path position held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegKind {
    /// Decimal integer.
    Int,
    /// UUID (8-4-4-4-12 hex).
    Uuid,
    /// Long hexadecimal string (hashes, object ids).
    Hex,
    /// ULID (26 Crockford base32 characters).
    Ulid,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// RFC 3339 date-time.
    DateTime,
    /// Email address.
    Email,
    /// Opaque random-looking identifier or credential.
    Token,
    /// A literal word beyond the cap of distinct literals at this position.
    Literal,
    /// Values from a closed vocabulary (currency, country or language codes,
    /// locales, branch or product codes), folded at emit time.
    Code,
    /// Routed here by an operator hint.
    Hinted,
    /// Segments beyond the depth cap.
    Rest,
}

impl SegKind {
    /// Name of the templating rule this kind stands for.
    pub fn rule(self) -> &'static str {
        match self {
            SegKind::Int => "id-shape:int",
            SegKind::Uuid => "id-shape:uuid",
            SegKind::Hex => "id-shape:hex",
            SegKind::Ulid => "id-shape:ulid",
            SegKind::Date => "id-shape:date",
            SegKind::DateTime => "id-shape:date-time",
            SegKind::Email => "id-shape:email",
            SegKind::Token => "id-shape:token",
            SegKind::Literal => "sibling-set",
            SegKind::Code => "code-vocabulary",
            SegKind::Hinted => "hint",
            SegKind::Rest => "depth-cap",
        }
    }
}

/// Classifies a path segment: `Some(kind)` when it is ID-shaped (a parameter
/// at once), `None` for a literal.
pub fn classify_segment(seg: &str) -> Option<SegKind> {
    let b = seg.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.len() <= 20 && b.iter().all(u8::is_ascii_digit) {
        return Some(SegKind::Int);
    }
    if is_uuid(b) {
        return Some(SegKind::Uuid);
    }
    if is_date(b) {
        return Some(SegKind::Date);
    }
    if b.len() > 10 && is_date(&b[..10]) && is_date_time(seg) {
        return Some(SegKind::DateTime);
    }
    if is_ulid(b) {
        return Some(SegKind::Ulid);
    }
    if b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit) {
        return Some(SegKind::Hex);
    }
    if b.contains(&b'@') && is_email(seg)
        || b.contains(&b'%') && seg.contains("%40") && is_email(&seg.replace("%40", "@"))
    {
        return Some(SegKind::Email);
    }
    if b.len() > 20 && b.iter().all(u8::is_ascii_digit) {
        return Some(SegKind::Int);
    }
    if crate::redact::secret_kind(seg).is_some() || looks_random(seg) {
        return Some(SegKind::Token);
    }
    None
}

/// `v1`, `V2`, `v1.2`, `v2beta1`, `1.0`: API versions, never parameters.
pub fn is_version(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.len() >= 2 && (b[0] == b'v' || b[0] == b'V') && b[1].is_ascii_digit() {
        let rest = &seg[1..];
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let tail = &rest[digits_end..];
        return !rest[..digits_end].ends_with('.')
            && (tail.is_empty()
                || ["alpha", "beta", "rc"].iter().any(|p| {
                    tail.strip_prefix(p)
                        .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()))
                }));
    }
    // 1.0, 2.1.3
    let parts: Vec<&str> = seg.split('.').collect();
    parts.len() >= 2
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// Segments that structure URLs and are never parameters.
pub fn is_reserved(seg: &str) -> bool {
    is_version(seg)
        || matches!(
            seg.to_ascii_lowercase().as_str(),
            "api"
                | "apis"
                | "rest"
                | "restv2"
                | "ws"
                | "gateway"
                | "invoke"
                | "soap"
                | "graphql"
                | "v"
                | "public"
                | "internal"
                | "admin"
        )
}

/// A coarse shape used to decide whether sibling literals are "alike":
/// character classes present and a length bucket.
pub fn loose_shape(seg: &str) -> u16 {
    let mut classes = 0u16;
    for c in seg.bytes() {
        classes |= match c {
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 4,
            b'-' | b'_' | b'.' => 8,
            _ => 16,
        };
    }
    let len_bucket = match seg.len() {
        0..=3 => 0,
        4..=8 => 1,
        9..=16 => 2,
        _ => 3,
    };
    classes | (len_bucket << 5)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_ulid(b: &[u8]) -> bool {
    b.len() == 26
        && matches!(b[0], b'0'..=b'7')
        && b.iter().all(|c| {
            c.is_ascii_digit()
                || (c.is_ascii_alphabetic()
                    && !matches!(c.to_ascii_uppercase(), b'I' | b'L' | b'O' | b'U'))
        })
        && b.iter().any(u8::is_ascii_alphabetic)
        && (b.iter().all(|c| !c.is_ascii_lowercase()) || b.iter().all(|c| !c.is_ascii_uppercase()))
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
}

fn is_date(b: &[u8]) -> bool {
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(&b[0..4]).is_some()
        && digits(&b[5..7]).is_some_and(|m| (1..=12).contains(&m))
        && digits(&b[8..10]).is_some_and(|d| (1..=31).contains(&d))
}

fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 19 || !is_date(&b[..10]) || !matches!(b[10], b'T' | b't' | b' ') {
        return false;
    }
    let t = &b[11..];
    if t.len() < 8 || t[2] != b':' || t[5] != b':' {
        return false;
    }
    if digits(&t[0..2]).is_none_or(|h| h > 23)
        || digits(&t[3..5]).is_none_or(|m| m > 59)
        || digits(&t[6..8]).is_none_or(|s| s > 60)
    {
        return false;
    }
    let mut rest = &t[8..];
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    match rest {
        [] => true,
        [b'Z'] | [b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        [b'+' | b'-', h1, h2, m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// `local@domain.tld`.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&c))
        && domain
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
}

/// Long strings of mixed character classes that alternate often: API keys,
/// session ids, random tokens. Slugs made of words do not qualify.
pub fn looks_random(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 16
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.~+/=".contains(c))
    {
        return false;
    }
    let class = |c: u8| match c {
        b'a'..=b'z' => 1u8,
        b'A'..=b'Z' => 2,
        b'0'..=b'9' => 3,
        _ => 0,
    };
    let mut transitions = 0usize;
    let mut prev = 0u8;
    let (mut letters, mut numbers) = (0usize, 0usize);
    for &c in b {
        let k = class(c);
        if k == 0 {
            continue;
        }
        if k == 3 {
            numbers += 1;
        } else {
            letters += 1;
        }
        if prev != 0 && prev != k {
            transitions += 1;
        }
        prev = k;
    }
    letters >= 2 && (numbers >= 2 || letters >= 20) && transitions >= (b.len() / 4).max(4)
}

/// Kind of a scalar value (query parameter, header, form field, JSON string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    /// Empty string.
    Empty,
    /// `true` / `false`.
    Boolean,
    /// Integer.
    Integer,
    /// Decimal number.
    Number,
    /// UUID.
    Uuid,
    /// RFC 3339 date-time.
    DateTime,
    /// `YYYY-MM-DD`.
    Date,
    /// Email address.
    Email,
    /// Absolute URI.
    Uri,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// Any other text.
    String,
}

impl ValueKind {
    /// OpenAPI / JSON Schema `format` of a string kind.
    pub fn format(self) -> Option<&'static str> {
        Some(match self {
            ValueKind::Uuid => "uuid",
            ValueKind::DateTime => "date-time",
            ValueKind::Date => "date",
            ValueKind::Email => "email",
            ValueKind::Uri => "uri",
            ValueKind::Ipv4 => "ipv4",
            ValueKind::Ipv6 => "ipv6",
            _ => return None,
        })
    }
}

/// Format of a JSON string value (never `Integer`/`Number`/`Boolean`).
pub fn string_format(s: &str) -> ValueKind {
    let b = s.as_bytes();
    if b.is_empty() {
        return ValueKind::String;
    }
    if is_uuid(b) {
        return ValueKind::Uuid;
    }
    if is_date(b) {
        return ValueKind::Date;
    }
    if b.len() >= 19 && is_date_time(s) {
        return ValueKind::DateTime;
    }
    if b.contains(&b'@') && is_email(s) {
        return ValueKind::Email;
    }
    if is_uri(s) {
        return ValueKind::Uri;
    }
    if b.len() >= 7 && b.len() <= 15 && s.parse::<std::net::Ipv4Addr>().is_ok() {
        return ValueKind::Ipv4;
    }
    if b.contains(&b':') && b.len() >= 2 && s.parse::<std::net::Ipv6Addr>().is_ok() {
        return ValueKind::Ipv6;
    }
    ValueKind::String
}

/// Kind of a scalar that arrived as text (query, header, form).
pub fn classify_value(s: &str) -> ValueKind {
    if s.is_empty() {
        return ValueKind::Empty;
    }
    if s == "true" || s == "false" {
        return ValueKind::Boolean;
    }
    let b = s.as_bytes();
    let body = b.strip_prefix(b"-").unwrap_or(b);
    if !body.is_empty() && body.len() <= 19 && body.iter().all(u8::is_ascii_digit) {
        return ValueKind::Integer;
    }
    if !body.is_empty()
        && body.len() <= 32
        && body.iter().filter(|c| **c == b'.').count() == 1
        && body.iter().all(|c| c.is_ascii_digit() || *c == b'.')
        && body.first() != Some(&b'.')
        && body.last() != Some(&b'.')
    {
        return ValueKind::Number;
    }
    string_format(s)
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.len() <= 16
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'.' || c == b'-')
        && !rest.is_empty()
        && !s.bytes().any(|c| c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shaped_segments() {
        assert_eq!(classify_segment("123"), Some(SegKind::Int));
        assert_eq!(
            classify_segment("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
            Some(SegKind::Uuid)
        );
        assert_eq!(
            classify_segment("5f43a1c2b9e8d7f6a5b4c3d2"),
            Some(SegKind::Hex)
        );
        assert_eq!(
            classify_segment("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            Some(SegKind::Ulid)
        );
        assert_eq!(classify_segment("2024-02-29"), Some(SegKind::Date));
        assert_eq!(
            classify_segment("2024-02-29T10:00:00Z"),
            Some(SegKind::DateTime)
        );
        assert_eq!(classify_segment("alice@example.com"), Some(SegKind::Email));
        assert_eq!(
            classify_segment("alice%40example.com"),
            Some(SegKind::Email)
        );
        assert_eq!(
            classify_segment("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            Some(SegKind::Token)
        );
        for lit in [
            "users",
            "me",
            "v2",
            "api",
            "search",
            "deadbeef",
            "order-items",
            "summary",
            "v1.2",
            "blue-widget-2024",
            "facade",
        ] {
            assert_eq!(classify_segment(lit), None, "{lit}");
        }
    }

    #[test]
    fn versions() {
        for v in ["v1", "V2", "v1.2", "v2beta1", "1.0", "2.1.3"] {
            assert!(is_version(v), "{v}");
        }
        for v in ["v", "vip", "1", "v1.", "version"] {
            assert!(!is_version(v), "{v}");
        }
    }

    #[test]
    fn value_kinds() {
        assert_eq!(classify_value("42"), ValueKind::Integer);
        assert_eq!(classify_value("-4.5"), ValueKind::Number);
        assert_eq!(classify_value("true"), ValueKind::Boolean);
        assert_eq!(classify_value(""), ValueKind::Empty);
        assert_eq!(classify_value("2024-01-01"), ValueKind::Date);
        assert_eq!(
            classify_value("2024-01-01T12:00:00.123+02:00"),
            ValueKind::DateTime
        );
        assert_eq!(classify_value("https://x.example/a"), ValueKind::Uri);
        assert_eq!(classify_value("10.0.0.1"), ValueKind::Ipv4);
        assert_eq!(classify_value("fe80::1"), ValueKind::Ipv6);
        assert_eq!(classify_value("bob@example.org"), ValueKind::Email);
        assert_eq!(classify_value("hello"), ValueKind::String);
        assert_eq!(classify_value("12:30"), ValueKind::String);
    }

    #[test]
    fn randomness() {
        assert!(looks_random("a8Fk29xLq0Zm3Nv7Rt5W"));
        assert!(!looks_random("the-quick-brown-fox-jumps"));
        assert!(!looks_random("product-2024-edition"));
    }
}
