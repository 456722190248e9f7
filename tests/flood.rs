//! Flow-table floods: `stoa-tap analyze` on generated captures holding one
//! real HTTP exchange around a flood of connections that never complete
//! (200k SYN-only, or 150k half-open connections each holding a partial
//! request head). The exchange must come out whole, the flood must be what is
//! evicted, and the peak resident memory (from `/usr/bin/time -v`, of
//! `analyze FILE --json`) must stay near the default 64 MiB memory cap.
//!
//! Measured here (debug build, whose idle process is ~27 MB against ~16 MB
//! optimised): SYN flood 80 MB (before the flow-table rework: 156 MB, the
//! real exchange lost), partial heads 92 MB (before: 179 MB). Writing the
//! exchanges too (`--exchanges`, a second thread) adds ~10 MB that the
//! allocator keeps for its purge delay; that run is not held to the bound.
//!
//! The captures are written at test time (tens of MB, not committed).

use serde_json::Value;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

mod support;
use support::temp_dir;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stoa-tap")
}

/// Default `--memory-cap` of `analyze` (64 MiB).
const CAP_BYTES: u64 = 64 << 20;
/// Allowed above the cap in the terms (process baseline included,
/// measured on an optimised build: ~16 MB of it is the idle process).
const SLACK_BYTES: u64 = 30_000_000;
/// Allowed growth over the idle process (the slack less the idle process of
/// an optimised build), for builds whose idle process is larger.
const GROWTH_SLACK_BYTES: u64 = 14_000_000;

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

/// A classic pcap writer for Ethernet/IPv4/TCP frames, 10 us apart.
struct PcapOut {
    w: BufWriter<std::fs::File>,
    ts_us: u64,
}

impl PcapOut {
    fn create(path: &Path) -> PcapOut {
        let f = std::fs::File::create(path).expect("create capture");
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&65535u32.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        w.write_all(&hdr).expect("write header");
        PcapOut {
            w,
            ts_us: 1_700_000_000_000_000,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) {
        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&65535u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum (never validated), urgent
        tcp.extend_from_slice(payload);
        let total = (20 + tcp.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = Vec::with_capacity(14 + ip.len() + tcp.len());
        frame.extend_from_slice(&[2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        self.ts_us += 10;
        let len = frame.len() as u32;
        let mut rec = Vec::with_capacity(16 + frame.len());
        rec.extend_from_slice(&((self.ts_us / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((self.ts_us % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&frame);
        self.w.write_all(&rec).expect("write record");
    }

    fn finish(mut self) {
        self.w.flush().expect("flush capture");
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Deterministic xorshift for flood addresses, ports and sequence numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flood {
    /// A bare SYN per connection.
    SynOnly,
    /// A SYN and the start of a request head, never answered.
    PartialHead,
}

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];
const REQ_HEAD: &[u8] = b"POST /real/exchange HTTP/1.1\r\nHost: api\r\nContent-Length: 10\r\n\r\n";
const REQ_BODY: &[u8] = b"0123456789";
const RESP: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

/// Writes the real exchange's handshake and request head, `n` flood
/// connections, then the request body, the response and the close.
fn write_flood(path: &Path, flood: Flood, n: u32) {
    let mut out = PcapOut::create(path);
    let cp = 40000;
    let (c0, s0) = (1000u32, 5000u32);
    out.tcp(CLIENT, cp, SERVER, 5555, c0, 0, SYN, b"");
    out.tcp(SERVER, 5555, CLIENT, cp, s0, c0 + 1, SYN | ACK, b"");
    out.tcp(CLIENT, cp, SERVER, 5555, c0 + 1, s0 + 1, ACK, b"");
    out.tcp(
        CLIENT,
        cp,
        SERVER,
        5555,
        c0 + 1,
        s0 + 1,
        ACK | PSH,
        REQ_HEAD,
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let r = rng.next();
        // Distinct sources in 172.16.0.0/12, random ports and sequence numbers.
        let src = [172, 16 + ((i >> 16) & 15) as u8, (i >> 8) as u8, i as u8];
        let sport = 1024 + (r % 60000) as u16;
        let isn = (r >> 32) as u32;
        out.tcp(src, sport, SERVER, 5555, isn, 0, SYN, b"");
        if flood == Flood::PartialHead {
            out.tcp(
                src,
                sport,
                SERVER,
                5555,
                isn.wrapping_add(1),
                1,
                ACK | PSH,
                b"GET /flood HTTP/1.1\r\nHost: api\r\nX-Partial: ",
            );
        }
    }
    let c1 = c0 + 1 + REQ_HEAD.len() as u32;
    let c2 = c1 + REQ_BODY.len() as u32;
    let s1 = s0 + 1 + RESP.len() as u32;
    out.tcp(CLIENT, cp, SERVER, 5555, c1, s0 + 1, ACK | PSH, REQ_BODY);
    out.tcp(SERVER, 5555, CLIENT, cp, s0 + 1, c2, ACK | PSH, RESP);
    out.tcp(CLIENT, cp, SERVER, 5555, c2, s1, ACK | FIN, b"");
    out.tcp(SERVER, 5555, CLIENT, cp, s1, c2 + 1, ACK | FIN, b"");
    out.tcp(CLIENT, cp, SERVER, 5555, c2 + 1, s1 + 1, ACK, b"");
    out.finish();
}

struct Run {
    max_rss_bytes: u64,
    summary: Value,
    exchanges: Vec<Value>,
}

/// `/usr/bin/time -v stoa-tap analyze FILE --json [--exchanges OUT]`.
fn analyze_timed(capture: &Path, exchanges: Option<&Path>) -> Run {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time is missing: install the apt package `time`"
    );
    let mut cmd = Command::new(time);
    cmd.arg("-v")
        .arg(bin())
        .args(["analyze", "--no-progress", "--json"])
        .arg(capture);
    if let Some(p) = exchanges {
        cmd.arg("--exchanges").arg(p);
    }
    let out = cmd.output().expect("run /usr/bin/time stoa-tap analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "analyze failed: {stderr}");
    let kb: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no maximum RSS in /usr/bin/time output: {stderr}"));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary is JSON");
    let exchanges = exchanges
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("exchanges file");
            text.lines()
                .map(|l| serde_json::from_str(l).expect("exchange line is JSON"))
                .collect()
        })
        .unwrap_or_default();
    Run {
        max_rss_bytes: kb * 1024,
        summary,
        exchanges,
    }
}

fn check_flood(flood: Flood, n: u32) {
    let dir = temp_dir("flood");
    // The idle process of this build: the same binary on the real exchange alone.
    let alone = dir.path().join("alone.pcap");
    write_flood(&alone, flood, 0);
    let idle = analyze_timed(&alone, None);
    let capture = dir.path().join("flood.pcap");
    write_flood(&capture, flood, n);
    // Memory is measured on the analyzer alone (summary only), as the flood
    // would meet it; the exchanges are checked on a second run that writes them.
    let run = analyze_timed(&capture, None);
    let written = analyze_timed(&capture, Some(&dir.path().join("flood.jsonl")));
    let tcp = &run.summary["counters"]["tcp"];
    eprintln!(
        "{flood:?} x{n}: max RSS {} KiB (idle process {} KiB); flows opened {}, evicted {} \
         (half-open {}, idle {}, active {}), accounted peak {} bytes",
        run.max_rss_bytes / 1024,
        idle.max_rss_bytes / 1024,
        tcp["flows_opened"],
        tcp["flows_evicted"],
        tcp["evicted_half_open"],
        tcp["evicted_idle"],
        tcp["evicted_active"],
        tcp["peak_memory_bytes"],
    );

    eprintln!(
        "  with --exchanges: max RSS {} KiB",
        written.max_rss_bytes / 1024
    );

    // One exchange of the capture was answered: the real one.
    // (Each partial head is an exchange of its own, cut short and unanswered.)
    let total = match flood {
        Flood::SynOnly => 1,
        Flood::PartialHead => u64::from(n) + 1,
    };
    assert_eq!(run.summary["exchanges"], total);
    assert_eq!(run.summary["counters"]["exchanges"]["answered"], 1);
    assert_eq!(
        written.summary["counters"]["tcp"], *tcp,
        "both runs saw the same"
    );

    // The real exchange is whole: request with its body, response 201.
    let real: Vec<&Value> = written
        .exchanges
        .iter()
        .filter(|e| e["request"]["target"] == "/real/exchange")
        .collect();
    assert_eq!(real.len(), 1, "the real exchange is recorded once");
    let ex = real[0];
    assert_eq!(ex["request"]["method"], "POST");
    assert_eq!(ex["request"]["body"]["wire_len"], 10);
    assert_eq!(ex["response"]["status"], 201, "{ex}");
    assert_eq!(ex["response"]["body"]["wire_len"], 2);
    let anomalies = ex["anomalies"].as_object().cloned().unwrap_or_default();
    assert!(
        anomalies.values().all(|v| v != &Value::Bool(true)),
        "the real exchange has no anomaly: {anomalies:?}"
    );

    // The flood was evicted (it does not fit the cap or the flow limit), and
    // nothing else was.
    assert_eq!(tcp["flows_opened"], u64::from(n) + 1);
    let evicted = tcp["flows_evicted"].as_u64().unwrap_or(0);
    assert!(evicted > 0, "the flood exceeds the table: {tcp}");
    assert_eq!(tcp["evicted_half_open"].as_u64(), Some(evicted), "{tcp}");
    assert_eq!(tcp["evicted_active"], 0);
    assert_eq!(tcp["evicted_idle"], 0);
    let peak = tcp["peak_memory_bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(
        peak <= CAP_BYTES + (1 << 20),
        "accounted peak {peak} over the cap"
    );

    // Memory: within the cap plus the slack, counted over this build's idle
    // process (an unoptimised binary's idle process is ~10 MB larger than the
    // ~16 MB the slack was set with); with an optimised build, also in absolute terms.
    let growth = run.max_rss_bytes.saturating_sub(idle.max_rss_bytes);
    assert!(
        growth <= CAP_BYTES + GROWTH_SLACK_BYTES,
        "RSS grew by {growth} bytes over the idle process, more than cap + {GROWTH_SLACK_BYTES}"
    );
    if !cfg!(debug_assertions) {
        assert!(
            run.max_rss_bytes <= CAP_BYTES + SLACK_BYTES,
            "max RSS {} over cap + 30 MB",
            run.max_rss_bytes
        );
    }
}

#[test]
fn syn_flood_keeps_the_real_exchange_within_the_memory_cap() {
    check_flood(Flood::SynOnly, 200_000);
}

#[test]
fn partial_head_flood_keeps_the_real_exchange_within_the_memory_cap() {
    check_flood(Flood::PartialHead, 150_000);
}
