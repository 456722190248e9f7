//! One observed HTTP/1.x exchange: the input of contract inference.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Nanoseconds since the Unix epoch, as recorded by the capture.
pub type TimestampNs = u64;

/// The connection an exchange travelled on, oriented client -> server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowId {
    /// The side that sent the request.
    pub client: SocketAddr,
    /// The side that answered (the gateway).
    pub server: SocketAddr,
}

/// HTTP version as written on the start line (`HTTP/1.0` or `HTTP/1.1`), or
/// HTTP/0.9 for a request line without a version (and its status-less answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpVersion {
    /// A request line with no version (`GET /path`): no headers, and a
    /// response that is a bare body delimited by the close.
    #[serde(rename = "HTTP/0.9")]
    Http09,
    /// `HTTP/1.0`
    #[serde(rename = "HTTP/1.0")]
    Http10,
    /// `HTTP/1.1`
    #[serde(rename = "HTTP/1.1")]
    Http11,
}

impl HttpVersion {
    /// Maps httparse's minor version number.
    pub fn from_minor(minor: u8) -> Self {
        // httparse reports the minor version of `HTTP/1.x` only.
        if minor == 0 {
            HttpVersion::Http10
        } else {
            HttpVersion::Http11
        }
    }
}

/// One header field. Values that are not UTF-8 are kept lossily. Both
/// strings are stored inline up to 24 bytes, which covers nearly every name
/// and most values: parsing a message allocates nothing per field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Field name as sent (case preserved).
    pub name: CompactString,
    /// Field value, trimmed of surrounding whitespace.
    pub value: CompactString,
}

/// A message body: its sizes and a bounded, decoded sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Bytes of body on the wire, after message framing (chunk headers
    /// excluded) and before content decoding.
    pub wire_len: u64,
    /// Bytes after content decoding (gzip, deflate, br); equals `wire_len`
    /// when there is no content coding or decoding failed.
    pub decoded_len: u64,
    /// The first bytes of the decoded body, at most the configured sample size.
    #[serde(with = "sample_serde", default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<u8>,
    /// The sample is shorter than the body (size bound, gap, or decode bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sample_truncated: bool,
}

/// The request half of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Method token (`GET`, `POST`, ...).
    pub method: CompactString,
    /// Request target, normalised (RFC 3986 section 6.2.2): percent-encoded
    /// unreserved characters decoded, other percent-encodings in upper case,
    /// bytes a URI cannot hold (spaces, quotes, non-ASCII...) percent-encoded.
    /// Equal to `raw_target` for nearly every request. Origin form, absolute
    /// form, authority (CONNECT) or `*`; empty when the request line had none.
    pub target: String,
    /// Request target exactly as sent on the request line (bytes that are not
    /// UTF-8 replaced by U+FFFD) when it differs from `target`; empty when the
    /// target was sent in normal form (nearly always) and in records written
    /// before this field existed: use [`Request::target_as_sent`]. The
    /// `--exchanges` output always writes it.
    #[serde(default)]
    pub raw_target: CompactString,
    /// Protocol version.
    pub version: HttpVersion,
    /// Header fields in wire order.
    pub headers: Vec<Header>,
    /// Body sizes and sample.
    pub body: Body,
}

impl Request {
    /// The target as sent; for records written before the raw target was
    /// kept, the (then unnormalised) `target`.
    pub fn target_as_sent(&self) -> &str {
        if self.raw_target.is_empty() {
            &self.target
        } else {
            &self.raw_target
        }
    }
}

/// The response half of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Status code; 0 for an HTTP/0.9 response (a bare body, no status line).
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: CompactString,
    /// Protocol version.
    pub version: HttpVersion,
    /// Header fields in wire order.
    pub headers: Vec<Header>,
    /// Body sizes and sample.
    pub body: Body,
    /// Interim (1xx) responses seen before this one, by status code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interim: Vec<u16>,
}

/// The four capture timestamps of an exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// First byte of the request seen.
    pub request_first_ns: TimestampNs,
    /// Last byte of the request seen.
    pub request_last_ns: TimestampNs,
    /// First byte of the (final) response seen.
    pub response_first_ns: Option<TimestampNs>,
    /// Last byte of the response seen.
    pub response_last_ns: Option<TimestampNs>,
}

impl Timing {
    /// Server time: response first byte minus request last byte.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response_first_ns
            .map(|r| r.saturating_sub(self.request_last_ns))
    }

    /// Total time: response last byte minus request first byte.
    pub fn total_ns(&self) -> Option<u64> {
        self.response_last_ns
            .map(|r| r.saturating_sub(self.request_first_ns))
    }
}

/// What went wrong or was unusual while observing an exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Anomalies {
    /// Bytes of this exchange were missing from the capture.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
    /// A message ended before its framing said it would (close, timeout, end of capture).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The connection was reset during the exchange.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// No response was seen for the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// The connection switched protocols (Upgrade or CONNECT); parsing stopped after this exchange.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upgraded: bool,
    /// Ambiguous framing (Content-Length with Transfer-Encoding, duplicate lengths, ...),
    /// the shapes used for request smuggling.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ambiguous_framing: bool,
    /// A content coding could not be decoded (corrupt data or over the bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decode_failed: bool,
    /// The request head could not be parsed in full (syntax the parser refuses,
    /// a missing target, over the size bound, a gap inside it, or answered by
    /// the server before it was complete). Method, target and version come
    /// from the request line alone; headers are not recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub malformed_request: bool,
    /// The request head was larger than the parser's bound (servers answer
    /// these with 431 or 400); also `malformed_request`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_too_large: bool,
    /// An HTTP/0.9 request (no version, no headers); its response, if any, is
    /// a bare body with status 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http09: bool,
    /// A CONNECT the server accepted: the bytes after it are a tunnel, counted
    /// but not parsed (also `upgraded`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tunnel: bool,
}

impl Anomalies {
    /// True when nothing unusual was seen.
    pub fn is_clean(&self) -> bool {
        *self == Anomalies::default()
    }
}

/// One HTTP/1.x request and, when seen, its final response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// Connection the exchange travelled on.
    pub flow: FlowId,
    /// Position of this exchange on its connection (0 for the first request).
    pub seq_on_flow: u32,
    /// The request.
    pub request: Request,
    /// The final response, if one was seen.
    pub response: Option<Response>,
    /// Capture timestamps.
    pub timing: Timing,
    /// Anomaly flags.
    pub anomalies: Anomalies,
}

impl Exchange {
    /// Value of the first header with this name (ASCII case-insensitive).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        find_header(&self.request.headers, name)
    }

    /// Value of the first response header with this name.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response
            .as_ref()
            .and_then(|r| find_header(&r.headers, name))
    }
}

/// First header with this name, compared ASCII case-insensitively.
pub fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The normal form of a request target (RFC 3986 section 6.2.2), or `None`
/// when `raw` is already in normal form (valid UTF-8, nothing to change): the
/// common case costs one pass over the bytes and no allocation.
///
/// Percent-encoded unreserved characters (`%41` -> `A`, `%7e` -> `~`) are
/// decoded, the hex digits of other percent-encodings upper-cased (`%3d` ->
/// `%3D`), and bytes a URI may not hold (controls, space, `"`, `<`, `>`, `\`,
/// `^`, `` ` ``, `{`, `|`, `}`, non-ASCII, a `%` not followed by two hex
/// digits) percent-encoded. Reserved characters keep their encoding (`%2F`
/// stays), so the path's structure never changes.
pub fn normalize_target(raw: &[u8]) -> Option<String> {
    if raw.iter().all(|&b| URI_PLAIN[usize::from(b)]) {
        // Plain ASCII: valid UTF-8 and already normal.
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hexval = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = String::with_capacity(raw.len() + 8);
    let push_enc = |out: &mut String, b: u8| {
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    };
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let pair = raw
                .get(i + 1)
                .zip(raw.get(i + 2))
                .and_then(|(&h, &l)| Some((hexval(h)? << 4) | hexval(l)?));
            match pair {
                Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    out.push(char::from(v));
                }
                Some(v) => push_enc(&mut out, v),
                None => {
                    // A lone `%` is data, not an escape.
                    push_enc(&mut out, b'%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
        } else if uri_byte_ok(b) {
            out.push(char::from(b));
            i += 1;
        } else {
            push_enc(&mut out, b);
            i += 1;
        }
    }
    (out.as_bytes() != raw).then_some(out)
}

/// Bytes that stand for themselves in a normalised target (`%` excluded: it
/// starts an escape that may need rewriting), as a table so the check of a
/// whole target vectorises.
static URI_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0usize;
    while b < 256 {
        t[b] = uri_byte_ok(b as u8) && b != b'%' as usize;
        b += 1;
    }
    t
};

/// A byte that may appear as itself in a normalised request target.
const fn uri_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Body samples travel as UTF-8 text when they are valid UTF-8, else as
/// lowercase hex prefixed with `hex:` so JSON lines stay readable.
mod sample_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(t) if !t.starts_with("hex:") => s.serialize_str(t),
            _ => {
                let mut out = String::with_capacity(4 + v.len() * 2);
                out.push_str("hex:");
                for b in v {
                    out.push(char::from(HEX[(b >> 4) as usize]));
                    out.push(char::from(HEX[(b & 15) as usize]));
                }
                s.serialize_str(&out)
            }
        }
    }

    const HEX: &[u8; 16] = b"0123456789abcdef";

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = String::deserialize(d)?;
        match t.strip_prefix("hex:") {
            Some(h) => {
                if h.len() % 2 != 0 {
                    return Err(serde::de::Error::custom("odd hex length"));
                }
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(serde::de::Error::custom))
                    .collect()
            }
            None => Ok(t.into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(sample: &[u8]) -> Body {
        Body {
            wire_len: sample.len() as u64,
            decoded_len: sample.len() as u64,
            sample: sample.to_vec(),
            sample_truncated: false,
        }
    }

    #[test]
    fn binary_and_text_samples_round_trip_through_json() {
        for s in [
            &b"{\"a\":1}"[..],
            &[0xff, 0x00, 0x10][..],
            b"hex:looks-like-hex",
        ] {
            let b = body(s);
            let j = serde_json::to_string(&b).expect("serialize");
            let back: Body = serde_json::from_str(&j).expect("deserialize");
            assert_eq!(back, b, "{j}");
        }
    }

    #[test]
    fn targets_are_normalised_only_where_needed() {
        for plain in [
            &b"/api/v1/users/1?page=2"[..],
            b"*",
            b"example.com:443",
            b"/a%2Fb%40c",
        ] {
            assert_eq!(
                normalize_target(plain),
                None,
                "{:?}",
                String::from_utf8_lossy(plain)
            );
        }
        let cases: [(&[u8], &str); 7] = [
            (b"/a%2fb", "/a%2Fb"),
            (b"/%7euser/%41bc", "/~user/Abc"),
            (b"/q?x=%3d%22", "/q?x=%3D%22"),
            (b"/a b", "/a%20b"),
            (b"/say?q=\"hi\"", "/say?q=%22hi%22"),
            (b"/caf\xc3\xa9/\xff", "/caf%C3%A9/%FF"),
            (b"/100%/x%4", "/100%25/x%254"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_target(raw).as_deref(), Some(want));
        }
    }

    #[test]
    fn records_without_the_new_fields_still_load() {
        let old = r#"{"method":"GET","target":"/a%20b","version":"HTTP/1.1","headers":[],"body":{"wire_len":0,"decoded_len":0}}"#;
        let r: Request = serde_json::from_str(old).expect("old request");
        assert_eq!(r.target_as_sent(), "/a%20b");
        let a: Anomalies = serde_json::from_str(r#"{"gap":true}"#).expect("old anomalies");
        assert!(a.gap && !a.malformed_request && !a.tunnel);
        let v: HttpVersion = serde_json::from_str(r#""HTTP/0.9""#).expect("0.9");
        assert_eq!(v, HttpVersion::Http09);
    }

    #[test]
    fn latency_is_server_time() {
        let t = Timing {
            request_first_ns: 10,
            request_last_ns: 20,
            response_first_ns: Some(70),
            response_last_ns: Some(100),
        };
        assert_eq!(t.latency_ns(), Some(50));
        assert_eq!(t.total_ns(), Some(90));
    }
}
