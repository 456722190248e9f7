//! `stoa-tap publish --from DIR`: replays reports written in `directory`
//! mode (air-gapped sites) to a control plane.

use super::exit;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use stoa_tap::daemon::config::ControlPlaneSettings;
use stoa_tap::publish::client::{Client, Key};
use stoa_tap::publish::{self, ReplayResult};

/// Options of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Folder written by `control_plane.publish.mode: directory` (or an outbox).
    #[arg(long = "from", value_name = "DIR")]
    from: PathBuf,
    /// Control-plane base URL.
    #[arg(long, value_name = "URL")]
    url: String,
    /// File holding the gateway key (first line).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// PEM bundle of extra trusted CAs.
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// Runs `publish`; returns the exit code: 0 all accepted, 1 some failed,
/// 3 unreadable key or folder, 2 bad arguments.
pub fn run(args: PublishArgs) -> i32 {
    let key = match Key::from_file(&args.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: key: {e}");
            return exit::UNREADABLE;
        }
    };
    if !args.from.is_dir() {
        eprintln!("error: {}: not a folder", args.from.display());
        return exit::UNREADABLE;
    }
    let lower = args.url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        eprintln!("error: --url needs an http:// or https:// URL");
        return exit::USAGE;
    }
    let client = match Client::new(
        &args.url,
        key,
        args.ca_bundle.as_deref(),
        Duration::from_secs(args.timeout.max(1)),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::UNREADABLE;
        }
    };
    let fallback = publish::registration(
        &ControlPlaneSettings::default(),
        "127.0.0.1:9090",
        "default",
    );
    let result = publish::replay(&args.from, &client, fallback, |path, r| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match r {
            ReplayResult::Accepted(s) => println!("{name}: accepted ({s})"),
            ReplayResult::Failed(kind, s, d) => println!("{name}: FAILED {kind} ({s}) {d}"),
        }
    });
    match result {
        Ok((ok, 0)) => {
            println!("{ok} report(s) accepted");
            exit::OK
        }
        Ok((ok, failed)) => {
            println!("{ok} report(s) accepted, {failed} failed");
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}
