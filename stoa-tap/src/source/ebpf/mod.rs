//! Source `ebpf`: the stoa-tap probe (`stoa-tap-ebpf/`), a TC classifier on
//! the gateway's own interface that copies the payload of TCP segments on the
//! watched ports into a ring buffer. This module turns its records into TCP
//! segments for the same `tcp` -> `http1` pipeline as the pcap source.
//!
//! The probe needs Linux 6.6+ for TCX attachment (older kernels fall back to
//! a clsact qdisc filter), 5.18+ for reading the skb's timestamp type (and
//! 5.17+ for `bpf_loop`), BTF (`/sys/kernel/btf/vmlinux`), and the
//! capabilities `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_PERFMON`. Loading it is
//! only possible when stoa-tap is built with the `ebpf` cargo feature.

#[cfg(feature = "ebpf")]
mod probe;

use crate::decode::{TcpFlags, TcpSegment};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use stoa_tap_abi::{parse_record, RecordHeader, CHUNK_LAST, FAMILY_V4, FAMILY_V6};

/// Which side of the interface the probe watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hooks {
    /// Egress on `lo` (every packet crosses `lo` twice), both elsewhere.
    Auto,
    /// Packets entering the interface.
    Ingress,
    /// Packets leaving the interface.
    Egress,
    /// Both (a gateway interface sees requests in and responses out).
    Both,
}

impl Hooks {
    /// `(ingress, egress)` for `interface`.
    pub fn resolve(self, interface: &str) -> (bool, bool) {
        match self {
            Hooks::Auto if interface == "lo" => (false, true),
            Hooks::Auto | Hooks::Both => (true, true),
            Hooks::Ingress => (true, false),
            Hooks::Egress => (false, true),
        }
    }
}

/// What the probe is attached to and what it watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Interface name (in the current network namespace).
    pub interface: String,
    /// Ingress, egress or both.
    pub hooks: Hooks,
    /// Watched TCP ports (source or destination).
    pub ports: Vec<u16>,
    /// Ring buffer size in bytes; rounded up to a power of two, at least one page.
    pub ring_bytes: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interface: "lo".into(),
            hooks: Hooks::Auto,
            ports: vec![5555],
            ring_bytes: 64 << 20,
        }
    }
}

/// Why the probe could not start or be updated.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// This build has no probe.
    #[error(
        "this stoa-tap was built without eBPF support: rebuild with `--features ebpf` \
         (needs the pinned nightly and bpf-linker: bash stoa-tap-ebpf/toolchain.sh)"
    )]
    Unavailable,
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// The kernel refused the object, a map or the program (verifier, BTF,
    /// missing capabilities...).
    #[error("loading the probe: {0}")]
    Load(String),
    /// Attaching to the interface failed.
    #[error("attaching the probe to {interface} ({hook}): {message}")]
    Attach {
        /// Interface.
        interface: String,
        /// ingress or egress.
        hook: &'static str,
        /// Cause.
        message: String,
    },
    /// A map operation failed.
    #[error("probe map {map}: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Cause.
        message: String,
    },
    /// Starting the reader failed.
    #[error("probe reader: {0}")]
    Io(#[from] std::io::Error),
}

/// One chunk of one TCP segment seen by the probe, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHead {
    /// When the probe saw it (ns since the Unix epoch).
    pub ts_ns: u64,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number of the first payload byte of this chunk.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags (SYN only on a segment's first chunk, FIN/RST on its last).
    pub flags: u8,
    /// Payload bytes of the segment after this chunk that the probe did not
    /// copy (a segment longer than its chunk limit).
    pub cut: u32,
}

impl SegmentHead {
    /// The TCP segment this chunk stands for, with `payload`.
    pub fn segment<'a>(&self, payload: &'a [u8]) -> TcpSegment<'a> {
        TcpSegment {
            src: self.src,
            dst: self.dst,
            seq: self.seq,
            ack: self.ack,
            flags: TcpFlags(self.flags),
            payload,
        }
    }
}

/// Segments read from the ring buffer together, their payloads in one
/// buffer: one allocation per batch rather than one per segment, and the
/// batch crosses threads as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeBatch {
    data: Vec<u8>,
    heads: Vec<(SegmentHead, std::ops::Range<usize>)>,
}

impl ProbeBatch {
    /// Makes room for `segments` more segments and `bytes` more payload.
    pub fn reserve(&mut self, segments: usize, bytes: usize) {
        self.data.reserve(bytes);
        self.heads.reserve(segments);
    }

    /// Appends one segment.
    pub fn push(&mut self, head: SegmentHead, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.heads.push((head, start..self.data.len()));
    }

    /// Segments in the batch.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether the batch holds no segment.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Payload bytes in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    /// Segment `i`, in the order the probe wrote them.
    pub fn get(&self, i: usize) -> Option<(&SegmentHead, &[u8])> {
        self.heads.get(i).map(|e| self.entry(e))
    }

    /// The segments, in the order the probe wrote them.
    pub fn iter(&self) -> impl Iterator<Item = (&SegmentHead, &[u8])> + '_ {
        self.heads.iter().map(|e| self.entry(e))
    }

    /// A head with its payload.
    fn entry<'a>(
        &'a self,
        (h, r): &'a (SegmentHead, std::ops::Range<usize>),
    ) -> (&'a SegmentHead, &'a [u8]) {
        (h, self.data.get(r.clone()).unwrap_or_default())
    }
}

/// What went wrong with a record read from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSkip {
    /// Shorter than its header, or a chunk longer than the limit.
    Malformed,
    /// Address family neither 4 nor 6.
    BadFamily,
}

/// Decodes one ring-buffer record: the segment's metadata and its payload,
/// borrowed from the record. `clock_offset_ns` converts the probe's
/// CLOCK_MONOTONIC timestamp to the Unix epoch.
pub fn segment_of(
    record: &[u8],
    clock_offset_ns: i128,
) -> Result<(SegmentHead, &[u8]), RecordSkip> {
    let (h, data) = parse_record(record).ok_or(RecordSkip::Malformed)?;
    let (src, dst) = addresses(&h).ok_or(RecordSkip::BadFamily)?;
    let end = u64::from(h.chunk_offset) + u64::from(h.chunk_len);
    let cut = if h.chunk_flags & CHUNK_LAST != 0 {
        u64::from(h.payload_len).saturating_sub(end)
    } else {
        0
    };
    let ts = (i128::from(h.ts_ns) + clock_offset_ns).clamp(0, i128::from(u64::MAX));
    let head = SegmentHead {
        ts_ns: ts as u64,
        src,
        dst,
        seq: h.seq.wrapping_add(h.chunk_offset),
        ack: h.ack,
        flags: h.tcp_flags,
        cut: u32::try_from(cut).unwrap_or(u32::MAX),
    };
    Ok((head, data))
}

fn addresses(h: &RecordHeader) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |a: &[u8; 16]| -> Option<IpAddr> {
        match h.family {
            FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(&h.saddr)?, h.sport),
        SocketAddr::new(ip(&h.daddr)?, h.dport),
    ))
}

/// The probe's counters: the kernel side's (summed over CPUs) and the reader's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeStats {
    /// Kernel-side counters by name (`stoa_tap_abi::counter::NAMES`).
    pub kernel: std::collections::BTreeMap<&'static str, u64>,
    /// Records read from the ring buffer.
    pub records_read: u64,
    /// Records that could not be decoded.
    pub records_malformed: u64,
    /// Segments handed to the pipeline.
    pub segments_delivered: u64,
    /// Payload bytes handed to the pipeline.
    pub payload_bytes_delivered: u64,
}

/// A running probe.
pub struct ProbeHandle {
    #[cfg(feature = "ebpf")]
    inner: probe::Running,
}

impl std::fmt::Debug for ProbeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeHandle").finish_non_exhaustive()
    }
}

/// Receives each batch of segments drained from the ring buffer.
pub type SegmentSink = Box<dyn FnMut(ProbeBatch) + Send>;

/// Whether this build can load the probe.
pub const AVAILABLE: bool = cfg!(feature = "ebpf");

/// Loads the probe, sets its ports, attaches it, and starts the thread that
/// reads its ring buffer into `sink`.
pub fn start(cfg: ProbeConfig, sink: SegmentSink) -> Result<ProbeHandle, ProbeError> {
    if cfg.ports.is_empty() {
        return Err(ProbeError::Config("no ports to watch".into()));
    }
    #[cfg(feature = "ebpf")]
    {
        Ok(ProbeHandle {
            inner: probe::start(cfg, sink)?,
        })
    }
    #[cfg(not(feature = "ebpf"))]
    {
        let _ = sink;
        Err(ProbeError::Unavailable)
    }
}

/// The TCX programs attached to `interface` (any program, not only the
/// probe), as `(hook, program name)`: to check that the probe is attached,
/// or that it was detached.
pub fn attached(interface: &str) -> Result<Vec<(&'static str, String)>, ProbeError> {
    #[cfg(feature = "ebpf")]
    {
        probe::attached(interface)
    }
    #[cfg(not(feature = "ebpf"))]
    {
        let _ = interface;
        Err(ProbeError::Unavailable)
    }
}

impl ProbeHandle {
    /// Counters, kernel side included.
    pub fn stats(&self) -> ProbeStats {
        #[cfg(feature = "ebpf")]
        {
            self.inner.stats()
        }
        #[cfg(not(feature = "ebpf"))]
        {
            ProbeStats::default()
        }
    }

    /// Replaces the watched ports (configuration reload).
    pub fn set_ports(&self, ports: &[u16]) -> Result<(), ProbeError> {
        #[cfg(feature = "ebpf")]
        {
            self.inner.set_ports(ports)
        }
        #[cfg(not(feature = "ebpf"))]
        {
            let _ = ports;
            Err(ProbeError::Unavailable)
        }
    }

    /// Detaches the probe, drains what is left in the ring buffer, and waits
    /// for the reader thread.
    pub fn stop(self) {
        #[cfg(feature = "ebpf")]
        self.inner.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoa_tap_abi::{CHUNK_FIRST, HEADER_LEN};

    fn record(h: RecordHeader, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN];
        v[0..8].copy_from_slice(&h.ts_ns.to_ne_bytes());
        v[8..24].copy_from_slice(&h.saddr);
        v[24..40].copy_from_slice(&h.daddr);
        v[40..42].copy_from_slice(&h.sport.to_ne_bytes());
        v[42..44].copy_from_slice(&h.dport.to_ne_bytes());
        v[44..48].copy_from_slice(&h.seq.to_ne_bytes());
        v[48..52].copy_from_slice(&h.ack.to_ne_bytes());
        v[52..56].copy_from_slice(&h.chunk_offset.to_ne_bytes());
        v[56..60].copy_from_slice(&h.chunk_len.to_ne_bytes());
        v[60..64].copy_from_slice(&h.payload_len.to_ne_bytes());
        v[64..68].copy_from_slice(&h.ifindex.to_ne_bytes());
        v[68] = h.family;
        v[69] = h.tcp_flags;
        v[70] = h.chunk_flags;
        v[71] = h.hook;
        v.extend_from_slice(data);
        v
    }

    fn v4_header() -> RecordHeader {
        let mut h = RecordHeader {
            ts_ns: 1_000,
            sport: 40000,
            dport: 5555,
            seq: u32::MAX - 1,
            ack: 7,
            family: FAMILY_V4,
            tcp_flags: 0x18,
            ..RecordHeader::default()
        };
        h.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        h.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        h
    }

    #[test]
    fn chunk_sequence_numbers_wrap_and_timestamps_shift() {
        let mut h = v4_header();
        h.chunk_offset = 4096;
        h.chunk_len = 3;
        h.payload_len = 4099;
        h.chunk_flags = CHUNK_LAST;
        let rec = record(h, b"xyz");
        let (seg, payload) = segment_of(&rec, 5_000).expect("valid");
        assert_eq!(seg.src, "10.0.0.1:40000".parse().expect("addr"));
        assert_eq!(seg.dst, "10.0.0.2:5555".parse().expect("addr"));
        assert_eq!(seg.seq, (u32::MAX - 1).wrapping_add(4096));
        assert_eq!(seg.ts_ns, 6_000);
        assert_eq!(payload, b"xyz");
        assert_eq!(seg.cut, 0);
    }

    #[test]
    fn last_chunk_short_of_the_segment_reports_the_cut() {
        let mut h = v4_header();
        h.chunk_len = 2;
        h.payload_len = 10;
        h.chunk_flags = CHUNK_FIRST | CHUNK_LAST;
        let rec = record(h, b"ab");
        assert_eq!(segment_of(&rec, 0).expect("valid").0.cut, 8);
        // Not the last chunk: the rest comes in later records.
        h.chunk_flags = CHUNK_FIRST;
        let rec = record(h, b"ab");
        assert_eq!(segment_of(&rec, 0).expect("valid").0.cut, 0);
    }

    #[test]
    fn ipv6_and_bad_records() {
        let mut h = v4_header();
        h.family = FAMILY_V6;
        h.saddr = Ipv6Addr::LOCALHOST.octets();
        h.daddr = Ipv6Addr::LOCALHOST.octets();
        let rec = record(h, b"");
        let (seg, _) = segment_of(&rec, 0).expect("valid");
        assert_eq!(seg.src, "[::1]:40000".parse().expect("addr"));
        h.family = 9;
        let rec = record(h, b"");
        assert_eq!(segment_of(&rec, 0), Err(RecordSkip::BadFamily));
        assert_eq!(segment_of(&[1, 2, 3], 0), Err(RecordSkip::Malformed));
        // A negative epoch after the offset clamps to zero instead of wrapping.
        h.family = FAMILY_V4;
        let rec = record(h, b"");
        assert_eq!(segment_of(&rec, -1_000_000).expect("valid").0.ts_ns, 0);
    }

    #[test]
    fn a_batch_keeps_each_payload_with_its_segment() {
        let mut b = ProbeBatch::default();
        b.reserve(2, 8);
        let mut h = v4_header();
        h.chunk_len = 3;
        h.payload_len = 3;
        h.chunk_flags = CHUNK_FIRST | CHUNK_LAST;
        let rec = record(h, b"abc");
        let (head, payload) = segment_of(&rec, 0).expect("valid");
        b.push(head, payload);
        b.push(head, b"");
        b.push(head, b"defg");
        assert_eq!(b.len(), 3);
        assert_eq!(b.payload_bytes(), 7);
        let got: Vec<&[u8]> = b.iter().map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"abc"[..], b"", b"defg"]);
        assert_eq!(b.iter().next().expect("one").1, b"abc");
        assert_eq!(b.get(2).map(|(_, p)| p), Some(&b"defg"[..]));
        assert!(b.get(3).is_none());
    }

    #[test]
    fn auto_hooks_watch_lo_once() {
        assert_eq!(Hooks::Auto.resolve("lo"), (false, true));
        assert_eq!(Hooks::Auto.resolve("eth0"), (true, true));
        assert_eq!(Hooks::Ingress.resolve("lo"), (true, false));
    }

    #[cfg(not(feature = "ebpf"))]
    #[test]
    fn without_the_feature_start_says_why() {
        let err = start(ProbeConfig::default(), Box::new(|_| {})).expect_err("unavailable");
        assert!(err.to_string().contains("--features ebpf"), "{err}");
    }
}
