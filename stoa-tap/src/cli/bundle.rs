//! `stoa-tap bundle`: the policy bundle for explicit-proxy mode, its dry run
//! (`bundle verify`) and its push to a sidecar's admin API (`bundle apply`).
//! The bundle itself is built and replayed in `contracts::bundle`; this file
//! only reads inputs, writes outputs and speaks HTTP.

use super::analyze::{run_captures, EngineArgs};
use super::contracts::{load_inputs, InferenceArgs};
use super::exit;
use clap::{Args, Subcommand};
use contracts::bundle::{self, Bundle, BundleOptions, RequestEvidence, Verifier};
use contracts::RedactionConfig;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stoa_tap::http1::ResponseHeaders;

/// Options of `bundle`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BundleArgs {
    #[command(subcommand)]
    action: Option<BundleAction>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Debug, Subcommand)]
enum BundleAction {
    /// Replay captured traffic against a bundle: what would it have blocked?
    Verify(VerifyArgs),
    /// Push a bundle's routes then policies to a sidecar's admin API.
    Apply(ApplyArgs),
}

/// Options of `bundle INPUT... -o FILE`.
#[derive(Debug, Args)]
struct BuildArgs {
    /// Captures (files or directories, as `analyze` takes them) or
    /// observation files (`observations.json` from `analyze --out` or `merge`).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Where to write the bundle (JSON).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    output: Option<PathBuf>,
    /// Upstream base URL the routes point at (the route's path prefix is
    /// appended). The gateway admin API refuses loopback and private
    /// addresses: give a host name it resolves. Default: the host the
    /// traffic was addressed to.
    #[arg(long, value_name = "URL")]
    backend_url: Option<String>,
    /// Factor (>= 1) applied to observed peaks and maxima.
    #[arg(long, default_value_t = bundle::DEFAULT_HEADROOM, value_name = "FACTOR")]
    headroom: f64,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    inference: InferenceArgs,
}

/// Options of `bundle verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The bundle to check.
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// Captures (files or directories) to replay.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Highest acceptable share (0..1) of requests that would be blocked
    /// although the upstream served them; above it the exit code is 7.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    max_blocked: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Options of `bundle apply`.
#[derive(Debug, Args)]
struct ApplyArgs {
    /// The bundle to push.
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// Base URL of the sidecar's admin API (`http://gateway:8081`).
    #[arg(long, value_name = "URL", required_unless_present = "dry_run")]
    admin: Option<String>,
    /// File holding the admin token (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "FILE", required_unless_present = "dry_run")]
    token_file: Option<PathBuf>,
    /// Print what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each admin API call.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
}

/// Runs `bundle` and its subcommands.
pub fn run(args: BundleArgs) -> i32 {
    match args.action {
        Some(BundleAction::Verify(v)) => verify(v),
        Some(BundleAction::Apply(a)) => apply(a),
        None => build(args.build),
    }
}

fn build(args: BuildArgs) -> i32 {
    let Some(output) = args.output.clone() else {
        eprintln!("error: -o FILE is required");
        return exit::USAGE;
    };
    let cfg = match args.inference.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut origins = RequestEvidence::default();
    let inputs = match load_inputs(&args.inputs, &args.engine, &cfg, |ex| origins.observe(ex)) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let (obs, status) = (inputs.obs, inputs.status);
    let opts = BundleOptions {
        tenant_id: args.inference.tenant.clone(),
        backend_url: args.backend_url.clone(),
        headroom: args.headroom,
    };
    // Origins are evidence only when every input carried them.
    let origin_evidence = (!inputs.had_snapshots).then_some(&origins);
    let b = match bundle::build(&obs, origin_evidence, &cfg, &opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Err(e) = stoa_tap::daemon::persist::write_atomic(&output, b.to_json().as_bytes()) {
        eprintln!("error: {}: cannot write: {e}", output.display());
        return exit::OUTPUT;
    }
    for n in &b.notes {
        eprintln!("note: {n}");
    }
    emit(&format!(
        "bundle: {} exchanges -> {} routes, {} policies, {} contracts -> {}\n",
        b.source.exchanges,
        b.routes.len(),
        b.policies.len(),
        b.contracts.len(),
        output.display()
    ));
    tracing::info!(
        routes = b.routes.len(),
        policies = b.policies.len(),
        exchanges = b.source.exchanges,
        "bundle written"
    );
    status
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn read_bundle(path: &Path) -> Result<Bundle, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: {}: cannot read: {e}", path.display());
        exit::UNREADABLE
    })?;
    Bundle::from_json(&text).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        exit::USAGE
    })
}

fn verify(args: VerifyArgs) -> i32 {
    if !(0.0..=1.0).contains(&args.max_blocked) {
        eprintln!(
            "error: --max-blocked must be a rate between 0 and 1 (got {})",
            args.max_blocked
        );
        return exit::USAGE;
    }
    let b = match read_bundle(&args.bundle) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let mut verifier = Verifier::new(&b, &RedactionConfig::default());
    let run = match run_captures(&args.inputs, &args.engine, ResponseHeaders::All, |ex| {
        verifier.observe(&ex);
        Ok(())
    }) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = verifier.finish();
    if args.json {
        emit(&(serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"));
    } else {
        emit(&report.to_text());
    }
    tracing::info!(
        exchanges = report.exchanges,
        would_block = report.would_block,
        rate = report.would_block_rate,
        "bundle verified"
    );
    if run.status != exit::OK {
        run.status
    } else if report.exceeds(args.max_blocked) {
        eprintln!(
            "bundle would block {:.4} of the requests the upstream served (max {})",
            report.would_block_rate, args.max_blocked
        );
        exit::DRIFT
    } else {
        exit::OK
    }
}

/// What happened to one object.
#[derive(Debug, Serialize)]
struct Outcome {
    kind: &'static str,
    id: String,
    name: String,
    /// `created`, `updated`, `unchanged`, `accepted` (200 without a
    /// listing to compare with), `failed`, or `would-send` (dry run).
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    admin: String,
    dry_run: bool,
    totals: BTreeMap<String, BTreeMap<&'static str, u64>>,
    objects: Vec<Outcome>,
}

/// The admin API, through a blocking client.
struct Admin {
    base: String,
    token: String,
    client: reqwest::blocking::Client,
}

/// Error text of a response, bounded (API errors are short; an HTML error
/// page is not worth more).
fn error_text(resp: reqwest::blocking::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let mut text = resp.text().unwrap_or_default().trim().to_string();
    if text.len() > 600 {
        let mut cut = 600;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    (status, text)
}

impl Admin {
    /// Objects the API lists under `path`, by id; `Ok(None)` when it has no
    /// listing; `Err` when it refuses us.
    fn list(&self, path: &str) -> Result<Option<BTreeMap<String, Value>>, (u16, String)> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| {
                (
                    0,
                    format!("GET {url}: {}", stoa_tap::publish::client::error_chain(&e)),
                )
            })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(error_text(resp));
        }
        if status != 200 {
            tracing::debug!(url = %url, status, "no listing");
            return Ok(None);
        }
        let Ok(v) = resp.json::<Value>() else {
            return Ok(None);
        };
        let items = match &v {
            Value::Array(a) => Some(a),
            Value::Object(o) => ["apis", "policies", "items", "data"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_array)),
            _ => None,
        };
        Ok(items.map(|a| {
            a.iter()
                .filter_map(|o| Some((o.get("id")?.as_str()?.to_string(), o.clone())))
                .collect()
        }))
    }

    fn post(&self, path: &str, body: &Value) -> Result<u16, (u16, String)> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .map_err(|e| {
                (
                    0,
                    format!("POST {url}: {}", stoa_tap::publish::client::error_chain(&e)),
                )
            })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(error_text(resp))
        }
    }
}

/// Whether the listed object already holds every field we would send.
fn same(listed: &Value, ours: &Value) -> bool {
    match ours.as_object() {
        Some(o) => o.iter().all(|(k, v)| listed.get(k) == Some(v)),
        None => false,
    }
}

/// The objects to push, in order (routes, then policies): kind, admin path,
/// id, name, body.
type Pushed = Vec<(&'static str, &'static str, String, String, Value)>;

/// Reads the objects of a bundle as they are written: the admin API, not
/// this command, judges them (an edited bundle with a wrong type must reach
/// the API and come back with its 422, not stop here).
fn bundle_objects(path: &Path) -> Result<Pushed, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: {}: cannot read: {e}", path.display());
        exit::UNREADABLE
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        eprintln!("error: {}: not JSON: {e}", path.display());
        exit::USAGE
    })?;
    if doc.get("kind").and_then(Value::as_str) != Some(bundle::BUNDLE_KIND)
        || doc.get("format_version").and_then(Value::as_u64)
            != Some(u64::from(bundle::BUNDLE_FORMAT_VERSION))
    {
        eprintln!(
            "error: {}: not a stoa-tap policy bundle (kind {:?}, format_version {})",
            path.display(),
            bundle::BUNDLE_KIND,
            bundle::BUNDLE_FORMAT_VERSION
        );
        return Err(exit::USAGE);
    }
    let mut out = Pushed::new();
    for (list, key, kind, admin_path) in [
        ("routes", "route", "route", "/admin/apis"),
        ("policies", "policy", "policy", "/admin/policies"),
    ] {
        let Some(items) = doc.get(list).and_then(Value::as_array) else {
            eprintln!("error: {}: no {list} list", path.display());
            return Err(exit::USAGE);
        };
        for (i, item) in items.iter().enumerate() {
            let Some(body) = item.get(key).filter(|b| b.is_object()) else {
                eprintln!("error: {}: {list}[{i}] has no {key} object", path.display());
                return Err(exit::USAGE);
            };
            let field = |f: &str| {
                body.get(f)
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{list}[{i}]"), str::to_string)
            };
            out.push((kind, admin_path, field("id"), field("name"), body.clone()));
        }
    }
    Ok(out)
}

fn apply(args: ApplyArgs) -> i32 {
    let objects = match bundle_objects(&args.bundle) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let admin_base = args
        .admin
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();

    if args.dry_run {
        let mut outcomes = Vec::new();
        let mut text = String::new();
        for (kind, path, id, name, body) in &objects {
            if !args.json {
                text.push_str(&format!(
                    "POST {admin_base}{path}\n{}\n",
                    serde_json::to_string_pretty(body).unwrap_or_default()
                ));
            }
            outcomes.push(Outcome {
                kind,
                id: id.clone(),
                name: name.clone(),
                result: "would-send",
                status: None,
                error: None,
            });
        }
        emit(&text);
        return finish_apply(admin_base, true, outcomes, args.json);
    }

    let token = match args.token_file.as_deref().map(std::fs::read_to_string) {
        Some(Ok(t)) if !t.trim().is_empty() => t.trim().to_string(),
        Some(Ok(_)) => {
            eprintln!("error: the token file is empty");
            return exit::USAGE;
        }
        Some(Err(e)) => {
            eprintln!("error: cannot read the token file: {e}");
            return exit::UNREADABLE;
        }
        None => {
            eprintln!("error: --token-file is required");
            return exit::USAGE;
        }
    };
    if !(admin_base.starts_with("http://") || admin_base.starts_with("https://")) {
        eprintln!("error: --admin must be an http:// or https:// URL (got {admin_base:?})");
        return exit::USAGE;
    }
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: HTTP client: {e}");
            return exit::FAILURE;
        }
    };
    let api = Admin {
        base: admin_base.clone(),
        token,
        client,
    };
    let mut listings: BTreeMap<&str, Option<BTreeMap<String, Value>>> = BTreeMap::new();
    for path in ["/admin/apis", "/admin/policies"] {
        match api.list(path) {
            Ok(l) => {
                listings.insert(path, l);
            }
            Err((0, text)) => {
                eprintln!("error: cannot reach the admin API: {text}");
                return exit::FAILURE;
            }
            Err((status, text)) => {
                eprintln!("error: the admin API refused the token: {status} {text}");
                return exit::FAILURE;
            }
        }
    }
    let mut outcomes = Vec::new();
    for (kind, path, id, name, body) in &objects {
        let listed = listings
            .get(path)
            .and_then(|l| l.as_ref())
            .map(|l| l.get(id));
        let outcome = |result, status, error| Outcome {
            kind,
            id: id.clone(),
            name: name.clone(),
            result,
            status,
            error,
        };
        if let Some(Some(current)) = listed {
            if same(current, body) {
                outcomes.push(outcome("unchanged", None, None));
                continue;
            }
        }
        let o = match api.post(path, body) {
            Ok(201) => outcome("created", Some(201), None),
            Ok(s) if listed.is_some() => outcome("updated", Some(s), None),
            Ok(s) => outcome("accepted", Some(s), None),
            Err((s, text)) => {
                tracing::warn!(kind, id = %id, status = s, error = %text, "admin API refused");
                outcome("failed", (s != 0).then_some(s), Some(text))
            }
        };
        outcomes.push(o);
    }
    finish_apply(admin_base, false, outcomes, args.json)
}

fn finish_apply(admin: String, dry_run: bool, objects: Vec<Outcome>, json: bool) -> i32 {
    let mut totals: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for o in &objects {
        *totals
            .entry(o.kind.to_string())
            .or_default()
            .entry(o.result)
            .or_default() += 1;
    }
    let failed = objects.iter().any(|o| o.result == "failed");
    let report = ApplyReport {
        admin,
        dry_run,
        totals,
        objects,
    };
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
    } else {
        for o in &report.objects {
            if dry_run {
                continue;
            }
            let status = o.status.map_or(String::new(), |s| format!(" ({s})"));
            text.push_str(&format!(
                "{:<10} {:<7} {:<40} {}{status}\n",
                o.result, o.kind, o.name, o.id
            ));
            if let Some(e) = &o.error {
                text.push_str(&format!("           error: {e}\n"));
            }
        }
        for (kind, t) in &report.totals {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let kind = if kind == "policy" {
                "policies"
            } else {
                "routes"
            };
            text.push_str(&format!("{kind}: {}\n", parts.join(", ")));
        }
    }
    emit(&text);
    if failed {
        exit::FAILURE
    } else {
        exit::OK
    }
}
