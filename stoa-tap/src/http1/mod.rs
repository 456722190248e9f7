//! HTTP/1.x exchanges from the two reassembled byte streams of a connection.
//!
//! Each direction has its own parser ([`Side`]): at a message boundary it parses
//! the start line and headers with httparse (directly from the caller's slice
//! when the whole head is there, from a bounded per-direction buffer when the
//! head spans calls), then follows the body framing (Content-Length, chunked,
//! until close, none). Body bytes are counted and only the first
//! `body_sample_bytes` (after content decoding) are copied.
//!
//! Pairing is FIFO: a request enters the pending queue as soon as its head is
//! parsed (a response may arrive while its body is still coming); the next
//! final response pairs with the oldest request that has none. An exchange is
//! emitted once both its request and response are complete, in request order.
//!
//! After a gap the parser of that direction stays in sync when it can (inside
//! a Content-Length body or chunk data, or a body delimited by the close), else
//! it looks for the next start line ([`parse::find_candidate`]), skipping and
//! counting the bytes in between. Exchanges whose pairing may be wrong because
//! of a gap carry `anomalies.gap`.

mod body;
mod coding;
mod parse;
pub mod recycle;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::flow::{CloseReason, Direction, EndKind};
use body::{BodyAcc, ChunkLimits, ChunkStep, Chunked};
use compact_str::CompactString;
use contracts::{Anomalies, Body, HttpVersion, Request, Response, Timing};
/// The types of the interface, re-exported for callers that do not depend on `contracts`.
pub use contracts::{Exchange, FlowId};
use parse::{Head, Kind, Outcome, ParseError, ReqHead, RespHead};

/// Timestamp in nanoseconds since the Unix epoch.
pub type Ts = u64;

/// Limits that keep parsing bounded whatever the input.
#[derive(Debug, Clone)]
pub struct Http1Config {
    /// Largest accepted start line + header block, in bytes. Also bounds the
    /// trailer section of a chunked body.
    pub max_header_bytes: usize,
    /// Most header fields per message.
    pub max_headers: usize,
    /// Bytes of each (decoded) body kept as a sample in the exchange.
    pub body_sample_bytes: usize,
    /// Most bytes a content decoder (gzip, deflate, br) may produce per body.
    pub max_decoded_bytes: usize,
    /// Most requests waiting for a response on one connection (pipelining).
    pub max_pending_requests: usize,
    /// Largest chunk size accepted in a chunked body; larger is a parse error.
    pub max_chunk_size: u64,
    /// Longest chunk-size line (with extensions), and longest start line that
    /// resynchronisation keeps looking at.
    pub max_line_bytes: usize,
    /// Decode gzip / deflate / br bodies for the sample (off: coded bodies get
    /// no sample and `decoded_len == wire_len`).
    pub decode_content: bool,
    /// Response header fields kept in the exchange.
    pub response_headers: ResponseHeaders,
}

/// Which response header fields an exchange keeps. Framing (lengths,
/// chunking, codings) is read from every field whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseHeaders {
    /// Every field, in wire order.
    #[default]
    All,
    /// Only the fields with these names (lowercase; compared ASCII
    /// case-insensitively), in wire order. For a pipeline that only learns
    /// contracts ([`contracts::LEARNED_RESPONSE_HEADERS`]): a response's
    /// other fields (`Date`, `Server`, caching...) are most of the header
    /// values a parser copies per exchange, for nothing.
    Only(&'static [&'static str]),
}

impl Default for Http1Config {
    fn default() -> Self {
        Http1Config {
            max_header_bytes: 64 * 1024,
            max_headers: 128,
            body_sample_bytes: 16 * 1024,
            max_decoded_bytes: 1024 * 1024,
            max_pending_requests: 64,
            max_chunk_size: 1 << 40,
            max_line_bytes: 8 * 1024,
            decode_content: true,
            response_headers: ResponseHeaders::All,
        }
    }
}

/// Parse counters, summed over all connections.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Http1Stats {
    /// Requests parsed (heads).
    pub requests: u64,
    /// Final responses parsed (heads), paired or not.
    pub responses: u64,
    /// Interim (1xx other than 101) responses parsed.
    pub interim_responses: u64,
    /// Exchanges emitted.
    pub exchanges: u64,
    /// Exchanges emitted without a response.
    pub unanswered: u64,
    /// Final responses with no pending request (parsed, not emitted).
    pub orphan_responses: u64,
    /// Pending requests pushed out (emitted unanswered) because the pipelining
    /// bound was reached.
    pub pending_overflow: u64,
    /// Connections that switched protocols (101, 2xx to CONNECT).
    pub upgrades: u64,
    /// Bytes not parsed because the connection switched protocols (tunnel
    /// bytes included).
    pub upgraded_bytes_ignored: u64,
    /// CONNECT requests the server accepted (2xx): tunnels opened.
    pub tunnels: u64,
    /// Tunnel bytes from the client after the server accepted a CONNECT.
    pub tunnel_bytes_client: u64,
    /// Tunnel bytes from the server after its 2xx to a CONNECT.
    pub tunnel_bytes_server: u64,
    /// Client bytes sent after a CONNECT before its answer (optimistic tunnel
    /// data such as a TLS ClientHello): counted, not parsed.
    pub connect_early_bytes: u64,
    /// HTTP/0.9 requests (a request line without a version).
    pub http09_requests: u64,
    /// HTTP/0.9 responses (a bare body delimited by the close, status 0).
    pub http09_responses: u64,
    /// Requests recorded from their request line alone (`malformed_request`).
    pub malformed_requests: u64,
    /// ...of which the head was over `max_header_bytes` (`head_too_large`).
    pub head_too_large_requests: u64,
    /// ...of which the server answered before the head was complete.
    pub requests_answered_early: u64,
    /// Responses paired with a request whose first byte the capture shows
    /// later (the two directions captured slightly out of order).
    pub reordered_pairs: u64,
    /// Messages with ambiguous framing (CL + TE, differing CLs, odd TE).
    pub ambiguous_framing: u64,
    /// Gap events.
    pub gaps: u64,
    /// Bytes reported missing by gap events.
    pub gap_bytes: u64,
    /// Gaps absorbed inside a body of known length (parser stayed in sync).
    pub gaps_in_body_synced: u64,
    /// Times a parser had to look for the next start line.
    pub resyncs: u64,
    /// Bytes skipped while looking for a start line.
    pub resync_skipped_bytes: u64,
    /// Messages cut short (close, reset, end of capture, framing error).
    pub truncated_messages: u64,
    /// Incomplete header blocks dropped at the end of a direction.
    pub truncated_header_blocks: u64,
    /// Request body bytes (after de-chunking).
    pub request_body_bytes: u64,
    /// Response body bytes (after de-chunking).
    pub response_body_bytes: u64,
    /// Bodies content-decoded to the end of their coded stream.
    pub decoded_bodies: u64,
    /// Coded bodies that were corrupt (decode_failed).
    pub decode_errors: u64,
    /// Coded bodies whose decoded size went over `max_decoded_bytes`.
    pub decode_limit_exceeded: u64,
    /// Bodies with a coding that is not decoded here (unknown or stacked).
    pub decode_unsupported: u64,
    /// All parse errors (sum of the `parse_error_*` counters).
    pub parse_errors: u64,
    /// Header block over `max_header_bytes`.
    pub parse_error_header_too_large: u64,
    /// More header fields than `max_headers`.
    pub parse_error_too_many_headers: u64,
    /// Invalid method, target or other token.
    pub parse_error_token: u64,
    /// Invalid HTTP version (including non-HTTP bytes at a message start).
    pub parse_error_version: u64,
    /// Invalid status code.
    pub parse_error_status: u64,
    /// Invalid header name.
    pub parse_error_header_name: u64,
    /// Invalid header value.
    pub parse_error_header_value: u64,
    /// Invalid line ending.
    pub parse_error_new_line: u64,
    /// Content-Length not a decimal u64 (overflow included).
    pub parse_error_content_length: u64,
    /// Chunk size not hex, overflowing, or over `max_chunk_size`.
    pub parse_error_chunk_size: u64,
    /// Chunk-size line over `max_line_bytes`.
    pub parse_error_chunk_line_too_long: u64,
    /// Chunk data not followed by CRLF.
    pub parse_error_chunk_data_end: u64,
    /// Trailer section over `max_header_bytes`.
    pub parse_error_trailers_too_large: u64,
}

impl Http1Stats {
    fn count_parse_error(&mut self, e: ParseError) {
        self.parse_errors += 1;
        let c = match e {
            ParseError::HeaderTooLarge => &mut self.parse_error_header_too_large,
            ParseError::TooManyHeaders => &mut self.parse_error_too_many_headers,
            ParseError::Token => &mut self.parse_error_token,
            ParseError::Version => &mut self.parse_error_version,
            ParseError::Status => &mut self.parse_error_status,
            ParseError::HeaderName => &mut self.parse_error_header_name,
            ParseError::HeaderValue => &mut self.parse_error_header_value,
            ParseError::NewLine => &mut self.parse_error_new_line,
            ParseError::ContentLength => &mut self.parse_error_content_length,
            ParseError::ChunkSize => &mut self.parse_error_chunk_size,
            ParseError::ChunkLineTooLong => &mut self.parse_error_chunk_line_too_long,
            ParseError::ChunkDataEnd => &mut self.parse_error_chunk_data_end,
            ParseError::TrailersTooLarge => &mut self.parse_error_trailers_too_large,
        };
        *c += 1;
    }
}

const REQ: usize = 0;
const RESP: usize = 1;
/// Interim status codes kept per exchange.
const MAX_INTERIM: usize = 8;
/// While a buffered head is this short, httparse re-checks it on every call
/// so garbage is rejected early instead of filling the buffer.
const EARLY_CHECK_BYTES: usize = 256;
/// Buffers larger than this are released after use rather than kept.
const KEEP_BUFFER_BYTES: usize = 8 * 1024;
/// How much earlier than its request a response may be captured and still
/// answer it. Reassembly orders the two directions by acknowledgment, so the
/// order of the bytes is right; capture timestamps are not causal across
/// directions (mirror ports, multi-queue NICs) within the reorder grace.
const PAIRING_SLACK_NS: Ts = crate::tcp::REORDER_GRACE_NS;

/// Why a request is recorded from its request line alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loose {
    /// The parser refused the head (syntax, missing target, too many fields).
    Refused,
    /// The head went over `max_header_bytes`.
    TooLarge,
    /// Bytes of the head are missing from the capture.
    Gap,
    /// The server answered before the head was complete.
    AnsweredEarly,
    /// The direction ended inside the head.
    Ended,
}

/// What [`Connection::record_loose`] recorded.
#[derive(Debug, Clone, Copy)]
struct LooseRecord {
    /// Length of the request line with its LF, when it was complete.
    line_len: Option<usize>,
    /// An HTTP/0.9 request (a valid message, not an error).
    http09: bool,
}

/// How the body of the message in progress ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// The message whose body a side is reading.
#[derive(Debug)]
struct CurMsg {
    /// Sequence number of the pending exchange it belongs to (None: orphan response).
    target: Option<u32>,
    framing: Framing,
    body: BodyAcc,
    gap: bool,
    truncated: bool,
    /// Capture time of the last byte seen.
    last_ts: Ts,
}

#[derive(Debug, Default)]
enum State {
    /// At a message boundary (`hdr` may hold the start of a head).
    #[default]
    Idle,
    /// Reading a body.
    Body(Box<CurMsg>),
    /// Looking for the next start line.
    Resync,
    /// Skipping the rest of a request head recorded from its request line,
    /// up to the empty line that ends it; `line_empty`: the current line has
    /// held nothing but CR so far.
    SkipHead { line_empty: bool },
    /// The direction ended (FIN, RST, close).
    Ended,
    /// The connection switched protocols: bytes are counted, not parsed.
    Stopped,
}

/// Parser state of one direction.
#[derive(Debug, Default)]
struct Side {
    state: State,
    /// A head that spans calls.
    hdr: Vec<u8>,
    /// Capture time of the first byte in `hdr`.
    hdr_ts: Ts,
    /// During resync: the current, incomplete line.
    carry: Vec<u8>,
    /// Capture time of the first byte in `carry`.
    carry_ts: Ts,
}

impl Side {
    fn at_boundary(&self) -> bool {
        matches!(self.state, State::Idle) && self.hdr.is_empty()
    }
}

/// A request waiting for its completion and/or its response.
#[derive(Debug)]
struct Pending {
    seq: u32,
    request: Request,
    req_done: bool,
    /// The final response, from its head on.
    response: Option<Response>,
    resp_done: bool,
    /// Interim statuses seen before the final response.
    interim: Vec<u16>,
    is_head: bool,
    is_connect: bool,
    timing: Timing,
    anomalies: Anomalies,
    /// Heap held by the heads' strings.
    heap: usize,
}

/// Why a direction stops being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndMode {
    /// FIN or RST: a body delimited by the close is complete.
    End,
    /// The connection left the table; `confirmed` when it was closed properly.
    Close { confirmed: bool },
    /// The connection switched protocols.
    Stop,
}

/// The HTTP/1.x state of one TCP connection.
#[derive(Debug)]
pub struct Connection {
    flow: FlowId,
    sides: [Side; 2],
    queue: VecDeque<Pending>,
    next_seq: u32,
    /// Requests may have been lost in a request-side gap.
    req_desync: bool,
    /// Responses may have been lost in a response-side gap.
    resp_desync: bool,
    /// An unanswered request was pushed out of a full queue.
    pairing_uncertain: bool,
    /// A CONNECT waits for its answer: client bytes are not parsed meanwhile.
    connect_waiting: bool,
    /// Parsing stopped because a CONNECT tunnel opened (bytes are tunnel bytes).
    tunnel: bool,
    /// An HTTP/0.9 or malformed request was queued: a response may have no
    /// status line (servers answer both HTTP/0.9-style).
    saw_loose: bool,
    closed: bool,
}

impl Connection {
    /// A connection whose client and server are known.
    pub fn new(flow: FlowId) -> Self {
        Connection {
            flow,
            sides: [Side::default(), Side::default()],
            queue: VecDeque::new(),
            next_seq: 0,
            req_desync: false,
            resp_desync: false,
            pairing_uncertain: false,
            connect_waiting: false,
            tunnel: false,
            saw_loose: false,
            closed: false,
        }
    }

    /// In-order bytes of one direction, with the capture time of the packet they came in.
    pub fn on_data(
        &mut self,
        cfg: &Http1Config,
        dir: Direction,
        data: &[u8],
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        self.feed(cfg, dir.index(), data, ts, out, stats);
    }

    /// `len` bytes of one direction are missing from the capture.
    pub fn on_gap(
        &mut self,
        cfg: &Http1Config,
        dir: Direction,
        len: u64,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        if len == 0 {
            return;
        }
        let i = dir.index();
        stats.gaps += 1;
        stats.gap_bytes = stats.gap_bytes.saturating_add(len);
        tracing::debug!(flow = ?self.flow, dir = i, len, "http1 gap");
        enum Next {
            Nothing,
            Resync,
            LooseThenResync,
            Complete { resync: bool },
        }
        let side = &mut self.sides[i];
        let next = match &mut side.state {
            State::Ended => Next::Nothing,
            State::Stopped => {
                stats.upgraded_bytes_ignored = stats.upgraded_bytes_ignored.saturating_add(len);
                Next::Nothing
            }
            State::Idle if i == REQ && !side.hdr.is_empty() => Next::LooseThenResync,
            // The empty line ending the head may be in the hole.
            State::SkipHead { .. } => Next::Resync,
            State::Resync => {
                // The partial line before the gap cannot join what follows it.
                stats.resync_skipped_bytes += side.carry.len() as u64;
                side.carry.clear();
                Next::Nothing
            }
            State::Idle => {
                stats.resync_skipped_bytes += side.hdr.len() as u64;
                side.hdr.clear();
                Next::Resync
            }
            State::Body(cur) => {
                cur.gap = true;
                cur.last_ts = ts;
                match &mut cur.framing {
                    Framing::UntilClose => {
                        cur.body.gap(len);
                        stats.gaps_in_body_synced += 1;
                        Next::Nothing
                    }
                    Framing::Length(rem) => {
                        let inside = len.min(*rem);
                        *rem -= inside;
                        cur.body.gap(inside);
                        if *rem > 0 {
                            stats.gaps_in_body_synced += 1;
                            Next::Nothing
                        } else if inside == len {
                            stats.gaps_in_body_synced += 1;
                            Next::Complete { resync: false }
                        } else {
                            Next::Complete { resync: true }
                        }
                    }
                    Framing::Chunked(ch) => match ch.gap(len) {
                        Some(n) => {
                            cur.body.gap(n);
                            stats.gaps_in_body_synced += 1;
                            Next::Nothing
                        }
                        None => {
                            let n = ch.data_left();
                            cur.body.gap(n);
                            Next::Complete { resync: true }
                        }
                    },
                }
            }
        };
        match next {
            Next::Nothing => {}
            Next::Resync => self.gap_resync(i, stats),
            Next::LooseThenResync => {
                // The request line before the hole is on the wire: record it.
                let buf = std::mem::take(&mut self.sides[REQ].hdr);
                let first_ts = self.sides[REQ].hdr_ts;
                self.record_loose(cfg, &buf, Loose::Gap, first_ts, ts, out, stats);
                stats.resync_skipped_bytes += buf.len() as u64;
                self.gap_resync(i, stats);
            }
            Next::Complete { resync } => {
                self.complete(i, ts, out, stats);
                if resync {
                    self.gap_resync(i, stats);
                }
            }
        }
    }

    /// One direction ended (FIN after all its data, or RST).
    pub fn on_end(
        &mut self,
        cfg: &Http1Config,
        dir: Direction,
        kind: EndKind,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        if kind == EndKind::Rst {
            for p in self.queue.iter_mut() {
                p.anomalies.reset = true;
            }
        }
        self.end_side(cfg, dir.index(), EndMode::End, ts, out, stats);
        self.try_emit(out, stats);
    }

    /// The connection is gone: emit everything still pending.
    pub fn on_close(
        &mut self,
        cfg: &Http1Config,
        reason: CloseReason,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        if self.closed {
            return;
        }
        let confirmed = reason == CloseReason::Closed;
        self.end_side(cfg, REQ, EndMode::Close { confirmed }, ts, out, stats);
        self.end_side(cfg, RESP, EndMode::Close { confirmed }, ts, out, stats);
        self.flush(out, stats);
        self.closed = true;
        self.sides = [Side::default(), Side::default()];
        self.sides[REQ].state = State::Ended;
        self.sides[RESP].state = State::Ended;
        self.queue = VecDeque::new();
    }

    /// True while a message is partly read or a request waits for its
    /// response (the flow table evicts such connections last).
    pub fn in_exchange(&self) -> bool {
        !self.closed
            && (!self.queue.is_empty()
                || self
                    .sides
                    .iter()
                    .any(|s| !s.hdr.is_empty() || matches!(s.state, State::Body(_))))
    }

    /// Heap bytes held (buffers, pending requests), for the global memory cap.
    pub fn heap_bytes(&self) -> usize {
        let mut n = self.queue.capacity() * std::mem::size_of::<Pending>();
        for p in &self.queue {
            n += p.heap + p.request.body.sample.capacity() + p.interim.capacity() * 2;
            if let Some(r) = &p.response {
                n += r.body.sample.capacity() + r.interim.capacity() * 2;
            }
        }
        for s in &self.sides {
            n += s.hdr.capacity() + s.carry.capacity();
            if let State::Body(cur) = &s.state {
                n += std::mem::size_of::<CurMsg>() + cur.body.heap_bytes();
            }
        }
        n
    }

    // ----------------------------------------------------------------------
    // Byte processing

    fn feed(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        data: &[u8],
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        let mut pos = 0;
        while pos < data.len() {
            pos = match self.sides[i].state {
                State::Ended => return,
                State::Stopped => {
                    let n = (data.len() - pos) as u64;
                    stats.upgraded_bytes_ignored += n;
                    if self.tunnel {
                        if i == REQ {
                            stats.tunnel_bytes_client += n;
                        } else {
                            stats.tunnel_bytes_server += n;
                        }
                    }
                    return;
                }
                State::Idle
                    if i == REQ
                        && self.connect_waiting
                        && self.sides[REQ].hdr.is_empty()
                        && !data[pos].is_ascii_uppercase() =>
                {
                    // Optimistic tunnel data (a TLS ClientHello...) sent
                    // before the proxy answered: not a request, not an error.
                    stats.connect_early_bytes += (data.len() - pos) as u64;
                    return;
                }
                State::Idle => self.step_idle(cfg, i, data, pos, ts, out, stats),
                State::Body(_) => self.step_body(cfg, i, data, pos, ts, out, stats),
                State::Resync => self.step_resync(cfg, i, data, pos, ts, out, stats),
                State::SkipHead { line_empty } => {
                    self.step_skip_head(i, line_empty, data, pos, stats)
                }
            };
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_idle(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        data: &[u8],
        mut pos: usize,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> usize {
        let kind = kind_of(i);
        if self.sides[i].hdr.is_empty() {
            // Empty lines between messages are tolerated.
            while pos < data.len() && matches!(data[pos], b'\r' | b'\n') {
                pos += 1;
            }
            if pos == data.len() {
                return pos;
            }
            let rest = &data[pos..];
            if i == RESP {
                if let Some(end) = self.before_response(cfg, rest, ts, out, stats) {
                    return pos + end;
                }
            }
            match parse::parse_head(kind, rest, cfg) {
                Outcome::Complete(head, n) => {
                    let res = if n > cfg.max_header_bytes {
                        Err(ParseError::HeaderTooLarge)
                    } else {
                        self.on_head(cfg, head, ts, ts, out, stats)
                    };
                    if let Err(e) = res {
                        // A well-formed head that cannot be used: skip all of it.
                        if i == REQ {
                            self.record_loose(cfg, rest, Loose::TooLarge, ts, ts, out, stats);
                        }
                        self.count_error(i, e, stats);
                        self.enter_resync(i, stats);
                        stats.resync_skipped_bytes += n as u64;
                    }
                    pos + n
                }
                Outcome::Partial => {
                    if rest.len() > cfg.max_header_bytes {
                        return self.error_skip_start(
                            cfg,
                            i,
                            ParseError::HeaderTooLarge,
                            data,
                            pos,
                            ts,
                            out,
                            stats,
                        );
                    }
                    let side = &mut self.sides[i];
                    side.hdr.extend_from_slice(rest);
                    side.hdr_ts = ts;
                    data.len()
                }
                Outcome::Error(_) if i == REQ && may_be_request_line_start(rest, cfg) => {
                    // A request line still without its end: wait for it.
                    let side = &mut self.sides[i];
                    side.hdr.extend_from_slice(rest);
                    side.hdr_ts = ts;
                    data.len()
                }
                Outcome::Error(e) => self.error_skip_start(cfg, i, e, data, pos, ts, out, stats),
            }
        } else {
            let rest = &data[pos..];
            let side = &mut self.sides[i];
            let head_end = parse::find_head_end(&side.hdr, rest);
            // The head would grow to this many bytes with what it takes from `rest`.
            let grown = side.hdr.len() + head_end.unwrap_or(rest.len());
            if grown > cfg.max_header_bytes {
                self.buffered_error(cfg, i, ParseError::HeaderTooLarge, false, out, stats);
                return pos;
            }
            match head_end {
                None => {
                    side.hdr.extend_from_slice(rest);
                    if side.hdr.len() <= EARLY_CHECK_BYTES {
                        if let Outcome::Error(e) = parse::parse_head(kind, &side.hdr, cfg) {
                            if !(i == REQ && may_be_request_line_start(&side.hdr, cfg)) {
                                self.buffered_error(cfg, i, e, true, out, stats);
                            }
                        }
                    }
                    data.len()
                }
                Some(end) => {
                    side.hdr.extend_from_slice(&rest[..end]);
                    match parse::parse_head(kind, &side.hdr, cfg) {
                        Outcome::Complete(head, n) => {
                            let first_ts = side.hdr_ts;
                            let mut buf = std::mem::take(&mut side.hdr);
                            let leftover = buf.split_off(n.min(buf.len()));
                            buf.clear();
                            if buf.capacity() <= KEEP_BUFFER_BYTES {
                                self.sides[i].hdr = buf;
                            }
                            if let Err(e) = self.on_head(cfg, head, first_ts, ts, out, stats) {
                                self.count_error(i, e, stats);
                                self.enter_resync(i, stats);
                            }
                            if !leftover.is_empty() {
                                // Bytes after the head that the end-of-head scan
                                // over-read: they come before `rest[end..]`.
                                self.feed(cfg, i, &leftover, ts, out, stats);
                            }
                            pos + end
                        }
                        Outcome::Partial => pos + end,
                        Outcome::Error(e) => {
                            self.buffered_error(cfg, i, e, true, out, stats);
                            pos + end
                        }
                    }
                }
            }
        }
    }

    /// A parse error on a head starting at `data[pos]` (nothing buffered):
    /// a request line there is recorded (an HTTP/0.9 request, or a malformed
    /// one), then resync after that line (or the first token).
    #[allow(clippy::too_many_arguments)]
    fn error_skip_start(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        e: ParseError,
        data: &[u8],
        pos: usize,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> usize {
        let rest = &data[pos..];
        let rec = if i == REQ {
            let why = if e == ParseError::HeaderTooLarge {
                Loose::TooLarge
            } else {
                Loose::Refused
            };
            self.record_loose(cfg, rest, why, ts, ts, out, stats)
        } else {
            None
        };
        if let Some(LooseRecord {
            line_len: Some(n),
            http09: true,
        }) = rec
        {
            return pos + n;
        }
        self.count_error(i, e, stats);
        if let Some(n) = rec.and_then(|r| r.line_len) {
            // A recorded request line: the rest of its head goes too.
            self.sides[i].state = State::SkipHead { line_empty: true };
            stats.resync_skipped_bytes += n as u64;
            return pos + n;
        }
        self.enter_resync(i, stats);
        let n = first_token_len(rest);
        stats.resync_skipped_bytes += n as u64;
        pos + n
    }

    /// A parse error on the buffered head: resync over its bytes after the
    /// first token (when `rescan`), else drop them all.
    #[allow(clippy::too_many_arguments)]
    fn buffered_error(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        e: ParseError,
        rescan: bool,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        let buf = std::mem::take(&mut self.sides[i].hdr);
        let first_ts = self.sides[i].hdr_ts;
        let rec = if i == REQ {
            let why = if e == ParseError::HeaderTooLarge {
                Loose::TooLarge
            } else {
                Loose::Refused
            };
            self.record_loose(cfg, &buf, why, first_ts, first_ts, out, stats)
        } else {
            None
        };
        if let Some(LooseRecord {
            line_len: Some(n),
            http09: true,
        }) = rec
        {
            // A complete HTTP/0.9 request: what follows it is parsed as usual.
            if buf.len() > n {
                self.feed(cfg, i, &buf[n..], first_ts, out, stats);
            }
            return;
        }
        self.count_error(i, e, stats);
        if let Some(n) = rec.and_then(|r| r.line_len) {
            // A recorded request line: the rest of its head goes too.
            stats.resync_skipped_bytes += n as u64;
            self.sides[i].state = State::SkipHead { line_empty: true };
            if buf.len() > n {
                self.feed(cfg, i, &buf[n..], first_ts, out, stats);
            }
            return;
        }
        self.enter_resync(i, stats);
        let skip = first_token_len(&buf);
        if rescan && buf.len() > skip {
            stats.resync_skipped_bytes += skip as u64;
            self.sides[i].carry_ts = first_ts;
            self.feed(cfg, i, &buf[skip..], first_ts, out, stats);
        } else {
            stats.resync_skipped_bytes += buf.len() as u64;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_body(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        data: &[u8],
        pos: usize,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> usize {
        let State::Body(cur) = &mut self.sides[i].state else {
            return pos;
        };
        cur.last_ts = ts;
        let avail = &data[pos..];
        match &mut cur.framing {
            Framing::Length(rem) => {
                let take = usize::try_from(*rem).unwrap_or(usize::MAX).min(avail.len());
                cur.body.feed(&avail[..take], stats);
                *rem -= take as u64;
                if *rem == 0 {
                    self.complete(i, ts, out, stats);
                }
                pos + take
            }
            Framing::UntilClose => {
                cur.body.feed(avail, stats);
                data.len()
            }
            Framing::Chunked(ch) => {
                let lim = ChunkLimits {
                    max_chunk_size: cfg.max_chunk_size,
                    max_line: cfg.max_line_bytes.max(16),
                    max_trailers: cfg.max_header_bytes,
                };
                match ch.step(avail, lim) {
                    Ok(ChunkStep::Data(n)) => {
                        cur.body.feed(&avail[..n], stats);
                        pos + n
                    }
                    Ok(ChunkStep::Framing(n)) => pos + n,
                    Ok(ChunkStep::Done(n)) => {
                        self.complete(i, ts, out, stats);
                        pos + n
                    }
                    Err((e, n)) => {
                        if !ch.in_trailers() {
                            cur.truncated = true;
                        }
                        self.complete(i, ts, out, stats);
                        self.count_error(i, e, stats);
                        self.enter_resync(i, stats);
                        pos + n
                    }
                }
            }
        }
    }

    /// Skips the rest of a head up to and including its empty line, then
    /// goes back to parsing messages. Nothing is buffered.
    fn step_skip_head(
        &mut self,
        i: usize,
        mut line_empty: bool,
        data: &[u8],
        pos: usize,
        stats: &mut Http1Stats,
    ) -> usize {
        let rest = &data[pos..];
        let mut line_start = 0;
        for lf in memchr::memchr_iter(b'\n', rest) {
            if line_empty && rest[line_start..lf].iter().all(|&c| c == b'\r') {
                stats.resync_skipped_bytes += (lf + 1) as u64;
                self.sides[i].state = State::Idle;
                return pos + lf + 1;
            }
            line_empty = true;
            line_start = lf + 1;
        }
        let tail_empty = rest[line_start..].iter().all(|&c| c == b'\r');
        self.sides[i].state = State::SkipHead {
            line_empty: line_empty && tail_empty,
        };
        stats.resync_skipped_bytes += rest.len() as u64;
        data.len()
    }

    /// Looks for a start line, a line at a time; only the current incomplete
    /// line (at most `max_line_bytes` of it) is kept between calls.
    #[allow(clippy::too_many_arguments)]
    fn step_resync(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        data: &[u8],
        pos: usize,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> usize {
        let kind = kind_of(i);
        let max_line = cfg.max_line_bytes.max(64);
        let rest = &data[pos..];
        let side = &mut self.sides[i];
        let mut line_start = 0usize;
        for lf in memchr::memchr_iter(b'\n', rest) {
            let seg = &rest[line_start..=lf];
            // Only the last `max_line` bytes of a line can hold a start line.
            if side.carry.is_empty() || seg.len() >= max_line {
                let from = seg.len().saturating_sub(max_line);
                if let Some(o) = parse::find_candidate(kind, &seg[from..]) {
                    let at = line_start + from + o;
                    stats.resync_skipped_bytes += (side.carry.len() + from + o) as u64;
                    side.carry.clear();
                    side.state = State::Idle;
                    return pos + at;
                }
            } else {
                let keep = (max_line - seg.len()).min(side.carry.len());
                let cut = side.carry.len() - keep;
                let mut joined = Vec::with_capacity(keep + seg.len());
                joined.extend_from_slice(&side.carry[cut..]);
                joined.extend_from_slice(seg);
                if let Some(o) = parse::find_candidate(kind, &joined) {
                    if o >= keep {
                        let at = line_start + o - keep;
                        stats.resync_skipped_bytes += (side.carry.len() + o - keep) as u64;
                        side.carry.clear();
                        side.state = State::Idle;
                        return pos + at;
                    }
                    // The start line begins in the carried bytes: replay them.
                    let start = cut + o;
                    stats.resync_skipped_bytes += start as u64;
                    let carry = std::mem::take(&mut side.carry);
                    let carry_ts = side.carry_ts;
                    side.state = State::Idle;
                    self.feed(cfg, i, &carry[start..], carry_ts, out, stats);
                    return pos + line_start;
                }
            }
            stats.resync_skipped_bytes += (side.carry.len() + seg.len()) as u64;
            side.carry.clear();
            line_start = lf + 1;
        }
        let tail = &rest[line_start..];
        if side.carry.is_empty() {
            side.carry_ts = ts;
        }
        if tail.len() >= max_line {
            let drop = side.carry.len() + tail.len() - max_line;
            stats.resync_skipped_bytes += drop as u64;
            side.carry.clear();
            side.carry.extend_from_slice(&tail[tail.len() - max_line..]);
        } else {
            let total = side.carry.len() + tail.len();
            if total > max_line {
                let drop = total - max_line;
                stats.resync_skipped_bytes += drop as u64;
                side.carry.drain(..drop);
            }
            side.carry.extend_from_slice(tail);
        }
        data.len()
    }

    // ----------------------------------------------------------------------
    // Messages

    fn on_head(
        &mut self,
        cfg: &Http1Config,
        head: Head,
        first_ts: Ts,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> Result<(), ParseError> {
        match head {
            Head::Req(h) => self.on_request_head(cfg, h, first_ts, ts, out, stats),
            Head::Resp(h) => self.on_response_head(cfg, h, first_ts, ts, out, stats),
        }
    }

    fn on_request_head(
        &mut self,
        cfg: &Http1Config,
        h: ReqHead,
        first_ts: Ts,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> Result<(), ParseError> {
        let info = h.info;
        // Without a length a request has no body; with an unusable one it is
        // recorded bodiless and flagged, so the probe stays visible, and what
        // follows is parsed (or resynchronised) as the next message.
        let framing = body_framing(&info, false, stats);
        let ambiguous = info.ambiguous()
            || (info.transfer_encoding && !info.chunked)
            || (!info.transfer_encoding && info.content_length_invalid);
        if ambiguous {
            stats.ambiguous_framing += 1;
        }
        let (target, raw_target) = targets(None, h.target);
        let request = Request {
            method: h.method,
            target,
            raw_target,
            version: h.version,
            headers: h.headers,
            body: Body::default(),
        };
        let anomalies = Anomalies {
            ambiguous_framing: ambiguous,
            ..Anomalies::default()
        };
        let done = framing.is_none();
        let seq = self.push_request(cfg, request, anomalies, done, first_ts, ts, out, stats);
        if let Some(framing) = framing {
            let hint = match framing {
                Framing::Length(n) => n,
                _ => 0,
            };
            self.sides[REQ].state = State::Body(Box::new(CurMsg {
                target: Some(seq),
                framing,
                body: BodyAcc::new(cfg, info.codings, true, hint),
                gap: false,
                truncated: false,
                last_ts: ts,
            }));
        } else {
            self.try_emit(out, stats);
        }
        Ok(())
    }

    /// Queues a request (pushing out the oldest when the pipelining bound is
    /// reached) and returns its sequence number.
    #[allow(clippy::too_many_arguments)]
    fn push_request(
        &mut self,
        cfg: &Http1Config,
        request: Request,
        mut anomalies: Anomalies,
        req_done: bool,
        first_ts: Ts,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> u32 {
        stats.requests += 1;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        tracing::debug!(flow = ?self.flow, seq, method = %request.method, "http1 request");

        if self.queue.len() >= cfg.max_pending_requests.max(1) {
            if let Some(mut old) = self.queue.pop_front() {
                stats.pending_overflow += 1;
                match (&old.response, old.resp_done) {
                    (None, _) => self.pairing_uncertain = true,
                    (Some(_), false) => old.anomalies.truncated = true,
                    (Some(_), true) => {}
                }
                let x = self.exchange(old, stats);
                out.push(x);
            }
        }
        let is_head = request.method == "HEAD";
        let is_connect = request.method == "CONNECT";
        self.connect_waiting |= is_connect;
        self.saw_loose |= request.version == HttpVersion::Http09 || anomalies.malformed_request;
        anomalies.gap |= self.req_desync || self.pairing_uncertain;
        let heap = heap_len(&request.method)
            + request.target.capacity()
            + heap_len(&request.raw_target)
            + headers_heap(&request.headers);
        self.queue.push_back(Pending {
            seq,
            request,
            req_done,
            response: None,
            resp_done: false,
            interim: Vec::new(),
            is_head,
            is_connect,
            timing: Timing {
                request_first_ns: first_ts,
                request_last_ns: ts,
                response_first_ns: None,
                response_last_ns: None,
            },
            anomalies,
            heap,
        });
        seq
    }

    /// Records the request line at the start of `buf` as a request of its
    /// own, for a head that cannot be parsed in full (see [`Loose`]); a
    /// complete line without a version is an HTTP/0.9 request. `None` when
    /// `buf` does not start with a request line.
    #[allow(clippy::too_many_arguments)]
    fn record_loose(
        &mut self,
        cfg: &Http1Config,
        buf: &[u8],
        why: Loose,
        first_ts: Ts,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> Option<LooseRecord> {
        let line = parse::loose_request_line(buf, cfg.max_line_bytes.max(64))?;
        let http09 = line.version.is_none() && line.line_len.is_some();
        let mut anomalies = Anomalies::default();
        if http09 {
            anomalies.http09 = true;
            stats.http09_requests += 1;
        } else {
            anomalies.malformed_request = true;
            stats.malformed_requests += 1;
            match why {
                Loose::TooLarge => {
                    anomalies.head_too_large = true;
                    stats.head_too_large_requests += 1;
                }
                Loose::Gap => anomalies.gap = true,
                Loose::AnsweredEarly => stats.requests_answered_early += 1,
                Loose::Ended => anomalies.truncated = true,
                Loose::Refused => {}
            }
        }
        let raw = String::from_utf8_lossy(line.target);
        let (target, raw_target) = targets(Some(line.target), raw.into_owned());
        let request = Request {
            method: CompactString::from(String::from_utf8_lossy(line.method)),
            target,
            raw_target,
            version: line.version.unwrap_or(HttpVersion::Http09),
            headers: Vec::new(),
            body: Body::default(),
        };
        tracing::debug!(flow = ?self.flow, ?why, http09, "http1 request from its request line");
        self.push_request(cfg, request, anomalies, true, first_ts, ts, out, stats);
        Some(LooseRecord {
            line_len: line.line_len,
            http09,
        })
    }

    /// At the start of a response (`rest` at a response boundary): a request
    /// head still incomplete on the other side was answered early, so it is
    /// recorded from its request line; and the answer to an HTTP/0.9 request
    /// (or to a malformed one the server read as HTTP/0.9, as Python's
    /// http.server does with `GET HTTP/1.1`) may be a bare body without a
    /// status line: status 0, delimited by the close. Returns the bytes
    /// consumed when this opened such a response.
    fn before_response(
        &mut self,
        cfg: &Http1Config,
        rest: &[u8],
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> Option<usize> {
        if !self.sides[REQ].hdr.is_empty()
            && matches!(self.sides[REQ].state, State::Idle)
            && self.queue.iter().all(|p| p.response.is_some())
        {
            let buf = std::mem::take(&mut self.sides[REQ].hdr);
            let first_ts = self.sides[REQ].hdr_ts;
            let rec = self.record_loose(
                cfg,
                &buf,
                Loose::AnsweredEarly,
                first_ts,
                first_ts,
                out,
                stats,
            );
            match rec {
                Some(r) if r.http09 => {
                    if let Some(n) = r.line_len.filter(|&n| n < buf.len()) {
                        self.feed(cfg, REQ, &buf[n..], first_ts, out, stats);
                    }
                }
                Some(r) => match r.line_len {
                    Some(n) => {
                        // The rest of that head is skipped, what is buffered and
                        // what is still to come.
                        stats.resync_skipped_bytes += n as u64;
                        self.sides[REQ].state = State::SkipHead { line_empty: true };
                        if buf.len() > n {
                            self.feed(cfg, REQ, &buf[n..], first_ts, out, stats);
                        }
                    }
                    None => {
                        self.enter_resync(REQ, stats);
                        stats.resync_skipped_bytes += buf.len() as u64;
                    }
                },
                None => self.sides[REQ].hdr = buf,
            }
        }
        if !self.saw_loose || parse::may_be_status_line(rest) {
            return None;
        }
        let p = self.queue.iter_mut().find(|p| p.response.is_none())?;
        let loose = p.request.version == HttpVersion::Http09 || p.anomalies.malformed_request;
        if !loose || ts.saturating_add(PAIRING_SLACK_NS) < p.timing.request_first_ns {
            return None;
        }
        stats.responses += 1;
        stats.http09_responses += 1;
        p.response = Some(Response {
            status: 0,
            reason: CompactString::default(),
            version: HttpVersion::Http09,
            headers: Vec::new(),
            body: Body::default(),
            interim: std::mem::take(&mut p.interim),
        });
        p.timing.response_first_ns = Some(ts);
        p.timing.response_last_ns = Some(ts);
        let seq = p.seq;
        self.sides[RESP].state = State::Body(Box::new(CurMsg {
            target: Some(seq),
            framing: Framing::UntilClose,
            body: BodyAcc::new(cfg, parse::Codings::Identity, true, 0),
            gap: false,
            truncated: false,
            last_ts: ts,
        }));
        Some(0)
    }

    fn on_response_head(
        &mut self,
        cfg: &Http1Config,
        h: RespHead,
        first_ts: Ts,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) -> Result<(), ParseError> {
        let status = h.status;
        // The oldest request without a final response, unless the response
        // started before that request did (then it cannot answer it). Stream
        // order is certain, capture time across directions only nearly so:
        // a response captured a little before its request still answers it.
        let idx = self
            .queue
            .iter()
            .position(|p| p.response.is_none())
            .filter(|&k| {
                first_ts.saturating_add(PAIRING_SLACK_NS) >= self.queue[k].timing.request_first_ns
            });
        if let Some(k) = idx {
            if first_ts < self.queue[k].timing.request_first_ns {
                stats.reordered_pairs += 1;
            }
        }

        if (100..200).contains(&status) && status != 101 {
            stats.interim_responses += 1;
            if let Some(p) = idx.and_then(|k| self.queue.get_mut(k)) {
                if p.interim.len() < MAX_INTERIM {
                    p.interim.push(status);
                }
            }
            return Ok(());
        }

        let (is_head, is_connect) = idx
            .and_then(|k| self.queue.get(k))
            .map_or((false, false), |p| (p.is_head, p.is_connect));
        let tunnel = is_connect && (200..300).contains(&status);
        let upgraded = status == 101 || tunnel;
        if is_connect {
            // Answered: the client's bytes are parsed (refused) or tunnel bytes.
            self.connect_waiting = false;
        }
        let info = h.info;
        let bodyless =
            upgraded || is_head || (100..200).contains(&status) || status == 204 || status == 304;
        // Without a usable length a response runs to the close.
        let framing = if bodyless {
            None
        } else {
            body_framing(&info, true, stats)
        };
        let ambiguous =
            info.ambiguous() || (!info.transfer_encoding && info.content_length_invalid);
        if ambiguous {
            stats.ambiguous_framing += 1;
        }
        stats.responses += 1;

        let desync = self.resp_desync || self.pairing_uncertain;
        let target = match idx.and_then(|k| self.queue.get_mut(k)) {
            Some(p) => {
                p.heap += heap_len(&h.reason) + headers_heap(&h.headers);
                p.response = Some(Response {
                    status,
                    reason: h.reason,
                    version: h.version,
                    headers: h.headers,
                    body: Body::default(),
                    interim: std::mem::take(&mut p.interim),
                });
                p.timing.response_first_ns = Some(first_ts);
                p.timing.response_last_ns = Some(ts);
                p.anomalies.ambiguous_framing |= ambiguous;
                p.anomalies.gap |= desync;
                let gap_damaged = p.anomalies.malformed_request && p.anomalies.gap;
                let seq = p.seq;
                if gap_damaged && self.queue.iter().all(|p| p.response.is_some()) {
                    // The answer to the request cut by the gap went by, as
                    // for an orphan below: later requests pair with later
                    // responses.
                    self.req_desync = false;
                }
                Some(seq)
            }
            None => {
                stats.orphan_responses += 1;
                tracing::debug!(flow = ?self.flow, status, "http1 orphan response");
                if self.queue.iter().all(|p| p.response.is_some()) {
                    // The answer to a request lost in a gap went by with no
                    // request waiting: later requests pair with later responses.
                    self.req_desync = false;
                }
                None
            }
        };

        if upgraded {
            stats.upgrades += 1;
            if tunnel {
                stats.tunnels += 1;
                self.tunnel = true;
            }
            if let Some(p) = target.and_then(|s| self.entry_mut(s)) {
                p.anomalies.upgraded = true;
                p.anomalies.tunnel = tunnel;
                p.resp_done = true;
            }
            tracing::debug!(flow = ?self.flow, status, tunnel, "http1 protocol switch");
            self.stop(cfg, ts, out, stats);
            return Ok(());
        }
        match framing {
            None => {
                if let Some(p) = target.and_then(|s| self.entry_mut(s)) {
                    p.resp_done = true;
                }
                self.try_emit(out, stats);
            }
            Some(framing) => {
                let hint = match framing {
                    Framing::Length(n) => n,
                    _ => 0,
                };
                self.sides[RESP].state = State::Body(Box::new(CurMsg {
                    target,
                    framing,
                    body: BodyAcc::new(cfg, info.codings, target.is_some(), hint),
                    gap: false,
                    truncated: false,
                    last_ts: ts,
                }));
            }
        }
        Ok(())
    }

    /// The body of side `i` ended at `end_ts`: attach it and emit what is ready.
    fn complete(&mut self, i: usize, end_ts: Ts, out: &mut Vec<Exchange>, stats: &mut Http1Stats) {
        let st = std::mem::take(&mut self.sides[i].state);
        match st {
            State::Body(cur) => {
                self.attach(i, *cur, end_ts, stats);
                self.try_emit(out, stats);
            }
            other => self.sides[i].state = other,
        }
    }

    /// Moves a finished body into its pending exchange.
    fn attach(&mut self, i: usize, cur: CurMsg, end_ts: Ts, stats: &mut Http1Stats) {
        let complete = !cur.truncated && !cur.gap;
        let (body, decode_failed) = cur.body.finish(complete, stats);
        if cur.truncated {
            stats.truncated_messages += 1;
        }
        if i == REQ {
            stats.request_body_bytes = stats.request_body_bytes.saturating_add(body.wire_len);
        } else {
            stats.response_body_bytes = stats.response_body_bytes.saturating_add(body.wire_len);
        }
        let Some(p) = cur.target.and_then(|s| self.entry_mut(s)) else {
            return;
        };
        p.anomalies.gap |= cur.gap;
        p.anomalies.truncated |= cur.truncated;
        p.anomalies.decode_failed |= decode_failed;
        if i == REQ {
            p.request.body = body;
            p.req_done = true;
            p.timing.request_last_ns = end_ts;
        } else if let Some(r) = p.response.as_mut() {
            r.body = body;
            p.resp_done = true;
            p.timing.response_last_ns = Some(end_ts);
        }
    }

    /// Ends the parsing of one direction, finishing its message in progress.
    fn end_side(
        &mut self,
        cfg: &Http1Config,
        i: usize,
        mode: EndMode,
        ts: Ts,
        out: &mut Vec<Exchange>,
        stats: &mut Http1Stats,
    ) {
        let next = if mode == EndMode::Stop {
            State::Stopped
        } else {
            State::Ended
        };
        let st = std::mem::replace(&mut self.sides[i].state, next);
        let side = &mut self.sides[i];
        let held = (side.hdr.len() + side.carry.len()) as u64;
        if mode == EndMode::Stop && self.tunnel && !matches!(st, State::Body(_)) {
            if i == REQ {
                stats.tunnel_bytes_client += held;
            } else {
                stats.tunnel_bytes_server += held;
            }
        }
        match st {
            State::Idle if !side.hdr.is_empty() => {
                if mode == EndMode::Stop {
                    stats.upgraded_bytes_ignored += held;
                } else {
                    stats.truncated_header_blocks += 1;
                    if i == REQ {
                        // A request line whose head never completed is still
                        // a request: record it (emitted with the rest).
                        let buf = std::mem::take(&mut self.sides[i].hdr);
                        let first_ts = self.sides[i].hdr_ts;
                        let last = ts.max(first_ts);
                        self.record_loose(cfg, &buf, Loose::Ended, first_ts, last, out, stats);
                    }
                }
            }
            State::Resync | State::SkipHead { .. } => {
                if mode == EndMode::Stop {
                    stats.upgraded_bytes_ignored += held;
                } else {
                    stats.resync_skipped_bytes += held;
                }
            }
            State::Body(mut cur) => {
                let finished = match cur.framing {
                    Framing::UntilClose => match mode {
                        EndMode::End => true,
                        EndMode::Close { confirmed } => confirmed,
                        EndMode::Stop => false,
                    },
                    Framing::Chunked(ch) => ch.in_trailers(),
                    Framing::Length(_) => false,
                };
                if !finished {
                    cur.truncated = true;
                }
                let last = cur.last_ts;
                self.attach(i, *cur, last, stats);
            }
            State::Ended | State::Stopped => {
                // Already ended: keep that state.
                self.sides[i].state = st;
            }
            State::Idle => {}
        }
        let side = &mut self.sides[i];
        side.hdr = Vec::new();
        side.carry = Vec::new();
    }

    /// The connection switched protocols: finish both sides, emit everything,
    /// count later bytes only.
    fn stop(&mut self, cfg: &Http1Config, ts: Ts, out: &mut Vec<Exchange>, stats: &mut Http1Stats) {
        self.end_side(cfg, REQ, EndMode::Stop, ts, out, stats);
        self.end_side(cfg, RESP, EndMode::Stop, ts, out, stats);
        self.sides[REQ].state = State::Stopped;
        self.sides[RESP].state = State::Stopped;
        self.flush(out, stats);
    }

    /// Emits every pending exchange in order, complete or not.
    fn flush(&mut self, out: &mut Vec<Exchange>, stats: &mut Http1Stats) {
        while let Some(mut p) = self.queue.pop_front() {
            if !p.req_done {
                p.anomalies.truncated = true;
            }
            if p.response.is_some() && !p.resp_done {
                p.anomalies.truncated = true;
            }
            let x = self.exchange(p, stats);
            out.push(x);
        }
    }

    /// Emits the exchanges at the front of the queue that are complete.
    fn try_emit(&mut self, out: &mut Vec<Exchange>, stats: &mut Http1Stats) {
        while self
            .queue
            .front()
            .is_some_and(|p| p.req_done && p.resp_done)
        {
            if let Some(p) = self.queue.pop_front() {
                let x = self.exchange(p, stats);
                out.push(x);
            }
        }
        if self.queue.is_empty() && self.sides[REQ].at_boundary() && self.sides[RESP].at_boundary()
        {
            // Both directions are between messages with nothing outstanding:
            // pairing is certain again.
            self.req_desync = false;
            self.resp_desync = false;
            self.pairing_uncertain = false;
        }
    }

    fn exchange(&self, p: Pending, stats: &mut Http1Stats) -> Exchange {
        let mut anomalies = p.anomalies;
        let mut response = p.response;
        if let Some(r) = response.as_mut() {
            if r.interim.is_empty() && !p.interim.is_empty() {
                r.interim = p.interim;
            }
        } else {
            anomalies.unanswered = true;
            stats.unanswered += 1;
        }
        stats.exchanges += 1;
        Exchange {
            flow: self.flow,
            seq_on_flow: p.seq,
            request: p.request,
            response,
            timing: p.timing,
            anomalies,
        }
    }

    fn entry_mut(&mut self, seq: u32) -> Option<&mut Pending> {
        let front = self.queue.front()?.seq;
        let idx = usize::try_from(seq.wrapping_sub(front)).ok()?;
        self.queue.get_mut(idx).filter(|p| p.seq == seq)
    }

    fn count_error(&self, i: usize, e: ParseError, stats: &mut Http1Stats) {
        stats.count_parse_error(e);
        tracing::debug!(flow = ?self.flow, dir = i, error = %e, "http1 parse error");
    }

    fn enter_resync(&mut self, i: usize, stats: &mut Http1Stats) {
        let side = &mut self.sides[i];
        side.state = State::Resync;
        side.carry.clear();
        stats.resyncs += 1;
    }

    /// Resynchronisation forced by missing bytes: messages may have been lost,
    /// so pairing is uncertain until the connection is idle again.
    fn gap_resync(&mut self, i: usize, stats: &mut Http1Stats) {
        self.enter_resync(i, stats);
        if i == REQ {
            self.req_desync = true;
        } else {
            self.resp_desync = true;
            for p in self.queue.iter_mut().filter(|p| p.response.is_none()) {
                p.anomalies.gap = true;
            }
        }
    }
}

/// How a message body is delimited (RFC 9112 section 6.3): Transfer-Encoding
/// first (chunked when it comes last, otherwise up to the close), then a valid
/// Content-Length. Without a usable length (none, or an invalid one, which is
/// counted) the body runs to the close when `to_close_without_length`, and is
/// empty otherwise. `None` means no body.
fn body_framing(
    info: &parse::FramingInfo,
    to_close_without_length: bool,
    stats: &mut Http1Stats,
) -> Option<Framing> {
    if info.transfer_encoding {
        return Some(if info.chunked {
            Framing::Chunked(Chunked::new())
        } else {
            Framing::UntilClose
        });
    }
    if info.content_length_invalid {
        stats.count_parse_error(ParseError::ContentLength);
    }
    match info.content_length.filter(|_| !info.content_length_invalid) {
        Some(0) => None,
        Some(n) => Some(Framing::Length(n)),
        None => to_close_without_length.then_some(Framing::UntilClose),
    }
}

/// Length of the run of token characters at the start (at least 1), skipped
/// after a failed head so that resync does not find the same start line again
/// (`ET / HTTP/1.1` after `GET`).
fn first_token_len(b: &[u8]) -> usize {
    let tchar = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c);
    b.iter()
        .take_while(|c| tchar(c))
        .count()
        .max(1)
        .min(b.len().max(1))
}

/// The normalised target and, beside it, the target as sent when it differs
/// (empty otherwise: nearly every request, which then costs no copy). `raw` is
/// `bytes` as text (lossily when they are not UTF-8; `None`: `raw` itself).
fn targets(bytes: Option<&[u8]>, raw: String) -> (String, CompactString) {
    match contracts::exchange::normalize_target(bytes.unwrap_or(raw.as_bytes())) {
        Some(norm) => (norm, CompactString::from(raw)),
        None => (raw, CompactString::default()),
    }
}

/// True if `b` may be the start of a request line whose end has not arrived
/// yet: a method-like word (a letter first, visible ASCII, at most 32 bytes),
/// a space, then no control byte, no line feed yet, and still short of the
/// line bound. The full parser refuses some such lines as soon as it sees
/// them (`GET /two w...`, `GET /old` of HTTP/0.9): they wait for their end so
/// that they are read the same however the bytes are split.
fn may_be_request_line_start(b: &[u8], cfg: &Http1Config) -> bool {
    if b.len() >= cfg.max_line_bytes.max(64) {
        return false;
    }
    let m = b.iter().take_while(|c| c.is_ascii_graphic()).count();
    if m == 0 || m > 32 || !b[0].is_ascii_alphabetic() || b.get(m) != Some(&b' ') {
        return false;
    }
    let t = &b[m + 1..];
    let t = t.strip_suffix(b"\r").unwrap_or(t);
    t.iter()
        .all(|&c| c == b' ' || c == b'\t' || c.is_ascii_graphic() || c >= 0x80)
}

fn kind_of(i: usize) -> Kind {
    if i == REQ {
        Kind::Request
    } else {
        Kind::Response
    }
}

/// Heap bytes of a header string (short ones are stored inline).
fn heap_len(s: &compact_str::CompactString) -> usize {
    if s.is_heap_allocated() {
        s.capacity()
    } else {
        0
    }
}

fn headers_heap(hs: &[contracts::Header]) -> usize {
    std::mem::size_of_val(hs)
        + hs.iter()
            .map(|h| heap_len(&h.name) + heap_len(&h.value))
            .sum::<usize>()
}
