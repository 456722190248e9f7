//! The on-disk outbox: every report waits here until the control plane has
//! accepted it, so delivery is at-least-once across restarts and outages.
//!
//! One file per report, `<seq>-<kind>.json`, written to a temporary name,
//! synced and renamed (a crash leaves either the whole report or nothing),
//! mode 0600. The files are bounded by total size: when a new report would
//! exceed the bound, the oldest *superseded* report (an older heartbeat, an
//! older discovery list, an older draft of the same contract) goes first,
//! counted; only when none is superseded does the oldest report go, counted
//! apart. Each report carries its idempotency key, written once, so retries
//! and restarts resend the same key.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// What a report is; decides its endpoint and what supersedes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportKind {
    /// Liveness and figures (`/heartbeat`).
    Heartbeat,
    /// The full list of discovered APIs (`/discovery`).
    Discovery,
    /// A UAC draft of one API (`/v1/tenants/{tenant}/contracts`).
    Contract {
        /// Contract name.
        name: String,
        /// Tenant it is filed under.
        tenant: String,
    },
}

impl ReportKind {
    /// Reports with the same topic supersede older ones.
    pub fn topic(&self) -> String {
        match self {
            ReportKind::Heartbeat => "heartbeat".into(),
            ReportKind::Discovery => "discovery".into(),
            ReportKind::Contract { name, tenant } => format!("contract:{tenant}:{name}"),
        }
    }

    /// Short label for file names and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ReportKind::Heartbeat => "heartbeat",
            ReportKind::Discovery => "discovery",
            ReportKind::Contract { .. } => "contract",
        }
    }
}

/// One report, as stored on disk and in directory mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Idempotency key, sent as `Idempotency-Key`.
    pub key: String,
    /// Order of creation (unique in one outbox).
    pub seq: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// What it is.
    #[serde(flatten)]
    pub kind: ReportKind,
    /// The JSON body sent.
    pub body: serde_json::Value,
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed.
    #[error("outbox {path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A report is larger than the whole outbox bound.
    #[error("report of {size} bytes exceeds the outbox bound of {max} bytes")]
    TooLarge {
        /// Serialised size.
        size: u64,
        /// Bound.
        max: u64,
    },
    /// A report could not be serialised.
    #[error("outbox: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A stored report's place in the outbox.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    topic: String,
    bytes: u64,
    path: PathBuf,
}

/// What happened to reports that left the outbox without delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxDrops {
    /// Superseded by a newer report of the same topic.
    pub superseded: u64,
    /// The newest of their topic, dropped because the bound was reached.
    pub overflow: u64,
    /// Unreadable files found at start (moved aside as `*.bad`).
    pub corrupt: u64,
}

/// The outbox folder and its index.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    entries: Vec<Entry>,
    total_bytes: u64,
    next_seq: u64,
    nonce: String,
    drops: OutboxDrops,
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    crate::daemon::persist::write_private(path, bytes).map_err(|e| match e {
        crate::daemon::persist::PersistError::Io { path, source } => {
            OutboxError::Io { path, source }
        }
        other => OutboxError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// Creates `dir` (mode 0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), OutboxError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// 16 random hex digits from the kernel (a time-and-pid mix if that fails),
/// so that keys of different runs never collide.
pub fn random_hex() -> String {
    let mut buf = [0u8; 8];
    let ok = fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        buf = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a report file.
pub fn read_report(path: &Path) -> Result<Report, OutboxError> {
    let text = fs::read(path).map_err(io(path))?;
    Ok(serde_json::from_slice(&text)?)
}

/// Report files of a folder (`*.json` but `register.json`), in sequence
/// order (the name starts with the zero-padded sequence).
pub fn report_files(dir: &Path) -> Result<Vec<PathBuf>, OutboxError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "register.json")
        })
        .collect();
    files.sort();
    Ok(files)
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` and indexes the reports left by
    /// an earlier run; unreadable ones are moved aside and counted.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        ensure_dir(dir)?;
        let mut entries = Vec::new();
        let mut drops = OutboxDrops::default();
        for path in report_files(dir)? {
            match read_report(&path) {
                Ok(r) => {
                    let bytes = fs::metadata(&path).map_or(0, |m| m.len());
                    entries.push(Entry {
                        seq: r.seq,
                        topic: r.kind.topic(),
                        bytes,
                        path,
                    });
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable outbox report moved aside");
                    let _ = fs::rename(&path, path.with_extension("bad"));
                    drops.corrupt += 1;
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        let total_bytes = entries.iter().map(|e| e.bytes).sum();
        Ok(Outbox {
            dir: dir.to_owned(),
            max_bytes,
            entries,
            total_bytes,
            next_seq,
            nonce: random_hex(),
            drops,
        })
    }

    /// Stores a new report and returns it (with its key and sequence).
    /// Older reports of the same topic stay (they are delivered in order)
    /// unless the bound forces them out.
    pub fn push(
        &mut self,
        kind: ReportKind,
        body: serde_json::Value,
        now_ms: u64,
    ) -> Result<Report, OutboxError> {
        let seq = self.next_seq;
        let report = Report {
            key: format!("{}-{seq:010}", self.nonce),
            seq,
            created_ms: now_ms,
            kind,
            body,
        };
        let bytes = serde_json::to_vec(&report)?;
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(OutboxError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let path = self
            .dir
            .join(format!("{seq:020}-{}.json", report.kind.label()));
        write_atomic(&path, &bytes)?;
        self.next_seq += 1;
        self.entries.push(Entry {
            seq,
            topic: report.kind.topic(),
            bytes: size,
            path,
        });
        self.total_bytes += size;
        self.enforce_bound();
        Ok(report)
    }

    /// Drops older reports of `topic` now (a new heartbeat makes the queued
    /// ones worthless); returns how many went.
    pub fn drop_superseded(&mut self, topic: &str) -> u64 {
        let Some(newest) = self
            .entries
            .iter()
            .rev()
            .find(|e| e.topic == topic)
            .map(|e| e.seq)
        else {
            return 0;
        };
        let old: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.topic == topic && e.seq < newest)
            .map(|e| e.seq)
            .collect();
        for seq in &old {
            self.remove(*seq);
        }
        self.drops.superseded += old.len() as u64;
        old.len() as u64
    }

    fn enforce_bound(&mut self) {
        while self.total_bytes > self.max_bytes && self.entries.len() > 1 {
            // Oldest entry with a newer one of its topic.
            let superseded = self.entries.iter().position(|e| {
                self.entries
                    .iter()
                    .any(|n| n.topic == e.topic && n.seq > e.seq)
            });
            let (i, superseded) = match superseded {
                Some(i) => (i, true),
                None => (0, false),
            };
            let Some(seq) = self.entries.get(i).map(|e| e.seq) else {
                break;
            };
            tracing::warn!(seq, superseded, "outbox full: report dropped");
            self.remove(seq);
            if superseded {
                self.drops.superseded += 1;
            } else {
                self.drops.overflow += 1;
            }
        }
    }

    fn remove(&mut self, seq: u64) {
        if let Some(i) = self.entries.iter().position(|e| e.seq == seq) {
            let e = self.entries.remove(i);
            self.total_bytes = self.total_bytes.saturating_sub(e.bytes);
            if let Err(err) = fs::remove_file(&e.path) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %e.path.display(), error = %err, "cannot remove outbox report");
                }
            }
        }
    }

    /// The oldest report, read from disk. A file that became unreadable is
    /// removed and counted, and the next one tried.
    pub fn head(&mut self) -> Option<Report> {
        loop {
            let e = self.entries.first()?.clone();
            match read_report(&e.path) {
                Ok(r) => return Some(r),
                Err(err) => {
                    tracing::warn!(file = %e.path.display(), error = %err, "outbox report unreadable, dropped");
                    self.remove(e.seq);
                    self.drops.corrupt += 1;
                }
            }
        }
    }

    /// The report `seq` was delivered (or rejected for good): forget it.
    pub fn ack(&mut self, seq: u64) {
        self.remove(seq);
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No report waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Reports that left without delivery.
    pub fn drops(&self) -> &OutboxDrops {
        &self.drops
    }

    /// Creation time of the oldest waiting report, ms.
    pub fn oldest_ms(&mut self) -> Option<u64> {
        self.head().map(|r| r.created_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("stoa-tap-outbox-")
            .tempdir()
            .expect("tmp")
    }

    fn contract(name: &str) -> ReportKind {
        ReportKind::Contract {
            name: name.into(),
            tenant: "t".into(),
        }
    }

    #[test]
    fn survives_reopen_with_keys_order_and_mode() {
        let d = dir();
        let mut o = Outbox::open(d.path(), 1 << 20).expect("open");
        let a = o
            .push(ReportKind::Discovery, serde_json::json!({"apis": []}), 1)
            .expect("push");
        let b = o
            .push(contract("x"), serde_json::json!({"name": "x"}), 2)
            .expect("push");
        assert_ne!(a.key, b.key);
        let mode = fs::metadata(d.path().join(format!("{:020}-discovery.json", a.seq)))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(o);
        let mut o = Outbox::open(d.path(), 1 << 20).expect("reopen");
        assert_eq!(o.len(), 2);
        let head = o.head().expect("head");
        assert_eq!(head, a, "same report, same key after a restart");
        o.ack(head.seq);
        assert_eq!(o.head().map(|r| r.key), Some(b.key.clone()));
        let c = o
            .push(ReportKind::Heartbeat, serde_json::json!({}), 3)
            .expect("push");
        assert!(c.seq > b.seq, "sequence continues after a restart");
    }

    #[test]
    fn bound_drops_oldest_superseded_first_then_oldest() {
        let d = dir();
        let body = serde_json::json!({"pad": "x".repeat(300)});
        let mut o = Outbox::open(d.path(), 1000).expect("open");
        let a1 = o.push(contract("a"), body.clone(), 1).expect("push");
        let b1 = o.push(contract("b"), body.clone(), 2).expect("push");
        // Third one exceeds the bound: nothing is superseded, the oldest goes.
        let a2 = o.push(contract("a"), body.clone(), 3).expect("push");
        assert_eq!(o.drops().superseded, 1, "a1 superseded by a2 goes first");
        assert_eq!(o.drops().overflow, 0);
        let keys: Vec<u64> = std::iter::from_fn(|| {
            let h = o.head()?;
            o.ack(h.seq);
            Some(h.seq)
        })
        .collect();
        assert_eq!(keys, vec![b1.seq, a2.seq]);
        assert!(a1.seq < b1.seq);
        let c = o.push(contract("c"), body.clone(), 4).expect("push");
        let d2 = o.push(contract("d"), body.clone(), 5).expect("push");
        let _e = o.push(contract("e"), body, 6).expect("push");
        assert_eq!(
            o.drops().overflow,
            1,
            "no superseded report left: oldest dropped"
        );
        assert_eq!(o.head().map(|r| r.seq), Some(d2.seq));
        assert!(c.seq < d2.seq);
        assert!(o.bytes() <= 1000);
        let big = serde_json::json!({"pad": "x".repeat(2000)});
        assert!(matches!(
            o.push(contract("f"), big, 7),
            Err(OutboxError::TooLarge { .. })
        ));
    }

    #[test]
    fn heartbeats_supersede_and_corrupt_files_are_set_aside() {
        let d = dir();
        let mut o = Outbox::open(d.path(), 1 << 20).expect("open");
        for i in 0..3 {
            o.push(
                ReportKind::Heartbeat,
                serde_json::json!({"uptime_seconds": i}),
                i,
            )
            .expect("push");
            o.drop_superseded("heartbeat");
        }
        assert_eq!(o.len(), 1);
        assert_eq!(o.drops().superseded, 2);
        fs::write(
            d.path().join("00000000000000000099-discovery.json"),
            b"{not json",
        )
        .expect("write");
        let o = Outbox::open(d.path(), 1 << 20).expect("reopen");
        assert_eq!(o.len(), 1);
        assert_eq!(o.drops().corrupt, 1);
        assert!(d.path().join("00000000000000000099-discovery.bad").exists());
    }
}
