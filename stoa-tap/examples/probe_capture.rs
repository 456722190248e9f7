//! The eBPF probe on one interface, fed to the engine; prints JSON lines.
//!
//! ```text
//! probe_capture --iface t0 [--port 5555]... [--direction auto|ingress|egress|both]
//!               [--ring-mb 64] [--seconds N] [--no-exchanges] [--sample-bytes N]
//!               [--no-engine]
//! probe_capture --attached t0
//! ```
//! `--attached` prints the TCX programs attached to the interface as JSON
//! (`[["ingress","stoa_tap_ingress"],...]`) and exits.
//! Stops after `--seconds` or on SIGTERM/SIGINT. Output on stdout, one JSON
//! object per line: `{"type":"ready"}` once attached, then one
//! `{"type":"exchange",...}` per exchange (method, target, status, body
//! lengths, anomalies, timestamps (ns since the Unix epoch), and the SHA-256 of the response body when the whole body
//! fits in `--sample-bytes`), and a final `{"type":"stats",...}` line with the
//! probe's counters and the engine's. With `--no-engine` the segments read
//! from the ring are counted and dropped: the cost of the probe and its reader
//! alone.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stoa_tap::pipeline::{Engine, EngineConfig};
use stoa_tap::source::ebpf::{self, Hooks, ProbeBatch, ProbeConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    cfg: ProbeConfig,
    seconds: Option<f64>,
    print_exchanges: bool,
    sample_bytes: usize,
    engine: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cfg: ProbeConfig {
            ports: Vec::new(),
            ..ProbeConfig::default()
        },
        seconds: None,
        print_exchanges: true,
        sample_bytes: 4 << 20,
        engine: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--iface" | "-i" => args.cfg.interface = val(&a)?,
            "--port" | "-p" => args
                .cfg
                .ports
                .push(val(&a)?.parse().map_err(|e| format!("--port: {e}"))?),
            "--direction" => {
                args.cfg.hooks = match val(&a)?.as_str() {
                    "auto" => Hooks::Auto,
                    "ingress" => Hooks::Ingress,
                    "egress" => Hooks::Egress,
                    "both" => Hooks::Both,
                    other => return Err(format!("--direction: unknown {other:?}")),
                }
            }
            "--ring-mb" => {
                let mb: u32 = val(&a)?.parse().map_err(|e| format!("--ring-mb: {e}"))?;
                args.cfg.ring_bytes = mb.saturating_mul(1 << 20);
            }
            "--seconds" => {
                args.seconds = Some(val(&a)?.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            "--sample-bytes" => {
                args.sample_bytes = val(&a)?
                    .parse()
                    .map_err(|e| format!("--sample-bytes: {e}"))?
            }
            "--no-exchanges" => args.print_exchanges = false,
            "--no-engine" => args.engine = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.cfg.ports.is_empty() {
        args.cfg.ports.push(5555);
    }
    Ok(args)
}

fn feed(engine: &mut Engine, batch: ProbeBatch) {
    for (head, payload) in batch.iter() {
        engine.segment_cut(&head.segment(payload), head.cut, head.ts_ns);
    }
}

fn print(engine: &mut Engine, out: &mut dyn Write, print: bool) {
    for ex in engine.take_exchanges() {
        if !print {
            continue;
        }
        let resp = ex.response.as_ref();
        let sha = resp.and_then(|r| {
            let b = &r.body;
            (!b.sample_truncated && b.sample.len() as u64 == b.decoded_len)
                .then(|| format!("{:x}", Sha256::digest(&b.sample)))
        });
        let line = serde_json::json!({
            "type": "exchange",
            "server": ex.flow.server.to_string(),
            "method": ex.request.method,
            "target": ex.request.target,
            "status": resp.map(|r| r.status),
            "request_body_len": ex.request.body.wire_len,
            "response_body_len": resp.map(|r| r.body.decoded_len),
            "response_sha256": sha,
            "anomalies": ex.anomalies,
            "request_first_ns": ex.timing.request_first_ns,
            "request_last_ns": ex.timing.request_last_ns,
            "response_first_ns": ex.timing.response_first_ns,
            "response_last_ns": ex.timing.response_last_ns,
        });
        let _ = writeln!(out, "{line}");
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--attached") {
        let iface = argv.get(2).map(String::as_str).unwrap_or("lo");
        match ebpf::attached(iface) {
            Ok(list) => println!("{}", serde_json::json!(list)),
            Err(e) => {
                eprintln!("probe_capture: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("probe_capture: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("probe_capture: cannot install signal handler: {e}");
            std::process::exit(1);
        }
    }
    let (tx, rx) = mpsc::sync_channel::<ProbeBatch>(4096);
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = dropped.clone();
    let engine_on = args.engine;
    let sink = Box::new(move |batch: ProbeBatch| {
        if !engine_on {
            return;
        }
        let n = batch.len() as u64;
        if tx.try_send(batch).is_err() {
            d.fetch_add(n, Ordering::Relaxed);
        }
    });
    let handle = match ebpf::start(args.cfg.clone(), sink) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("probe_capture: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let _ = writeln!(
        out,
        "{}",
        serde_json::json!({"type": "ready", "interface": args.cfg.interface})
    );
    let _ = out.flush();

    let mut ecfg = EngineConfig::default();
    ecfg.http.body_sample_bytes = args.sample_bytes;
    ecfg.tcp.ports = stoa_tap::tcp::ServerPorts::List(args.cfg.ports.clone());
    let mut engine = Engine::new(ecfg);
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(batch) => {
                feed(&mut engine, batch);
                while let Ok(more) = rx.try_recv() {
                    feed(&mut engine, more);
                }
                print(&mut engine, &mut out, args.print_exchanges);
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let probe = handle.stats();
    handle.stop();
    // The reader has ended and dropped its sender: drain the rest.
    while let Ok(batch) = rx.recv_timeout(Duration::from_secs(1)) {
        feed(&mut engine, batch);
    }
    engine.finish();
    print(&mut engine, &mut out, args.print_exchanges);
    let stats = serde_json::json!({
        "type": "stats",
        "wall_s": started.elapsed().as_secs_f64(),
        "probe": probe,
        "segments_dropped_queue": dropped.load(Ordering::Relaxed),
        "exchanges": engine.exchanges.total,
        "answered": engine.exchanges.answered,
        "with_gap": engine.exchanges.with_gap,
        "engine": {
            "exchanges": engine.exchanges,
            "tcp": engine.tcp_stats(),
            "http": engine.http_stats(),
        },
    });
    let _ = writeln!(out, "{stats}");
    let _ = out.flush();
}
