//! `stoa-tap analyze`: captures in, exchanges and a summary out.

use super::exit;
use clap::Args;
use contracts::Exchange;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use stoa_tap::http1::ResponseHeaders;
use stoa_tap::pipeline::{Engine, EngineConfig};
use stoa_tap::source::pcap_file::{expand_inputs, Capture, SourceError};
use stoa_tap::summary::Summary;
use stoa_tap::tcp::ServerPorts;

/// Engine options shared by every command that reads captures.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Server port to analyse (repeatable), or `any` to detect HTTP on every port.
    #[arg(long = "port", value_name = "PORT|any", default_value = "5555")]
    ports: Vec<String>,
    /// Close connections idle for this many seconds of capture time.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    idle_timeout: u64,
    /// Memory for reassembly buffers and parser state, in MiB; least recently
    /// active connections are evicted (and counted) beyond it.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    memory_cap: usize,
    /// Most connections tracked at once.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_flows: usize,
    /// Bytes of each decoded body kept in the exchange sample.
    #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES")]
    body_sample: usize,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Options of `analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Capture files (pcap, pcapng, optionally .gz) or directories of them
    /// (e.g. tcpdump -C/-G rotations), read as one time-ordered capture.
    #[arg(required = true, value_name = "FILE|DIR")]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write every exchange as one JSON object per line to this file (`-` for
    /// stdout): `request.target` normalised and `request.raw_target` as sent.
    /// Credentials and personal data are redacted (see --raw-exchanges).
    #[arg(long, value_name = "FILE")]
    exchanges: Option<PathBuf>,
    /// Write exchanges exactly as seen, secrets included (local debugging only).
    #[arg(long, requires = "exchanges")]
    raw_exchanges: bool,
    #[command(flatten)]
    contracts: super::contracts::ContractArgs,
}

fn parse_ports(raw: &[String]) -> Result<ServerPorts, String> {
    let mut ports = Vec::new();
    for r in raw.iter().flat_map(|r| r.split(',')) {
        let r = r.trim();
        if r.eq_ignore_ascii_case("any") {
            return Ok(ServerPorts::Any);
        }
        match r.parse::<u16>() {
            Ok(p) if p != 0 => ports.push(p),
            _ => {
                return Err(format!(
                    "invalid --port value {r:?}: expected 1-65535 or `any`"
                ))
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ServerPorts::List(ports))
}

fn source_exit(e: &SourceError) -> i32 {
    match e {
        SourceError::Io { .. } => exit::UNREADABLE,
        SourceError::NotACapture { .. } | SourceError::EmptyDirectory { .. } => exit::NOT_A_CAPTURE,
        SourceError::Corrupt { .. } => exit::CORRUPT,
    }
}

/// What a pass over the captures produced.
pub struct CaptureRun {
    /// The engine, finished, with all its counters.
    pub engine: Engine,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Non-fatal input problems.
    pub warnings: Vec<String>,
    /// Wall-clock seconds.
    pub elapsed: f64,
    /// Exit code so far (non-zero when an input turned out corrupt midway).
    pub status: i32,
    /// First error of the exchange sink, if any.
    pub sink_error: Option<std::io::Error>,
}

/// Reads every input as one capture, handing each exchange to `sink`, with
/// the response header fields `response_headers` says.
/// Errors before any packet was read return the exit code.
pub fn run_captures(
    inputs: &[PathBuf],
    args: &EngineArgs,
    response_headers: ResponseHeaders,
    mut sink: impl FnMut(Exchange) -> std::io::Result<()>,
) -> Result<CaptureRun, i32> {
    let ports = parse_ports(&args.ports).map_err(|e| {
        eprintln!("error: {e}");
        exit::USAGE
    })?;
    let (files, warnings) = expand_inputs(inputs).map_err(|e| {
        eprintln!("error: {e}");
        source_exit(&e)
    })?;
    let mut capture = Capture::open(&files).map_err(|e| {
        eprintln!("error: {e}");
        source_exit(&e)
    })?;
    let mut warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();

    let mut cfg = EngineConfig::default();
    cfg.tcp.ports = ports;
    cfg.tcp.idle_timeout_ns = args.idle_timeout.saturating_mul(1_000_000_000);
    cfg.tcp.memory_cap = args.memory_cap.saturating_mul(1 << 20);
    cfg.tcp.max_flows = args.max_flows.max(1);
    cfg.http.body_sample_bytes = args.body_sample;
    cfg.http.response_headers = response_headers;
    let mut engine = Engine::new(cfg);

    let progress =
        (!args.no_progress && std::io::stderr().is_terminal() && capture.total_len() > 32 << 20)
            .then(|| {
                let pb = indicatif::ProgressBar::new(capture.total_len());
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                pb
            });

    let started = Instant::now();
    let mut sink_error: Option<std::io::Error> = None;
    let mut status = exit::OK;
    let mut n: u64 = 0;
    let mut drain = |engine: &mut Engine, sink_error: &mut Option<std::io::Error>| {
        for ex in engine.take_exchanges() {
            if sink_error.is_none() {
                if let Err(e) = sink(ex) {
                    *sink_error = Some(e);
                }
            }
        }
    };
    loop {
        match capture.next_with(|pkt| engine.packet(&pkt)) {
            Ok(Some(())) => {}
            Ok(None) => break,
            Err(e) => {
                // Keep everything read before the bad record.
                eprintln!("error: {e}");
                status = source_exit(&e);
                break;
            }
        }
        n += 1;
        if engine.has_exchanges() {
            drain(&mut engine, &mut sink_error);
        }
        if n.is_multiple_of(65536) {
            if let Some(pb) = &progress {
                pb.set_position(capture.bytes_read());
            }
        }
    }
    // Connections still open are closed in steps, their exchanges taken
    // after each, so a capture ending on a flood does not hold them all.
    while !engine.finish_step(FINISH_STEP) {
        drain(&mut engine, &mut sink_error);
    }
    drain(&mut engine, &mut sink_error);
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    for w in capture.take_warnings() {
        tracing::warn!(warning = %w, "input");
        warnings.push(w.to_string());
    }
    // Frames cut by the snap length and nothing to show for it: say why,
    // not only through a counter.
    let cut = engine.capture.snaplen_truncated;
    if cut > 0 && engine.exchanges.total == 0 {
        let snaplen = capture
            .snaplen()
            .map_or_else(|| "unknown".to_string(), |s| s.to_string());
        tracing::warn!(
            snaplen = %snaplen,
            snaplen_truncated = cut,
            "frames cut by the snap length and no exchange found"
        );
        warnings.push(format!(
            "{cut} frames were cut by the capture's snap length ({snaplen} bytes) \
             (counter snaplen_truncated) and no exchange came out: capture with -s 0 (262144)"
        ));
    }
    Ok(CaptureRun {
        engine,
        files,
        warnings,
        elapsed,
        status,
        sink_error,
    })
}

/// Connections closed per step at the end of the captures.
const FINISH_STEP: usize = 4096;

/// The response fields kept when exchanges only feed the learner.
const LEARNED: ResponseHeaders = ResponseHeaders::Only(contracts::LEARNED_RESPONSE_HEADERS);

/// Exchanges per batch handed to the consumer thread.
const BATCH: usize = 64;

/// Where exchanges go: the contract learner and the JSON-lines file.
struct Consumer {
    learner: Option<super::contracts::Learner>,
    out: Option<Box<dyn Write + Send>>,
    redaction: contracts::RedactionConfig,
    error: Option<std::io::Error>,
}

impl Consumer {
    fn consume(&mut self, ex: &Exchange) {
        if let Some(l) = self.learner.as_mut() {
            l.observe(ex);
        }
        if self.error.is_some() {
            return;
        }
        if let Some(w) = self.out.as_mut() {
            let mut ex = contracts::redact::redact_exchange(ex, &self.redaction);
            if ex.request.raw_target.is_empty() {
                // The engine keeps the target as sent only where it differs
                // from the normalised one; the output always carries both.
                ex.request.raw_target = ex.request.target.as_str().into();
            }
            let r = serde_json::to_writer(&mut *w, &ex)
                .map_err(std::io::Error::other)
                .and_then(|()| w.write_all(b"\n"));
            if let Err(e) = r {
                self.error = Some(e);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(w) = self.out.as_mut() {
            if let Err(e) = w.flush() {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// Runs `analyze`; returns the exit code.
pub fn run(args: AnalyzeArgs) -> i32 {
    let out: Option<Box<dyn Write + Send>> = match &args.exchanges {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(BufWriter::new(std::io::stdout()))),
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(Box::new(BufWriter::with_capacity(1 << 20, f))),
            Err(e) => {
                eprintln!("error: {}: cannot create: {e}", p.display());
                return exit::OUTPUT;
            }
        },
    };
    let learner = match args.contracts.learner() {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut redaction = match args.contracts.inference.config() {
        Ok(c) => c.redaction,
        Err(code) => return code,
    };
    if args.raw_exchanges {
        redaction.enabled = false;
    }
    let consumer = Consumer {
        learner,
        out,
        redaction,
        error: None,
    };

    // Written exchanges carry every field; learning reads only a few.
    let keep = if consumer.out.is_some() {
        ResponseHeaders::All
    } else {
        LEARNED
    };
    if consumer.learner.is_none() && consumer.out.is_none() {
        // Nothing consumes exchanges: count them and drop them in place.
        let run = match run_captures(&args.inputs, &args.engine, LEARNED, |ex| {
            // Its buffers serve the next exchanges parsed.
            stoa_tap::http1::recycle::recycle(ex);
            Ok(())
        }) {
            Ok(r) => r,
            Err(code) => return code,
        };
        return report(&args, run, None, None);
    }
    // Learning and writing run on their own thread, fed in batches, so the
    // capture thread only parses.
    // Consumed batches come back to the capture thread, which allocated
    // their buffers: it frees them into its own pool and parses the next
    // exchanges into them (no cross-thread free, no allocation per exchange).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Exchange>>(4);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<Exchange>>(4);
    let worker = std::thread::spawn(move || {
        let mut c = consumer;
        for batch in rx {
            for ex in &batch {
                c.consume(ex);
            }
            // When the capture thread is behind on taking them back, the
            // batch is simply freed here.
            let _ = back_tx.try_send(batch);
        }
        c.finish();
        c
    });
    let mut batch: Vec<Exchange> = Vec::with_capacity(BATCH);
    let run = run_captures(&args.inputs, &args.engine, keep, |ex| {
        batch.push(ex);
        if batch.len() >= BATCH {
            let next = match back_rx.try_recv() {
                Ok(mut used) => {
                    stoa_tap::http1::recycle::recycle_all(&mut used);
                    used
                }
                Err(_) => Vec::with_capacity(BATCH),
            };
            let full = std::mem::replace(&mut batch, next);
            tx.send(full)
                .map_err(|_| std::io::Error::other("exchange consumer stopped"))?;
        }
        Ok(())
    });
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    drop(tx);
    let consumer = match worker.join() {
        Ok(c) => c,
        Err(_) => {
            eprintln!("error: the contract learner failed");
            return exit::FAILURE;
        }
    };
    let run = match run {
        Ok(r) => r,
        Err(code) => return code,
    };
    report(&args, run, consumer.error, consumer.learner.as_ref())
}

/// Prints the summary (and the endpoint table), writes the contract documents.
fn report(
    args: &AnalyzeArgs,
    run: CaptureRun,
    consumer_error: Option<std::io::Error>,
    learner: Option<&super::contracts::Learner>,
) -> i32 {
    let write_error = run.sink_error.or(consumer_error);
    let summary = Summary::of(
        &run.engine,
        run.files.iter().map(|f| f.display().to_string()).collect(),
        run.elapsed,
        run.warnings.clone(),
    );
    let mut rendered = if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: cannot render summary: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        summary.to_table()
    };
    if let Some(l) = learner {
        let summary_json = || serde_json::to_value(&summary).unwrap_or_default();
        if let Err(code) = l.write_outputs(&args.contracts, summary_json) {
            return code;
        }
        if !args.json {
            rendered.push('\n');
            rendered.push_str(&l.endpoint_table());
        }
    }
    // With exchanges on stdout, the summary goes to stderr to keep stdout JSON lines.
    let to_stderr = args
        .exchanges
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-");
    let printed = if to_stderr {
        std::io::stderr().write_all(rendered.as_bytes())
    } else {
        std::io::stdout().write_all(rendered.as_bytes())
    };
    if let Some(e) = write_error.or(printed.err()) {
        eprintln!("error: writing output: {e}");
        return exit::OUTPUT;
    }
    run.status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_ports(&["5555".into(), "80,8080".into()]),
            Ok(ServerPorts::List(vec![80, 5555, 8080]))
        );
        assert_eq!(parse_ports(&["any".into()]), Ok(ServerPorts::Any));
        assert!(parse_ports(&["0".into()]).is_err());
        assert!(parse_ports(&["http".into()]).is_err());
    }
}
