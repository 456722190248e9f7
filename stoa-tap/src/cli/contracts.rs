//! Contract learning at the command line: `analyze --out`, `merge`, `diff`.

use super::analyze::{run_captures, EngineArgs};
use super::exit;
use clap::Args;
use contracts::{Exchange, InferenceConfig, Observations, TemplateHint};
use std::path::{Path, PathBuf};
use stoa_tap::http1::ResponseHeaders;

/// Contract options of `analyze`.
#[derive(Debug, Args)]
pub struct ContractArgs {
    /// Learn contracts and write them here: openapi.yaml, openapi.json,
    /// openapi/<api>.{yaml,json}, uac/<api>.json, observations.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write a self-contained HTML report here (summary and health,
    /// operations, latency histograms, statuses, timeline, security schemes,
    /// contracts): viewable offline, no network access.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// Inference options shared by the commands that learn contracts.
#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// File of known path templates, one per line (`/users/{userId}`, optionally
    /// preceded by a method); they always win over guesses.
    #[arg(long, value_name = "FILE")]
    pub hints: Option<PathBuf>,
    /// Extra sensitive field, parameter or header name pattern to redact
    /// (repeatable; `*` is a wildcard, otherwise a substring match).
    #[arg(long = "redact-field", value_name = "PATTERN")]
    pub redact_fields: Vec<String>,
    /// Tenant written into UAC drafts.
    #[arg(long, default_value = "default", value_name = "ID")]
    pub tenant: String,
}

impl InferenceArgs {
    /// The inference configuration these options describe.
    pub fn config(&self) -> Result<InferenceConfig, i32> {
        let mut cfg = InferenceConfig::default();
        if let Some(path) = &self.hints {
            let text = std::fs::read_to_string(path).map_err(|e| {
                eprintln!("error: {}: cannot read: {e}", path.display());
                exit::UNREADABLE
            })?;
            cfg.hints = TemplateHint::parse_list(&text).map_err(|e| {
                eprintln!("error: {}: {e}", path.display());
                exit::USAGE
            })?;
        }
        cfg.redaction
            .extra_field_patterns
            .extend(self.redact_fields.iter().cloned());
        cfg.tenant_id = self.tenant.clone();
        Ok(cfg)
    }
}

/// Observations being learned during a run.
pub struct Learner {
    cfg: InferenceConfig,
    obs: Observations,
}

impl ContractArgs {
    /// A learner when `--out` was given.
    pub fn learner(&self) -> Result<Option<Learner>, i32> {
        if self.out.is_none() && self.report.is_none() {
            return Ok(None);
        }
        let cfg = self.inference.config()?;
        Ok(Some(Learner {
            obs: Observations::new(&cfg),
            cfg,
        }))
    }
}

impl Learner {
    /// Adds one exchange.
    pub fn observe(&mut self, ex: &Exchange) {
        self.obs.observe(ex);
    }

    /// The per-endpoint table printed after the capture summary.
    pub fn endpoint_table(&self) -> String {
        contracts::summary::endpoint_table(&self.obs)
    }

    /// Writes every document into `--out`, and the `--report` page with the
    /// capture summary given.
    pub fn write_outputs(
        &self,
        args: &ContractArgs,
        summary: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), i32> {
        if let Some(dir) = &args.out {
            write_documents(dir, &self.obs, &self.cfg)?;
        }
        if let Some(path) = &args.report {
            let view = stoa_tap::view::build(summary(), &self.obs, &self.cfg);
            write_file(path, &stoa_tap::view::report_html(&view))?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), i32> {
    stoa_tap::daemon::persist::write_atomic(path, text.as_bytes()).map_err(|e| {
        eprintln!("error: cannot write: {e}");
        exit::OUTPUT
    })
}

/// Writes OpenAPI (combined and per API), UAC drafts and the observations.
pub fn write_documents(dir: &Path, obs: &Observations, cfg: &InferenceConfig) -> Result<(), i32> {
    for sub in [dir.to_path_buf(), dir.join("openapi"), dir.join("uac")] {
        std::fs::create_dir_all(&sub).map_err(|e| {
            eprintln!("error: {}: cannot create: {e}", sub.display());
            exit::OUTPUT
        })?;
    }
    let docs = contracts::openapi::emit(obs, cfg);
    for d in &docs {
        write_file(
            &dir.join("openapi").join(format!("{}.yaml", d.name)),
            &d.to_yaml(),
        )?;
        write_file(
            &dir.join("openapi").join(format!("{}.json", d.name)),
            &d.to_json(),
        )?;
    }
    let combined = contracts::openapi::combine(&docs, cfg);
    write_file(&dir.join("openapi.yaml"), &combined.to_yaml())?;
    write_file(&dir.join("openapi.json"), &combined.to_json())?;
    for (name, doc) in contracts::uac::emit(obs, cfg) {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        write_file(&dir.join("uac").join(format!("{name}.json")), &text)?;
    }
    write_file(&dir.join("observations.json"), &obs.to_json())?;
    Ok(())
}

/// Loads observations written by `analyze --out` or `merge`.
pub(super) fn load_observations(path: &Path) -> Result<Observations, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: {}: cannot read: {e}", path.display());
        exit::UNREADABLE
    })?;
    Observations::from_json(&text).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        exit::NOT_A_CAPTURE
    })
}

/// True if the file starts like a JSON document (observations) rather than a capture.
pub(super) fn is_json(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// Options of `merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Observation files (`observations.json` from `analyze --out` or `merge`).
    #[arg(required = true, value_name = "SNAPSHOT")]
    inputs: Vec<PathBuf>,
    /// Where to write the merged observations.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Also write the documents (OpenAPI, UAC) of the merged observations here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs `merge`.
pub fn merge(args: MergeArgs) -> i32 {
    let mut merged: Option<Observations> = None;
    for p in &args.inputs {
        let obs = match load_observations(p) {
            Ok(o) => o,
            Err(code) => return code,
        };
        match merged.as_mut() {
            None => merged = Some(obs),
            Some(m) => m.merge(&obs),
        }
    }
    let Some(merged) = merged else {
        return exit::USAGE;
    };
    if let Err(code) = write_file(&args.output, &merged.to_json()) {
        return code;
    }
    if let Some(dir) = &args.out {
        if let Err(code) = write_documents(dir, &merged, merged.config()) {
            return code;
        }
    }
    println!(
        "merged {} snapshots: {} exchanges -> {}",
        args.inputs.len(),
        merged.exchanges(),
        args.output.display()
    );
    exit::OK
}

/// Options of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The declared OpenAPI 3.0 document (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
    /// Captures (files or directories) or observation files to compare with it.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    inference: InferenceArgs,
}

/// Runs `diff`: exit 0 when the traffic matches the spec, [`exit::DRIFT`] when it does not.
/// Observations from a mix of inputs: observation files (`.json`, merged)
/// and captures (analysed; `each` sees every exchange too).
pub(super) struct Inputs {
    pub obs: Observations,
    /// Exit status of reading the captures (non-zero: a capture was corrupt).
    pub status: i32,
    /// Whether any input was an observations file (no exchanges behind it).
    pub had_snapshots: bool,
}

/// Loads `inputs`: observation files are merged, captures analysed.
pub(super) fn load_inputs(
    inputs: &[PathBuf],
    engine: &EngineArgs,
    cfg: &InferenceConfig,
    mut each: impl FnMut(&Exchange),
) -> Result<Inputs, i32> {
    let mut obs = Observations::new(cfg);
    let (snapshots, captures): (Vec<PathBuf>, Vec<PathBuf>) = inputs
        .iter()
        .cloned()
        .partition(|p| p.is_file() && is_json(p));
    for p in &snapshots {
        obs.merge(&load_observations(p)?);
    }
    let mut status = exit::OK;
    if !captures.is_empty() {
        let run = run_captures(&captures, engine, ResponseHeaders::All, |ex| {
            obs.observe(&ex);
            each(&ex);
            Ok(())
        })?;
        status = run.status;
    }
    Ok(Inputs {
        obs,
        status,
        had_snapshots: !snapshots.is_empty(),
    })
}

pub fn diff(args: DiffArgs) -> i32 {
    let text = match std::fs::read_to_string(&args.spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: cannot read: {e}", args.spec.display());
            return exit::UNREADABLE;
        }
    };
    let spec = match contracts::openapi::parse_spec(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", args.spec.display());
            return exit::USAGE;
        }
    };
    let cfg = match args.inference.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let inputs = match load_inputs(&args.inputs, &args.engine, &cfg, |_| {}) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let (obs, status) = (inputs.obs, inputs.status);
    let report = contracts::diff::diff(&spec, &obs);
    let rendered = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        report.to_text()
    };
    print!("{rendered}");
    if status != exit::OK {
        status
    } else if report.has_drift() {
        exit::DRIFT
    } else {
        exit::OK
    }
}

/// Which histogram of each operation `histograms` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HistogramValues {
    /// Server latency (response first byte - request last byte), ns.
    Latency,
    /// Request body bytes on the wire.
    RequestBytes,
    /// Response body bytes on the wire.
    ResponseBytes,
}

/// Options of `histograms`.
#[derive(Debug, Args)]
pub struct HistogramsArgs {
    /// Observation files (`observations.json`), directories holding one
    /// (`analyze --out DIR`), or captures to analyse.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Write the per-operation histograms here, as an HdrHistogram interval
    /// log: one interval per operation (its first to last request), tagged
    /// `api:METHOD:template`.
    #[arg(long, value_name = "FILE")]
    hlog: PathBuf,
    /// Which histogram to export.
    #[arg(long, value_enum, default_value_t = HistogramValues::Latency)]
    values: HistogramValues,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    inference: InferenceArgs,
}

/// Runs `histograms`: per-operation histograms as an interval log, for
/// HdrHistogram's own tools (HistogramLogProcessor, HistogramLogAnalyzer,
/// the plotters).
pub fn histograms(args: HistogramsArgs) -> i32 {
    let cfg = match args.inference.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // `analyze --out DIR` leaves observations.json in DIR.
    let inputs: Vec<PathBuf> = args
        .inputs
        .iter()
        .map(|p| {
            let obs = p.join("observations.json");
            if p.is_dir() && obs.is_file() {
                obs
            } else {
                p.clone()
            }
        })
        .collect();
    let loaded = match load_inputs(&inputs, &args.engine, &cfg, |_| {}) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let model = contracts::model::build(&loaded.obs, &cfg);
    let mut intervals = Vec::new();
    for api in &model.apis {
        for e in &api.endpoints {
            for op in &e.operations {
                let histogram = match args.values {
                    HistogramValues::Latency => op.latency_histogram(),
                    HistogramValues::RequestBytes => op.request_bytes_histogram(),
                    HistogramValues::ResponseBytes => op.response_bytes_histogram(),
                };
                let Some((start_ns, end_ns)) = op.seen_ns() else {
                    continue;
                };
                if histogram.count() == 0 {
                    continue;
                }
                intervals.push(contracts::stats::LogInterval {
                    tag: format!("{}:{}:{}", api.name, op.method, e.path),
                    start_ns,
                    end_ns,
                    histogram,
                });
            }
        }
    }
    let (what, divisor) = match args.values {
        HistogramValues::Latency => ("server latency in nanoseconds (max column in ms)", 1e6),
        HistogramValues::RequestBytes => ("request body bytes on the wire", 1.0),
        HistogramValues::ResponseBytes => ("response body bytes on the wire", 1.0),
    };
    let comment = format!(
        "stoa-tap: {what}, one interval per operation (first to last request), Tag=api:METHOD:template"
    );
    let mut text = Vec::new();
    if let Err(e) =
        contracts::stats::write_interval_log(&mut text, &[&comment], &intervals, divisor)
    {
        eprintln!("error: {e}");
        return exit::FAILURE;
    }
    if let Err(code) = stoa_tap::daemon::persist::write_atomic(&args.hlog, &text).map_err(|e| {
        eprintln!("error: cannot write: {e}");
        exit::OUTPUT
    }) {
        return code;
    }
    tracing::info!(operations = intervals.len(), path = %args.hlog.display(), "interval log written");
    println!(
        "{} operation histograms -> {}",
        intervals.len(),
        args.hlog.display()
    );
    loaded.status
}
