//! Streaming content decoders (gzip, deflate, br) with bounded output.
//!
//! A decoder is fed the de-framed body bytes as they arrive, in as many calls as
//! the capture delivers, and hands its output to a [`Sink`] in pieces of at most
//! [`SCRATCH_BYTES`]. The sink decides how much to keep and when to stop (the
//! decoded-size bound), so a decompression bomb costs at most the bound in CPU
//! and one scratch buffer plus the decoder's own window in memory.

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};

/// Output is produced in pieces of at most this many bytes.
const SCRATCH_BYTES: usize = 8 * 1024;
/// Heap held by one inflate state (miniz_oxide: tables plus the 32 KiB window).
const INFLATE_STATE_BYTES: usize = 48 * 1024;
/// Estimate of the Huffman tables a brotli decoder allocates besides its window.
const BROTLI_TABLES_BYTES: usize = 64 * 1024;
/// Largest input slice handed to the brotli decoder in one call (its API limit is 4 GiB).
const BROTLI_MAX_INPUT: usize = 1 << 20;

/// A content coding this module can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// `gzip` / `x-gzip` (RFC 1952), several members allowed.
    Gzip,
    /// `deflate`: zlib-wrapped (RFC 1950) as specified, raw deflate as sent by some servers.
    Deflate,
    /// `br` (RFC 7932).
    Brotli,
}

impl Coding {
    /// The coding named by a (trimmed) content-coding token.
    pub(super) fn from_token(t: &[u8]) -> Option<Coding> {
        if t.eq_ignore_ascii_case(b"gzip") || t.eq_ignore_ascii_case(b"x-gzip") {
            Some(Coding::Gzip)
        } else if t.eq_ignore_ascii_case(b"deflate") {
            Some(Coding::Deflate)
        } else if t.eq_ignore_ascii_case(b"br") {
            Some(Coding::Brotli)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// Why decoding stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// The stream is not valid for its coding.
    #[error("corrupt {0} stream")]
    Corrupt(&'static str),
    /// The sink refused more output (decoded-size bound reached).
    #[error("decoded output reached the configured bound")]
    Limit,
}

/// Receives decoded output.
pub(super) trait Sink {
    /// Takes one piece of output; returns false to stop decoding (bound reached).
    fn push(&mut self, out: &[u8]) -> bool;
}

/// One body's streaming decoder.
pub(super) struct ContentDecoder {
    inner: Inner,
    scratch: Vec<u8>,
}

enum Inner {
    Gzip(Box<Gzip>),
    Deflate(Box<Deflate>),
    Brotli(Box<Brotli>),
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match &self.inner {
            Inner::Gzip(_) => Coding::Gzip,
            Inner::Deflate(_) => Coding::Deflate,
            Inner::Brotli(_) => Coding::Brotli,
        };
        f.debug_struct("ContentDecoder")
            .field("coding", &coding)
            .field("complete", &self.is_complete())
            .finish()
    }
}

impl ContentDecoder {
    /// A decoder for one body in this coding, whose output will be cut at
    /// `max_output` bytes.
    pub(super) fn new(coding: Coding, max_output: u64) -> Self {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(Box::new(Gzip {
                stage: GzStage::Header(GzHeader::default()),
                inflate: Decompress::new(false),
                crc: Crc::new(),
                trailer: [0; 8],
                trailer_len: 0,
            })),
            Coding::Deflate => Inner::Deflate(Box::new(Deflate {
                head: [0; 2],
                head_len: 0,
                inflate: None,
                done: false,
            })),
            Coding::Brotli => Inner::Brotli(Box::new(Brotli {
                state: BrotliState::new_strict(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                done: false,
                started: false,
                max_wbits: brotli_window_bits_for(max_output),
            })),
        };
        ContentDecoder {
            inner,
            scratch: Vec::new(),
        }
    }

    /// Decodes the next piece of the stream. Input after the end of the stream is ignored.
    pub(super) fn feed(&mut self, input: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        if self.scratch.len() != SCRATCH_BYTES {
            self.scratch = vec![0; SCRATCH_BYTES];
        }
        let scratch = &mut self.scratch[..];
        match &mut self.inner {
            Inner::Gzip(g) => g.feed(input, scratch, sink),
            Inner::Deflate(d) => d.feed(input, scratch, sink),
            Inner::Brotli(b) => b.feed(input, scratch, sink),
        }
    }

    /// The stream reached its end (at least one complete gzip member).
    pub(super) fn is_complete(&self) -> bool {
        match &self.inner {
            Inner::Gzip(g) => matches!(g.stage, GzStage::Between | GzStage::Done),
            Inner::Deflate(d) => d.done,
            Inner::Brotli(b) => b.done,
        }
    }

    /// Heap bytes held by this decoder (estimate for the brotli tables).
    pub(super) fn heap_bytes(&self) -> usize {
        let state = match &self.inner {
            Inner::Gzip(_) => std::mem::size_of::<Gzip>() + INFLATE_STATE_BYTES,
            Inner::Deflate(d) => {
                std::mem::size_of::<Deflate>()
                    + if d.inflate.is_some() {
                        INFLATE_STATE_BYTES
                    } else {
                        0
                    }
            }
            Inner::Brotli(b) => {
                std::mem::size_of::<Brotli>()
                    + usize::try_from(b.state.ringbuffer_size).unwrap_or(0)
                    + BROTLI_TABLES_BYTES
            }
        };
        state + self.scratch.capacity()
    }
}

/// Runs `inflate` over `input`, handing output to `sink` (and the CRC when given).
/// Returns the bytes consumed and whether the deflate stream ended.
fn inflate_some(
    inflate: &mut Decompress,
    input: &[u8],
    scratch: &mut [u8],
    mut crc: Option<&mut Crc>,
    sink: &mut dyn Sink,
    name: &'static str,
) -> Result<(usize, bool), DecodeError> {
    let mut consumed = 0usize;
    loop {
        let in_before = inflate.total_in();
        let out_before = inflate.total_out();
        let status = inflate
            .decompress(&input[consumed..], scratch, FlushDecompress::None)
            .map_err(|_| DecodeError::Corrupt(name))?;
        let used = usize::try_from(inflate.total_in() - in_before).unwrap_or(usize::MAX);
        let produced = usize::try_from(inflate.total_out() - out_before).unwrap_or(usize::MAX);
        if used > input.len() - consumed || produced > scratch.len() {
            return Err(DecodeError::Corrupt(name));
        }
        consumed += used;
        if produced > 0 {
            let out = &scratch[..produced];
            if let Some(c) = crc.as_deref_mut() {
                c.update(out);
            }
            if !sink.push(out) {
                return Err(DecodeError::Limit);
            }
        }
        if status == Status::StreamEnd {
            return Ok((consumed, true));
        }
        if produced == scratch.len() {
            // Output full: there may be more pending output even without new input.
            continue;
        }
        if consumed == input.len() {
            return Ok((consumed, false));
        }
        if used == 0 && produced == 0 {
            // Input left, room for output, and no progress: not a valid stream.
            return Err(DecodeError::Corrupt(name));
        }
    }
}

struct Deflate {
    head: [u8; 2],
    head_len: usize,
    inflate: Option<Decompress>,
    done: bool,
}

impl Deflate {
    fn feed(
        &mut self,
        mut input: &[u8],
        scratch: &mut [u8],
        sink: &mut dyn Sink,
    ) -> Result<(), DecodeError> {
        if self.done {
            return Ok(());
        }
        if self.inflate.is_none() {
            // Two bytes decide between a zlib wrapper and raw deflate.
            let take = (2 - self.head_len).min(input.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
            self.head_len += take;
            input = &input[take..];
            if self.head_len < 2 {
                return Ok(());
            }
            let (cmf, flg) = (self.head[0], self.head[1]);
            let zlib = cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
            let mut inflate = Decompress::new(zlib);
            let head = self.head;
            let (_, ended) = inflate_some(&mut inflate, &head, scratch, None, sink, "deflate")?;
            self.inflate = Some(inflate);
            if ended {
                self.done = true;
                return Ok(());
            }
        }
        if let Some(inflate) = self.inflate.as_mut() {
            if !input.is_empty() {
                let (_, ended) = inflate_some(inflate, input, scratch, None, sink, "deflate")?;
                self.done = ended;
            }
        }
        Ok(())
    }
}

struct Gzip {
    stage: GzStage,
    inflate: Decompress,
    crc: Crc,
    trailer: [u8; 8],
    trailer_len: usize,
}

enum GzStage {
    Header(GzHeader),
    Body,
    Trailer,
    /// A member ended; another may follow.
    Between,
    /// Trailing bytes that are not a gzip member: ignored.
    Done,
}

impl Gzip {
    fn feed(
        &mut self,
        mut input: &[u8],
        scratch: &mut [u8],
        sink: &mut dyn Sink,
    ) -> Result<(), DecodeError> {
        while !input.is_empty() {
            match &mut self.stage {
                GzStage::Header(h) => {
                    let used = h.feed(input)?;
                    input = &input[used..];
                    if h.done() {
                        self.stage = GzStage::Body;
                    }
                }
                GzStage::Body => {
                    let (used, ended) = inflate_some(
                        &mut self.inflate,
                        input,
                        scratch,
                        Some(&mut self.crc),
                        sink,
                        "gzip",
                    )?;
                    input = &input[used..];
                    if ended {
                        self.stage = GzStage::Trailer;
                        self.trailer_len = 0;
                    }
                }
                GzStage::Trailer => {
                    let take = (8 - self.trailer_len).min(input.len());
                    self.trailer[self.trailer_len..self.trailer_len + take]
                        .copy_from_slice(&input[..take]);
                    self.trailer_len += take;
                    input = &input[take..];
                    if self.trailer_len == 8 {
                        let t = self.trailer;
                        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        if crc != self.crc.sum() || isize != self.crc.amount() {
                            return Err(DecodeError::Corrupt("gzip"));
                        }
                        self.stage = GzStage::Between;
                    }
                }
                GzStage::Between => {
                    if input[0] == 0x1f {
                        self.stage = GzStage::Header(GzHeader::default());
                        self.inflate.reset(false);
                        self.crc.reset();
                    } else {
                        self.stage = GzStage::Done;
                    }
                }
                GzStage::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

const FTEXT_RESERVED: u8 = 0xe0;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// Streaming parser of a gzip member header (RFC 1952 section 2.3).
#[derive(Default)]
struct GzHeader {
    fixed: [u8; 10],
    fixed_len: usize,
    flags: u8,
    stage: HStage,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum HStage {
    #[default]
    Fixed,
    XLen {
        got: usize,
        lo: u8,
    },
    Extra(usize),
    Name,
    Comment,
    Hcrc(usize),
    Done,
}

impl GzHeader {
    fn done(&self) -> bool {
        self.stage == HStage::Done
    }

    /// The stage that follows `after`, given the header flags.
    fn next(&self, after: HStage) -> HStage {
        let order = [
            (FEXTRA, HStage::XLen { got: 0, lo: 0 }),
            (FNAME, HStage::Name),
            (FCOMMENT, HStage::Comment),
            (FHCRC, HStage::Hcrc(2)),
        ];
        let start = match after {
            HStage::Fixed => 0,
            HStage::XLen { .. } | HStage::Extra(_) => 1,
            HStage::Name => 2,
            HStage::Comment => 3,
            HStage::Hcrc(_) | HStage::Done => 4,
        };
        order[start..]
            .iter()
            .find(|(flag, _)| self.flags & flag != 0)
            .map_or(HStage::Done, |(_, s)| *s)
    }

    /// Consumes header bytes; returns how many were used.
    fn feed(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let mut i = 0;
        while i < input.len() && self.stage != HStage::Done {
            match self.stage {
                HStage::Fixed => {
                    let take = (10 - self.fixed_len).min(input.len() - i);
                    self.fixed[self.fixed_len..self.fixed_len + take]
                        .copy_from_slice(&input[i..i + take]);
                    self.fixed_len += take;
                    i += take;
                    if self.fixed_len == 10 {
                        let f = self.fixed;
                        if f[0] != 0x1f || f[1] != 0x8b || f[2] != 8 || f[3] & FTEXT_RESERVED != 0 {
                            return Err(DecodeError::Corrupt("gzip"));
                        }
                        self.flags = f[3];
                        self.stage = self.next(HStage::Fixed);
                    } else if self.fixed_len >= 2 && (f_magic_bad(&self.fixed)) {
                        return Err(DecodeError::Corrupt("gzip"));
                    }
                }
                HStage::XLen { got, lo } => {
                    let b = input[i];
                    i += 1;
                    if got == 0 {
                        self.stage = HStage::XLen { got: 1, lo: b };
                    } else {
                        let len = usize::from(u16::from_le_bytes([lo, b]));
                        self.stage = if len == 0 {
                            self.next(HStage::Extra(0))
                        } else {
                            HStage::Extra(len)
                        };
                    }
                }
                HStage::Extra(left) => {
                    let take = left.min(input.len() - i);
                    i += take;
                    self.stage = if left == take {
                        self.next(HStage::Extra(0))
                    } else {
                        HStage::Extra(left - take)
                    };
                }
                HStage::Name | HStage::Comment => match memchr::memchr(0, &input[i..]) {
                    Some(z) => {
                        i += z + 1;
                        self.stage = self.next(self.stage);
                    }
                    None => i = input.len(),
                },
                HStage::Hcrc(left) => {
                    let take = left.min(input.len() - i);
                    i += take;
                    self.stage = if left == take {
                        HStage::Done
                    } else {
                        HStage::Hcrc(left - take)
                    };
                }
                HStage::Done => {}
            }
        }
        Ok(i)
    }
}

/// The first two bytes seen so far are not the gzip magic.
fn f_magic_bad(fixed: &[u8; 10]) -> bool {
    fixed[0] != 0x1f || fixed[1] != 0x8b
}

/// Smallest window (WBITS in 18..=24) that still covers `max_output` bytes
/// of output and one scratch buffer.
fn brotli_window_bits_for(max_output: u64) -> u8 {
    let need = max_output.saturating_add(SCRATCH_BYTES as u64 + 16);
    (18u8..=24).find(|w| (1u64 << w) >= need).unwrap_or(24)
}

struct Brotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    done: bool,
    started: bool,
    /// Largest window the stream may ask for (see `Brotli::first_byte`).
    max_wbits: u8,
}

impl Brotli {
    /// The stream header declares the window (RFC 7932 section 9.1), up to
    /// 16 MiB, and the decoder allocates it. Output past `max_output` is never
    /// used, and as long as the window is at least the output produced,
    /// back-references mean the same with a smaller window; so a window of the
    /// 4-bit form (WBITS 18..=24) is lowered in place to what the bound needs.
    fn first_byte(&self, b: u8) -> u8 {
        let n = (b >> 1) & 0x07;
        if b & 1 == 1 && n != 0 && 17 + n > self.max_wbits {
            (b & !0x0e) | ((self.max_wbits - 17) << 1)
        } else {
            b
        }
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        scratch: &mut [u8],
        sink: &mut dyn Sink,
    ) -> Result<(), DecodeError> {
        if !self.started {
            if let Some((&b, rest)) = input.split_first() {
                self.started = true;
                let first = [self.first_byte(b)];
                input = rest;
                self.feed_pieces(&first, scratch, sink)?;
            }
        }
        self.feed_pieces(input, scratch, sink)
    }

    fn feed_pieces(
        &mut self,
        input: &[u8],
        scratch: &mut [u8],
        sink: &mut dyn Sink,
    ) -> Result<(), DecodeError> {
        for piece in input.chunks(BROTLI_MAX_INPUT) {
            if self.done {
                return Ok(());
            }
            let mut avail_in = piece.len();
            let mut in_off = 0usize;
            loop {
                let mut avail_out = scratch.len();
                let mut out_off = 0usize;
                let mut total_out = 0usize;
                let r = BrotliDecompressStream(
                    &mut avail_in,
                    &mut in_off,
                    piece,
                    &mut avail_out,
                    &mut out_off,
                    scratch,
                    &mut total_out,
                    &mut self.state,
                );
                if out_off > 0 {
                    let Some(out) = scratch.get(..out_off) else {
                        return Err(DecodeError::Corrupt(Coding::Brotli.name()));
                    };
                    if !sink.push(out) {
                        return Err(DecodeError::Limit);
                    }
                }
                match r {
                    BrotliResult::ResultSuccess => {
                        self.done = true;
                        break;
                    }
                    BrotliResult::NeedsMoreInput => break,
                    BrotliResult::NeedsMoreOutput if out_off > 0 => continue,
                    BrotliResult::NeedsMoreOutput => {
                        // No progress although output room was given.
                        return Err(DecodeError::Corrupt(Coding::Brotli.name()));
                    }
                    BrotliResult::ResultFailure => {
                        return Err(DecodeError::Corrupt(Coding::Brotli.name()))
                    }
                }
            }
        }
        Ok(())
    }
}
