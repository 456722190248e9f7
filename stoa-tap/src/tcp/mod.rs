//! TCP: the flow table and per-direction stream reassembly.
//!
//! Each connection is keyed by its address pair (both directions share one
//! entry) and oriented client -> server from the configured server ports, the
//! handshake, or the first payload. Each direction is reassembled into ordered
//! bytes handed to a [`StreamHandler`]: in-order data is passed through
//! borrowed from the packet (no copy); out-of-order data is buffered up to a
//! per-flow and a global cap; bytes the capture never saw become explicit gap
//! events. Retransmissions and overlaps keep the first copy; differing bytes
//! in an overlap are counted as conflicts.

mod reassembly;

pub use reassembly::HalfStream;

use crate::decode::{TcpFlags, TcpSegment};
use crate::flow::{CloseReason, Direction, EndKind};
use contracts::FlowId;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;

/// Receives the reassembled streams of one connection.
pub trait StreamHandler: Sized {
    /// State shared by all connections (outputs, counters).
    type Ctx;
    /// A new connection with known orientation.
    fn open(flow: FlowId, ctx: &mut Self::Ctx) -> Self;
    /// In-order bytes of one direction with the capture time of their packet.
    fn on_data(&mut self, ctx: &mut Self::Ctx, dir: Direction, data: &[u8], ts: u64);
    /// `len` bytes of one direction that the capture did not contain.
    fn on_gap(&mut self, ctx: &mut Self::Ctx, dir: Direction, len: u64, ts: u64);
    /// One direction ended.
    fn on_end(&mut self, ctx: &mut Self::Ctx, dir: Direction, kind: EndKind, ts: u64);
    /// The connection leaves the table.
    fn on_close(&mut self, ctx: &mut Self::Ctx, reason: CloseReason, ts: u64);
    /// Heap bytes held by the handler (counted against the global cap).
    fn heap_bytes(&self) -> usize;
    /// True while a message or exchange is in progress (a head or body
    /// partly read, a request waiting for its response). Such connections are
    /// evicted last under memory pressure.
    fn in_exchange(&self) -> bool {
        false
    }
}

/// Which connections are analysed and how they are oriented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPorts {
    /// Connections to one of these ports; that side is the server.
    List(Vec<u16>),
    /// Any port; orientation from the handshake or the first bytes (HTTP detection).
    Any,
}

impl ServerPorts {
    fn contains(&self, port: u16) -> bool {
        match self {
            ServerPorts::List(l) => l.contains(&port),
            ServerPorts::Any => false,
        }
    }
}

/// Limits and timeouts of the flow table.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Server ports to analyse.
    pub ports: ServerPorts,
    /// A connection with no packet for this long (capture time) is closed.
    pub idle_timeout_ns: u64,
    /// Out-of-order bytes buffered per direction before giving up on a hole.
    pub max_buffer_per_direction: usize,
    /// Memory for all connections together: table slots, per-connection
    /// state, out-of-order buffers and parser state. Over it connections are
    /// evicted, those that never exchanged payload first, connections in the
    /// middle of an exchange last (see [`EvictClass`]).
    pub memory_cap: usize,
    /// Most connections tracked at once.
    pub max_flows: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            ports: ServerPorts::List(vec![5555]),
            idle_timeout_ns: 300 * 1_000_000_000,
            max_buffer_per_direction: 4 << 20,
            memory_cap: 64 << 20,
            max_flows: 100_000,
        }
    }
}

/// Transport counters. Every skipped segment, gap and eviction is counted here.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TcpStats {
    /// TCP segments handed to the flow table.
    pub segments: u64,
    /// Segments not on an analysed server port.
    pub segments_other_ports: u64,
    /// Segments of connections whose content is not HTTP (`--port any`).
    pub segments_not_http: u64,
    /// Connections created.
    pub flows_opened: u64,
    /// Connections that were already open when the capture started.
    pub flows_midstream: u64,
    /// Connections closed by FIN or RST.
    pub flows_closed: u64,
    /// Connections closed by the idle timeout.
    pub flows_idle_timeout: u64,
    /// Connections evicted to stay within the memory cap or flow limit
    /// (the sum of the three `evicted_*` counters).
    pub flows_evicted: u64,
    /// Evicted connections that never carried payload or whose other side
    /// never answered (SYN-only, half-open, handshake-only: flood debris).
    pub evicted_half_open: u64,
    /// Evicted established connections with no exchange in progress.
    pub evicted_idle: u64,
    /// Evicted connections in the middle of an exchange (their exchange is
    /// emitted cut short).
    pub evicted_active: u64,
    /// Times the memory cap or the flow limit forced an eviction batch.
    pub eviction_batches: u64,
    /// Connections still open at the end of the capture.
    pub flows_open_at_end: u64,
    /// Payload bytes delivered in order.
    pub bytes_delivered: u64,
    /// Segments that only repeated bytes already received.
    pub retransmitted_segments: u64,
    /// Bytes dropped as repeats of data already received.
    pub retransmitted_bytes: u64,
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order_segments: u64,
    /// Overlapping bytes that differed from the first copy (first copy kept).
    pub overlap_conflict_bytes: u64,
    /// Holes the capture never filled.
    pub gaps: u64,
    /// Bytes missing in those holes.
    pub gap_bytes: u64,
    /// Segments cut short by the capture's snapshot length (the rest is a gap).
    pub snaplen_gaps: u64,
    /// Segments held back because they acknowledge bytes of the other
    /// direction the capture had not shown yet (cross-direction reordering).
    pub reorder_holds: u64,
    /// Holds that ended without those bytes arriving (they became a gap).
    pub reorder_timeouts: u64,
    /// Holes given up because a direction's buffer hit its cap.
    pub buffer_overflows: u64,
    /// Connections reset.
    pub resets: u64,
    /// Segments of connections already closed (late retransmissions, final ACKs with data).
    pub segments_after_close: u64,
    /// Bytes buffered out of order right now (gauge).
    pub buffered_bytes: u64,
    /// Highest memory use seen, as accounted for the cap.
    pub peak_memory_bytes: u64,
}

/// Canonical key: both directions of a connection map to the same entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FlowKey(SocketAddr, SocketAddr);

impl FlowKey {
    fn of(a: SocketAddr, b: SocketAddr) -> Self {
        if a <= b {
            FlowKey(a, b)
        } else {
            FlowKey(b, a)
        }
    }
}

/// Eviction order under memory pressure or at the flow limit: lower classes
/// go first, least recently active first within a class, ties by address.
/// Floods (SYN floods, half-open connections with a few bytes) fill the
/// lowest class, so they cannot push out established exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictClass {
    /// Never carried payload, or only one side was ever seen.
    HalfOpen = 0,
    /// Established, carried payload, no exchange in progress.
    Idle = 1,
    /// An exchange is in progress (or bytes are buffered out of order).
    Active = 2,
}

/// A connection's handler. It is opened at the first event it must see
/// (bytes, a gap, an end, the close), so connections that never carry
/// payload (SYN floods) cost only their reassembly state.
enum HandlerSlot<H> {
    /// Analysed; nothing handed to the handler yet.
    Unopened,
    /// Analysed; boxed so an unopened connection does not pay for its size.
    Open(Box<H>),
    /// Not HTTP: segments are counted and ignored until the flow ends.
    NotHttp,
}

struct Flow<H> {
    /// The client is the first address of the key (else the second): the
    /// key already holds both addresses.
    client_first: bool,
    /// A segment of each direction (client->server, server->client) was seen.
    seen: [bool; 2],
    /// A segment with payload was seen.
    payload_seen: bool,
    handler: HandlerSlot<H>,
    dirs: [HalfStream; 2],
    first_ts: u64,
    last_ts: u64,
    handler_bytes: usize,
    /// Segments of one direction waiting for bytes of the other that their
    /// acknowledgment covers (see [`REORDER_GRACE_NS`]); one direction at a time.
    held: std::collections::VecDeque<Held>,
}

impl<H: StreamHandler> Flow<H> {
    fn class(&self) -> EvictClass {
        if !(self.payload_seen && self.seen[0] && self.seen[1]) {
            EvictClass::HalfOpen
        } else if self.held.is_empty()
            && self.dirs[0].buffered_bytes() == 0
            && self.dirs[1].buffered_bytes() == 0
            && !matches!(&self.handler, HandlerSlot::Open(h) if h.in_exchange())
        {
            EvictClass::Idle
        } else {
            EvictClass::Active
        }
    }

    /// Eviction rank: smaller goes first.
    fn rank(&self) -> (EvictClass, u64) {
        (self.class(), self.last_ts)
    }
}

impl<H> Flow<H> {
    fn client(&self, key: &FlowKey) -> SocketAddr {
        if self.client_first {
            key.0
        } else {
            key.1
        }
    }

    fn id(&self, key: &FlowKey) -> FlowId {
        let (client, server) = if self.client_first {
            (key.0, key.1)
        } else {
            (key.1, key.0)
        };
        FlowId { client, server }
    }

    fn buffered(&self) -> usize {
        self.dirs[0].buffered_bytes()
            + self.dirs[1].buffered_bytes()
            + self
                .held
                .iter()
                .map(|h| h.payload.len() + HELD_COST)
                .sum::<usize>()
    }
}

/// A segment held back until the other direction catches up.
#[derive(Debug)]
struct Held {
    dir: Direction,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: Vec<u8>,
    missing_tail: u32,
    ts: u64,
    deadline: u64,
}

/// How long (capture time) a segment whose acknowledgment covers bytes of the
/// other direction not yet captured waits for them before they are declared a
/// gap. Mirrors and multi-queue captures deliver the two directions slightly
/// out of order: a response can be captured just before the end of its request.
pub const REORDER_GRACE_NS: u64 = 5_000_000;

/// Bookkeeping charged per held segment.
const HELD_COST: usize = 128;

/// How long a closed connection's late segments are recognised (Linux TIME_WAIT).
const CLOSED_LINGER_NS: u64 = 60 * 1_000_000_000;

/// Per opened handler, for its small allocations (allocator bookkeeping and
/// rounding that `heap_bytes` does not see).
const HANDLER_SLACK: usize = 64;

/// Control bytes past the end of a hashbrown table (its SIMD group width).
const TABLE_TAIL: usize = 16;

/// Bytes allocated by a hash table of `capacity` (as reported by
/// `HashMap::capacity`) with entries of `entry` bytes: hashbrown allocates a
/// power-of-two number of buckets, 7/8 of which are usable, each with an
/// entry slot and a control byte. The allocation depends on the capacity,
/// not on how many entries are in use.
fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity / 7 * 8).next_power_of_two()
    };
    buckets * (entry + 1) + TABLE_TAIL
}

/// Bytes the allocator hands out for a request of `n`: size classes are
/// 16 bytes apart up to 128, then four per doubling (mimalloc's bins; the
/// system allocator's rounding is finer).
fn alloc_class(n: usize) -> usize {
    if n <= 128 {
        return n.next_multiple_of(16);
    }
    let top = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    n.next_multiple_of(top / 4)
}

/// Heap cost of one connection's state, boxed outside the table.
fn flow_box_bytes<H>() -> usize {
    alloc_class(std::mem::size_of::<Flow<H>>())
}

/// Heap cost of an opened handler: its box plus what it reports, the latter
/// with a quarter more for allocator rounding and the short-lived
/// allocations of parsing (measured: a flood of connections holding partial
/// heads costs about that much more than their buffers' capacities).
fn handler_bytes<H: StreamHandler>(slot: &HandlerSlot<H>) -> usize {
    match slot {
        HandlerSlot::Open(h) => {
            let heap = h.heap_bytes();
            alloc_class(std::mem::size_of::<H>()) + heap + heap / 4 + HANDLER_SLACK
        }
        HandlerSlot::Unopened | HandlerSlot::NotHttp => 0,
    }
}

/// Table slot of one connection: its key and the box pointer.
type Slot<H> = (FlowKey, Box<Flow<H>>);

/// Entry of the table of recently closed connections.
type ClosedSlot = (FlowKey, u64);

/// Below this many slots a table is not worth shrinking.
const SHRINK_MIN_CAPACITY: usize = 4096;

/// The table of live connections.
pub struct FlowTable<H: StreamHandler> {
    cfg: TcpConfig,
    /// Connection state is boxed: the table's allocation is sized by its
    /// capacity (which only grows until shrunk), so large inline entries
    /// would waste memory in every empty slot.
    flows: FxHashMap<FlowKey, Box<Flow<H>>>,
    /// Connections closed by FIN/RST and when, so late segments do not
    /// reopen them as mid-stream pickups (like TIME_WAIT).
    closed: FxHashMap<FlowKey, u64>,
    /// Buffered + handler bytes over all flows (excluding fixed overhead).
    variable_bytes: usize,
    next_sweep_ts: u64,
    /// Counters.
    pub stats: TcpStats,
}

impl<H: StreamHandler> std::fmt::Debug for FlowTable<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// True if the bytes start like an HTTP/1 request line (`TOKEN SP`).
pub fn looks_like_request(p: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PROPFIND ",
    ];
    METHODS.iter().any(|m| p.starts_with(m))
}

/// True if the bytes start like an HTTP/1 status line.
pub fn looks_like_response(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.")
}

impl<H: StreamHandler> FlowTable<H> {
    /// An empty table.
    pub fn new(cfg: TcpConfig) -> Self {
        FlowTable {
            cfg,
            flows: FxHashMap::default(),
            closed: FxHashMap::default(),
            variable_bytes: 0,
            next_sweep_ts: 0,
            stats: TcpStats::default(),
        }
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Memory accounted against the cap right now: both tables by their
    /// allocated capacity, each connection's boxed state, and the variable
    /// part (out-of-order buffers, held segments, parser heap).
    pub fn memory_bytes(&self) -> usize {
        self.fixed_bytes() + self.flows.len() * flow_box_bytes::<H>() + self.variable_bytes
    }

    /// The part of [`FlowTable::memory_bytes`] that evicting connections does
    /// not give back (table allocations, until they are shrunk).
    ///
    /// A table that grew left its previous allocation (half its size) to
    /// the allocator, which gives memory back to the system lazily: that
    /// half is counted too.
    fn fixed_bytes(&self) -> usize {
        let t = table_bytes(self.flows.capacity(), std::mem::size_of::<Slot<H>>())
            + table_bytes(self.closed.capacity(), std::mem::size_of::<ClosedSlot>());
        t + t / 2
    }

    /// Replaces the server ports (takes effect for new connections).
    pub fn set_ports(&mut self, ports: ServerPorts) {
        self.cfg.ports = ports;
    }

    /// Orientation of a segment that opens a flow: Some(client->server) or None to ignore.
    fn orient(&self, seg: &TcpSegment<'_>) -> Option<FlowId> {
        let (s, d) = (seg.src, seg.dst);
        let src_is_server = self.cfg.ports.contains(s.port());
        let dst_is_server = self.cfg.ports.contains(d.port());
        let as_client = Some(FlowId {
            client: s,
            server: d,
        });
        let as_server = Some(FlowId {
            client: d,
            server: s,
        });
        let syn = seg.flags.has(TcpFlags::SYN);
        let ack = seg.flags.has(TcpFlags::ACK);
        match (src_is_server, dst_is_server) {
            (false, true) => as_client,
            (true, false) => as_server,
            (true, true) | (false, false) => {
                if matches!(self.cfg.ports, ServerPorts::List(_)) && !src_is_server {
                    return None;
                }
                if syn && !ack {
                    as_client
                } else if syn && ack {
                    as_server
                } else if looks_like_request(seg.payload) {
                    as_client
                } else if looks_like_response(seg.payload) {
                    as_server
                } else {
                    None
                }
            }
        }
    }

    /// Feeds one decoded segment captured at `ts` (ns).
    pub fn process(&mut self, ctx: &mut H::Ctx, seg: &TcpSegment<'_>, ts: u64) {
        self.process_cut(ctx, seg, 0, ts);
    }

    /// Like [`FlowTable::process`] for a segment whose last `missing_tail`
    /// payload bytes were cut off by the capture's snapshot length.
    pub fn process_cut(
        &mut self,
        ctx: &mut H::Ctx,
        seg: &TcpSegment<'_>,
        missing_tail: u32,
        ts: u64,
    ) {
        self.stats.segments += 1;
        if ts >= self.next_sweep_ts {
            self.sweep_idle(ctx, ts);
            self.next_sweep_ts = ts.saturating_add(1_000_000_000);
        }
        let key = FlowKey::of(seg.src, seg.dst);
        let syn_only = seg.flags.has(TcpFlags::SYN) && !seg.flags.has(TcpFlags::ACK);

        // A new SYN on a tuple whose previous connection is finished or reset
        // starts a new connection (port reuse).
        if syn_only {
            let restart = self.flows.get(&key).is_some_and(|f| {
                let d = if f.client(&key) == seg.src { 0 } else { 1 };
                f.dirs[d].is_started() && !f.dirs[d].is_syn_seq(seg.seq)
            });
            if restart {
                self.close_flow(ctx, key, CloseReason::Closed, ts);
            }
        }

        if !self.flows.contains_key(&key) {
            if !seg.flags.has(TcpFlags::SYN) && self.closed.contains_key(&key) {
                // The last ACK of a normal close is expected; data or flags are late.
                if !seg.payload.is_empty() || seg.flags.0 & !TcpFlags::ACK != 0 {
                    self.stats.segments_after_close += 1;
                }
                return;
            }
            if seg.payload.is_empty() && !seg.flags.has(TcpFlags::SYN) {
                // A bare ACK/FIN/RST of an unknown connection opens nothing.
                if !self.cfg.ports.contains(seg.src.port())
                    && !self.cfg.ports.contains(seg.dst.port())
                    && matches!(self.cfg.ports, ServerPorts::List(_))
                {
                    self.stats.segments_other_ports += 1;
                }
                return;
            }
            let Some(id) = self.orient(seg) else {
                if matches!(self.cfg.ports, ServerPorts::List(_)) {
                    self.stats.segments_other_ports += 1;
                } else {
                    self.stats.segments_not_http += 1;
                }
                return;
            };
            if self.flows.len() >= self.cfg.max_flows {
                // A batch (5% of the limit) so the ranking pass is not paid per new connection.
                self.evict(ctx, ts, self.cfg.max_flows / 20 + 1, usize::MAX);
            }
            let midstream = !seg.flags.has(TcpFlags::SYN);
            let http_ok = match self.cfg.ports {
                ServerPorts::List(_) => true,
                // With any port, a connection is analysed when its first bytes are HTTP.
                ServerPorts::Any => {
                    !midstream
                        || looks_like_request(seg.payload)
                        || looks_like_response(seg.payload)
                }
            };
            self.stats.flows_opened += 1;
            if midstream {
                self.stats.flows_midstream += 1;
            }
            self.closed.remove(&key);
            let handler = if http_ok {
                HandlerSlot::Unopened
            } else {
                HandlerSlot::NotHttp
            };
            self.flows.insert(
                key,
                Box::new(Flow {
                    client_first: id.client == key.0,
                    seen: [false; 2],
                    payload_seen: false,
                    handler,
                    dirs: [HalfStream::default(), HalfStream::default()],
                    first_ts: ts,
                    last_ts: ts,
                    handler_bytes: 0,
                    held: Default::default(),
                }),
            );
        }

        let cap = self.cfg.max_buffer_per_direction;
        let any_ports = self.cfg.ports == ServerPorts::Any;
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_ts = ts;
        let id = flow.id(&key);
        let dir = if seg.src == id.client {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        flow.seen[dir.index()] = true;
        flow.payload_seen |= !seg.payload.is_empty();
        let before = flow.buffered();
        let stats = &mut self.stats;
        let Flow {
            handler,
            dirs,
            held,
            ..
        } = &mut **flow;
        if matches!(handler, HandlerSlot::NotHttp) {
            stats.segments_not_http += 1;
            if seg.flags.has(TcpFlags::RST) || (dirs_closed(dirs) && seg.flags.has(TcpFlags::FIN)) {
                self.remove_flow(key);
            } else if seg.flags.has(TcpFlags::FIN) {
                dirs[dir.index()].mark_ended();
                if dirs_closed(dirs) {
                    self.remove_flow(key);
                }
            }
            return;
        }
        // With --port any, a connection whose SYN was seen is dropped from
        // analysis if its first client bytes are not HTTP.
        if any_ports
            && dir == Direction::ClientToServer
            && !seg.payload.is_empty()
            && (!dirs[0].is_started() || dirs[0].at_stream_start(seg.seq))
            && !looks_like_request(seg.payload)
        {
            *handler = HandlerSlot::NotHttp;
            stats.segments_not_http += 1;
            return;
        }

        let mut sink = Sink {
            slot: handler,
            id,
            ctx,
        };
        let h = &mut sink;
        release_held(dirs, held, h, stats, cap, ts, false);
        let other_held = held.iter().any(|x| x.dir != dir);
        let same_held = held.iter().any(|x| x.dir == dir);
        let waits_for_peer = seg.flags.has(TcpFlags::ACK)
            && !seg.payload.is_empty()
            && dirs[dir.reverse().index()].missing_below(seg.ack);
        if !other_held && (same_held || waits_for_peer) {
            // Wait (briefly) for the other direction, keeping this one's order.
            stats.reorder_holds += 1;
            held.push_back(Held {
                dir,
                seq: seg.seq,
                ack: seg.ack,
                flags: seg.flags,
                payload: seg.payload.to_vec(),
                missing_tail,
                ts,
                deadline: ts.saturating_add(REORDER_GRACE_NS),
            });
        } else {
            // With the other direction held, its bytes were seen: no gap for them.
            apply_segment(dirs, h, stats, cap, dir, seg, missing_tail, ts, !other_held);
            release_held(dirs, held, h, stats, cap, ts, false);
        }

        let reset = seg.flags.has(TcpFlags::RST);
        let finished = dirs_closed(dirs);
        let after = flow.buffered();
        let hb = handler_bytes(&flow.handler);
        let old_hb = std::mem::replace(&mut flow.handler_bytes, hb);
        self.variable_bytes = (self.variable_bytes + after + hb).saturating_sub(before + old_hb);
        self.stats.buffered_bytes =
            (self.stats.buffered_bytes + after as u64).saturating_sub(before as u64);

        if reset {
            self.stats.resets += 1;
            self.close_flow(ctx, key, CloseReason::Closed, ts);
        } else if finished {
            self.close_flow(ctx, key, CloseReason::Closed, ts);
        }

        let mem = self.memory_bytes();
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(mem as u64);
        if mem > self.cfg.memory_cap {
            // Small batches: the evicted connections' exchanges (cut short)
            // are built all at once, and the allocator keeps what they freed
            // for a while; 1% of the cap per batch kept a flood's peak
            // resident memory ~10 MB lower than 3% did, for one pass over
            // the table per batch.
            self.evict(ctx, ts, 0, self.cfg.memory_cap / 100 * 99);
        }
    }

    fn remove_flow(&mut self, key: FlowKey) {
        if let Some(f) = self.flows.remove(&key) {
            self.release(&f);
        }
    }

    fn release(&mut self, f: &Flow<H>) {
        let b = f.buffered();
        self.variable_bytes = self.variable_bytes.saturating_sub(b + f.handler_bytes);
        self.stats.buffered_bytes = self.stats.buffered_bytes.saturating_sub(b as u64);
    }

    /// Flushes and removes one connection.
    fn close_flow(&mut self, ctx: &mut H::Ctx, key: FlowKey, reason: CloseReason, ts: u64) {
        let Some(mut f) = self.flows.remove(&key) else {
            return;
        };
        self.release(&f);
        match reason {
            CloseReason::Closed => {
                self.stats.flows_closed += 1;
                if self.closed.len() < self.cfg.max_flows {
                    self.closed.insert(key, ts);
                }
            }
            CloseReason::IdleTimeout => self.stats.flows_idle_timeout += 1,
            CloseReason::Evicted => self.stats.flows_evicted += 1,
            CloseReason::EndOfCapture => self.stats.flows_open_at_end += 1,
        }
        let cap = self.cfg.max_buffer_per_direction;
        let id = f.id(&key);
        let Flow {
            handler,
            dirs,
            held,
            ..
        } = &mut *f;
        if matches!(handler, HandlerSlot::NotHttp) {
            return;
        }
        let mut sink = Sink {
            slot: handler,
            id,
            ctx,
        };
        let h = &mut sink;
        release_held(dirs, held, h, &mut self.stats, cap, ts, true);
        // Whatever is still buffered is delivered, holes becoming gaps.
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            dirs[dir.index()].flush(ts, &mut self.stats, &mut |ev| h.emit(dir, ev));
        }
        // Every analysed connection sees its close, even one that never
        // carried anything (its handler is opened just for that).
        if let Some((h, ctx)) = h.open() {
            h.on_close(ctx, reason, ts);
        }
    }

    /// Closes connections idle for longer than the timeout as of `now`.
    pub fn expire_idle(&mut self, ctx: &mut H::Ctx, now: u64) {
        self.sweep_idle(ctx, now);
    }

    fn sweep_idle(&mut self, ctx: &mut H::Ctx, now: u64) {
        self.closed
            .retain(|_, at| now.saturating_sub(*at) <= CLOSED_LINGER_NS);
        // Held segments whose wait is over go on (their gap declared).
        let cap = self.cfg.max_buffer_per_direction;
        for (key, f) in self.flows.iter_mut() {
            if f.held.is_empty() {
                continue;
            }
            let before = f.buffered();
            let id = f.id(key);
            let Flow {
                handler,
                dirs,
                held,
                ..
            } = &mut **f;
            if !matches!(handler, HandlerSlot::NotHttp) {
                let mut sink = Sink {
                    slot: handler,
                    id,
                    ctx: &mut *ctx,
                };
                release_held(dirs, held, &mut sink, &mut self.stats, cap, now, false);
            }
            let after = f.buffered();
            self.variable_bytes = (self.variable_bytes + after).saturating_sub(before);
            self.stats.buffered_bytes =
                (self.stats.buffered_bytes + after as u64).saturating_sub(before as u64);
        }
        let limit = self.cfg.idle_timeout_ns;
        let mut idle: Vec<(u64, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last_ts) > limit)
            .map(|(k, f)| (f.first_ts, *k))
            .collect();
        idle.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_key(&a.1, &b.1)));
        for (_, k) in idle {
            self.close_flow(ctx, k, CloseReason::IdleTimeout, now);
        }
        self.shrink_tables();
    }

    /// Evicts at least `min_count` connections and then more until memory is
    /// at most `mem_target`, in [`EvictClass`] order (least recently active
    /// first within a class, ties by address).
    ///
    /// The whole table is not sorted: one pass ranks every connection, a
    /// selection finds the rank below which enough connections lie, and only
    /// those are sorted and closed. Batches (down to 99% of the cap, or 5% of
    /// the flow limit) keep this off the per-packet path.
    fn evict(&mut self, ctx: &mut H::Ctx, now: u64, mut min_count: usize, mem_target: usize) {
        // Evicting cannot give back the table allocations themselves.
        let mem_target = mem_target.max(self.fixed_bytes());
        let mut batch_counted = false;
        loop {
            let mem = self.memory_bytes();
            if self.flows.is_empty() || (min_count == 0 && mem <= mem_target) {
                break;
            }
            if !batch_counted {
                self.stats.eviction_batches += 1;
                batch_counted = true;
            }
            // How many connections to take this round, from the average cost
            // of one; another round follows if they were cheaper than that.
            let per_flow = ((mem - self.fixed_bytes()) / self.flows.len()).max(1);
            let want = (mem.saturating_sub(mem_target).div_ceil(per_flow))
                .max(min_count)
                .clamp(1, self.flows.len());
            let mut ranks: Vec<(EvictClass, u64)> = self.flows.values().map(|f| f.rank()).collect();
            let (_, &mut threshold, _) = ranks.select_nth_unstable(want - 1);
            drop(ranks);
            let mut chosen: Vec<((EvictClass, u64), FlowKey)> = self
                .flows
                .iter()
                .filter_map(|(k, f)| {
                    let r = f.rank();
                    (r <= threshold).then_some((r, *k))
                })
                .collect();
            chosen.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_key(&a.1, &b.1)));
            for ((class, _), k) in chosen {
                if min_count == 0 && self.memory_bytes() <= mem_target {
                    break;
                }
                match class {
                    EvictClass::HalfOpen => self.stats.evicted_half_open += 1,
                    EvictClass::Idle => self.stats.evicted_idle += 1,
                    EvictClass::Active => self.stats.evicted_active += 1,
                }
                tracing::trace!(?class, "evicting connection");
                self.close_flow(ctx, k, CloseReason::Evicted, now);
                min_count = min_count.saturating_sub(1);
            }
        }
    }

    /// Gives memory back after a flood: a table far larger than what it
    /// holds is reallocated at twice its use.
    fn shrink_tables(&mut self) {
        let cap = self.flows.capacity();
        if cap > SHRINK_MIN_CAPACITY && self.flows.len() * 4 < cap {
            self.flows.shrink_to(self.flows.len() * 2);
        }
        let cap = self.closed.capacity();
        if cap > SHRINK_MIN_CAPACITY && self.closed.len() * 4 < cap {
            self.closed.shrink_to(self.closed.len() * 2);
        }
    }

    /// Closes every connection (end of capture), oldest first so output order
    /// does not depend on hash order.
    pub fn finish(&mut self, ctx: &mut H::Ctx, ts: u64) {
        while !self.finish_some(ctx, ts, FINISH_BATCH) {}
    }

    /// Closes up to `max` connections as [`FlowTable::finish`] does, oldest
    /// first; true once none is left. Callers that take the exchanges
    /// between calls keep the end of a capture with many open connections
    /// from holding all their exchanges at once.
    pub fn finish_some(&mut self, ctx: &mut H::Ctx, ts: u64, max: usize) -> bool {
        let max = max.clamp(1, self.flows.len().max(1));
        // The `max` oldest by a bounded max-heap: one pass, no copy of the table.
        let mut oldest: std::collections::BinaryHeap<(u64, FlowKey)> =
            std::collections::BinaryHeap::with_capacity(max + 1);
        for (k, f) in &self.flows {
            oldest.push((f.first_ts, *k));
            if oldest.len() > max {
                oldest.pop();
            }
        }
        for (_, k) in oldest.into_sorted_vec() {
            self.close_flow(ctx, k, CloseReason::EndOfCapture, ts);
        }
        self.shrink_tables();
        self.flows.is_empty()
    }
}

/// Connections closed per pass at the end of a capture.
const FINISH_BATCH: usize = 4096;

/// Hands one segment to its direction's reassembly. With `ack_gaps`, bytes of
/// the other direction that the segment acknowledges but the capture never
/// showed are declared a gap first, so requests complete before their
/// responses are parsed.
#[allow(clippy::too_many_arguments)]
fn apply_segment<H: StreamHandler>(
    dirs: &mut [HalfStream; 2],
    h: &mut Sink<'_, H>,
    stats: &mut TcpStats,
    cap: usize,
    dir: Direction,
    seg: &TcpSegment<'_>,
    missing_tail: u32,
    ts: u64,
    ack_gaps: bool,
) {
    if ack_gaps && seg.flags.has(TcpFlags::ACK) && !seg.payload.is_empty() {
        let other = dir.reverse();
        dirs[other.index()].acked_up_to(seg.ack, ts, stats, &mut |ev| h.emit(other, ev));
    }
    dirs[dir.index()].segment(seg, missing_tail, ts, cap, stats, &mut |ev| h.emit(dir, ev));
    if ack_gaps {
        // What the other direction had buffered past the acknowledged point
        // comes after this segment.
        let other = dir.reverse();
        dirs[other.index()].drain_ready(stats, &mut |ev| h.emit(other, ev));
    }
}

/// Applies held segments, in order, once the other direction caught up with
/// their acknowledgment or their wait is over (`force`: now, e.g. at close).
#[allow(clippy::too_many_arguments)]
fn release_held<H: StreamHandler>(
    dirs: &mut [HalfStream; 2],
    held: &mut std::collections::VecDeque<Held>,
    h: &mut Sink<'_, H>,
    stats: &mut TcpStats,
    cap: usize,
    now: u64,
    force: bool,
) {
    while let Some(front) = held.front() {
        let peer = &dirs[front.dir.reverse().index()];
        let still_missing = !front.payload.is_empty()
            && front.flags.has(TcpFlags::ACK)
            && peer.missing_below(front.ack);
        if still_missing && !force && now < front.deadline {
            break;
        }
        let Some(x) = held.pop_front() else { break };
        if still_missing {
            stats.reorder_timeouts += 1;
        }
        let seg = TcpSegment {
            // Addresses are not used past the flow lookup.
            src: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            dst: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            seq: x.seq,
            ack: x.ack,
            flags: x.flags,
            payload: &x.payload,
        };
        apply_segment(dirs, h, stats, cap, x.dir, &seg, x.missing_tail, x.ts, true);
    }
}

fn cmp_key(a: &FlowKey, b: &FlowKey) -> std::cmp::Ordering {
    (a.0, a.1).cmp(&(b.0, b.1))
}

fn dirs_closed(dirs: &[HalfStream; 2]) -> bool {
    dirs[0].is_ended() && dirs[1].is_ended()
}

/// What reassembly hands upward.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// Ordered bytes and the capture time of their packet.
    Data(&'a [u8], u64),
    /// Missing bytes.
    Gap(u64, u64),
    /// The direction ended.
    End(EndKind, u64),
}

/// Hands reassembly events to a connection's handler, opening it on the first.
struct Sink<'a, H: StreamHandler> {
    slot: &'a mut HandlerSlot<H>,
    id: FlowId,
    ctx: &'a mut H::Ctx,
}

impl<H: StreamHandler> Sink<'_, H> {
    /// The handler (opened now if it was not yet) and the shared context;
    /// None for a connection that is not analysed.
    fn open(&mut self) -> Option<(&mut H, &mut H::Ctx)> {
        if matches!(self.slot, HandlerSlot::Unopened) {
            *self.slot = HandlerSlot::Open(Box::new(H::open(self.id, self.ctx)));
        }
        match self.slot {
            HandlerSlot::Open(h) => Some((&mut **h, &mut *self.ctx)),
            HandlerSlot::Unopened | HandlerSlot::NotHttp => None,
        }
    }

    fn emit(&mut self, dir: Direction, ev: StreamEvent<'_>) {
        let Some((h, ctx)) = self.open() else {
            return;
        };
        match ev {
            StreamEvent::Data(d, ts) => h.on_data(ctx, dir, d, ts),
            StreamEvent::Gap(len, ts) => h.on_gap(ctx, dir, len, ts),
            StreamEvent::End(kind, ts) => h.on_end(ctx, dir, kind, ts),
        }
    }
}

#[cfg(test)]
mod tests;
