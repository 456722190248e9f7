//! Start line and header parsing (httparse), framing headers, and the patterns
//! used to find a message start again after a gap or garbage.

use super::coding::Coding;
use super::{Http1Config, ResponseHeaders};
use compact_str::CompactString;
use contracts::{Header, HttpVersion};
use std::mem::MaybeUninit;

/// Header slots kept on the stack; larger `max_headers` use a heap array.
const STACK_HEADERS: usize = 128;
/// Hard ceiling on header slots whatever the configuration says.
const MAX_HEADER_SLOTS: usize = 4096;
/// Longest method token accepted when looking for a request line during resync.
const MAX_METHOD_LEN: usize = 24;

/// Which direction's messages a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Request,
    Response,
}

/// Why a message could not be parsed. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum ParseError {
    #[error("header block larger than the configured bound")]
    HeaderTooLarge,
    #[error("more header fields than the configured bound")]
    TooManyHeaders,
    #[error("invalid token in the start line")]
    Token,
    #[error("invalid HTTP version")]
    Version,
    #[error("invalid status code")]
    Status,
    #[error("invalid header name")]
    HeaderName,
    #[error("invalid header value")]
    HeaderValue,
    #[error("invalid line ending")]
    NewLine,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("invalid chunk size")]
    ChunkSize,
    #[error("chunk size line too long")]
    ChunkLineTooLong,
    #[error("chunk data not followed by CRLF")]
    ChunkDataEnd,
    #[error("trailer section larger than the configured bound")]
    TrailersTooLarge,
}

impl From<httparse::Error> for ParseError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::HeaderName => ParseError::HeaderName,
            httparse::Error::HeaderValue => ParseError::HeaderValue,
            httparse::Error::NewLine => ParseError::NewLine,
            httparse::Error::Status => ParseError::Status,
            httparse::Error::Token => ParseError::Token,
            httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
            httparse::Error::Version => ParseError::Version,
        }
    }
}

/// The content codings a body carries, as far as decoding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Codings {
    /// None (or only `identity`).
    #[default]
    Identity,
    /// Exactly one coding this module decodes.
    One(Coding),
    /// Unknown codings, or several stacked.
    Unsupported,
}

/// What the headers say about framing and coding.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FramingInfo {
    /// First Content-Length value.
    pub content_length: Option<u64>,
    /// A Content-Length value that is not a decimal u64.
    pub content_length_invalid: bool,
    /// Several different Content-Length values.
    pub content_length_conflict: bool,
    /// A Transfer-Encoding field is present.
    pub transfer_encoding: bool,
    /// `chunked` is the final transfer coding.
    pub chunked: bool,
    /// Transfer-Encoding shapes used for smuggling: `chunked` repeated or not
    /// last, unknown transfer codings.
    pub te_suspicious: bool,
    /// Codings to undo (transfer codings other than chunked, then content codings).
    pub codings: Codings,
}

impl FramingInfo {
    /// Content-Length together with Transfer-Encoding, several Content-Lengths,
    /// or a suspicious Transfer-Encoding.
    pub(super) fn ambiguous(&self) -> bool {
        self.te_suspicious
            || self.content_length_conflict
            || (self.transfer_encoding
                && (self.content_length.is_some() || self.content_length_invalid))
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct ReqHead {
    pub method: CompactString,
    pub target: String,
    pub version: HttpVersion,
    pub headers: Vec<Header>,
    pub info: FramingInfo,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct RespHead {
    pub status: u16,
    pub reason: CompactString,
    pub version: HttpVersion,
    pub headers: Vec<Header>,
    pub info: FramingInfo,
}

/// A parsed head of either kind.
#[derive(Debug)]
pub(super) enum Head {
    Req(ReqHead),
    Resp(RespHead),
}

/// Result of parsing the start of a buffer.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A head of this many bytes.
    Complete(Head, usize),
    /// Valid so far, more bytes needed.
    Partial,
    /// Not a valid head.
    Error(ParseError),
}

fn parser_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true);
    c
}

/// Parses a start line and header block at the start of `buf` (zero-copy:
/// strings are only made once the head is complete).
pub(super) fn parse_head(kind: Kind, buf: &[u8], cfg: &Http1Config) -> Outcome {
    // Uninitialised slots: httparse fills only those it uses, so a head does
    // not pay for clearing all STACK_HEADERS of them (4 KiB) first.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if cfg.max_headers <= STACK_HEADERS {
        &mut stack[..cfg.max_headers]
    } else {
        heap.resize_with(cfg.max_headers.min(MAX_HEADER_SLOTS), MaybeUninit::uninit);
        &mut heap[..]
    };
    let pc = parser_config();
    match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut []);
            match pc.parse_request_with_uninit_headers(&mut req, buf, slots) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = ReqHead {
                        method: CompactString::from(req.method.unwrap_or_default()),
                        target: super::recycle::string_from(req.path.unwrap_or_default()),
                        version: HttpVersion::from_minor(req.version.unwrap_or(1)),
                        info: framing_info(req.headers),
                        // httparse refuses folded lines in requests here.
                        headers: convert_headers(
                            req.headers,
                            buf,
                            head_text(&buf[..n], req.headers.len(), false),
                        ),
                    };
                    Outcome::Complete(Head::Req(head), n)
                }
                Ok(httparse::Status::Partial) => Outcome::Partial,
                Err(e) => Outcome::Error(e.into()),
            }
        }
        Kind::Response => {
            let mut resp = httparse::Response::new(&mut []);
            match pc.parse_response_with_uninit_headers(&mut resp, buf, slots) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = RespHead {
                        status: resp.code.unwrap_or_default(),
                        reason: CompactString::from(resp.reason.unwrap_or_default()),
                        version: HttpVersion::from_minor(resp.version.unwrap_or(1)),
                        info: framing_info(resp.headers),
                        headers: match cfg.response_headers {
                            ResponseHeaders::All => convert_headers(
                                resp.headers,
                                buf,
                                head_text(&buf[..n], resp.headers.len(), true),
                            ),
                            ResponseHeaders::Only(names) => kept_headers(resp.headers, names),
                        },
                    };
                    Outcome::Complete(Head::Resp(head), n)
                }
                Ok(httparse::Status::Partial) => Outcome::Partial,
                Err(e) => Outcome::Error(e.into()),
            }
        }
    }
}

/// The whole head (with `headers` headers) as text, when it is valid UTF-8
/// and (if `may_fold`) has no obs-fold line: then no header value holds a
/// line break, and each value is
/// sliced out of this text instead of being checked on its own (one
/// vectorised pass over the head rather than one short call per header).
fn head_text(head: &[u8], headers: usize, may_fold: bool) -> Option<&str> {
    // Every line of a head ends in LF: start line, one per header, the empty
    // line. A folded header spans more than one, so any extra LF means a fold
    // (counting is one vectorised pass; looking at each LF's successor is not).
    let folded = may_fold && count_lf(head) != headers + 2;
    if folded {
        return None;
    }
    std::str::from_utf8(head).ok()
}

/// Line feeds in `b`, counted in byte lanes (chunks of at most 255 so a lane
/// cannot overflow) so that the loop vectorises 16 bytes at a time.
fn count_lf(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &x| n + u8::from(x == b'\n'))))
        .sum()
}

/// Owned headers. `buf` is what httparse parsed (the values borrow from
/// it) and `text` its head from [`head_text`].
fn convert_headers(hs: &[httparse::Header<'_>], buf: &[u8], text: Option<&str>) -> Vec<Header> {
    let base = buf.as_ptr() as usize;
    let mut out = super::recycle::headers(hs.len());
    out.extend(hs.iter().map(|h| {
        let fast = text.and_then(|t| {
            let v = trim_ows(h.value);
            let off = (v.as_ptr() as usize).checked_sub(base)?;
            t.get(off..off.checked_add(v.len())?)
        });
        Header {
            name: CompactString::from(h.name),
            value: match fast {
                Some(v) => CompactString::from(v),
                None => header_value(h.value),
            },
        }
    }));
    out
}

/// Owned copies of the headers named in `names` (lowercase), in wire order.
/// Each value is converted on its own: the few kept do not pay for
/// checking the whole head.
fn kept_headers(hs: &[httparse::Header<'_>], names: &[&str]) -> Vec<Header> {
    let mut out = Vec::new();
    for h in hs {
        if names.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            if out.capacity() == 0 {
                out = super::recycle::headers(names.len());
            }
            out.push(Header {
                name: CompactString::from(h.name),
                value: header_value(h.value),
            });
        }
    }
    out
}

/// Lossy UTF-8, obs-fold line breaks turned into spaces, trimmed.
fn header_value(v: &[u8]) -> CompactString {
    // Common case first: one line of valid UTF-8 (validation is vectorised,
    // the lossy path walks chunk by chunk).
    let t = trim_ows(v);
    if memchr::memchr2(b'\r', b'\n', t).is_none() {
        if let Ok(s) = std::str::from_utf8(t) {
            return CompactString::from(s);
        }
    }
    let s = String::from_utf8_lossy(v);
    if s.contains(['\r', '\n']) {
        let mut out = String::with_capacity(s.len());
        for part in s.split(['\r', '\n']) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(part);
        }
        out.into()
    } else {
        CompactString::from(s.trim())
    }
}

fn trim_ows(mut t: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = t {
        t = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = t {
        t = rest;
    }
    t
}

/// Decimal u64, digits only; None on anything else or overflow.
fn parse_decimal(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn framing_info(hs: &[httparse::Header<'_>]) -> FramingInfo {
    let mut fi = FramingInfo::default();
    let mut last_chunked = false;
    let mut chunked_seen = 0u32;
    let mut coding: Option<Coding> = None;
    let mut n_codings = 0u32;
    let mut unknown_coding = false;
    for h in hs {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let mut any = false;
            for part in h.value.split(|&b| b == b',') {
                let t = trim_ows(part);
                if t.is_empty() {
                    continue;
                }
                any = true;
                match parse_decimal(t) {
                    None => fi.content_length_invalid = true,
                    Some(v) => match fi.content_length {
                        None => fi.content_length = Some(v),
                        Some(prev) if prev != v => fi.content_length_conflict = true,
                        Some(_) => {}
                    },
                }
            }
            if !any {
                fi.content_length_invalid = true;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            fi.transfer_encoding = true;
            for part in h.value.split(|&b| b == b',') {
                let t = trim_ows(part);
                // Parameters (`;q=...`) are not part of the coding name.
                let t = trim_ows(t.split(|&b| b == b';').next().unwrap_or_default());
                if t.is_empty() {
                    continue;
                }
                if last_chunked {
                    // Something after `chunked`: the body is not chunk-framed.
                    fi.te_suspicious = true;
                }
                if t.eq_ignore_ascii_case(b"chunked") {
                    chunked_seen += 1;
                    last_chunked = true;
                    continue;
                }
                last_chunked = false;
                if t.eq_ignore_ascii_case(b"identity") {
                    continue;
                }
                match Coding::from_token(t) {
                    Some(c) => {
                        coding = Some(c);
                        n_codings += 1;
                    }
                    None => {
                        unknown_coding = true;
                        fi.te_suspicious = true;
                    }
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            for part in h.value.split(|&b| b == b',') {
                let t = trim_ows(part);
                if t.is_empty() || t.eq_ignore_ascii_case(b"identity") {
                    continue;
                }
                match Coding::from_token(t) {
                    Some(c) => {
                        coding = Some(c);
                        n_codings += 1;
                    }
                    None => unknown_coding = true,
                }
            }
        }
    }
    fi.chunked = last_chunked;
    if chunked_seen > 1 {
        fi.te_suspicious = true;
    }
    fi.codings = match (unknown_coding, n_codings, coding) {
        (false, 0, _) => Codings::Identity,
        (false, 1, Some(c)) => Codings::One(c),
        _ => Codings::Unsupported,
    };
    fi
}

/// Position after the empty line ending a header block, searching the new
/// bytes `rest` that follow the already buffered `buf` (which holds no end).
pub(super) fn find_head_end(buf: &[u8], rest: &[u8]) -> Option<usize> {
    let before = |k: usize, d: usize| -> Option<u8> {
        if k >= d {
            rest.get(k - d).copied()
        } else {
            buf.len()
                .checked_sub(d - k)
                .and_then(|j| buf.get(j).copied())
        }
    };
    memchr::memchr_iter(b'\n', rest).find_map(|k| {
        let p1 = before(k, 1);
        let end = p1 == Some(b'\n') || (p1 == Some(b'\r') && before(k, 2) == Some(b'\n'));
        end.then_some(k + 1)
    })
}

/// Longest method token accepted on a request line read loosely.
const MAX_LOOSE_METHOD_LEN: usize = 32;

/// A request line read without httparse, for requests it refuses (HTTP/0.9,
/// a missing target, bytes it rejects, a head over the size bound...).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LooseLine<'a> {
    pub method: &'a [u8],
    /// Empty when the line had none (`GET HTTP/1.1`).
    pub target: &'a [u8],
    /// `None` for an HTTP/0.9 line (no version).
    pub version: Option<HttpVersion>,
    /// Bytes of the line with its LF, when the LF was within reach.
    pub line_len: Option<usize>,
}

/// Reads the first line of `buf` (at most `max_line` bytes of it) as a
/// request line, loosely: `METHOD SP [target] SP HTTP/x.y` with anything
/// printable as the target, or `METHOD SP target` (HTTP/0.9). The method must
/// start with a letter and hold only visible ASCII; an HTTP/0.9 line needs an
/// upper-case method and a target starting with `/` or `http://` or `https://`
/// (there is no version to vouch for it). Lines with control bytes are refused:
/// garbage and binary data never read as requests.
pub(super) fn loose_request_line(buf: &[u8], max_line: usize) -> Option<LooseLine<'_>> {
    let window = &buf[..buf.len().min(max_line)];
    let (line, line_len) = match memchr::memchr(b'\n', window) {
        Some(k) => (&window[..k], Some(k + 1)),
        None => (window, None),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
        return None;
    }
    let ws = |c: &u8| *c == b' ' || *c == b'\t';
    let mlen = line.iter().position(ws).unwrap_or(line.len());
    let method = &line[..mlen];
    if method.is_empty()
        || method.len() > MAX_LOOSE_METHOD_LEN
        || !method[0].is_ascii_alphabetic()
        || !method.iter().all(u8::is_ascii_graphic)
    {
        return None;
    }
    let rest = trim_ws(&line[mlen..]);
    if rest.is_empty() {
        return None;
    }
    // The last word, when it is a version, ends the line.
    let vstart = rest.iter().rposition(ws).map_or(0, |k| k + 1);
    let last = &rest[vstart..];
    if let Some(v) = last.strip_prefix(b"HTTP/") {
        let version = match v {
            b"0.9" => HttpVersion::Http09,
            b"1.0" => HttpVersion::Http10,
            _ => HttpVersion::Http11,
        };
        return Some(LooseLine {
            method,
            target: trim_ws(&rest[..vstart]),
            version: Some(version),
            line_len,
        });
    }
    // HTTP/0.9: one word after the method, and a complete line.
    let plain_method = method.iter().all(u8::is_ascii_uppercase);
    let lower_prefix = |p: &[u8]| rest.len() > p.len() && rest[..p.len()].eq_ignore_ascii_case(p);
    let target_ok = rest[0] == b'/' || lower_prefix(b"http://") || lower_prefix(b"https://");
    (line_len.is_some() && plain_method && target_ok && !rest.iter().any(ws)).then_some(LooseLine {
        method,
        target: rest,
        version: None,
        line_len,
    })
}

fn trim_ws(mut t: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = t {
        t = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = t {
        t = rest;
    }
    t
}

/// True if `buf` can only be the start of an HTTP/1.x status line (or is
/// too short to tell): an HTTP/0.9 answer is anything else.
pub(super) fn may_be_status_line(buf: &[u8]) -> bool {
    let n = buf.len().min(5);
    buf[..n] == b"HTTP/"[..n]
}

const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"MERGE",
    b"PURGE",
];

/// Where a message start line begins in `line` (which ends with LF), if it
/// contains one that ends the line.
pub(super) fn find_candidate(kind: Kind, line: &[u8]) -> Option<usize> {
    match kind {
        Kind::Request => request_candidate(line),
        Kind::Response => response_candidate(line),
    }
}

/// `METHOD SP target SP HTTP/1.x` at the end of the line: the method is a run
/// of A-Z (a known method when garbage letters precede it), the target starts
/// with `/`, `*`, `http://`/`https://`, or is an authority for CONNECT.
fn request_candidate(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let rest = l
        .strip_suffix(b"HTTP/1.1")
        .or_else(|| l.strip_suffix(b"HTTP/1.0"))?;
    let mut e = rest.len();
    let sp = e;
    while e > 0 && rest[e - 1] == b' ' {
        e -= 1;
    }
    if e == sp {
        return None;
    }
    let tend = e;
    while e > 0 && rest[e - 1] > b' ' && rest[e - 1] != 0x7f {
        e -= 1;
    }
    let target = &rest[e..tend];
    if target.is_empty() {
        return None;
    }
    let sp = e;
    while e > 0 && rest[e - 1] == b' ' {
        e -= 1;
    }
    if e == sp {
        return None;
    }
    let mend = e;
    while e > 0
        && (rest[e - 1].is_ascii_uppercase() || matches!(rest[e - 1], b'_' | b'-'))
        && mend - e < MAX_METHOD_LEN
    {
        e -= 1;
    }
    while e < mend && matches!(rest[e], b'_' | b'-') {
        e += 1;
    }
    let run = &rest[e..mend];
    if run.is_empty() {
        return None;
    }
    let known = KNOWN_METHODS
        .iter()
        .filter(|m| run.ends_with(m))
        .max_by_key(|m| m.len());
    // A known method ending the run starts the line unless the run joins it
    // with `_` or `-` (`CCM_POST`, `M-SEARCH` are methods of their own).
    let start = match known {
        Some(m)
            if !matches!(
                rest.get((mend - m.len()).wrapping_sub(1)),
                Some(b'_' | b'-')
            ) =>
        {
            mend - m.len()
        }
        _ => e,
    };
    let method = &rest[start..mend];
    let lower_prefix =
        |p: &[u8]| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let target_ok = target[0] == b'/'
        || target == b"*"
        || lower_prefix(b"http://")
        || lower_prefix(b"https://")
        || (method == b"CONNECT" && target.contains(&b':'));
    target_ok.then_some(start)
}

/// `HTTP/1.[01] ddd` followed by a space or the line end.
fn response_candidate(line: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = memchr::memmem::find(&line[from..], b"HTTP/1.") {
        let s = from + k;
        let t = &line[s..];
        if t.len() >= 13
            && matches!(t[7], b'0' | b'1')
            && t[8] == b' '
            && t[9..12].iter().all(u8::is_ascii_digit)
            && matches!(t[12], b' ' | b'\r' | b'\n')
        {
            return Some(s);
        }
        from = s + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_candidates() {
        assert_eq!(
            find_candidate(Kind::Request, b"GET / HTTP/1.1\r\n"),
            Some(0)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"xx\x00GET /a?b HTTP/1.0\n"),
            Some(3)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"zzXPOST /a HTTP/1.1\r\n"),
            Some(3)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"FOO * HTTP/1.1\r\n"),
            Some(0)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"CCM_POST /c HTTP/1.1\r\n"),
            Some(0)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"junk\x00M-SEARCH * HTTP/1.1\r\n"),
            Some(5)
        );
        assert_eq!(
            find_candidate(Kind::Request, b"CONNECT example.com:443 HTTP/1.1\r\n"),
            Some(0)
        );
        assert_eq!(find_candidate(Kind::Request, b"GET x HTTP/1.1\r\n"), None);
        assert_eq!(find_candidate(Kind::Request, b"get / HTTP/1.1\r\n"), None);
        assert_eq!(find_candidate(Kind::Request, b"GET / HTTP/2.0\r\n"), None);
        assert_eq!(find_candidate(Kind::Request, b"GET / HTTP/1.1"), None);
        assert_eq!(find_candidate(Kind::Request, b" HTTP/1.1\n"), None);
    }

    #[test]
    fn loose_request_lines() {
        let l = |b: &'static [u8]| loose_request_line(b, 8192);
        let got = l(b"GET /path\r\n").expect("0.9");
        assert_eq!(
            (got.method, got.target, got.version),
            (&b"GET"[..], &b"/path"[..], None)
        );
        assert_eq!(got.line_len, Some(11));
        let got = l(b"GET HTTP/1.1\r\nHost: x\r\n\r\n").expect("no target");
        assert_eq!((got.method, got.target), (&b"GET"[..], &b""[..]));
        assert_eq!(got.version, Some(HttpVersion::Http11));
        let got = l(b"CCM_POST /a b\"c HTTP/1.0\r\n").expect("odd target");
        assert_eq!(
            (got.method, got.target),
            (&b"CCM_POST"[..], &b"/a b\"c"[..])
        );
        assert_eq!(got.version, Some(HttpVersion::Http10));
        let got = l(b"GET /caf\xc3\xa9 HTTP/1.1\r\n").expect("utf-8 target");
        assert_eq!(got.target, "/caf\u{e9}".as_bytes());
        // The line need not be complete when a version is there.
        assert!(l(b"GET /x HTTP/1.1").is_some());
        // Not requests: garbage, words, bodies, binary, an incomplete 0.9 line.
        for junk in [
            &b"hello world\r\n"[..],
            b"{\"a\":1}\r\n",
            b"123 /x HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00 HTTP/1.1\r\n",
            b"GET /path",
            b"GET\r\n",
            b"get /x\r\n",
            b"GET x\r\n",
            b"GET /a /b\r\n",
        ] {
            assert_eq!(l(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn response_candidates() {
        assert_eq!(
            find_candidate(Kind::Response, b"HTTP/1.1 200 OK\r\n"),
            Some(0)
        );
        assert_eq!(
            find_candidate(Kind::Response, b"junkHTTP/1.0 404\n"),
            Some(4)
        );
        assert_eq!(find_candidate(Kind::Response, b"HTTP/1.1 2000\r\n"), None);
        assert_eq!(find_candidate(Kind::Response, b"HTTP/1.2 200 OK\r\n"), None);
    }

    #[test]
    fn head_end_across_buffers() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", b"\r\nrest"), Some(2));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", b"\nrest"), Some(1));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n", b"\n"), Some(1));
        assert_eq!(find_head_end(b"", b"A: b\r\n"), None);
        assert_eq!(find_head_end(b"", b"\n\r\n"), Some(3));
    }

    /// Values sliced from the validated head equal the one-by-one conversion,
    /// and heads the fast path must not take (invalid UTF-8, folded lines)
    /// still come out as before.
    #[test]
    fn header_values_from_head_text_match_per_value_conversion() {
        let cfg = Http1Config::default();
        let cases: [(Kind, &[u8]); 6] = [
            (Kind::Request, b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent:  curl/8.5.0 \t\r\nX-Empty:\r\nAccept: */*\r\n\r\nbody"),
            (Kind::Request, b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9 \xe2\x82\xac\r\n\r\n"),
            (Kind::Request, b"GET / HTTP/1.1\r\nX-Bin: a\xff\xfeb\r\nHost: y\r\n\r\n"),
            (Kind::Response, b"HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 05:00:00 GMT\r\nContent-Length: 0\r\n\r\n"),
            (Kind::Response, b"HTTP/1.1 200 OK\r\nX-Fold: one\r\n  two\r\n\tthree\r\nServer: s\r\n\r\n"),
            (Kind::Response, b"HTTP/1.0 204 No Content\nX-Lf: v \nServer:nginx\n\n"),
        ];
        for (kind, raw) in cases {
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let raw_headers: &[httparse::Header<'_>] = match kind {
                Kind::Request => {
                    let mut r = httparse::Request::new(&mut slots);
                    assert!(parser_config().parse_request(&mut r, raw).is_ok());
                    r.headers
                }
                Kind::Response => {
                    let mut r = httparse::Response::new(&mut slots);
                    assert!(parser_config().parse_response(&mut r, raw).is_ok());
                    r.headers
                }
            };
            let expected: Vec<(String, CompactString)> = raw_headers
                .iter()
                .map(|h| (h.name.to_owned(), header_value(h.value)))
                .collect();
            let got = match parse_head(kind, raw, &cfg) {
                Outcome::Complete(Head::Req(h), _) => h.headers,
                Outcome::Complete(Head::Resp(h), _) => h.headers,
                _ => panic!("head of {:?} not parsed", String::from_utf8_lossy(raw)),
            };
            let got: Vec<(String, CompactString)> = got
                .into_iter()
                .map(|h| (h.name.to_string(), h.value))
                .collect();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(raw));
        }
        // The folded value is unfolded, the padded one trimmed.
        let Outcome::Complete(Head::Resp(h), _) = parse_head(Kind::Response, cases[4].1, &cfg)
        else {
            panic!("folded response not parsed");
        };
        assert_eq!(h.headers[0].value, "one two three");
        let Outcome::Complete(Head::Req(h), _) = parse_head(Kind::Request, cases[0].1, &cfg) else {
            panic!("request not parsed");
        };
        assert_eq!(h.headers[1].value, "curl/8.5.0");
        assert_eq!(h.headers[2].value, "");
    }

    #[test]
    fn line_feeds_counted_across_lane_chunks() {
        for len in [0usize, 1, 254, 255, 256, 511, 1000] {
            for every in [1usize, 2, 7] {
                let b: Vec<u8> = (0..len)
                    .map(|i| if i % every == 0 { b'\n' } else { b'a' })
                    .collect();
                let naive = b.iter().filter(|&&x| x == b'\n').count();
                assert_eq!(count_lf(&b), naive, "len {len} every {every}");
            }
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"+5"), None);
        assert_eq!(parse_decimal(b""), None);
    }
}
