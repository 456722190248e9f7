//! Live capture on one or more interfaces, fed to the engine; prints JSON lines.
//!
//! ```text
//! live_capture --iface m1 [--iface IF]... [--port 5555]... [--filter BPF]
//!              [--seconds N] [--no-exchanges] [--queue BATCHES] [--batch FRAMES]
//! ```
//! Stops after `--seconds` or on SIGTERM/SIGINT. Output on stdout, one JSON
//! object per line: `{"type":"ready",...}` once capturing, then
//! `{"type":"exchange","method":..,"target":..,"status":..}` per exchange
//! (unless `--no-exchanges`), and a final `{"type":"stats",...}` line with
//! frames, kernel drops, queue drops, exchanges and CPU time.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stoa_tap::pipeline::{Engine, EngineConfig};
use stoa_tap::source::live::{self, LiveConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    cfg: LiveConfig,
    seconds: Option<f64>,
    print_exchanges: bool,
    queue: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cfg: LiveConfig {
            ports: Vec::new(),
            ..LiveConfig::default()
        },
        seconds: None,
        print_exchanges: true,
        queue: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--iface" | "-i" => args.cfg.interfaces.push(val(&a)?),
            "--port" | "-p" => args
                .cfg
                .ports
                .push(val(&a)?.parse().map_err(|e| format!("--port: {e}"))?),
            "--filter" => args.cfg.filter = Some(val(&a)?),
            "--seconds" => {
                args.seconds = Some(val(&a)?.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            "--queue" => args.queue = val(&a)?.parse().map_err(|e| format!("--queue: {e}"))?,
            "--batch" => args.cfg.batch = val(&a)?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--immediate" => args.cfg.immediate = true,
            "--no-exchanges" => args.print_exchanges = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.cfg.ports.is_empty() {
        args.cfg.ports.push(5555);
    }
    Ok(args)
}

/// CPU seconds (user + system) from a /proc stat line.
fn cpu_seconds(stat: &str) -> f64 {
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, i.e. the 12th and 13th after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// (CPU of the capture threads, CPU of the whole process), in seconds.
fn cpu_usage() -> (f64, f64) {
    let total = std::fs::read_to_string("/proc/self/stat")
        .map(|s| cpu_seconds(&s))
        .unwrap_or(0.0);
    let mut capture = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with("cap-") {
                capture += std::fs::read_to_string(t.path().join("stat"))
                    .map(|s| cpu_seconds(&s))
                    .unwrap_or(0.0);
            }
        }
    }
    (capture, total)
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("live_capture: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("live_capture: cannot install signal handler: {e}");
            std::process::exit(1);
        }
    }

    let (tx, rx) = mpsc::sync_channel(args.queue.max(1));
    let filter = args.cfg.filter_expression();
    let handle = match live::start(args.cfg, tx) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("live_capture: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let ready = serde_json::json!({
        "type": "ready",
        "interfaces": handle.interfaces(),
        "filter": filter,
    });
    let _ = writeln!(out, "{ready}");
    let _ = out.flush();

    // Parsed as the daemon parses for learning: of the response fields,
    // only those the learner reads are kept (printing reads none).
    let mut cfg = EngineConfig::default();
    cfg.http.response_headers =
        stoa_tap::http1::ResponseHeaders::Only(contracts::LEARNED_RESPONSE_HEADERS);
    let mut engine = Engine::new(cfg);
    let feed = |engine: &mut Engine, batch: stoa_tap::source::FrameBatch| {
        batch.iter().for_each(|p| engine.packet(&p));
    };
    let print = |engine: &mut Engine, out: &mut dyn Write, print: bool| {
        for ex in engine.take_exchanges() {
            if print {
                let line = serde_json::json!({
                    "type": "exchange",
                    "method": ex.request.method,
                    "target": ex.request.target,
                    "status": ex.response.as_ref().map(|r| r.status),
                });
                let _ = writeln!(out, "{line}");
            }
            stoa_tap::http1::recycle::recycle(ex);
        }
    };

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
    let (capture_cpu, _) = cpu_usage();
    let ifaces = handle.stop();
    // The capture threads have ended and dropped their senders: drain the rest.
    while let Ok(batch) = rx.recv_timeout(Duration::from_secs(1)) {
        feed(&mut engine, batch);
    }
    engine.finish();
    print(&mut engine, &mut out, args.print_exchanges);
    let (_, process_cpu) = cpu_usage();
    let sum = |f: fn(&live::InterfaceStats) -> u64| ifaces.iter().map(f).sum::<u64>();
    let stats = serde_json::json!({
        "type": "stats",
        "wall_s": started.elapsed().as_secs_f64(),
        "frames": sum(|s| s.frames),
        "bytes": sum(|s| s.bytes),
        "kernel_received": sum(|s| s.kernel_received),
        "kernel_dropped": sum(|s| s.kernel_dropped),
        "if_dropped": sum(|s| s.if_dropped),
        "frames_dropped_queue": sum(|s| s.frames_dropped_queue),
        "exchanges": engine.exchanges.total,
        "answered": engine.exchanges.answered,
        "with_gap": engine.exchanges.with_gap,
        "capture_cpu_s": capture_cpu,
        "process_cpu_s": process_cpu,
        "interfaces": ifaces,
        "engine": {
            "capture": engine.capture,
            "exchanges": engine.exchanges,
            "tcp": engine.tcp_stats(),
            "http": engine.http_stats(),
        },
    });
    let _ = writeln!(out, "{stats}");
    let _ = out.flush();
}
