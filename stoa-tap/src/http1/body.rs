//! Message bodies: chunked framing and the bounded body accumulator.

use super::coding::{ContentDecoder, DecodeError, Sink};
use super::parse::{Codings, ParseError};
use super::{Http1Config, Http1Stats};
use contracts::Body;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Reading a chunk-size line: hex digits, then optional extensions up to LF.
    Size {
        value: u64,
        digits: u32,
        /// Past the digits (extension, whitespace or CR): everything up to LF is skipped.
        ext: bool,
        line: usize,
    },
    /// Inside chunk data.
    Data(u64),
    /// Expecting the CRLF (or bare LF) that ends chunk data.
    DataEnd { cr: bool },
    /// After the last chunk: trailer fields up to an empty line.
    Trailers { line_used: bool, total: usize },
}

/// What one step over a chunked body did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkStep {
    /// This many framing bytes were consumed.
    Framing(usize),
    /// The first this many bytes are body data.
    Data(usize),
    /// The message ends after this many bytes.
    Done(usize),
}

/// Limits that apply to chunked framing.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkLimits {
    pub max_chunk_size: u64,
    pub max_line: usize,
    pub max_trailers: usize,
}

impl Chunked {
    /// The start of a chunked body.
    pub(super) fn new() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
            ext: false,
            line: 0,
        }
    }

    /// The last chunk was seen: the body itself is complete.
    pub(super) fn in_trailers(&self) -> bool {
        matches!(self, Chunked::Trailers { .. })
    }

    /// Advances over the start of `data` (never empty). On error, returns the
    /// reason and how many bytes were consumed before the offending one.
    pub(super) fn step(
        &mut self,
        data: &[u8],
        lim: ChunkLimits,
    ) -> Result<ChunkStep, (ParseError, usize)> {
        match self {
            Chunked::Size {
                value,
                digits,
                ext,
                line,
            } => {
                for (k, &b) in data.iter().enumerate() {
                    *line += 1;
                    if *line > lim.max_line {
                        return Err((ParseError::ChunkLineTooLong, k));
                    }
                    if b == b'\n' {
                        if *digits == 0 {
                            return Err((ParseError::ChunkSize, k));
                        }
                        *self = if *value == 0 {
                            Chunked::Trailers {
                                line_used: false,
                                total: 0,
                            }
                        } else {
                            Chunked::Data(*value)
                        };
                        return Ok(ChunkStep::Framing(k + 1));
                    }
                    if *ext {
                        continue;
                    }
                    match hex_digit(b) {
                        Some(d) => {
                            let v = value
                                .checked_mul(16)
                                .and_then(|v| v.checked_add(u64::from(d)))
                                .filter(|v| *v <= lim.max_chunk_size);
                            match v {
                                Some(v) => *value = v,
                                None => return Err((ParseError::ChunkSize, k)),
                            }
                            *digits += 1;
                        }
                        None if *digits > 0 && matches!(b, b';' | b' ' | b'\t' | b'\r') => {
                            *ext = true;
                        }
                        None => return Err((ParseError::ChunkSize, k)),
                    }
                }
                Ok(ChunkStep::Framing(data.len()))
            }
            Chunked::Data(remaining) => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = Chunked::DataEnd { cr: false };
                }
                Ok(ChunkStep::Data(take))
            }
            Chunked::DataEnd { cr } => match data[0] {
                b'\r' if !*cr => {
                    *cr = true;
                    Ok(ChunkStep::Framing(1))
                }
                b'\n' => {
                    *self = Chunked::new();
                    Ok(ChunkStep::Framing(1))
                }
                _ => Err((ParseError::ChunkDataEnd, 0)),
            },
            Chunked::Trailers { line_used, total } => {
                let (len, lf) = match memchr::memchr(b'\n', data) {
                    Some(k) => (k, true),
                    None => (data.len(), false),
                };
                *line_used |= data[..len].iter().any(|&b| b != b'\r');
                if lf && !*line_used {
                    return Ok(ChunkStep::Done(len + 1));
                }
                let used = len + usize::from(lf);
                *total = total.saturating_add(used);
                if *total > lim.max_trailers {
                    return Err((ParseError::TrailersTooLarge, used));
                }
                if lf {
                    *line_used = false;
                }
                Ok(ChunkStep::Framing(used))
            }
        }
    }

    /// A gap of `len` bytes: stays in sync when it falls inside chunk data.
    /// Returns how many of the missing bytes were body bytes, or None when
    /// the framing is lost.
    pub(super) fn gap(&mut self, len: u64) -> Option<u64> {
        match self {
            Chunked::Data(remaining) if len <= *remaining => {
                *remaining -= len;
                if *remaining == 0 {
                    *self = Chunked::DataEnd { cr: false };
                }
                Some(len)
            }
            _ => None,
        }
    }

    /// Body bytes that a gap of any length may still have covered (for accounting
    /// when the framing is lost).
    pub(super) fn data_left(&self) -> u64 {
        match self {
            Chunked::Data(r) => *r,
            _ => 0,
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What happens to the bytes of a body.
#[derive(Debug)]
enum Mode {
    /// No content coding: the sample is a prefix of the wire bytes.
    Identity,
    /// Decoding in progress.
    Decoding(Box<ContentDecoder>),
    /// Not decoded (failed, unsupported, over the bound, or decoding disabled).
    Off,
}

/// Accumulates one message body: sizes, a bounded sample, content decoding.
#[derive(Debug)]
pub(super) struct BodyAcc {
    wire_len: u64,
    decoded_len: u64,
    sample: Vec<u8>,
    sample_cap: usize,
    /// Expected body length (Content-Length), to size the sample once.
    hint: u64,
    sample_truncated: bool,
    /// Sampling stopped (a gap made the sample discontinuous).
    sample_stopped: bool,
    mode: Mode,
    max_decoded: u64,
    decode_failed: bool,
    /// A content coding was present.
    coded: bool,
    /// The content coding cannot be decoded here (unknown or stacked codings).
    unsupported: bool,
}

impl BodyAcc {
    /// A body whose content codings are `codings`. When `collect` is false
    /// (orphan responses) only the sizes are kept.
    pub(super) fn new(cfg: &Http1Config, codings: Codings, collect: bool, hint: u64) -> Self {
        let (mode, failed, coded) = match codings {
            _ if !collect => (Mode::Identity, false, false),
            Codings::Identity => (Mode::Identity, false, false),
            Codings::One(c) if cfg.decode_content => (
                Mode::Decoding(Box::new(ContentDecoder::new(
                    c,
                    u64::try_from(cfg.max_decoded_bytes).unwrap_or(u64::MAX),
                ))),
                false,
                true,
            ),
            Codings::One(_) => (Mode::Off, false, true),
            Codings::Unsupported => (Mode::Off, true, true),
        };
        BodyAcc {
            wire_len: 0,
            decoded_len: 0,
            sample: Vec::new(),
            sample_cap: if collect { cfg.body_sample_bytes } else { 0 },
            hint,
            sample_truncated: false,
            sample_stopped: false,
            mode,
            max_decoded: u64::try_from(cfg.max_decoded_bytes).unwrap_or(u64::MAX),
            decode_failed: failed,
            coded,
            unsupported: failed,
        }
    }

    /// Body bytes, after framing (de-chunked).
    pub(super) fn feed(&mut self, bytes: &[u8], stats: &mut Http1Stats) {
        self.wire_len = self.wire_len.saturating_add(bytes.len() as u64);
        match &mut self.mode {
            Mode::Identity => {
                // Hot path: once the sample is full, bytes are only counted.
                if self.sample.len() < self.sample_cap && !self.sample_stopped {
                    if self.sample.capacity() == 0 {
                        let want = usize::try_from(self.hint)
                            .unwrap_or(usize::MAX)
                            .max(bytes.len())
                            .min(self.sample_cap);
                        self.sample = super::recycle::sample(want);
                    }
                    append_capped(&mut self.sample, self.sample_cap, bytes);
                }
            }
            Mode::Decoding(dec) => {
                let mut sink = SampleSink {
                    sample: &mut self.sample,
                    cap: if self.sample_stopped {
                        0
                    } else {
                        self.sample_cap
                    },
                    decoded: &mut self.decoded_len,
                    max: self.max_decoded,
                };
                if let Err(e) = dec.feed(bytes, &mut sink) {
                    match e {
                        DecodeError::Limit => stats.decode_limit_exceeded += 1,
                        DecodeError::Corrupt(_) => stats.decode_errors += 1,
                    }
                    tracing::debug!(error = %e, "http1 body decoding stopped");
                    self.decode_failed = true;
                    self.sample_truncated = true;
                    self.mode = Mode::Off;
                }
            }
            Mode::Off => {}
        }
    }

    /// `len` body bytes are missing from the capture.
    pub(super) fn gap(&mut self, len: u64) {
        self.wire_len = self.wire_len.saturating_add(len);
        self.sample_stopped = true;
        self.sample_truncated = true;
        if matches!(self.mode, Mode::Decoding(_)) {
            // The stream cannot be continued past missing bytes.
            self.mode = Mode::Off;
            self.decode_failed = true;
        }
    }

    /// Heap bytes held (sample and decoder).
    pub(super) fn heap_bytes(&self) -> usize {
        self.sample.capacity()
            + match &self.mode {
                Mode::Decoding(d) => d.heap_bytes(),
                _ => 0,
            }
    }

    /// The finished body. `complete` is false when the message was cut short
    /// (then an unfinished content coding is not called a failure). Returns the
    /// body and whether decoding failed.
    pub(super) fn finish(mut self, complete: bool, stats: &mut Http1Stats) -> (Body, bool) {
        let mut failed = self.decode_failed;
        let decoded_len = match &self.mode {
            Mode::Identity => self.wire_len,
            Mode::Decoding(d) => {
                if d.is_complete() {
                    stats.decoded_bodies += 1;
                    self.decoded_len
                } else if complete && self.wire_len > 0 {
                    // The message ended but the coded stream did not.
                    stats.decode_errors += 1;
                    failed = true;
                    self.sample_truncated = true;
                    self.wire_len
                } else {
                    self.decoded_len
                }
            }
            Mode::Off => {
                if self.coded && self.wire_len > 0 {
                    self.sample_truncated = true;
                    if self.unsupported {
                        stats.decode_unsupported += 1;
                    }
                }
                self.wire_len
            }
        };
        // An empty body with a coding has nothing to decode.
        if self.wire_len == 0 {
            failed = false;
            self.sample_truncated = false;
        }
        let sample_truncated = self.sample_truncated || decoded_len > self.sample.len() as u64;
        let body = Body {
            wire_len: self.wire_len,
            decoded_len,
            sample: self.sample,
            sample_truncated,
        };
        (body, failed)
    }
}

/// Appends as much of `bytes` as fits under `cap`, growing without overshooting it.
fn append_capped(sample: &mut Vec<u8>, cap: usize, bytes: &[u8]) {
    let room = cap.saturating_sub(sample.len());
    let take = room.min(bytes.len());
    if take == 0 {
        return;
    }
    let need = sample.len() + take;
    if sample.capacity() < need {
        let want = need.max(sample.capacity().saturating_mul(2)).min(cap);
        sample.reserve_exact(want - sample.len());
    }
    sample.extend_from_slice(&bytes[..take]);
}

struct SampleSink<'a> {
    sample: &'a mut Vec<u8>,
    cap: usize,
    decoded: &'a mut u64,
    max: u64,
}

impl Sink for SampleSink<'_> {
    fn push(&mut self, out: &[u8]) -> bool {
        *self.decoded += out.len() as u64;
        append_capped(self.sample, self.cap, out);
        *self.decoded <= self.max
    }
}
