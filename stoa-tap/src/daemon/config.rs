//! Configuration of `stoa-tap run`: a YAML file, overridden by `STOA_TAP_*`
//! environment variables, overridden by command-line settings.
//!
//! Overrides address keys by path: `STOA_TAP_ADMIN__BIND=0.0.0.0:9090` (a
//! double underscore descends one level) and `--set admin.bind=0.0.0.0:9090`
//! set `admin.bind`. Values are read as YAML scalars or flow sequences
//! (`[5555, 8080]`; a comma list `5555,8080` works for lists too).
//!
//! The file is read with `serde-saphyr`: of the successors to the archived
//! `serde_yaml` 0.9, `serde_norway` (last release 2024-12) and
//! `serde_yaml_ng` (2024-05) are forks of it that still wrap the
//! C-translated `unsafe-libyaml`, while `serde-saphyr` is a pure-Rust reader
//! released every few weeks (2.2.0, 2026-11), reads straight into our types
//! and reports the line and column of a bad value. `serde_path_to_error` adds
//! the key path (`admin.bind: line 7 column 9: ...`), which `serde-saphyr`
//! does not give. Writing YAML stays with `contracts::yaml` (YAML 1.1-safe
//! quoting).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/stoa-tap/stoa-tap.yaml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The YAML is malformed, or a key is unknown or of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// File, environment or flags.
        origin: String,
        /// What serde said (names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A traffic source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Live capture with libpcap (port mirror or the gateway's own interface).
    Pcap {
        /// Interfaces to capture on (`any` works, with link type SLL).
        interfaces: Vec<String>,
        /// BPF filter; default: the configured ports.
        #[serde(default)]
        filter: Option<String>,
        /// Kernel capture buffer, MiB.
        #[serde(default = "default_buffer_mb")]
        buffer_mb: u32,
    },
    /// Transparent relay fed by an nft/iptables TPROXY rule.
    Tproxy {
        /// Listen address of the transparent socket.
        #[serde(default = "default_tproxy_listen")]
        listen: String,
        /// Connect to the gateway from the client's own address.
        #[serde(default)]
        spoof_client: bool,
        /// SO_MARK of the relay's upstream sockets (exempted by the rules).
        #[serde(default = "default_upstream_mark")]
        upstream_mark: u32,
        /// Seconds without a byte either way before the relay closes a
        /// connection (0: never).
        #[serde(default = "default_relay_idle_timeout_s")]
        idle_timeout_s: u64,
        /// Payload the relay may queue for the analyzer, MiB; chunks beyond
        /// it are skipped (counted, reported as gaps).
        #[serde(default = "default_tap_queue_mb")]
        tap_queue_mb: usize,
        /// Diversion guard: the set the rules consult, refreshed while the
        /// relay is healthy (`nft`, `iptables` for the ipset, `off` for rules
        /// installed with `--no-guard`). See packaging/tproxy.md.
        #[serde(default = "default_guard")]
        guard: TproxyGuard,
        /// How long diversion outlives the relay's last refresh, ms.
        #[serde(default = "default_guard_timeout_ms")]
        guard_timeout_ms: u64,
    },
    /// The eBPF probe on the gateway's own interface (TC/TCX, read-only).
    /// Needs a build with the `ebpf` feature and CAP_BPF, CAP_NET_ADMIN and
    /// CAP_PERFMON.
    Ebpf {
        /// Interface to attach to.
        interface: String,
        /// `auto` (egress on `lo`, both elsewhere), `ingress`, `egress` or `both`.
        #[serde(default = "default_ebpf_direction")]
        direction: crate::source::ebpf::Hooks,
        /// Ring buffer between the probe and the reader, MiB (power of two).
        #[serde(default = "default_ring_mb")]
        ring_mb: u32,
    },
    /// Replays a capture file through the live pipeline (demos, tests).
    File {
        /// pcap or pcapng file.
        path: PathBuf,
    },
}

fn default_buffer_mb() -> u32 {
    64
}
fn default_ebpf_direction() -> crate::source::ebpf::Hooks {
    crate::source::ebpf::Hooks::Auto
}
fn default_ring_mb() -> u32 {
    64
}
fn default_tproxy_listen() -> String {
    "[::]:15001".into()
}
fn default_upstream_mark() -> u32 {
    2
}
fn default_relay_idle_timeout_s() -> u64 {
    crate::source::tproxy::DEFAULT_IDLE_TIMEOUT_S
}
fn default_tap_queue_mb() -> usize {
    crate::source::tproxy::DEFAULT_TAP_QUEUE_MB
}
fn default_guard() -> TproxyGuard {
    TproxyGuard::Nft
}
fn default_guard_timeout_ms() -> u64 {
    2000
}

/// Which diversion guard set the TPROXY source refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TproxyGuard {
    /// nft set `inet stoa_tap alive` (`tproxy-rules install`, default backend).
    Nft,
    /// ipset `stoa_tap_alive` (`tproxy-rules install --backend iptables`).
    Iptables,
    /// No guard (rules installed with `--no-guard`).
    Off,
}

/// The admin server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address; anything but loopback requires a token.
    pub bind: String,
    /// Bearer token for the admin API.
    pub token: Option<String>,
    /// File holding the token (first line), instead of `token`.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            bind: "127.0.0.1:9090".into(),
            token: None,
            token_file: None,
        }
    }
}

/// How reports leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// HTTP to the control plane, through the on-disk outbox.
    #[default]
    Http,
    /// Files in a folder, replayed later with `stoa-tap publish --from`
    /// (air-gapped sites).
    Directory,
}

/// `control_plane.publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSettings {
    /// `http` or `directory`.
    pub mode: PublishMode,
    /// Folder of `directory` mode.
    pub directory: Option<PathBuf>,
}

/// Environment variable read for the gateway key when neither `key_file`
/// nor `key_env` is set. Not `STOA_TAP_*`: those are configuration keys.
pub const DEFAULT_KEY_ENV: &str = "STOA_GATEWAY_KEY";

/// `control_plane:`: the publisher to the STOA control plane (off when absent).
/// The key itself never appears here, only where to read it from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneSettings {
    /// Base URL, `https://cp.example.com` (the API paths are appended).
    pub url: String,
    /// File holding the gateway key (first line).
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the gateway key (default
    /// [`DEFAULT_KEY_ENV`]).
    pub key_env: Option<String>,
    /// PEM bundle of extra trusted CAs for the control plane's certificate.
    pub ca_bundle: Option<PathBuf>,
    /// Seconds between heartbeats.
    pub heartbeat_interval_s: u64,
    /// Seconds between checks of the discovery list and contracts (sent only
    /// when they changed).
    pub discovery_interval_s: u64,
    /// Seconds a request may take.
    pub request_timeout_s: u64,
    /// Longest wait between retries, seconds.
    pub backoff_max_s: u64,
    /// Bound of the outbox on disk, KiB; beyond it superseded reports go first.
    pub outbox_max_kb: u64,
    /// HTTP or directory.
    pub publish: PublishSettings,
    /// Tenant of the contracts (default: the top-level `tenant`).
    pub tenant_id: Option<String>,
    /// `environment` of the registration.
    pub environment: String,
    /// Host name registered (default: the machine's).
    pub hostname: Option<String>,
    /// Admin URL registered (default: `http://` + `admin.bind`).
    pub admin_url: Option<String>,
    /// Gateway product observed (`webmethods`, `kong`...).
    pub target_gateway_type: Option<String>,
}

impl Default for ControlPlaneSettings {
    fn default() -> Self {
        ControlPlaneSettings {
            url: String::new(),
            key_file: None,
            key_env: None,
            ca_bundle: None,
            heartbeat_interval_s: 30,
            discovery_interval_s: 60,
            request_timeout_s: 10,
            backoff_max_s: 300,
            outbox_max_kb: 16 * 1024,
            publish: PublishSettings::default(),
            tenant_id: None,
            environment: "dev".into(),
            hostname: None,
            admin_url: None,
            target_gateway_type: None,
        }
    }
}

impl ControlPlaneSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let http = self.publish.mode == PublishMode::Http;
        if http {
            let lower = self.url.to_ascii_lowercase();
            let host = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            if host.is_none_or(|h| h.trim_matches('/').is_empty()) {
                return Err(invalid(
                    "control_plane.url",
                    format!("an http:// or https:// URL is needed, not {:?}", self.url),
                ));
            }
        }
        if self.publish.mode == PublishMode::Directory && self.publish.directory.is_none() {
            return Err(invalid(
                "control_plane.publish.directory",
                "directory mode needs a folder",
            ));
        }
        for (key, v) in [
            (
                "control_plane.heartbeat_interval_s",
                self.heartbeat_interval_s,
            ),
            (
                "control_plane.discovery_interval_s",
                self.discovery_interval_s,
            ),
            ("control_plane.request_timeout_s", self.request_timeout_s),
            ("control_plane.backoff_max_s", self.backoff_max_s),
        ] {
            if v == 0 {
                return Err(invalid(key, "at least 1"));
            }
        }
        if self.outbox_max_kb < 16 {
            return Err(invalid("control_plane.outbox_max_kb", "at least 16"));
        }
        if self.environment.trim().is_empty() {
            return Err(invalid("control_plane.environment", "must not be empty"));
        }
        if matches!(&self.key_env, Some(k) if k.trim().is_empty()) {
            return Err(invalid("control_plane.key_env", "name a variable"));
        }
        Ok(())
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Where traffic comes from.
    pub sources: Vec<SourceConfig>,
    /// Gateway ports analysed.
    pub ports: Vec<u16>,
    /// Worker threads (connections are sharded over them). Default:
    /// [`default_workers`].
    pub workers: usize,
    /// Admin server.
    pub admin: AdminSettings,
    /// Directory of the saved observations.
    pub state_dir: PathBuf,
    /// Seconds between saves of the observations.
    pub save_interval_s: u64,
    /// Memory for reassembly and parser state, MiB, over all workers.
    pub memory_cap_mb: usize,
    /// Connections tracked at once, over all workers.
    pub max_flows: usize,
    /// Seconds without traffic before a connection is dropped.
    pub idle_timeout_s: u64,
    /// Known path templates (one per line).
    pub hints_file: Option<PathBuf>,
    /// Extra field/header name patterns to redact.
    pub redact_fields: Vec<String>,
    /// Tenant of UAC drafts.
    pub tenant: String,
    /// Frame or event batches queued per worker before drops.
    pub worker_queue: usize,
    /// Bounds the parsed exchanges a worker holds while the observations
    /// are locked by a reader: `exchange_queue` x 64; past it the worker
    /// waits for the lock (and its own queue takes the backlog).
    pub exchange_queue: usize,
    /// Publisher to the STOA control plane; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneSettings>,
}

/// Half the CPUs, between 1 and 8: the observed gateway keeps the other half.
/// On a 2-CPU VM one worker analysed ~90k exchanges/s from the eBPF probe
/// with 20 % of a core, and a second one only added hand-over cost
/// (`VARIANTS="daemon daemon1" tests/bench/ebpf.sh`).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, 8)
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            sources: Vec::new(),
            ports: vec![5555],
            workers: default_workers(),
            admin: AdminSettings::default(),
            state_dir: PathBuf::from("/var/lib/stoa-tap"),
            save_interval_s: 60,
            memory_cap_mb: 64,
            max_flows: 100_000,
            idle_timeout_s: 300,
            hints_file: None,
            redact_fields: Vec::new(),
            tenant: "default".into(),
            worker_queue: 32,
            exchange_queue: 64,
            control_plane: None,
        }
    }
}

/// Reads a scalar or list override as YAML (`5555,8080` becomes a list).
fn override_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if !trimmed.starts_with('[') && trimmed.contains(',') {
        let items = trimmed.split(',').map(|i| scalar(i.trim())).collect();
        return Value::Array(items);
    }
    scalar(trimmed)
}

/// One override value read as YAML; text YAML cannot read stays a string.
fn scalar(raw: &str) -> Value {
    if raw.is_empty() {
        return Value::String(String::new());
    }
    serde_saphyr::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()))
}

/// Sets `path` (dotted) in a mapping, creating levels as needed.
fn set_path(root: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !root.is_object() {
        *root = Value::Object(Default::default());
    }
    if let Value::Object(m) = root {
        if rest.is_empty() {
            m.insert(first.clone(), value);
        } else {
            let child = m
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Default::default()));
            set_path(child, rest, value);
        }
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `(dotted key, raw value)` from the environment.
    pub env: Vec<(String, String)>,
    /// `(dotted key, raw value)` from flags, applied last.
    pub flags: Vec<(String, String)>,
}

impl Overrides {
    /// `STOA_TAP_*` variables of this process (`STOA_TAP_LOG_FORMAT` is the
    /// logger's and not a configuration key).
    pub fn from_env() -> Self {
        let env = std::env::vars()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("STOA_TAP_")?;
                if rest == "LOG_FORMAT" || rest == "CONFIG" || rest.is_empty() {
                    return None;
                }
                Some((rest.to_ascii_lowercase().replace("__", "."), v))
            })
            .collect();
        Overrides {
            env,
            flags: Vec::new(),
        }
    }
}

/// Loads the file (when present; a missing default file means defaults),
/// applies overrides, and validates.
///
/// The file is first read straight into [`RunConfig`] so that a bad key or
/// value is reported with its line and column; overrides are then applied
/// to a tree of the file and each layer is checked on its own, so the
/// message names where a bad override came from.
pub fn load(path: &Path, explicit: bool, ov: &Overrides) -> Result<RunConfig, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        origin: path.display().to_string(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    // An empty file (or one of comments only) means defaults.
    let text = text.filter(|t| {
        t.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    let from_file = match &text {
        Some(t) => from_yaml::<RunConfig>(t).map_err(parse_err)?,
        None => RunConfig::default(),
    };
    if ov.env.is_empty() && ov.flags.is_empty() {
        from_file.validate()?;
        return Ok(from_file);
    }
    let mut doc = match &text {
        Some(t) => from_yaml::<Value>(t).map_err(parse_err)?,
        None => Value::Object(Default::default()),
    };
    if doc.is_null() {
        doc = Value::Object(Default::default());
    }
    let mut cfg = from_file;
    for (origin, list) in [("environment", &ov.env), ("command line", &ov.flags)] {
        for (key, raw) in list {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut doc, &path, override_value(raw));
            cfg = serde_path_to_error::deserialize(&doc).map_err(|e| ConfigError::Parse {
                origin: format!("{origin} ({key})"),
                message: with_path(e.path(), &e.inner().to_string()),
            })?;
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Reads YAML into `T`; a failure names the key path (`admin.bind: ...`)
/// and the line and column with the offending text.
fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut failed_at = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            failed_at = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|e| match &failed_at {
        Some(p) => with_path(p, &e.to_string()),
        None => e.to_string(),
    })
}

/// `path: message`, or the message alone for an error at the top level.
fn with_path(path: &serde_path_to_error::Path, message: &str) -> String {
    // The YAML reader's own messages start with `error: `, said once already.
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let p = path.to_string();
    // `.` is the top level, `?` a key not known yet (a duplicate key).
    if p == "." || p == "?" {
        message.to_owned()
    } else {
        format!("{p}: {message}")
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl RunConfig {
    /// Checks ranges and addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(invalid(
                "sources",
                "at least one source is needed (pcap, tproxy, ebpf or file)",
            ));
        }
        if self.ports.is_empty() || self.ports.contains(&0) {
            return Err(invalid("ports", "list ports 1-65535"));
        }
        if !(1..=64).contains(&self.workers) {
            return Err(invalid("workers", "between 1 and 64"));
        }
        let bind: SocketAddr = self.admin.bind.parse().map_err(|_| {
            invalid(
                "admin.bind",
                format!("not a socket address: {:?}", self.admin.bind),
            )
        })?;
        if !bind.ip().is_loopback() && self.admin.token.is_none() && self.admin.token_file.is_none()
        {
            return Err(invalid(
                "admin.bind",
                "a non-loopback address requires admin.token or admin.token_file",
            ));
        }
        if self.save_interval_s == 0 {
            return Err(invalid("save_interval_s", "at least 1"));
        }
        if self.memory_cap_mb == 0 || self.max_flows == 0 {
            return Err(invalid(
                "memory_cap_mb",
                "memory_cap_mb and max_flows must be positive",
            ));
        }
        if self.worker_queue == 0 || self.exchange_queue == 0 {
            return Err(invalid(
                "worker_queue",
                "queues must hold at least one batch",
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            match s {
                SourceConfig::Pcap { interfaces, .. } if interfaces.is_empty() => {
                    return Err(invalid(
                        &format!("sources[{i}].interfaces"),
                        "name at least one interface",
                    ));
                }
                SourceConfig::Tproxy { listen, .. } if listen.parse::<SocketAddr>().is_err() => {
                    return Err(invalid(
                        &format!("sources[{i}].listen"),
                        format!("not a socket address: {listen:?}"),
                    ));
                }
                SourceConfig::Ebpf { .. } if !crate::source::ebpf::AVAILABLE => {
                    return Err(invalid(
                        &format!("sources[{i}].kind"),
                        crate::source::ebpf::ProbeError::Unavailable.to_string(),
                    ));
                }
                SourceConfig::Ebpf { interface, .. } if interface.is_empty() => {
                    return Err(invalid(
                        &format!("sources[{i}].interface"),
                        "name the interface to attach to",
                    ));
                }
                SourceConfig::Ebpf { ring_mb, .. } if !(1..=1024).contains(ring_mb) => {
                    return Err(invalid(
                        &format!("sources[{i}].ring_mb"),
                        "between 1 and 1024",
                    ));
                }
                SourceConfig::Tproxy {
                    guard_timeout_ms, ..
                } if !(1000..=60_000).contains(guard_timeout_ms) => {
                    return Err(invalid(
                        &format!("sources[{i}].guard_timeout_ms"),
                        "between 1000 and 60000",
                    ));
                }
                SourceConfig::Tproxy { tap_queue_mb, .. } if !(1..=4096).contains(tap_queue_mb) => {
                    return Err(invalid(
                        &format!("sources[{i}].tap_queue_mb"),
                        "between 1 and 4096",
                    ));
                }
                _ => {}
            }
        }
        if let Some(cp) = &self.control_plane {
            cp.validate()?;
        }
        Ok(())
    }

    /// The admin bind address (validated).
    pub fn admin_bind(&self) -> SocketAddr {
        self.admin
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9090)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary file ending in `name`, removed on drop.
    fn tmp(name: &str, text: &str) -> tempfile::TempPath {
        let f = tempfile::Builder::new()
            .prefix("stoa-tap-cfg-")
            .suffix(&format!("-{name}"))
            .tempfile()
            .expect("tmp file");
        std::fs::write(f.path(), text).expect("write");
        f.into_temp_path()
    }

    const BASE: &str =
        "sources:\n  - kind: file\n    path: /tmp/x.pcap\nports: [5555]\nworkers: 2\n";

    #[test]
    fn file_then_env_then_flags() {
        let p = tmp("a.yaml", BASE);
        let ov = Overrides {
            env: vec![
                ("workers".into(), "3".into()),
                ("admin.bind".into(), "127.0.0.1:9191".into()),
            ],
            flags: vec![
                ("workers".into(), "4".into()),
                ("ports".into(), "5555,8080".into()),
            ],
        };
        let cfg = load(&p, true, &ov).expect("valid");
        assert_eq!(cfg.workers, 4, "flags win over env");
        assert_eq!(cfg.admin.bind, "127.0.0.1:9191", "env wins over file");
        assert_eq!(cfg.ports, vec![5555, 8080]);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let p = tmp("b.yaml", &format!("{BASE}prots: [1]\n"));
        let e = load(&p, true, &Overrides::default())
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("prots"), "{e}");
        let p = tmp("c.yaml", BASE);
        let ov = Overrides {
            env: vec![],
            flags: vec![("admin.bind".into(), "0.0.0.0:9090".into())],
        };
        let e = load(&p, true, &ov).expect_err("token needed").to_string();
        assert!(e.contains("admin.bind") && e.contains("token"), "{e}");
        let ov = Overrides {
            env: vec![("workers".into(), "many".into())],
            flags: vec![],
        };
        let e = load(&p, true, &ov).expect_err("type").to_string();
        assert!(e.contains("environment (workers)"), "{e}");
        let e = load(
            Path::new("/nonexistent/stoa.yaml"),
            true,
            &Overrides::default(),
        )
        .expect_err("missing explicit file")
        .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    /// A value of the wrong type in the file is reported with its key path
    /// and its line, so the operator can find it.
    #[test]
    fn file_errors_name_the_key_path_and_line() {
        for (yaml, key, line) in [
            // Line 7: `admin.bind` is a string, not a list.
            ("admin:\n  bind: [1, 2]\n", "admin.bind", 7),
            // Line 6 names an unknown key under `admin`.
            ("admin:\n  bnid: x\n", "admin.bnid", 7),
            ("save_interval_s: often\n", "save_interval_s", 6),
            (
                "control_plane:\n  url: http://x\n  outbox_max_kb: lots\n",
                "control_plane.outbox_max_kb",
                8,
            ),
        ] {
            let p = tmp("line.yaml", &format!("{BASE}{yaml}"));
            let e = load(&p, true, &Overrides::default())
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(&format!("{key}: ")), "{yaml}: {e}");
            assert!(e.contains(&format!("line {line}")), "{yaml}: {e}");
        }
        // Inside a source: serde reads an internally tagged item whole before
        // choosing its variant, so the item (path and line) is named, with
        // the bad value.
        let p = tmp(
            "src.yaml",
            "ports: [5555]\nsources:\n  - kind: pcap\n    interfaces: [eth0]\n    buffer_mb: lots\n",
        );
        let e = load(&p, true, &Overrides::default())
            .expect_err("bad buffer")
            .to_string();
        assert!(e.contains("sources[0]: line 3"), "{e}");
        assert!(e.contains("\"lots\", expected u32"), "{e}");
        // Malformed YAML (a tab-less but broken flow list) names its line too.
        let p = tmp("syntax.yaml", &format!("{BASE}ports: [5555\n"));
        let e = load(&p, true, &Overrides::default())
            .expect_err("unclosed flow list")
            .to_string();
        assert!(e.contains("line "), "{e}");
        // An empty or comment-only file means defaults (and so no source).
        let p = tmp("empty.yaml", "# nothing yet\n");
        let e = load(&p, true, &Overrides::default())
            .expect_err("no source")
            .to_string();
        assert!(e.contains("sources"), "{e}");
    }

    #[test]
    fn tproxy_settings_have_defaults_and_named_errors() {
        let src = "sources:\n  - kind: tproxy\nports: [5555]\n";
        let p = tmp("t1.yaml", src);
        let cfg = load(&p, true, &Overrides::default()).expect("valid");
        assert!(matches!(
            cfg.sources[0],
            SourceConfig::Tproxy {
                idle_timeout_s: 900,
                tap_queue_mb: 32,
                ..
            }
        ));
        let p = tmp(
            "t2.yaml",
            &src.replace("tproxy\n", "tproxy\n    tap_queue_mb: 0\n"),
        );
        let e = load(&p, true, &Overrides::default())
            .expect_err("empty budget")
            .to_string();
        assert!(e.contains("sources[0].tap_queue_mb"), "{e}");
        // 0 disables the idle timeout.
        let p = tmp(
            "t3.yaml",
            &src.replace("tproxy\n", "tproxy\n    idle_timeout_s: 0\n"),
        );
        let cfg = load(&p, true, &Overrides::default()).expect("0 is valid");
        assert!(matches!(
            cfg.sources[0],
            SourceConfig::Tproxy {
                idle_timeout_s: 0,
                ..
            }
        ));
    }

    #[test]
    fn control_plane_defaults_and_named_errors() {
        let p = tmp(
            "cp1.yaml",
            &format!("{BASE}control_plane:\n  url: http://127.0.0.1:8000\n"),
        );
        let cfg = load(&p, true, &Overrides::default()).expect("valid");
        let cp = cfg.control_plane.expect("section present");
        assert_eq!(cp.heartbeat_interval_s, 30);
        assert_eq!(cp.publish.mode, PublishMode::Http);
        assert_eq!(cp.environment, "dev");
        let p = tmp("cp2.yaml", BASE);
        assert!(load(&p, true, &Overrides::default())
            .expect("valid")
            .control_plane
            .is_none());
        for (yaml, key) in [
            ("control_plane:\n  url: ftp://x\n", "control_plane.url"),
            (
                "control_plane:\n  url: http://x\n  heartbeat_interval_s: 0\n",
                "control_plane.heartbeat_interval_s",
            ),
            (
                "control_plane:\n  publish:\n    mode: directory\n",
                "control_plane.publish.directory",
            ),
            (
                "control_plane:\n  url: http://x\n  outbox_max_kb: 1\n",
                "control_plane.outbox_max_kb",
            ),
            (
                "control_plane:\n  url: http://x\n  heartbeat: 5\n",
                "heartbeat",
            ),
        ] {
            let p = tmp("cp3.yaml", &format!("{BASE}{yaml}"));
            let e = load(&p, true, &Overrides::default())
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        // Directory mode needs no URL; env overrides reach nested keys.
        let p = tmp(
            "cp4.yaml",
            &format!(
                "{BASE}control_plane:\n  publish:\n    mode: directory\n    directory: /tmp/x\n"
            ),
        );
        let ov = Overrides {
            env: vec![("control_plane.heartbeat_interval_s".into(), "5".into())],
            flags: vec![],
        };
        let cfg = load(&p, true, &ov).expect("valid");
        assert_eq!(cfg.control_plane.map(|c| c.heartbeat_interval_s), Some(5));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/stoa-tap.yaml");
        let cfg = load(&p, true, &Overrides::default()).expect("example config is valid");
        assert!(!cfg.sources.is_empty());
    }
}
