//! Link, network and tunnel decoding: one captured frame in, one borrowed TCP
//! segment out (or a counted reason to skip it).
//!
//! INTERFACE CONTRACT (filled in by the decode implementation):
//! - `decode_tcp(linktype, frame)` never panics and never allocates.
//! - `Skip::reason()` names the counter a skipped frame is added to.

use std::net::SocketAddr;

/// TCP flag bits as in the TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN bit.
    pub const FIN: u8 = 0x01;
    /// SYN bit.
    pub const SYN: u8 = 0x02;
    /// RST bit.
    pub const RST: u8 = 0x04;
    /// PSH bit.
    pub const PSH: u8 = 0x08;
    /// ACK bit.
    pub const ACK: u8 = 0x10;

    /// True if every bit of `mask` is set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// A TCP segment borrowed from the frame it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// TCP payload (may be empty).
    pub payload: &'a [u8],
}

/// Why a frame produced no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Placeholder until the decoder lands.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
}

impl Skip {
    /// Stable counter name for this reason (snake_case).
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::UnsupportedLinkType(_) => "unsupported_link_type",
        }
    }
}

/// Decodes one frame of pcap link type `linktype` down to a TCP segment.
pub fn decode_tcp(linktype: u32, frame: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    let _ = frame;
    Err(Skip::UnsupportedLinkType(linktype))
}
