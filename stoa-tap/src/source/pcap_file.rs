//! Offline capture files: pcap and pcapng, optionally gzip-compressed, one
//! file or several merged into one time-ordered stream.
//!
//! Reading is streaming with a bounded buffer, so memory does not grow with the
//! file size. A single file hands out packets borrowed from the read buffer
//! (zero-copy); several files are merged by timestamp, which needs one owned
//! copy of each file's next packet.

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Read buffer size; grows up to [`MAX_BLOCK`] for oversized records.
const READ_BUFFER: usize = 1 << 20;
/// Largest capture record accepted; a bigger length field means corruption.
const MAX_BLOCK: usize = 16 << 20;

/// A snapshot length below a full Ethernet frame (1500-byte MTU plus its
/// 14-byte header) cuts the payload of full-size TCP segments.
pub const SMALL_SNAPLEN: u32 = 1514;

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// pcap LINKTYPE_* of the interface the frame was captured on.
    pub linktype: u32,
    /// The captured bytes (may be shorter than the frame on the wire).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is neither pcap nor pcapng (nor a gzip of one).
    #[error("{path}: not a pcap or pcapng capture")]
    NotACapture {
        /// File concerned.
        path: PathBuf,
    },
    /// A record in the middle of the file cannot be parsed.
    #[error("{path}: corrupt capture at byte {offset}: {detail}")]
    Corrupt {
        /// File concerned.
        path: PathBuf,
        /// Offset in the (decompressed) file of the bad record.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A directory holds no capture file.
    #[error("{path}: directory holds no pcap or pcapng file")]
    EmptyDirectory {
        /// Directory concerned.
        path: PathBuf,
    },
}

/// Something noteworthy but not fatal found while reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The last record was cut short (capture interrupted); all before it was read.
    TruncatedLastRecord {
        /// File concerned.
        path: PathBuf,
        /// Offset of the incomplete record.
        offset: u64,
    },
    /// A packet referenced an interface the file never described.
    UnknownInterface {
        /// File concerned.
        path: PathBuf,
        /// Interface id used by the packet.
        if_id: u32,
    },
    /// A file in a directory was skipped because it is not a capture.
    SkippedFile {
        /// File concerned.
        path: PathBuf,
    },
    /// The capture's snapshot length (pcap header or pcapng interface, or
    /// the length frames were cut at) is below [`SMALL_SNAPLEN`]: TCP
    /// payloads are cut, exchanges incomplete.
    SmallSnaplen {
        /// File concerned.
        path: PathBuf,
        /// The snapshot length in bytes.
        snaplen: u32,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::TruncatedLastRecord { path, offset } => write!(
                f,
                "{}: last record truncated at byte {offset}; everything before it was read",
                path.display()
            ),
            Warning::UnknownInterface { path, if_id } => write!(
                f,
                "{}: packets on undescribed interface {if_id} skipped",
                path.display()
            ),
            Warning::SkippedFile { path } => {
                write!(f, "{}: not a capture file, skipped", path.display())
            }
            Warning::SmallSnaplen { path, snaplen } => write!(
                f,
                "{}: captured with snap length {snaplen}: frames longer than {snaplen} bytes \
                 are cut, so TCP payloads are missing (counted as snaplen_truncated); \
                 capture with -s 0 (262144) to see whole exchanges",
                path.display()
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_sec: i64,
}

/// Counts the bytes pulled from the underlying file (compressed size for gzip).
struct Counting<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// One capture file being read.
pub struct CaptureFile {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    interfaces: Vec<Interface>,
    /// Offset of the next record in the decompressed stream.
    offset: u64,
    file_bytes_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    file_len: u64,
    warnings: Vec<Warning>,
    unknown_if_warned: bool,
    /// Smallest snapshot length declared so far (None: none or unlimited).
    snaplen: Option<u32>,
    done: bool,
    /// Classic pcap: snapshot length and byte order of record headers.
    legacy: Option<(u32, bool)>,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Records a snapshot length a file declared (into the file's smallest so
/// far), warning once per file when it is small enough to cut TCP payloads.
/// A free function: the reader's block still borrows the file.
fn note_snaplen(least: &mut Option<u32>, warnings: &mut Vec<Warning>, path: &Path, snaplen: u32) {
    if snaplen == 0 {
        return;
    }
    let was_small = least.is_some_and(|s| s < SMALL_SNAPLEN);
    *least = Some(least.map_or(snaplen, |s| s.min(snaplen)));
    if snaplen < SMALL_SNAPLEN && !was_small {
        warnings.push(Warning::SmallSnaplen {
            path: path.to_owned(),
            snaplen,
        });
    }
}

/// First bytes of a file say what it is.
fn sniff(path: &Path) -> Result<Option<bool>, SourceError> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SourceError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        return Ok(Some(true));
    }
    let known = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    if got == 4 && known.contains(&magic) {
        Ok(Some(false))
    } else {
        Ok(None)
    }
}

impl CaptureFile {
    /// Opens a pcap, pcapng, or gzip-compressed pcap/pcapng file.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let gzip = sniff(path)?.ok_or_else(|| SourceError::NotACapture {
            path: path.to_owned(),
        })?;
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counting = Counting {
            inner: file,
            count: count.clone(),
        };
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                256 * 1024,
                counting,
            )))
        } else {
            Box::new(counting)
        };
        let reader = create_reader(READ_BUFFER, input).map_err(|e| match e {
            PcapError::ReadError => SourceError::Io {
                path: path.to_owned(),
                source: std::io::Error::other("read failed (corrupt compression?)"),
            },
            _ => SourceError::NotACapture {
                path: path.to_owned(),
            },
        })?;
        Ok(CaptureFile {
            path: path.to_owned(),
            reader,
            interfaces: Vec::new(),
            offset: 0,
            file_bytes_read: count,
            file_len,
            warnings: Vec::new(),
            unknown_if_warned: false,
            snaplen: None,
            done: false,
            legacy: None,
        })
    }

    /// Path of this file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file on disk.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of the file on disk read so far.
    pub fn file_bytes_read(&self) -> u64 {
        self.file_bytes_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Warnings gathered so far (drained).
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    fn corrupt(&self, detail: impl Into<String>) -> SourceError {
        SourceError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            detail: detail.into(),
        }
    }

    /// The file ends inside a record: a cut-short capture (warning) unless the
    /// record header itself is implausible (corruption).
    fn end_short<T>(&mut self) -> Result<Option<T>, SourceError> {
        self.done = true;
        let rest = self.reader.data();
        let implausible = match self.legacy {
            Some((snaplen, big_endian)) => rest.get(8..12).is_some_and(|b| {
                let raw = [b[0], b[1], b[2], b[3]];
                let caplen = if big_endian {
                    u32::from_be_bytes(raw)
                } else {
                    u32::from_le_bytes(raw)
                };
                caplen > snaplen.max(262_144) || caplen as usize > MAX_BLOCK
            }),
            None => rest.get(4..8).is_some_and(|b| {
                let raw = [b[0], b[1], b[2], b[3]];
                let len = u32::from_le_bytes(raw).min(u32::from_be_bytes(raw));
                len as usize > MAX_BLOCK || len < 12
            }),
        };
        if implausible {
            return Err(self.corrupt("record length beyond the capture's limits"));
        }
        self.warnings.push(Warning::TruncatedLastRecord {
            path: self.path.clone(),
            offset: self.offset,
        });
        Ok(None)
    }

    /// Smallest snapshot length the file declared (pcap header, pcapng
    /// interfaces) or cut a frame at; None when it declared none or no limit
    /// (0) and cut no frame.
    pub fn snaplen(&self) -> Option<u32> {
        self.snaplen
    }

    /// Hands the next packet to `f`. Returns `Ok(None)` at the end of the file.
    pub fn next_with<T>(
        &mut self,
        mut f: impl FnMut(Packet<'_>) -> T,
    ) -> Result<Option<T>, SourceError> {
        if self.done {
            return Ok(None);
        }
        loop {
            // Two phases so the borrow of the reader's buffer ends before refill.
            enum Step<T> {
                Consumed(usize, Option<T>),
                Eof,
                Refill,
                Grow,
                Truncated,
                Error(String),
            }
            let step = match self.reader.next() {
                Ok((len, block)) => {
                    let out = match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            self.legacy = Some((h.snaplen, h.is_bigendian()));
                            note_snaplen(
                                &mut self.snaplen,
                                &mut self.warnings,
                                &self.path,
                                h.snaplen,
                            );
                            self.interfaces.clear();
                            self.interfaces.push(Interface {
                                linktype: h.network.0 as u32,
                                units_per_sec: if h.is_nanosecond_precision() {
                                    1_000_000_000
                                } else {
                                    1_000_000
                                },
                                offset_sec: 0,
                            });
                            None
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let iface = self.interfaces.first().copied();
                            match iface {
                                Some(i) => {
                                    let frac = u64::from(b.ts_usec);
                                    let ts_ns = u64::from(b.ts_sec)
                                        .saturating_mul(1_000_000_000)
                                        .saturating_add(scale_to_ns(frac, i.units_per_sec));
                                    let caplen = (b.caplen as usize).min(b.data.len());
                                    if caplen < b.origlen as usize {
                                        // Files cut after capture (editcap -s) keep
                                        // the original snap length in their header.
                                        note_snaplen(
                                            &mut self.snaplen,
                                            &mut self.warnings,
                                            &self.path,
                                            caplen as u32,
                                        );
                                    }
                                    Some(f(Packet {
                                        ts_ns,
                                        linktype: i.linktype,
                                        data: &b.data[..caplen],
                                        orig_len: b.origlen,
                                    }))
                                }
                                None => None,
                            }
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            // Interface ids restart with every section.
                            self.interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            note_snaplen(
                                &mut self.snaplen,
                                &mut self.warnings,
                                &self.path,
                                idb.snaplen,
                            );
                            self.interfaces.push(Interface {
                                linktype: idb.linktype.0 as u32,
                                units_per_sec: ts_units(idb.if_tsresol),
                                offset_sec: idb.if_tsoffset,
                            });
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            match self.interfaces.get(epb.if_id as usize).copied() {
                                Some(i) => {
                                    let raw =
                                        (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                    let secs = raw / i.units_per_sec;
                                    let frac = raw % i.units_per_sec;
                                    let secs =
                                        (secs as i64).saturating_add(i.offset_sec).max(0) as u64;
                                    let ts_ns = secs
                                        .saturating_mul(1_000_000_000)
                                        .saturating_add(scale_to_ns(frac, i.units_per_sec));
                                    // pcapng pads packet data to 32 bits.
                                    let caplen = (epb.caplen as usize).min(epb.data.len());
                                    if caplen < epb.origlen as usize {
                                        note_snaplen(
                                            &mut self.snaplen,
                                            &mut self.warnings,
                                            &self.path,
                                            caplen as u32,
                                        );
                                    }
                                    Some(f(Packet {
                                        ts_ns,
                                        linktype: i.linktype,
                                        data: &epb.data[..caplen],
                                        orig_len: epb.origlen,
                                    }))
                                }
                                None => {
                                    if !self.unknown_if_warned {
                                        self.unknown_if_warned = true;
                                        self.warnings.push(Warning::UnknownInterface {
                                            path: self.path.clone(),
                                            if_id: epb.if_id,
                                        });
                                    }
                                    None
                                }
                            }
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            // Simple packets carry no timestamp and belong to interface 0.
                            match self.interfaces.first().copied() {
                                Some(i) => {
                                    let caplen = (spb.origlen as usize).min(spb.data.len());
                                    Some(f(Packet {
                                        ts_ns: 0,
                                        linktype: i.linktype,
                                        data: &spb.data[..caplen],
                                        orig_len: spb.origlen,
                                    }))
                                }
                                None => None,
                            }
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    Step::Consumed(len, out)
                }
                Err(PcapError::Eof) => Step::Eof,
                Err(PcapError::Incomplete(_)) => Step::Refill,
                Err(PcapError::BufferTooSmall) => Step::Grow,
                Err(PcapError::UnexpectedEof) => Step::Truncated,
                Err(PcapError::ReadError) => {
                    Step::Error("read failed (corrupt compression or I/O error)".into())
                }
                Err(e) => Step::Error(format!("{e:?}").chars().take(120).collect()),
            };
            match step {
                Step::Consumed(len, out) => {
                    self.reader.consume(len);
                    self.offset += len as u64;
                    if let Some(v) = out {
                        return Ok(Some(v));
                    }
                }
                Step::Eof => {
                    self.done = true;
                    return Ok(None);
                }
                Step::Refill => {
                    let before = self.reader.data().len();
                    if self.reader.refill().is_err() {
                        self.done = true;
                        return Err(self.corrupt("read failed (corrupt compression or I/O error)"));
                    }
                    if self.reader.reader_exhausted() && self.reader.data().len() == before {
                        if before == 0 {
                            self.done = true;
                            return Ok(None);
                        }
                        return self.end_short();
                    }
                }
                Step::Grow => {
                    let cap = self.reader.data().len().max(READ_BUFFER) * 2;
                    if cap > MAX_BLOCK || !self.reader.grow(cap) {
                        self.done = true;
                        return Err(self.corrupt("record length beyond 16 MiB"));
                    }
                    if self.reader.refill().is_err() {
                        self.done = true;
                        return Err(self.corrupt("read failed"));
                    }
                }
                Step::Truncated => return self.end_short(),
                Step::Error(detail) => {
                    self.done = true;
                    return Err(self.corrupt(detail));
                }
            }
        }
    }
}

/// Units per second from a pcapng `if_tsresol` byte.
fn ts_units(tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        2u64.checked_pow(exp)
    };
    units.filter(|u| *u > 0).unwrap_or(1_000_000)
}

fn scale_to_ns(frac: u64, units_per_sec: u64) -> u64 {
    if units_per_sec == 1_000_000_000 {
        frac
    } else if units_per_sec == 1_000_000 {
        frac * 1000
    } else {
        ((u128::from(frac) * 1_000_000_000) / u128::from(units_per_sec)) as u64
    }
}

/// Expands the command-line inputs: files as given, directories to the
/// capture files they hold (sorted by name; non-captures skipped with a warning).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<Warning>), SourceError> {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| SourceError::Io {
            path: input.clone(),
            source,
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(input).map_err(|source| SourceError::Io {
                path: input.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = Vec::new();
            for entry in rd {
                let entry = entry.map_err(|source| SourceError::Io {
                    path: input.clone(),
                    source,
                })?;
                let p = entry.path();
                if !p.is_file() {
                    continue;
                }
                match sniff(&p)? {
                    Some(_) => found.push(p),
                    None => warnings.push(Warning::SkippedFile { path: p }),
                }
            }
            if found.is_empty() {
                return Err(SourceError::EmptyDirectory {
                    path: input.clone(),
                });
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok((files, warnings))
}

/// An owned copy of a packet, for merging several files.
#[derive(Debug, Default)]
struct Pending {
    ts_ns: u64,
    linktype: u32,
    orig_len: u32,
    data: Vec<u8>,
}

/// Several capture files read as one stream in timestamp order (a k-way merge;
/// ties go to the file listed first, so rotations stay in order).
pub struct Capture {
    files: Vec<CaptureFile>,
    /// Next packet of each file, when merging.
    pending: Vec<Option<Pending>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    primed: bool,
    total_len: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Opens every file (all must be readable captures).
    pub fn open(paths: &[PathBuf]) -> Result<Self, SourceError> {
        let files = paths
            .iter()
            .map(|p| CaptureFile::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let total_len = files.iter().map(|f| f.file_len()).sum();
        let n = files.len();
        Ok(Capture {
            files,
            pending: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::new(),
            primed: false,
            total_len,
        })
    }

    /// Total size on disk of all files.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Bytes read from disk so far, over all files.
    pub fn bytes_read(&self) -> u64 {
        self.files.iter().map(|f| f.file_bytes_read()).sum()
    }

    /// Warnings gathered so far (drained).
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        self.files
            .iter_mut()
            .flat_map(|f| f.take_warnings())
            .collect()
    }

    fn refill_slot(&mut self, i: usize) -> Result<(), SourceError> {
        let mut slot = self.pending[i].take().unwrap_or_default();
        let got = self.files[i].next_with(|p| {
            slot.ts_ns = p.ts_ns;
            slot.linktype = p.linktype;
            slot.orig_len = p.orig_len;
            slot.data.clear();
            slot.data.extend_from_slice(p.data);
        })?;
        if got.is_some() {
            self.heap.push(Reverse((slot.ts_ns, i)));
            self.pending[i] = Some(slot);
        }
        Ok(())
    }

    /// Smallest snapshot length declared by the files read so far (see
    /// [`CaptureFile::snaplen`]).
    pub fn snaplen(&self) -> Option<u32> {
        self.files.iter().filter_map(CaptureFile::snaplen).min()
    }

    /// Hands the next packet (in time order across files) to `f`.
    /// Returns `Ok(None)` when every file is exhausted.
    pub fn next_with<T>(
        &mut self,
        mut f: impl FnMut(Packet<'_>) -> T,
    ) -> Result<Option<T>, SourceError> {
        if self.files.len() == 1 {
            return self.files[0].next_with(f);
        }
        if !self.primed {
            self.primed = true;
            for i in 0..self.files.len() {
                self.refill_slot(i)?;
            }
        }
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let out = match self.pending[i].as_ref() {
            Some(p) => f(Packet {
                ts_ns: p.ts_ns,
                linktype: p.linktype,
                data: &p.data,
                orig_len: p.orig_len,
            }),
            None => return Ok(None),
        };
        self.refill_slot(i)?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pcap_bytes(packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for (sec, usec, data) in packets {
            v.extend_from_slice(&sec.to_le_bytes());
            v.extend_from_slice(&usec.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    /// A temporary file ending in `name`, removed on drop.
    fn write_tmp(name: &str, bytes: &[u8]) -> tempfile::TempPath {
        let mut f = tempfile::Builder::new()
            .prefix("stoa-tap-src-")
            .suffix(&format!("-{name}"))
            .tempfile()
            .expect("tmp file");
        f.write_all(bytes).expect("write");
        f.into_temp_path()
    }

    fn read_all(c: &mut Capture) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        let mut out = Vec::new();
        while let Some(p) = c.next_with(|p| (p.ts_ns, p.data.to_vec()))? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn reads_pcap_and_gzip_of_it() {
        let bytes = pcap_bytes(&[(1, 5, b"abc"), (2, 0, b"defg")]);
        let plain = write_tmp("a.pcap", &bytes);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).expect("gz");
        let gzp = write_tmp("a.pcap.gz", &gz.finish().expect("gz"));
        for p in [&plain, &gzp] {
            let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
            let got = read_all(&mut c).expect("read");
            assert_eq!(
                got,
                vec![
                    (1_000_005_000, b"abc".to_vec()),
                    (2_000_000_000, b"defg".to_vec())
                ]
            );
            assert!(c.take_warnings().is_empty());
        }
    }

    #[test]
    fn small_snap_length_is_warned_once_from_header_or_cut_frames() {
        // Declared in the header.
        let mut bytes = pcap_bytes(&[(1, 0, b"abc")]);
        bytes[16..20].copy_from_slice(&96u32.to_le_bytes());
        let p = write_tmp("snap96.pcap", &bytes);
        let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
        read_all(&mut c).expect("read");
        assert_eq!(c.snaplen(), Some(96));
        let w = c.take_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(matches!(w[0], Warning::SmallSnaplen { snaplen: 96, .. }));
        assert!(w[0].to_string().contains("snap length 96"));

        // Header says 65535 but frames were cut at 60 bytes afterwards
        // (editcap -s): the cut length is what counts.
        let mut bytes = pcap_bytes(&[(1, 0, &[7u8; 60]), (2, 0, &[8u8; 60])]);
        for rec in [24usize, 24 + 16 + 60] {
            // orig_len 1000: each frame was longer on the wire.
            bytes[rec + 12..rec + 16].copy_from_slice(&1000u32.to_le_bytes());
        }
        let p = write_tmp("cut60.pcap", &bytes);
        let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
        assert_eq!(read_all(&mut c).expect("read").len(), 2);
        assert_eq!(c.snaplen(), Some(60));
        let w = c.take_warnings();
        assert_eq!(w.len(), 1, "one warning per file: {w:?}");
        assert!(matches!(w[0], Warning::SmallSnaplen { snaplen: 60, .. }));

        // A full snap length and whole frames: nothing to say.
        let p = write_tmp("whole.pcap", &pcap_bytes(&[(1, 0, b"abc")]));
        let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
        read_all(&mut c).expect("read");
        assert_eq!(c.snaplen(), Some(65535));
        assert!(c.take_warnings().is_empty());
    }

    #[test]
    fn truncated_last_record_keeps_the_rest_and_warns() {
        let mut bytes = pcap_bytes(&[(1, 0, b"first"), (2, 0, b"second-record")]);
        bytes.truncate(bytes.len() - 4);
        let p = write_tmp("trunc.pcap", &bytes);
        let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
        let got = read_all(&mut c).expect("read");
        assert_eq!(got.len(), 1);
        let w = c.take_warnings();
        assert!(
            matches!(w.as_slice(), [Warning::TruncatedLastRecord { .. }]),
            "{w:?}"
        );
    }

    #[test]
    fn garbage_is_not_a_capture_and_huge_records_are_corrupt() {
        let p = write_tmp("garbage.pcap", b"this is not a capture file at all");
        assert!(matches!(
            Capture::open(&[p.to_path_buf()]),
            Err(SourceError::NotACapture { .. })
        ));
        let mut bytes = pcap_bytes(&[(1, 0, b"ok")]);
        // A record header claiming 1 GiB of data.
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
        bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let p = write_tmp("huge.pcap", &bytes);
        let mut c = Capture::open(&[p.to_path_buf()]).expect("open");
        let first = c.next_with(|p| p.data.to_vec()).expect("first");
        assert_eq!(first.as_deref(), Some(&b"ok"[..]));
        let second = c.next_with(|p| p.data.len());
        assert!(
            matches!(second, Err(SourceError::Corrupt { .. }) | Ok(None)),
            "{second:?}"
        );
    }

    #[test]
    fn several_files_merge_in_time_order() {
        let a = write_tmp("m1.pcap", &pcap_bytes(&[(1, 0, b"a1"), (3, 0, b"a3")]));
        let b = write_tmp("m2.pcap", &pcap_bytes(&[(2, 0, b"b2"), (4, 0, b"b4")]));
        let mut c = Capture::open(&[a.to_path_buf(), b.to_path_buf()]).expect("open");
        let got: Vec<Vec<u8>> = read_all(&mut c)
            .expect("read")
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            got,
            vec![
                b"a1".to_vec(),
                b"b2".to_vec(),
                b"a3".to_vec(),
                b"b4".to_vec()
            ]
        );
    }

    #[test]
    fn ts_resolution_units() {
        assert_eq!(ts_units(6), 1_000_000);
        assert_eq!(ts_units(9), 1_000_000_000);
        assert_eq!(ts_units(0x80 | 10), 1024);
        assert_eq!(scale_to_ns(512, 1024), 500_000_000);
    }
}
