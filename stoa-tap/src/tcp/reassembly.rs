//! Reassembly of one direction of a TCP connection.
//!
//! Positions are kept as 64-bit stream offsets (bytes since the first byte
//! seen) so sequence-number wraparound is invisible above this file: a
//! sequence number is turned into an offset by its signed 32-bit distance
//! from the next expected sequence number.

use super::{StreamEvent, TcpStats};
use crate::decode::{TcpFlags, TcpSegment};
use crate::flow::EndKind;
use std::collections::BTreeMap;

/// Segments further ahead than this are not plausible for one connection's
/// window and are dropped (counted) instead of opening an enormous hole.
const MAX_AHEAD: i64 = 64 << 20;
/// An acknowledgment further ahead than this is not trusted to declare a hole.
const MAX_ACK_AHEAD: i64 = 16 << 20;

/// Bookkeeping charged per buffered segment against the memory caps.
const SEGMENT_COST: usize = 256;

#[derive(Debug)]
struct Buffered {
    data: Vec<u8>,
    ts: u64,
}

/// State of one direction.
#[derive(Debug, Default)]
pub struct HalfStream {
    started: bool,
    /// Initial sequence number, when the SYN was seen.
    syn_seq: Option<u32>,
    /// Sequence number of the next byte to deliver.
    next_seq: u32,
    /// Stream offset of `next_seq`: bytes delivered or declared missing.
    offset: u64,
    /// Out-of-order segments by stream offset; never overlapping each other,
    /// always starting after `offset`.
    ooo: BTreeMap<u64, Buffered>,
    ooo_bytes: usize,
    /// Stream offset of the FIN, once seen.
    fin_at: Option<u64>,
    ended: bool,
}

type Emit<'e> = dyn FnMut(StreamEvent<'_>) + 'e;

impl HalfStream {
    /// True once a SYN or a first data segment anchored the sequence space.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// True if `seq` is this direction's initial sequence number.
    pub fn is_syn_seq(&self, seq: u32) -> bool {
        self.syn_seq == Some(seq)
    }

    /// True if nothing was delivered yet and `seq` is the first byte expected.
    pub fn at_stream_start(&self, seq: u32) -> bool {
        self.started && self.offset == 0 && self.ooo.is_empty() && seq == self.next_seq
    }

    /// Bytes delivered or declared missing so far.
    pub fn delivered(&self) -> u64 {
        self.offset
    }

    /// Memory held by out-of-order data: the bytes plus the bookkeeping of
    /// each buffered segment (map node share, vector header, allocator rounding).
    pub fn buffered_bytes(&self) -> usize {
        self.ooo_bytes + self.ooo.len() * SEGMENT_COST
    }

    /// True once the direction ended (FIN delivered or RST).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Marks the direction ended without reassembly (connections not analysed).
    pub fn mark_ended(&mut self) {
        self.ended = true;
    }

    fn offset_of(&self, seq: u32) -> i64 {
        self.offset as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32)
    }

    /// Handles one segment of this direction.
    /// `missing_tail` is the number of payload bytes the capture cut off
    /// (snapshot length): they become a gap right after the captured bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seg: &TcpSegment<'_>,
        missing_tail: u32,
        ts: u64,
        cap: usize,
        stats: &mut TcpStats,
        emit: &mut Emit<'_>,
    ) {
        if self.ended {
            if !seg.payload.is_empty() {
                stats.retransmitted_segments += 1;
                stats.retransmitted_bytes += seg.payload.len() as u64;
            }
            return;
        }
        let syn = seg.flags.has(TcpFlags::SYN);
        let data_seq = if syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if !self.started {
            if seg.payload.is_empty() && !syn && !seg.flags.has(TcpFlags::FIN) {
                // Nothing to anchor the sequence space on (bare ACK or RST).
                if seg.flags.has(TcpFlags::RST) {
                    self.ended = true;
                    emit(StreamEvent::End(EndKind::Rst, ts));
                }
                return;
            }
            self.started = true;
            self.next_seq = data_seq;
            if syn {
                self.syn_seq = Some(seg.seq);
            }
        }
        if !seg.payload.is_empty() {
            self.accept(data_seq, seg.payload, ts, cap, stats, emit);
            let captured_end = data_seq.wrapping_add(seg.payload.len() as u32);
            if missing_tail > 0 && self.next_seq == captured_end {
                stats.snaplen_gaps += 1;
                self.gap(u64::from(missing_tail), ts, stats, emit);
            }
        }
        if seg.flags.has(TcpFlags::FIN) {
            let at = self.offset_of(
                data_seq
                    .wrapping_add(seg.payload.len() as u32)
                    .wrapping_add(missing_tail),
            );
            if at >= 0 && self.fin_at.is_none() {
                self.fin_at = Some(at as u64);
            }
        }
        if seg.flags.has(TcpFlags::RST) {
            self.flush(ts, stats, emit);
            if !self.ended {
                self.ended = true;
                emit(StreamEvent::End(EndKind::Rst, ts));
            }
            return;
        }
        self.check_fin(ts, emit);
    }

    fn check_fin(&mut self, ts: u64, emit: &mut Emit<'_>) {
        if let Some(f) = self.fin_at {
            if !self.ended && self.offset >= f {
                self.ended = true;
                emit(StreamEvent::End(EndKind::Fin, ts));
            }
        }
    }

    fn deliver(&mut self, data: &[u8], ts: u64, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        if data.is_empty() {
            return;
        }
        emit(StreamEvent::Data(data, ts));
        self.offset += data.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        stats.bytes_delivered += data.len() as u64;
    }

    fn gap(&mut self, len: u64, ts: u64, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        if len == 0 {
            return;
        }
        emit(StreamEvent::Gap(len, ts));
        self.offset += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        stats.gaps += 1;
        stats.gap_bytes += len;
    }

    fn accept(
        &mut self,
        seq: u32,
        data: &[u8],
        ts: u64,
        cap: usize,
        stats: &mut TcpStats,
        emit: &mut Emit<'_>,
    ) {
        let rel = i64::from(seq.wrapping_sub(self.next_seq) as i32);
        let mut data = data;
        if rel < 0 {
            let behind = rel.unsigned_abs();
            if behind >= data.len() as u64 {
                stats.retransmitted_segments += 1;
                stats.retransmitted_bytes += data.len() as u64;
                return;
            }
            stats.retransmitted_bytes += behind;
            data = &data[behind as usize..];
        } else if rel > 0 {
            if rel > MAX_AHEAD {
                stats.out_of_order_segments += 1;
                stats.retransmitted_bytes += data.len() as u64;
                return;
            }
            stats.out_of_order_segments += 1;
            self.insert(self.offset + rel as u64, data, ts, stats);
            if self.ooo_bytes > cap {
                // Give up on the hole: skip to the first buffered byte.
                stats.buffer_overflows += 1;
                if let Some((&first, _)) = self.ooo.iter().next() {
                    self.advance_to(first, false, ts, stats, emit);
                }
            }
            return;
        }
        // In order. Bytes overlapping data buffered earlier keep the earlier copy.
        let room = match self.ooo.keys().next() {
            Some(&first) => (first - self.offset).min(data.len() as u64) as usize,
            None => data.len(),
        };
        let (now, later) = data.split_at(room);
        self.deliver(now, ts, stats, emit);
        if !later.is_empty() {
            self.insert(self.offset, later, ts, stats);
        }
        self.drain(stats, emit);
    }

    /// Buffers `data` at stream offset `off`, keeping bytes already buffered
    /// where they overlap (counting those that differ).
    fn insert(&mut self, off: u64, data: &[u8], ts: u64, stats: &mut TcpStats) {
        let end = off + data.len() as u64;
        // Existing segments that may overlap [off, end): the one starting
        // before `off` and all starting inside.
        let mut overlapping: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, b)) = self.ooo.range(..off).next_back() {
            if s + b.data.len() as u64 > off {
                overlapping.push((s, s + b.data.len() as u64));
            }
        }
        for (&s, b) in self.ooo.range(off..end) {
            overlapping.push((s, s + b.data.len() as u64));
        }
        let mut cursor = off;
        for (s, e) in overlapping {
            if s > cursor {
                self.put(
                    cursor,
                    &data[(cursor - off) as usize..(s - off) as usize],
                    ts,
                );
            }
            let ov_start = s.max(cursor);
            let ov_end = e.min(end);
            if ov_end > ov_start {
                if let Some(b) = self.ooo.get(&s) {
                    let old = &b.data[(ov_start - s) as usize..(ov_end - s) as usize];
                    let new = &data[(ov_start - off) as usize..(ov_end - off) as usize];
                    let differ = old.iter().zip(new).filter(|(a, b)| a != b).count();
                    stats.overlap_conflict_bytes += differ as u64;
                    stats.retransmitted_bytes += (ov_end - ov_start) - differ as u64;
                }
            }
            cursor = cursor.max(e);
        }
        if cursor < end {
            self.put(cursor, &data[(cursor - off) as usize..], ts);
        }
    }

    fn put(&mut self, off: u64, data: &[u8], ts: u64) {
        if data.is_empty() {
            return;
        }
        self.ooo_bytes += data.len();
        self.ooo.insert(
            off,
            Buffered {
                data: data.to_vec(),
                ts,
            },
        );
    }

    /// Delivers buffered segments that have become contiguous.
    fn drain(&mut self, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        self.drain_below(u64::MAX, stats, emit);
    }

    /// Delivers buffered segments that are contiguous and start below `limit`.
    fn drain_below(&mut self, limit: u64, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        while let Some(entry) = self.ooo.first_entry() {
            let start = *entry.key();
            if start > self.offset || start >= limit {
                break;
            }
            let b = entry.remove();
            self.ooo_bytes -= b.data.len();
            let skip = (self.offset - start) as usize;
            if skip < b.data.len() {
                self.deliver(&b.data[skip..], b.ts, stats, emit);
            }
        }
    }

    /// Moves the stream to `target`, delivering buffered data and declaring
    /// the holes in between as gaps.
    /// Contiguous data beyond `target` is delivered too unless `stop_at_target`.
    fn advance_to(
        &mut self,
        target: u64,
        stop_at_target: bool,
        ts: u64,
        stats: &mut TcpStats,
        emit: &mut Emit<'_>,
    ) {
        while self.offset < target {
            match self.ooo.keys().next().copied() {
                Some(start) if start <= self.offset => self.drain_below(target, stats, emit),
                Some(start) => {
                    let ts_next = self.ooo.get(&start).map_or(ts, |b| b.ts);
                    self.gap(start.min(target) - self.offset, ts_next, stats, emit);
                }
                None => self.gap(target - self.offset, ts, stats, emit),
            }
        }
        if !stop_at_target {
            self.drain(stats, emit);
        }
    }

    /// Delivers buffered data that has become contiguous.
    pub fn drain_ready(&mut self, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        self.drain(stats, emit);
    }

    /// True if the peer's acknowledgment `ack` covers bytes of this direction
    /// that were not delivered yet (not counting the FIN's sequence number).
    pub fn missing_below(&self, ack: u32) -> bool {
        if !self.started || self.ended {
            return false;
        }
        let rel = i64::from(ack.wrapping_sub(self.next_seq) as i32);
        if rel <= 0 || rel > MAX_ACK_AHEAD {
            return false;
        }
        let target = match self.fin_at {
            Some(f) => (self.offset + rel as u64).min(f),
            None => self.offset + rel as u64,
        };
        target > self.offset
    }

    /// The peer acknowledged up to `ack`: bytes below it that were never seen
    /// are missing from the capture.
    pub fn acked_up_to(&mut self, ack: u32, ts: u64, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        if !self.started || self.ended {
            return;
        }
        let rel = i64::from(ack.wrapping_sub(self.next_seq) as i32);
        if rel <= 0 || rel > MAX_ACK_AHEAD {
            return;
        }
        let mut target = self.offset + rel as u64;
        if let Some(f) = self.fin_at {
            // The FIN takes one sequence number but carries no byte.
            target = target.min(f);
        }
        // Only up to what was acknowledged: later bytes of this direction wait
        // until the acknowledging segment itself was delivered.
        self.advance_to(target, true, ts, stats, emit);
        self.check_fin(ts, emit);
    }

    /// Delivers everything still buffered (holes become gaps), e.g. when the
    /// connection closes; ends the direction if its FIN was reached.
    pub fn flush(&mut self, ts: u64, stats: &mut TcpStats, emit: &mut Emit<'_>) {
        let buffered_end = self
            .ooo
            .iter()
            .next_back()
            .map(|(s, b)| s + b.data.len() as u64);
        let target = match (buffered_end, self.fin_at) {
            (Some(b), Some(f)) => b.max(f),
            (Some(b), None) => b,
            (None, Some(f)) => f,
            (None, None) => self.offset,
        };
        if target > self.offset {
            self.advance_to(target, false, ts, stats, emit);
        }
        self.check_fin(ts, emit);
    }
}
