//! The engine: drives frames through decode -> tcp -> http1 and keeps every
//! counter along the way.

use crate::decode::{decode_tcp, DecodeStats, TcpSegment};
use crate::flow::{CloseReason, Direction, EndKind};
use crate::http1::{Connection, Http1Config, Http1Stats};
use crate::source::pcap_file::Packet;
use crate::source::{ConnId, TapEvent};
use crate::tcp::{FlowTable, StreamHandler, TcpConfig, TcpStats};
use contracts::{Exchange, FlowId};
use serde::Serialize;

/// Settings of the whole engine.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Flow table and reassembly.
    pub tcp: TcpConfig,
    /// HTTP parsing bounds.
    pub http: Http1Config,
}

/// Shared state handed to every connection's parser.
#[derive(Debug, Default)]
pub struct HttpCtx {
    cfg: Http1Config,
    /// Exchanges completed and not yet taken.
    pub out: Vec<Exchange>,
    /// Parse counters.
    pub stats: Http1Stats,
}

/// One connection's HTTP/1 state as a stream handler.
#[derive(Debug)]
pub struct HttpFlow(Connection);

impl StreamHandler for HttpFlow {
    type Ctx = HttpCtx;

    fn open(flow: FlowId, _ctx: &mut HttpCtx) -> Self {
        HttpFlow(Connection::new(flow))
    }

    fn on_data(&mut self, ctx: &mut HttpCtx, dir: Direction, data: &[u8], ts: u64) {
        self.0
            .on_data(&ctx.cfg, dir, data, ts, &mut ctx.out, &mut ctx.stats);
    }

    fn on_gap(&mut self, ctx: &mut HttpCtx, dir: Direction, len: u64, ts: u64) {
        self.0
            .on_gap(&ctx.cfg, dir, len, ts, &mut ctx.out, &mut ctx.stats);
    }

    fn on_end(&mut self, ctx: &mut HttpCtx, dir: Direction, kind: EndKind, ts: u64) {
        self.0
            .on_end(&ctx.cfg, dir, kind, ts, &mut ctx.out, &mut ctx.stats);
    }

    fn on_close(&mut self, ctx: &mut HttpCtx, reason: CloseReason, ts: u64) {
        self.0
            .on_close(&ctx.cfg, reason, ts, &mut ctx.out, &mut ctx.stats);
    }

    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }

    fn in_exchange(&self) -> bool {
        self.0.in_exchange()
    }
}

/// Capture-level counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureStats {
    /// Frames read.
    pub packets: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Frames cut short by the capture's snapshot length.
    pub snaplen_truncated: u64,
    /// Frames whose timestamp went backwards.
    pub out_of_order_timestamps: u64,
    /// Timestamp of the first frame (ns since epoch).
    pub first_ts_ns: Option<u64>,
    /// Timestamp of the last frame (ns since epoch).
    pub last_ts_ns: Option<u64>,
}

/// Exchange-level counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExchangeStats {
    /// Exchanges produced.
    pub total: u64,
    /// With a final response.
    pub answered: u64,
    /// Requests without a response.
    pub unanswered: u64,
    /// Exchanges touched by a capture gap.
    pub with_gap: u64,
    /// Messages cut short.
    pub truncated: u64,
    /// Exchanges on reset connections.
    pub reset: u64,
    /// Protocol switches (Upgrade, CONNECT).
    pub upgraded: u64,
    /// Ambiguous framing (smuggling shapes).
    pub ambiguous_framing: u64,
    /// Bodies whose content coding failed to decode.
    pub decode_failed: u64,
}

impl ExchangeStats {
    fn record(&mut self, ex: &Exchange) {
        self.total += 1;
        if ex.response.is_some() {
            self.answered += 1;
        }
        let a = &ex.anomalies;
        self.unanswered += u64::from(a.unanswered);
        self.with_gap += u64::from(a.gap);
        self.truncated += u64::from(a.truncated);
        self.reset += u64::from(a.reset);
        self.upgraded += u64::from(a.upgraded);
        self.ambiguous_framing += u64::from(a.ambiguous_framing);
        self.decode_failed += u64::from(a.decode_failed);
    }
}

/// The offline engine: feed packets, take exchanges, read counters.
pub struct Engine {
    table: FlowTable<HttpFlow>,
    ctx: HttpCtx,
    /// Connections fed by a relay (bytes already in order, no reassembly).
    relayed: rustc_hash::FxHashMap<ConnId, Connection>,
    /// Relay events for connections never opened (their Open was lost).
    pub relay_unknown_events: u64,
    /// Capture counters.
    pub capture: CaptureStats,
    /// Frames skipped by the decoder, by reason.
    pub decode: DecodeStats,
    /// Exchange counters.
    pub exchanges: ExchangeStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("capture", &self.capture)
            .field("exchanges", &self.exchanges)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A new engine.
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            table: FlowTable::new(cfg.tcp),
            relayed: Default::default(),
            relay_unknown_events: 0,
            ctx: HttpCtx {
                cfg: cfg.http,
                ..HttpCtx::default()
            },
            capture: CaptureStats::default(),
            decode: DecodeStats::default(),
            exchanges: ExchangeStats::default(),
        }
    }

    /// Processes one captured frame.
    #[inline]
    pub fn packet(&mut self, pkt: &Packet<'_>) {
        let c = &mut self.capture;
        c.packets += 1;
        c.bytes += pkt.data.len() as u64;
        if (pkt.data.len() as u64) < u64::from(pkt.orig_len) {
            c.snaplen_truncated += 1;
        }
        if c.first_ts_ns.is_none() {
            c.first_ts_ns = Some(pkt.ts_ns);
        }
        match c.last_ts_ns {
            Some(last) if pkt.ts_ns < last => c.out_of_order_timestamps += 1,
            _ => c.last_ts_ns = Some(pkt.ts_ns),
        }
        // Bytes cut by the snapshot length are at the end of the frame, so
        // they are payload bytes (headers come first).
        let cut = pkt.orig_len.saturating_sub(pkt.data.len() as u32);
        match decode_tcp(pkt.linktype, pkt.data) {
            Ok(seg) => self.table.process_cut(&mut self.ctx, &seg, cut, pkt.ts_ns),
            Err(skip) => self.decode.record(&skip),
        }
    }

    /// Processes one already decoded TCP segment (sources that deliver
    /// segments rather than frames, and tests).
    pub fn segment(&mut self, seg: &TcpSegment<'_>, ts_ns: u64) {
        self.table.process(&mut self.ctx, seg, ts_ns);
    }

    /// Processes one decoded segment of which `cut` payload bytes, after
    /// those in `seg`, were not captured (they become a gap).
    pub fn segment_cut(&mut self, seg: &TcpSegment<'_>, cut: u32, ts_ns: u64) {
        self.table.process_cut(&mut self.ctx, seg, cut, ts_ns);
    }

    /// Processes one event of a relaying source (TPROXY).
    pub fn tap_event(&mut self, ev: TapEvent) {
        let ctx = &mut self.ctx;
        match ev {
            TapEvent::Open { conn, flow, .. } => {
                self.relayed.insert(conn, Connection::new(flow));
            }
            TapEvent::Data {
                conn,
                dir,
                data,
                ts_ns,
            } => match self.relayed.get_mut(&conn) {
                Some(c) => c.on_data(&ctx.cfg, dir, &data, ts_ns, &mut ctx.out, &mut ctx.stats),
                None => self.relay_unknown_events += 1,
            },
            TapEvent::Gap {
                conn,
                dir,
                len,
                ts_ns,
            } => match self.relayed.get_mut(&conn) {
                Some(c) => c.on_gap(&ctx.cfg, dir, len, ts_ns, &mut ctx.out, &mut ctx.stats),
                None => self.relay_unknown_events += 1,
            },
            TapEvent::End {
                conn,
                dir,
                kind,
                ts_ns,
            } => match self.relayed.get_mut(&conn) {
                Some(c) => c.on_end(&ctx.cfg, dir, kind, ts_ns, &mut ctx.out, &mut ctx.stats),
                None => self.relay_unknown_events += 1,
            },
            TapEvent::Close { conn, ts_ns } => match self.relayed.remove(&conn) {
                Some(mut c) => c.on_close(
                    &ctx.cfg,
                    CloseReason::Closed,
                    ts_ns,
                    &mut ctx.out,
                    &mut ctx.stats,
                ),
                None => self.relay_unknown_events += 1,
            },
        }
    }

    /// Closes connections that saw no packet for the idle timeout, measured on
    /// the wall clock (live sources, where capture time stops when traffic does).
    pub fn tick(&mut self, now_ns: u64) {
        self.table.expire_idle(&mut self.ctx, now_ns);
    }

    /// Takes the exchanges completed so far, counting them.
    pub fn take_exchanges(&mut self) -> impl Iterator<Item = Exchange> + '_ {
        let stats = &mut self.exchanges;
        self.ctx.out.drain(..).inspect(move |ex| stats.record(ex))
    }

    /// Moves the exchanges completed so far to the end of `dst`, counting
    /// them; when `dst` is empty the two vectors are swapped, so no exchange
    /// is copied.
    pub fn take_exchanges_into(&mut self, dst: &mut Vec<Exchange>) {
        for ex in &self.ctx.out {
            self.exchanges.record(ex);
        }
        if dst.is_empty() {
            std::mem::swap(dst, &mut self.ctx.out);
        } else {
            dst.append(&mut self.ctx.out);
        }
    }

    /// True if exchanges are waiting to be taken.
    pub fn has_exchanges(&self) -> bool {
        !self.ctx.out.is_empty()
    }

    /// Ends the capture: every open connection is flushed and closed.
    pub fn finish(&mut self) {
        while !self.finish_step(usize::MAX) {}
    }

    /// Part of [`Engine::finish`]: closes up to `max` open connections
    /// (oldest first) and returns false while some remain, so the caller can
    /// take the exchanges between steps instead of holding them all.
    pub fn finish_step(&mut self, max: usize) -> bool {
        let ts = self.capture.last_ts_ns.unwrap_or(0);
        if !self.table.finish_some(&mut self.ctx, ts, max) {
            return false;
        }
        let ctx = &mut self.ctx;
        let mut open: Vec<(ConnId, Connection)> = self.relayed.drain().collect();
        open.sort_by_key(|(id, _)| *id);
        for (_, mut c) in open {
            c.on_close(
                &ctx.cfg,
                CloseReason::EndOfCapture,
                ts,
                &mut ctx.out,
                &mut ctx.stats,
            );
        }
        true
    }

    /// Transport counters.
    pub fn tcp_stats(&self) -> &TcpStats {
        &self.table.stats
    }

    /// HTTP parse counters.
    pub fn http_stats(&self) -> &Http1Stats {
        &self.ctx.stats
    }

    /// Replaces the analysed server ports (new connections only).
    pub fn set_ports(&mut self, ports: crate::tcp::ServerPorts) {
        self.table.set_ports(ports);
    }

    /// Connections currently tracked.
    pub fn open_flows(&self) -> usize {
        self.table.len()
    }
}
