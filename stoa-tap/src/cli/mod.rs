//! Argument parsing, logging set-up and exit codes.

mod analyze;
mod bundle;
mod check;
mod contracts;
mod publish;
mod run;
mod tproxy_rules;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, distinct per failure so scripts can tell them apart.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Unexpected internal failure.
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// An input could not be opened or read.
    pub const UNREADABLE: i32 = 3;
    /// An input is not a pcap/pcapng capture.
    pub const NOT_A_CAPTURE: i32 = 4;
    /// An input is corrupt past its start; what came before was analysed.
    pub const CORRUPT: i32 = 5;
    /// An output could not be written.
    pub const OUTPUT: i32 = 6;
    /// `diff`: the traffic does not match the declared spec.
    pub const DRIFT: i32 = 7;
    /// `run`: the configuration is invalid.
    pub const CONFIG: i32 = 8;
}

/// Passive HTTP/1.x API-traffic analyzer for API gateways.
#[derive(Debug, Parser)]
#[command(name = "stoa-tap", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STOA_TAP_LOG_FORMAT")]
    log_format: LogFormat,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse capture files offline: HTTP exchanges, a capture summary and,
    /// with --out, the API contracts learned from them.
    Analyze(analyze::AnalyzeArgs),
    /// Merge observation snapshots (from several taps or files) into one.
    Merge(contracts::MergeArgs),
    /// Report traffic that a declared OpenAPI spec does not describe.
    Diff(contracts::DiffArgs),
    /// Export per-operation latency (or size) histograms as an HdrHistogram
    /// interval log, for HdrHistogram's plotting and analysis tools.
    Histograms(contracts::HistogramsArgs),
    /// Policy bundle for explicit-proxy mode (routes, policies, contracts,
    /// evidence); `bundle verify` replays traffic against it, `bundle apply`
    /// pushes it to a sidecar's admin API.
    Bundle(bundle::BundleArgs),
    /// Run as a daemon: live sources, admin server, saved observations.
    Run(run::RunArgs),
    /// Print, install or remove the nft/iptables TPROXY rules for the relay.
    TproxyRules(tproxy_rules::TproxyRulesArgs),
    /// Replay reports written in `publish.mode: directory` to a control plane.
    Publish(publish::PublishArgs),
    /// Monitoring plugin (Nagios/Icinga exit codes): capture, traffic and publishing.
    Check(check::CheckArgs),
}

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                // A monitoring plugin's bad command line is UNKNOWN (3), not
                // CRITICAL (2).
                if std::env::args().nth(1).as_deref() == Some("check") {
                    3
                } else {
                    exit::USAGE
                }
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.log_format, cli.verbose);
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Merge(args) => contracts::merge(args),
        Command::Diff(args) => contracts::diff(args),
        Command::Histograms(args) => contracts::histograms(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Run(args) => run::run(args),
        Command::TproxyRules(args) => tproxy_rules::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Check(args) => check::run(args),
    }
}
