//! `stoa-tap run`: the shadow-mode daemon.

use super::exit;
use clap::Args;
use std::path::PathBuf;
use stoa_tap::daemon::config::{self, Overrides, DEFAULT_PATH};

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (YAML). A missing default file means built-in defaults.
    #[arg(long, value_name = "FILE", env = "STOA_TAP_CONFIG")]
    config: Option<PathBuf>,
    /// Set any configuration key (dotted path), after the file and the
    /// environment: `--set admin.bind=127.0.0.1:9191` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Gateway port to analyse (repeatable); replaces `ports`.
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Capture live on this interface with libpcap (repeatable); replaces `sources`.
    #[arg(long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// Attach the eBPF probe to this interface (repeatable); replaces `sources`.
    #[arg(long = "ebpf", value_name = "IFACE", conflicts_with = "interfaces")]
    ebpf: Vec<String>,
    /// Replay this capture file through the pipeline; replaces `sources`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["interfaces", "ebpf"])]
    replay: Option<PathBuf>,
    /// Admin server address (`admin.bind`).
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<String>,
    /// Directory of the saved observations (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Check the configuration, print it as YAML, try on this host what the
    /// daemon would open (token file, interfaces, BPF filters, state
    /// directory, control plane) without capturing, and exit (8 on failure).
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    fn overrides(&self) -> Result<Overrides, String> {
        let mut ov = Overrides::from_env();
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            ov.flags.push((k.trim().to_owned(), v.to_owned()));
        }
        if !self.ports.is_empty() {
            let list: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            ov.flags
                .push(("ports".into(), format!("[{}]", list.join(", "))));
        }
        if !self.interfaces.is_empty() {
            let names: Vec<String> = self.interfaces.iter().map(|i| format!("{i:?}")).collect();
            ov.flags.push((
                "sources".into(),
                format!("[{{kind: pcap, interfaces: [{}]}}]", names.join(", ")),
            ));
        }
        if !self.ebpf.is_empty() {
            let list: Vec<String> = self
                .ebpf
                .iter()
                .map(|i| format!("{{kind: ebpf, interface: {i:?}}}"))
                .collect();
            ov.flags
                .push(("sources".into(), format!("[{}]", list.join(", "))));
        }
        if let Some(f) = &self.replay {
            ov.flags.push((
                "sources".into(),
                format!("[{{kind: file, path: {:?}}}]", f.display().to_string()),
            ));
        }
        if let Some(b) = &self.admin_bind {
            ov.flags.push(("admin.bind".into(), format!("{b:?}")));
        }
        if let Some(d) = &self.state_dir {
            ov.flags
                .push(("state_dir".into(), format!("{:?}", d.display().to_string())));
        }
        Ok(ov)
    }
}

/// Runs `run`; returns the exit code.
pub fn run(args: RunArgs) -> i32 {
    let ov = match args.overrides() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let cfg = match config::load(&path, explicit, &ov) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return exit::CONFIG;
        }
    };
    if args.check {
        return check(&cfg);
    }
    let reload = move || config::load(&path, explicit, &ov);
    match stoa_tap::daemon::run_until_signal(cfg, reload) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            tracing::error!(error = %e, "run failed");
            exit::FAILURE
        }
    }
}

/// `run --check`: prints the effective configuration (without the secret it
/// may hold) on stdout, then tries on this host what the daemon would open
/// at start, one line per check on stderr. Exit 8 when any check fails.
fn check(cfg: &config::RunConfig) -> i32 {
    let mut shown = cfg.clone();
    if shown.admin.token.is_some() {
        shown.admin.token = Some("<redacted>".into());
    }
    match serde_json::to_value(&shown) {
        Ok(v) => print!("{}", contracts::yaml::to_string(&v)),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    }
    let checks = stoa_tap::daemon::check::run_checks(cfg);
    for c in &checks {
        eprintln!("{c}");
    }
    let failed = checks.iter().filter(|c| c.failed()).count();
    if failed > 0 {
        eprintln!("run --check: {failed} of {} checks failed", checks.len());
        exit::CONFIG
    } else {
        eprintln!("run --check: {} checks passed", checks.len());
        exit::OK
    }
}
