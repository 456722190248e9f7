//! The stoa-tap probe: a TC classifier (attached through TCX on Linux 6.6+,
//! <https://docs.kernel.org/bpf/tcx.html>) that copies the payload of TCP
//! segments to or from watched ports into a ring buffer
//! (<https://docs.kernel.org/bpf/ringbuf.html>, Linux 5.8+), in chunks of
//! [`CHUNK`] bytes, with the metadata the userspace reassembler needs.
//!
//! It is read-only by construction: it never writes to the packet and always
//! returns `TC_ACT_UNSPEC`, which TCX treats as "next": the packet goes on to
//! the next program, or is passed when there is none. Returning `TC_ACT_OK`
//! would end the chain early and skip programs attached after this one.
//!
//! Chunks are copied by a `bpf_loop` callback (Linux 5.17+) because a GSO or
//! GRO super-packet can carry 64 KiB or more, and a record (header and 4 KiB)
//! is built in a per-CPU scratch map since it does not fit the 512-byte stack.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_ktime_get_coarse_ns, bpf_loop, bpf_skb_load_bytes},
    },
    macros::{classifier, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::TcContext,
};
use core::ffi::c_void;
use stoa_tap_abi::{
    counter, port_watched, tcp_flags, PortBitmap, Record, RecordHeader, CHUNK, CHUNK_FIRST,
    CHUNK_LAST, FAMILY_V4, FAMILY_V6, HEADER_LEN, HOOK_EGRESS, HOOK_INGRESS, MAX_CHUNKS,
};

/// Watched TCP ports (host order); set by userspace at start and on reload.
#[map(name = "PORTS")]
static PORTS: Array<PortBitmap> = Array::with_max_entries(1, 0);

/// Records for userspace. Userspace sets the real size at load time.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Bytes one CPU writes to the ring between two wake-ups of the reader;
/// between them the reader drains on its own timer. A wake-up per record would
/// cost an irq_work on the traffic's path for every segment. Userspace sets it
/// at load time (aya rewrites this read-only global) to a share of the ring
/// such that all CPUs together wake the reader before the ring is 1/8 full.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;

/// Bytes this CPU has written since it last woke the reader. Counted per CPU
/// rather than asking the ring how full it is (`bpf_ringbuf_query`), which
/// reads the consumer position that the reader's CPU keeps writing: a cache
/// miss on every record.
#[map(name = "WAKE_CREDIT")]
static WAKE_CREDIT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `stoa_tap_abi::counter`.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One record under construction per CPU.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;

/// Watches packets entering the interface.
#[classifier]
pub fn stoa_tap_ingress(ctx: TcContext) -> i32 {
    let _ = observe(&ctx, HOOK_INGRESS);
    TC_ACT_UNSPEC
}

/// Watches packets leaving the interface.
#[classifier]
pub fn stoa_tap_egress(ctx: TcContext) -> i32 {
    let _ = observe(&ctx, HOOK_EGRESS);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn count(index: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU value, and a TC program is not preempted: no atomics needed.
        unsafe { *p += n };
    }
}

#[inline(always)]
fn watched(sport: u16, dport: u16) -> bool {
    match PORTS.get(0) {
        Some(bits) => port_watched(bits, sport) || port_watched(bits, dport),
        None => false,
    }
}

/// Why a packet was not recorded; only `Malformed` is counted here, the
/// other reasons are counted where they are found or are not of interest.
enum Skip {
    NotWatched,
    Malformed,
    /// Headers outside the skb's linear part (retried with helper reads).
    NotLinear,
}

impl From<i64> for Skip {
    fn from(_: i64) -> Self {
        Skip::Malformed
    }
}

/// State handed to the chunk callback.
#[repr(C)]
struct Chunks {
    skb: *mut c_void,
    header: RecordHeader,
    /// Offset of the TCP payload in the packet.
    payload_off: u32,
    /// Payload bytes of the segment.
    payload_len: u32,
    /// Chunks to emit.
    chunks: u32,
}

fn observe(ctx: &TcContext, hook: u8) -> Result<(), Skip> {
    count(counter::PACKETS, 1);
    let linear = Linear {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let r = match parse(&linear, ctx, hook) {
        Err(Skip::NotLinear) => parse(&Helper(ctx), ctx, hook),
        r => r,
    };
    match r {
        Ok(()) => Ok(()),
        Err(Skip::Malformed) => {
            count(counter::MALFORMED, 1);
            Err(Skip::Malformed)
        }
        Err(s) => Err(s),
    }
}

/// Reads header fields from the packet.
trait Headers {
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip>;

    #[inline(always)]
    fn u8(&self, off: usize) -> Result<u8, Skip> {
        self.read::<u8>(off)
    }

    #[inline(always)]
    fn be16(&self, off: usize) -> Result<u16, Skip> {
        Ok(u16::from_be(self.read::<u16>(off)?))
    }

    #[inline(always)]
    fn be32(&self, off: usize) -> Result<u32, Skip> {
        Ok(u32::from_be(self.read::<u32>(off)?))
    }
}

/// Most header bytes looked at: Ethernet, VLAN, IPv6 with extension headers,
/// TCP with options. Also the bound the verifier needs on variable offsets.
const MAX_HEADER_OFF: usize = 1024;

/// Direct access to the skb's linear part: no helper call per field. Headers
/// are linear in practice; when they are not, `NotLinear` sends the packet
/// to the [`Helper`] path.
struct Linear {
    start: usize,
    end: usize,
}

impl Headers for Linear {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip> {
        if off > MAX_HEADER_OFF {
            return Err(Skip::NotLinear);
        }
        // Opaque to LLVM, so that it compares this pointer with `end` as
        // written instead of rewriting the check into scalar arithmetic the
        // verifier cannot relate to the pointer.
        let p = core::hint::black_box(self.start + off);
        if p + core::mem::size_of::<T>() > self.end {
            return Err(Skip::NotLinear);
        }
        Ok(unsafe { core::ptr::read_unaligned(p as *const T) })
    }
}

/// `bpf_skb_load_bytes` per field: works on any skb layout.
struct Helper<'a>(&'a TcContext);

impl Headers for Helper<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip> {
        if off > MAX_HEADER_OFF {
            return Err(Skip::Malformed);
        }
        Ok(self.0.load::<T>(off)?)
    }
}

fn parse<H: Headers>(h: &H, ctx: &TcContext, hook: u8) -> Result<(), Skip> {
    let skb_len = ctx.len() as usize;
    let mut l3 = ETH_HLEN;
    let mut ethertype = h.be16(12)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = h.be16(16)?;
        l3 += 4;
    }
    let mut header = RecordHeader {
        hook,
        ..RecordHeader::default()
    };
    let (l4, l3_end) = match ethertype {
        ETH_P_IP => {
            let vihl = h.u8(l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(Skip::Malformed);
            }
            if h.u8(l3 + 9)? != IPPROTO_TCP {
                return Err(Skip::NotWatched);
            }
            // More-fragments or a fragment offset: not reassembled here.
            if h.be16(l3 + 6)? & 0x3fff != 0 {
                count(counter::FRAGMENTS, 1);
                return Err(Skip::NotWatched);
            }
            // A GSO super-packet may carry total length 0 (BIG TCP): the skb
            // length is then the truth. Otherwise the IP length excludes any
            // Ethernet padding.
            let tot = usize::from(h.be16(l3 + 2)?);
            let end = if tot == 0 { skb_len } else { l3 + tot };
            header.family = FAMILY_V4;
            header.saddr[..4].copy_from_slice(&h.read::<[u8; 4]>(l3 + 12)?);
            header.daddr[..4].copy_from_slice(&h.read::<[u8; 4]>(l3 + 16)?);
            (l3 + ihl, end.min(skb_len))
        }
        ETH_P_IPV6 => {
            let plen = usize::from(h.be16(l3 + 4)?);
            // Payload length 0 with a Hop-by-Hop jumbo option: a BIG TCP
            // super-packet (lo, some NICs); the skb length is the truth.
            let end = if plen == 0 { skb_len } else { l3 + 40 + plen };
            header.family = FAMILY_V6;
            header.saddr = h.read::<[u8; 16]>(l3 + 8)?;
            header.daddr = h.read::<[u8; 16]>(l3 + 24)?;
            let (l4, next) = skip_ipv6_extensions(h, l3)?;
            if next != IPPROTO_TCP {
                return Err(Skip::NotWatched);
            }
            (l4, end.min(skb_len))
        }
        _ => return Err(Skip::NotWatched),
    };
    header.sport = h.be16(l4)?;
    header.dport = h.be16(l4 + 2)?;
    if !watched(header.sport, header.dport) {
        return Err(Skip::NotWatched);
    }
    header.seq = h.be32(l4 + 4)?;
    header.ack = h.be32(l4 + 8)?;
    let doff = usize::from(h.u8(l4 + 12)? >> 4) * 4;
    header.tcp_flags = h.u8(l4 + 13)?;
    let payload_off = l4 + doff;
    if doff < 20 || payload_off > l3_end {
        return Err(Skip::Malformed);
    }
    count(counter::SEGMENTS, 1);
    let payload_len = (l3_end - payload_off) as u32;
    // Pure ACKs carry nothing the analyzer needs that the next data segment
    // or FIN does not carry too: no record for them.
    if payload_len == 0
        && header.tcp_flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
    {
        return Ok(());
    }
    let mut chunks = payload_len.div_ceil(CHUNK as u32).max(1);
    if chunks > MAX_CHUNKS {
        chunks = MAX_CHUNKS;
        count(counter::CUT_SEGMENTS, 1);
    }
    if chunks > 1 {
        count(counter::MULTI_CHUNK_SEGMENTS, 1);
    }
    header.ts_ns = timestamp(ctx);
    header.payload_len = payload_len;
    header.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut state = Chunks {
        skb: ctx.skb.skb.cast(),
        header,
        payload_off: payload_off as u32,
        payload_len,
        chunks,
    };
    let state_ptr = (&mut state as *mut Chunks).cast::<c_void>();
    if chunks == 1 {
        // Most segments: no loop needed.
        unsafe { emit_chunk(0, state_ptr) };
    } else {
        unsafe { bpf_loop(chunks, emit_chunk as *mut c_void, state_ptr, 0) };
    }
    Ok(())
}

/// `tstamp_type` of an skb whose `tstamp` is a CLOCK_MONOTONIC delivery
/// time (`BPF_SKB_TSTAMP_DELIVERY_MONO`, renamed `BPF_SKB_CLOCK_MONOTONIC`
/// in Linux 6.11; same value).
const TSTAMP_MONO: u8 = 1;

/// How far a stamp found on the skb may be from the coarse clock and still
/// be taken as the time of this packet. The coarse clock lags by up to one
/// tick (10 ms at HZ=100).
const STAMP_WINDOW_NS: u64 = 20_000_000;

/// When the segment is on the wire, CLOCK_MONOTONIC. TCP stamps every skb it
/// sends with its departure time from the same clock (`tstamp_type`
/// MONO; Linux 5.18+), and veth keeps that stamp across namespaces: reading
/// it saves the TSC read of `bpf_ktime_get_ns`, about 50 ns a segment (a
/// seventh of the probe's time). A stamp far from the coarse clock, which is
/// read without the TSC, is not "now" (a rate limiter may set departure
/// times in the future): then, and when there is no stamp, the probe reads
/// the clock.
#[inline(always)]
fn timestamp(ctx: &TcContext) -> u64 {
    let skb = ctx.skb.skb;
    let (kind, stamp) = unsafe { ((*skb).tstamp_type, (*skb).tstamp) };
    if kind == TSTAMP_MONO && stamp != 0 {
        let coarse = unsafe { bpf_ktime_get_coarse_ns() };
        if stamp.abs_diff(coarse) <= STAMP_WINDOW_NS {
            count(counter::DEPARTURE_STAMPS, 1);
            return stamp;
        }
        count(counter::FOREIGN_STAMPS, 1);
    }
    unsafe { bpf_ktime_get_ns() }
}

/// Walks the IPv6 extension headers that may precede TCP (Hop-by-Hop,
/// Routing, Destination Options, AH); returns the offset and protocol of
/// the header after them. Fragments and longer chains are counted and
/// skipped.
#[inline(always)]
fn skip_ipv6_extensions<H: Headers>(h: &H, l3: usize) -> Result<(usize, u8), Skip> {
    let mut next = h.u8(l3 + 6)?;
    let mut off = l3 + 40;
    for _ in 0..4 {
        match next {
            // Hop-by-Hop, Routing, Destination Options: length in 8-octet
            // units, not counting the first 8.
            0 | 43 | 60 => {
                let len = (usize::from(h.u8(off + 1)?) + 1) * 8;
                next = h.u8(off)?;
                off += len;
            }
            // A fragment: TCP is not reachable without reassembly.
            44 => {
                count(counter::IPV6_EXTENSIONS, 1);
                return Ok((off, next));
            }
            // AH: length in 4-octet units, minus 2.
            51 => {
                let len = (usize::from(h.u8(off + 1)?) + 2) * 4;
                next = h.u8(off)?;
                off += len;
            }
            _ => return Ok((off, next)),
        }
    }
    if matches!(next, 0 | 43 | 51 | 60) {
        count(counter::IPV6_EXTENSIONS, 1);
    }
    Ok((off, next))
}

/// `bpf_loop` callback: emits chunk `index`; returns 1 to stop the loop.
unsafe extern "C" fn emit_chunk(index: u64, data: *mut c_void) -> i64 {
    let state = unsafe { &*(data as *const Chunks) };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let rec = unsafe { &mut *rec };
    let off = (index as u32).wrapping_mul(CHUNK as u32);
    let remaining = state.payload_len.saturating_sub(off);
    let len = if remaining > CHUNK as u32 {
        CHUNK as u32
    } else {
        remaining
    };
    // A plain assignment compiles to a call of a BPF `memmove` subprogram (the
    // pointers may alias as far as LLVM knows); this is 9 inline word copies.
    unsafe { core::ptr::copy_nonoverlapping(&state.header, &mut rec.header, 1) };
    rec.header.chunk_offset = off;
    rec.header.chunk_len = len;
    let mut flags = 0;
    if index == 0 {
        flags |= CHUNK_FIRST;
    } else {
        // SYN belongs to the first chunk only.
        rec.header.tcp_flags &= !tcp_flags::SYN;
    }
    if index + 1 >= u64::from(state.chunks) {
        flags |= CHUNK_LAST;
    } else {
        // FIN and RST come after the payload: last chunk only.
        rec.header.tcp_flags &= !(tcp_flags::FIN | tcp_flags::RST);
    }
    rec.header.chunk_flags = flags;
    if len > 0 {
        // The verifier must see 0 < n <= CHUNK at the helper call; hide `len`'s
        // known range from LLVM so that it keeps the mask and the +1 the
        // verifier can follow.
        let n = (core::hint::black_box(len).wrapping_sub(1) & (CHUNK as u32 - 1)) + 1;
        let r = unsafe {
            bpf_skb_load_bytes(
                state.skb,
                state.payload_off.wrapping_add(off),
                rec.data.as_mut_ptr().cast(),
                n,
            )
        };
        if r < 0 {
            count(counter::LOAD_ERRORS, u64::from(remaining));
            return 1;
        }
    }
    // Same for the size of the ring-buffer copy: at most the record.
    let total = HEADER_LEN + (core::hint::black_box(len) as usize & (2 * CHUNK - 1)).min(CHUNK);
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const Record).cast::<u8>(), total) };
    let wake = match WAKE_CREDIT.get_ptr_mut(0) {
        Some(credit) => {
            // Per-CPU value, and a TC program is not preempted: no atomics.
            let credit = unsafe { &mut *credit };
            *credit += total as u64;
            if *credit >= unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) } {
                *credit = 0;
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            }
        }
        None => BPF_RB_FORCE_WAKEUP,
    };
    match EVENTS.output::<[u8]>(bytes, u64::from(wake)) {
        Ok(()) => {
            count(counter::RECORDS, 1);
            count(counter::PAYLOAD_BYTES, u64::from(len));
            0
        }
        Err(_) => {
            // The rest of this segment would not fit either: count it all.
            count(
                counter::RING_FULL,
                u64::from(state.chunks).saturating_sub(index),
            );
            count(counter::RING_FULL_BYTES, u64::from(remaining));
            1
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel reads the program's license from this section. No GPL-only
/// helper is used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
