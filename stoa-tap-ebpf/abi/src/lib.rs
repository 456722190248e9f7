//! The records the stoa-tap eBPF probe writes into its ring buffer, and the
//! maps it shares with userspace.
//!
//! Both sides compile this file: the probe (`bpfel-unknown-none`, `no_std`)
//! and the userspace reader in `stoa-tap` (`source::ebpf`). Every type is
//! `#[repr(C)]` with explicit padding so the layout is the same on both.
#![no_std]
#![forbid(unsafe_code)]

/// Payload bytes carried by one record. Larger segments (GSO/GRO
/// super-packets up to 64 KiB, more with BIG TCP) are split into chunks.
pub const CHUNK: usize = 4096;

/// Most chunks taken from one segment (512 KiB of payload). The payload past
/// this is reported as cut (`payload_len` > last chunk's end).
pub const MAX_CHUNKS: u32 = 128;

/// The port map's single value: bit `p % 64` of word `p / 64` is set when TCP
/// port `p` is watched. One array lookup and a bit test per packet, whatever
/// the number of ports.
pub type PortBitmap = [u64; 1024];

/// The bitmap of `ports`.
pub fn port_bitmap(ports: &[u16]) -> PortBitmap {
    let mut bits = [0u64; 1024];
    for &p in ports {
        bits[usize::from(p >> 6)] |= 1u64 << (p & 63);
    }
    bits
}

/// Whether `port` is set in `bits`.
#[inline(always)]
pub fn port_watched(bits: &PortBitmap, port: u16) -> bool {
    bits[usize::from(port >> 6)] >> (port & 63) & 1 != 0
}

/// Address family of [`RecordHeader::family`].
pub const FAMILY_V4: u8 = 4;
/// Address family of [`RecordHeader::family`].
pub const FAMILY_V6: u8 = 6;

/// TCP flag bits of [`RecordHeader::tcp_flags`], as on the wire.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// [`RecordHeader::chunk_flags`]: this is the segment's first chunk.
pub const CHUNK_FIRST: u8 = 0x01;
/// [`RecordHeader::chunk_flags`]: this is the last chunk the probe took of the
/// segment (the payload after it, if any, was cut).
pub const CHUNK_LAST: u8 = 0x02;

/// [`RecordHeader::hook`]: seen on the interface's ingress.
pub const HOOK_INGRESS: u8 = 0;
/// [`RecordHeader::hook`]: seen on the interface's egress.
pub const HOOK_EGRESS: u8 = 1;

/// Metadata of one chunk of one TCP segment; `chunk_len` payload bytes follow
/// it in the ring-buffer record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// When the segment was on the wire (CLOCK_MONOTONIC): the departure
    /// time the sending kernel stamped on it when there is one close to now
    /// (TCP's), otherwise `bpf_ktime_get_ns()` when the probe saw it.
    pub ts_ns: u64,
    /// Source address; IPv4 in the first 4 bytes, network order.
    pub saddr: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes, network order.
    pub daddr: [u8; 16],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// Sequence number of the segment's first payload byte, host order.
    pub seq: u32,
    /// Acknowledgment number, host order.
    pub ack: u32,
    /// Offset of this chunk in the segment's payload.
    pub chunk_offset: u32,
    /// Payload bytes in this record.
    pub chunk_len: u32,
    /// Payload bytes of the whole segment.
    pub payload_len: u32,
    /// Interface index the probe is attached to.
    pub ifindex: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// [`CHUNK_FIRST`] | [`CHUNK_LAST`].
    pub chunk_flags: u8,
    /// [`HOOK_INGRESS`] or [`HOOK_EGRESS`].
    pub hook: u8,
}

/// Size of [`RecordHeader`] in a record.
pub const HEADER_LEN: usize = core::mem::size_of::<RecordHeader>();

// The probe builds records in a per-CPU map value; keep the header a whole
// number of 8-byte words so the payload after it stays aligned.
const _: () = assert!(HEADER_LEN.is_multiple_of(8));
const _: () = assert!(HEADER_LEN == 72);

/// A whole record as the probe builds it before copying `HEADER_LEN +
/// chunk_len` bytes of it into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    /// Metadata.
    pub header: RecordHeader,
    /// Payload; only the first `header.chunk_len` bytes are meaningful.
    pub data: [u8; CHUNK],
}

/// Indices of the probe's per-CPU counter array (`COUNTERS`).
pub mod counter {
    /// Packets the program ran on.
    pub const PACKETS: u32 = 0;
    /// TCP segments on a watched port.
    pub const SEGMENTS: u32 = 1;
    /// Records written to the ring buffer.
    pub const RECORDS: u32 = 2;
    /// Payload bytes written to the ring buffer.
    pub const PAYLOAD_BYTES: u32 = 3;
    /// Records lost because the ring buffer was full.
    pub const RING_FULL: u32 = 4;
    /// Payload bytes lost because the ring buffer was full.
    pub const RING_FULL_BYTES: u32 = 5;
    /// Segments whose payload exceeded `MAX_CHUNKS * CHUNK` (the rest is cut).
    pub const CUT_SEGMENTS: u32 = 6;
    /// Segments with payload larger than one chunk (GSO/GRO super-packets).
    pub const MULTI_CHUNK_SEGMENTS: u32 = 7;
    /// Packets that could not be parsed (short headers, bad lengths).
    pub const MALFORMED: u32 = 8;
    /// IPv4 fragments (not reassembled; skipped).
    pub const FRAGMENTS: u32 = 9;
    /// IPv6 packets whose TCP header could not be reached: a fragment, or
    /// more than four extension headers (skipped).
    pub const IPV6_EXTENSIONS: u32 = 10;
    /// Payload bytes that `bpf_skb_load_bytes` failed to read.
    pub const LOAD_ERRORS: u32 = 11;
    /// Segments whose skb carried a departure time too far from now to be
    /// their timestamp (the probe read the clock instead).
    pub const FOREIGN_STAMPS: u32 = 12;
    /// Segments timestamped with the departure time the sending kernel
    /// stamped on them (the others with the probe's clock).
    pub const DEPARTURE_STAMPS: u32 = 13;
    /// Number of counters.
    pub const COUNT: u32 = 14;

    /// Metric-friendly names, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets",
        "segments",
        "records",
        "payload_bytes",
        "ring_full_records",
        "ring_full_bytes",
        "cut_segments",
        "multi_chunk_segments",
        "malformed",
        "ipv4_fragments",
        "ipv6_extension_headers",
        "load_errors",
        "foreign_timestamps",
        "departure_timestamps",
    ];
}

/// Names of the maps and the program in the object file.
pub mod names {
    /// The classifier program.
    pub const PROGRAM: &str = "stoa_tap";
    /// `Array<PortBitmap>` with one element: the watched TCP ports.
    pub const PORTS: &str = "PORTS";
    /// The ring buffer of records.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` of [`super::counter`] values.
    pub const COUNTERS: &str = "COUNTERS";
    /// `u64` global: bytes pending in the ring above which the probe wakes
    /// the reader (below, the reader drains on a timer).
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
}

/// Splits a record read from the ring buffer into its header and payload.
/// `None` when the record is shorter than its header says.
pub fn parse_record(bytes: &[u8]) -> Option<(RecordHeader, &[u8])> {
    let head = bytes.get(..HEADER_LEN)?;
    let u16_at = |o: usize| u16::from_ne_bytes([head[o], head[o + 1]]);
    let u32_at = |o: usize| u32::from_ne_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[0..8]);
    let mut saddr = [0u8; 16];
    saddr.copy_from_slice(&head[8..24]);
    let mut daddr = [0u8; 16];
    daddr.copy_from_slice(&head[24..40]);
    let h = RecordHeader {
        ts_ns: u64::from_ne_bytes(ts),
        saddr,
        daddr,
        sport: u16_at(40),
        dport: u16_at(42),
        seq: u32_at(44),
        ack: u32_at(48),
        chunk_offset: u32_at(52),
        chunk_len: u32_at(56),
        payload_len: u32_at(60),
        ifindex: u32_at(64),
        family: head[68],
        tcp_flags: head[69],
        chunk_flags: head[70],
        hook: head[71],
    };
    let len = usize::try_from(h.chunk_len).ok()?;
    if len > CHUNK {
        return None;
    }
    let data = bytes.get(HEADER_LEN..HEADER_LEN + len)?;
    Some((h, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_parse_record() {
        // Field offsets in the repr(C) layout, checked against what
        // parse_record reads.
        assert_eq!(core::mem::offset_of!(RecordHeader, saddr), 8);
        assert_eq!(core::mem::offset_of!(RecordHeader, daddr), 24);
        assert_eq!(core::mem::offset_of!(RecordHeader, sport), 40);
        assert_eq!(core::mem::offset_of!(RecordHeader, dport), 42);
        assert_eq!(core::mem::offset_of!(RecordHeader, seq), 44);
        assert_eq!(core::mem::offset_of!(RecordHeader, ack), 48);
        assert_eq!(core::mem::offset_of!(RecordHeader, chunk_offset), 52);
        assert_eq!(core::mem::offset_of!(RecordHeader, chunk_len), 56);
        assert_eq!(core::mem::offset_of!(RecordHeader, payload_len), 60);
        assert_eq!(core::mem::offset_of!(RecordHeader, ifindex), 64);
        assert_eq!(core::mem::offset_of!(RecordHeader, family), 68);
        assert_eq!(core::mem::offset_of!(RecordHeader, hook), 71);
    }

    #[test]
    fn port_bitmap_sets_exactly_the_ports() {
        let bits = port_bitmap(&[0, 63, 64, 5555, 65535]);
        for p in [0u16, 63, 64, 5555, 65535] {
            assert!(port_watched(&bits, p), "{p}");
        }
        for p in [1u16, 62, 65, 5554, 5556, 65534] {
            assert!(!port_watched(&bits, p), "{p}");
        }
        assert_eq!(bits.iter().map(|w| w.count_ones()).sum::<u32>(), 5);
    }

    #[test]
    fn short_or_lying_records_are_refused() {
        assert!(parse_record(&[0u8; 10]).is_none());
        let mut rec = [0u8; HEADER_LEN + 3];
        rec[56..60].copy_from_slice(&5u32.to_ne_bytes());
        assert!(parse_record(&rec).is_none());
        rec[56..60].copy_from_slice(&3u32.to_ne_bytes());
        rec[HEADER_LEN..].copy_from_slice(b"abc");
        let (h, d) = parse_record(&rec).expect("valid");
        assert_eq!(h.chunk_len, 3);
        assert_eq!(d, b"abc");
        let mut big = [0u8; HEADER_LEN];
        big[56..60].copy_from_slice(&(CHUNK as u32 + 1).to_ne_bytes());
        assert!(parse_record(&big).is_none());
    }
}
