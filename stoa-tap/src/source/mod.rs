//! Where traffic comes from: capture files ([`pcap_file`]) and the types live
//! sources hand to the pipeline.

pub mod ebpf;
pub mod live;
pub mod pcap_file;
pub mod tproxy;

use crate::flow::{Direction, EndKind};
use contracts::FlowId;

/// A frame captured live, owned so it can cross threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// pcap LINKTYPE_* of the interface.
    pub linktype: u32,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: Vec<u8>,
}

/// Identifier of one relayed connection, unique for the life of the process.
pub type ConnId = u64;

/// What a relaying source (TPROXY) reports: bytes already in order, per
/// connection and direction, so no TCP reassembly is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapEvent {
    /// A connection was accepted and its upstream connected.
    Open {
        /// Connection.
        conn: ConnId,
        /// Client and original destination.
        flow: FlowId,
        /// When (ns since epoch).
        ts_ns: u64,
    },
    /// Bytes relayed in one direction, in order.
    Data {
        /// Connection.
        conn: ConnId,
        /// Which way they went.
        dir: Direction,
        /// The bytes.
        data: Vec<u8>,
        /// When they were read (ns since epoch).
        ts_ns: u64,
    },
    /// Bytes relayed but not handed to the analyzer (its queue was full).
    Gap {
        /// Connection.
        conn: ConnId,
        /// Direction.
        dir: Direction,
        /// How many bytes were skipped.
        len: u64,
        /// When (ns since epoch).
        ts_ns: u64,
    },
    /// One direction ended.
    End {
        /// Connection.
        conn: ConnId,
        /// Direction.
        dir: Direction,
        /// FIN or RST.
        kind: EndKind,
        /// When (ns since epoch).
        ts_ns: u64,
    },
    /// The connection is gone.
    Close {
        /// Connection.
        conn: ConnId,
        /// When (ns since epoch).
        ts_ns: u64,
    },
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
