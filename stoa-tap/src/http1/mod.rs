//! HTTP/1.x exchanges from the two reassembled byte streams of a connection.
//!
//! INTERFACE CONTRACT (filled in by the http1 implementation): see `Connection`.

use crate::flow::{CloseReason, Direction, EndKind};
use contracts::{Exchange, FlowId};

/// Timestamp in nanoseconds since the Unix epoch.
pub type Ts = u64;

/// Limits that keep parsing bounded whatever the input.
#[derive(Debug, Clone)]
pub struct Http1Config {
    /// Largest accepted start line + header block, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields per message.
    pub max_headers: usize,
    /// Bytes of each (decoded) body kept as a sample in the exchange.
    pub body_sample_bytes: usize,
    /// Most bytes a content decoder (gzip, deflate, br) may produce per body.
    pub max_decoded_bytes: usize,
    /// Most requests waiting for a response on one connection (pipelining).
    pub max_pending_requests: usize,
}

impl Default for Http1Config {
    fn default() -> Self {
        Http1Config {
            max_header_bytes: 64 * 1024,
            max_headers: 128,
            body_sample_bytes: 16 * 1024,
            max_decoded_bytes: 1024 * 1024,
            max_pending_requests: 64,
        }
    }
}

/// Parse counters, summed over all connections.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Http1Stats {
    /// Requests parsed.
    pub requests: u64,
    /// Responses parsed.
    pub responses: u64,
}

/// The HTTP/1.x state of one TCP connection.
#[derive(Debug)]
pub struct Connection {
    flow: FlowId,
}

impl Connection {
    /// A connection whose client and server are known.
    pub fn new(flow: FlowId) -> Self {
        Connection { flow }
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
        let _ = (cfg, dir, data, ts, out, stats, self.flow);
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
        let _ = (cfg, dir, len, ts, out, stats);
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
        let _ = (cfg, dir, kind, ts, out, stats);
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
        let _ = (cfg, reason, ts, out, stats);
    }

    /// Heap bytes held (buffers, pending requests), for the global memory cap.
    pub fn heap_bytes(&self) -> usize {
        0
    }
}
