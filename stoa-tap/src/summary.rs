//! The capture summary printed by `analyze`: headline figures plus every counter.

use crate::decode::DecodeStats;
use crate::http1::Http1Stats;
use crate::pipeline::{CaptureStats, Engine, ExchangeStats};
use crate::tcp::TcpStats;
use serde::Serialize;

/// Every counter of a run, grouped by stage.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// Frames read.
    pub capture: CaptureStats,
    /// Frames skipped by the decoder, by reason.
    pub decode: DecodeStats,
    /// Flow table and reassembly.
    pub tcp: TcpStats,
    /// HTTP parsing.
    pub http: Http1Stats,
    /// Exchanges produced.
    pub exchanges: ExchangeStats,
}

/// Headline figures of a run, then the full counters.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Input files, in reading order.
    pub files: Vec<String>,
    /// Frames read.
    pub packets: u64,
    /// Captured bytes.
    pub bytes: u64,
    /// TCP connections analysed.
    pub flows: u64,
    /// HTTP exchanges (requests, answered or not).
    pub exchanges: u64,
    /// Requests without a response.
    pub unanswered: u64,
    /// Holes in the reassembled streams.
    pub gaps: u64,
    /// Bytes missing in those holes.
    pub gap_bytes: u64,
    /// Segments that repeated data already seen.
    pub retransmits: u64,
    /// HTTP messages that could not be parsed.
    pub parse_errors: u64,
    /// Connections evicted to stay within memory bounds.
    pub evictions: u64,
    /// Frames the decoder skipped (not TCP, fragments, malformed...).
    pub skipped_frames: u64,
    /// Capture time covered, seconds.
    pub capture_seconds: f64,
    /// Wall-clock processing time, seconds.
    pub elapsed_seconds: f64,
    /// Captured megabytes (10^6) processed per second.
    pub throughput_mb_per_s: f64,
    /// Frames per second.
    pub packets_per_s: f64,
    /// Exchanges per second.
    pub exchanges_per_s: f64,
    /// Non-fatal problems with the input.
    pub warnings: Vec<String>,
    /// Every counter.
    pub counters: Counters,
}

impl Summary {
    /// Builds the summary of a finished engine.
    pub fn of(
        engine: &Engine,
        files: Vec<String>,
        elapsed_seconds: f64,
        warnings: Vec<String>,
    ) -> Self {
        let tcp = engine.tcp_stats().clone();
        let http = engine.http_stats().clone();
        let capture = engine.capture.clone();
        let exchanges = engine.exchanges.clone();
        let per_s = |n: f64| {
            if elapsed_seconds > 0.0 {
                n / elapsed_seconds
            } else {
                0.0
            }
        };
        let capture_seconds = match (capture.first_ts_ns, capture.last_ts_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        };
        Summary {
            files,
            packets: capture.packets,
            bytes: capture.bytes,
            flows: tcp.flows_opened,
            exchanges: exchanges.total,
            unanswered: exchanges.unanswered,
            gaps: tcp.gaps,
            gap_bytes: tcp.gap_bytes,
            retransmits: tcp.retransmitted_segments,
            parse_errors: parse_errors(&http),
            evictions: tcp.flows_evicted,
            skipped_frames: engine.decode.total(),
            capture_seconds,
            elapsed_seconds,
            throughput_mb_per_s: per_s(capture.bytes as f64 / 1e6),
            packets_per_s: per_s(capture.packets as f64),
            exchanges_per_s: per_s(exchanges.total as f64),
            warnings,
            counters: Counters {
                capture,
                decode: engine.decode.clone(),
                tcp,
                http,
                exchanges,
            },
        }
    }

    /// A readable table for a terminal.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("files", self.files.len().to_string()),
            ("packets", self.packets.to_string()),
            ("bytes", human_bytes(self.bytes)),
            ("capture span", format!("{:.3} s", self.capture_seconds)),
            ("tcp flows", self.flows.to_string()),
            ("http exchanges", self.exchanges.to_string()),
            ("  answered", self.counters.exchanges.answered.to_string()),
            ("  unanswered", self.unanswered.to_string()),
            (
                "gaps",
                format!("{} ({} missing)", self.gaps, human_bytes(self.gap_bytes)),
            ),
            ("retransmits", self.retransmits.to_string()),
            ("parse errors", self.parse_errors.to_string()),
            (
                "odd requests",
                format!(
                    "{} malformed ({} head too large), {} HTTP/0.9",
                    self.counters.http.malformed_requests,
                    self.counters.http.head_too_large_requests,
                    self.counters.http.http09_requests
                ),
            ),
            (
                "tunnels",
                format!(
                    "{} ({} from clients, {} from servers)",
                    self.counters.http.tunnels,
                    human_bytes(self.counters.http.tunnel_bytes_client),
                    human_bytes(self.counters.http.tunnel_bytes_server)
                ),
            ),
            ("evictions", self.evictions.to_string()),
            ("skipped frames", self.skipped_frames.to_string()),
            ("elapsed", format!("{:.3} s", self.elapsed_seconds)),
            (
                "throughput",
                format!(
                    "{:.1} MB/s, {:.0} packets/s, {:.0} exchanges/s",
                    self.throughput_mb_per_s, self.packets_per_s, self.exchanges_per_s
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<width$}  {v}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

/// HTTP parse failures: the counters named `parse_error_*` (not their total
/// `parse_errors`, which would count every failure twice).
fn parse_errors(http: &Http1Stats) -> u64 {
    match serde_json::to_value(http) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| k.starts_with("parse_error_"))
            .filter_map(|(_, v)| v.as_u64())
            .sum(),
        _ => 0,
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_errors_are_counted_once() {
        let http = super::Http1Stats {
            parse_errors: 3,
            parse_error_token: 2,
            parse_error_header_too_large: 1,
            ..Default::default()
        };
        assert_eq!(super::parse_errors(&http), 3);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(super::human_bytes(12), "12 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
