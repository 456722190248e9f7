//! Where traffic comes from: capture files ([`pcap_file`]) and the types live
//! sources hand to the pipeline.

pub mod ebpf;
pub mod live;
pub mod pcap_file;
pub mod tproxy;

use crate::flow::{Direction, EndKind};
use contracts::FlowId;

/// Frames captured together, owned so they can cross threads: their bytes
/// in one buffer, so a batch costs two allocations however many frames it
/// holds (one per frame cost the capture thread more than reading them:
/// fresh pages for every allocation, freed by another thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameBatch {
    data: Vec<u8>,
    heads: Vec<FrameHead>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    ts_ns: u64,
    linktype: u32,
    orig_len: u32,
    range: (usize, usize),
}

impl FrameBatch {
    /// An empty batch with room for `frames` frames of `bytes` bytes in all.
    pub fn with_capacity(frames: usize, bytes: usize) -> Self {
        FrameBatch {
            data: Vec::with_capacity(bytes),
            heads: Vec::with_capacity(frames),
        }
    }

    /// Appends a copy of one frame.
    pub fn push(&mut self, frame: &pcap_file::Packet<'_>) {
        let start = self.data.len();
        self.data.extend_from_slice(frame.data);
        self.heads.push(FrameHead {
            ts_ns: frame.ts_ns,
            linktype: frame.linktype,
            orig_len: frame.orig_len,
            range: (start, self.data.len()),
        });
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Captured bytes of all frames.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Frame `i`.
    pub fn get(&self, i: usize) -> Option<pcap_file::Packet<'_>> {
        let h = self.heads.get(i)?;
        Some(pcap_file::Packet {
            ts_ns: h.ts_ns,
            linktype: h.linktype,
            data: self.data.get(h.range.0..h.range.1)?,
            orig_len: h.orig_len,
        })
    }

    /// The frames in capture order.
    pub fn iter(&self) -> impl Iterator<Item = pcap_file::Packet<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
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
