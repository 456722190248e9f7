//! Test harness for the TPROXY relay (used by `tests/tproxy.rs` and
//! `tests/bench/tproxy.sh`): runs the relay, feeds its tap events to the
//! HTTP/1 parser and prints JSON lines on stdout:
//! `{"event":"ready",...}`, one `{"event":"exchange",...}` per exchange, and
//! `{"event":"stats",...}` at the end. It stops when its stdin closes.
//!
//! ```text
//! ip netns exec TAPNS target/debug/examples/tproxy_relay --spoof < fifo
//! ```

use clap::Parser;
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use stoa_tap::flow::CloseReason;
use stoa_tap::http1::{recycle, Connection, Http1Config, Http1Stats, ResponseHeaders};
use stoa_tap::source::tproxy::rules::{self, RuleSpec};
use stoa_tap::source::tproxy::{self, GuardBackend, GuardSettings, TapReceiver, TproxyConfig};
use stoa_tap::source::TapEvent;

// The daemon's allocator (src/main.rs), so that the benchmark measures the
// relay as it ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Transparent listen address.
    #[arg(long, default_value = "[::]:15001")]
    listen: SocketAddr,
    /// Connect upstream from the client's address.
    #[arg(long)]
    spoof: bool,
    /// Capacity of the tap queue (events).
    #[arg(long, default_value_t = 65536)]
    tap_capacity: usize,
    /// Byte budget of the tap queue (payload bytes).
    #[arg(long, default_value_t = 32 << 20)]
    tap_bytes: usize,
    /// Idle timeout of relayed connections, milliseconds (0: none).
    #[arg(long, default_value_t = 900_000)]
    idle_timeout_ms: u64,
    /// Nice value of the analyzer thread (0: unchanged). Off by default: at
    /// 32 connections nice 19 gave the same relay throughput as nice 0 and
    /// only made the analyzer drop more.
    #[arg(long, default_value_t = 0)]
    analyzer_nice: i32,
    /// Never drain the tap queue (a stalled analyzer).
    #[arg(long)]
    stall: bool,
    /// SO_MARK of upstream sockets.
    #[arg(long, default_value_t = 2)]
    upstream_mark: u32,
    /// Worker threads of the relay's runtime.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Do not print one line per exchange (benchmarks).
    #[arg(long)]
    quiet: bool,
    /// Print the nft rules (TPROXY on `--rules-iface`, IPv4 and IPv6) and exit.
    #[arg(long)]
    print_rules: bool,
    /// Interface the printed rules divert.
    #[arg(long, default_value = "t0")]
    rules_iface: String,
    /// Instead of relaying, serve a fixed keep-alive HTTP/1.1 response on these
    /// addresses (a fast gateway stand-in for the benchmark).
    #[arg(long)]
    serve: Vec<SocketAddr>,
    /// Body size of the `--serve` response.
    #[arg(long, default_value_t = 1024)]
    serve_body: usize,
    /// Run the diversion guard for rules installed with it (`nft` or
    /// `iptables`); also makes `--print-rules` print the guarded rules.
    #[arg(long)]
    guard: Option<String>,
    /// Gateway port kept in the guard set.
    #[arg(long, default_value_t = 5555)]
    guard_port: u16,
    /// Most connections relayed at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
}

/// `--serve`: answers every request head (`\r\n\r\n`) with the same response.
fn serve(addrs: &[SocketAddr], body: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n"
    )
    .into_bytes();
    resp.extend((0..body).map(|i| b'a' + (i % 26) as u8));
    let resp: &'static [u8] = resp.leak();
    for &addr in addrs {
        let l = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind");
        rt.spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    let mut have = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        have.extend_from_slice(&buf[..n]);
                        let mut out = Vec::new();
                        while let Some(i) = memchr::memmem::find(&have, b"\r\n\r\n") {
                            have.drain(..i + 4);
                            out.extend_from_slice(resp);
                        }
                        if !out.is_empty() && s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// What the consumer saw besides the parser counters.
#[derive(Debug, Default)]
struct Seen {
    /// Events for a connection without `Open` (or after its `Close`).
    unknown_conn_events: u64,
    /// `Close` events received.
    closes: u64,
    /// Connections still open when the relay stopped (no `Close` seen).
    open_at_end: u64,
}

/// Parses the tap events; prints exchanges; returns the parser counters.
fn consume(mut rx: TapReceiver, quiet: bool, nice: i32) -> (Http1Stats, Seen) {
    if nice != 0 {
        if let Err(e) = tproxy::lower_thread_priority(nice) {
            eprintln!("tproxy_relay: cannot lower the analyzer's priority: {e}");
        }
    }
    // Parsed as the daemon parses for learning: of the response fields,
    // only those the learner reads are kept.
    let cfg = Http1Config {
        response_headers: ResponseHeaders::Only(contracts::LEARNED_RESPONSE_HEADERS),
        ..Http1Config::default()
    };
    let mut conns: HashMap<u64, Connection> = HashMap::new();
    let mut stats = Http1Stats::default();
    let mut out = Vec::new();
    let mut seen = Seen::default();
    let stdout = std::io::stdout();
    let mut batch = Vec::new();
    while rx
        .recv_batch(&mut batch, Duration::from_millis(100))
        .is_ok()
    {
        for ev in batch.drain(..) {
            match ev {
                TapEvent::Open { conn, flow, .. } => {
                    conns.insert(conn, Connection::new(flow));
                }
                TapEvent::Data {
                    conn,
                    dir,
                    data,
                    ts_ns,
                } => match conns.get_mut(&conn) {
                    Some(c) => c.on_data(&cfg, dir, &data, ts_ns, &mut out, &mut stats),
                    None => seen.unknown_conn_events += 1,
                },
                TapEvent::Gap {
                    conn,
                    dir,
                    len,
                    ts_ns,
                } => match conns.get_mut(&conn) {
                    Some(c) => c.on_gap(&cfg, dir, len, ts_ns, &mut out, &mut stats),
                    None => seen.unknown_conn_events += 1,
                },
                TapEvent::End {
                    conn,
                    dir,
                    kind,
                    ts_ns,
                } => match conns.get_mut(&conn) {
                    Some(c) => c.on_end(&cfg, dir, kind, ts_ns, &mut out, &mut stats),
                    None => seen.unknown_conn_events += 1,
                },
                TapEvent::Close { conn, ts_ns } => match conns.remove(&conn) {
                    Some(mut c) => {
                        seen.closes += 1;
                        c.on_close(&cfg, CloseReason::Closed, ts_ns, &mut out, &mut stats)
                    }
                    None => seen.unknown_conn_events += 1,
                },
            }
            if !out.is_empty() {
                let mut w = stdout.lock();
                for x in out.drain(..) {
                    if quiet {
                        recycle::recycle(x);
                        continue;
                    }
                    let line = json!({
                        "event": "exchange",
                        "client": x.flow.client.to_string(),
                        "server": x.flow.server.to_string(),
                        "method": x.request.method,
                        "target": x.request.target,
                        "status": x.response.as_ref().map(|r| r.status),
                        "request_body": x.request.body.wire_len,
                        "response_body": x.response.as_ref().map(|r| r.body.wire_len),
                    });
                    let _ = writeln!(w, "{line}");
                }
                let _ = w.flush();
            }
        }
    }
    // Connections still open when the relay stopped.
    seen.open_at_end = conns.len() as u64;
    for (_, mut c) in conns.drain() {
        c.on_close(&cfg, CloseReason::EndOfCapture, 0, &mut out, &mut stats);
    }
    (stats, seen)
}

fn main() {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if args.print_rules {
        let spec = RuleSpec {
            iface: Some(args.rules_iface.clone()),
            ipv6: true,
            guard: args.guard.is_some(),
            ..RuleSpec::default()
        };
        print!("{}", rules::nft_install(&spec));
        return;
    }
    if !args.serve.is_empty() {
        serve(&args.serve, args.serve_body);
        return;
    }
    let (tx, rx) = tproxy::channel(args.tap_capacity, args.tap_bytes);
    let cfg = TproxyConfig {
        listen: args.listen,
        spoof_client: args.spoof,
        upstream_mark: args.upstream_mark,
        worker_threads: args.workers,
        idle_timeout: (args.idle_timeout_ms > 0)
            .then(|| Duration::from_millis(args.idle_timeout_ms)),
        max_connections: args.max_connections,
        guard: match args.guard.as_deref() {
            None => None,
            Some("nft") => Some(GuardSettings::new(GuardBackend::Nft, vec![args.guard_port])),
            Some("iptables") => Some(GuardSettings::new(
                GuardBackend::Iptables,
                vec![args.guard_port],
            )),
            Some(other) => {
                eprintln!("tproxy_relay: --guard {other}: use nft or iptables");
                std::process::exit(2);
            }
        },
        ..TproxyConfig::default()
    };
    let mut relay = match tproxy::start(cfg, tx) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tproxy_relay: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "{}",
        json!({"event": "ready", "listen": relay.local_addr().to_string()})
    );
    let _ = std::io::stdout().flush();
    let (quiet, nice) = (args.quiet, args.analyzer_nice);
    let (consumer, stalled_rx) = if args.stall {
        (None, Some(rx))
    } else {
        (
            Some(std::thread::spawn(move || consume(rx, quiet, nice))),
            None,
        )
    };
    // Run until stdin closes.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    relay.shutdown();
    let stats = relay.stats();
    drop(relay);
    drop(stalled_rx);
    let (http, seen) = match consumer {
        Some(c) => c.join().expect("consumer thread"),
        None => (Http1Stats::default(), Seen::default()),
    };
    println!(
        "{}",
        json!({
            "event": "stats",
            "relay": stats,
            "http": http,
            "unknown_conn_events": seen.unknown_conn_events,
            "closes": seen.closes,
            "open_at_end": seen.open_at_end,
        })
    );
}
