//! `run --check` beyond the syntax: what the daemon would open at start,
//! tried on this host without capturing a packet.
//!
//! Each check names its key and says `ok`, `warn` or `error` with the
//! reason. Secrets are read to see that they are usable, never shown.

use super::config::{ControlPlaneSettings, PublishMode, RunConfig, SourceConfig};
use std::fmt;
use std::path::Path;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Usable as configured.
    Ok(String),
    /// Usable, but worth a look (a world-readable secret).
    Warn(String),
    /// The daemon would fail to start (or this part would not work).
    Error(String),
}

/// One line of `run --check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Dotted configuration key checked (`sources[0].filter`).
    pub key: String,
    /// What was found.
    pub outcome: Outcome,
}

impl Check {
    fn new(key: impl Into<String>, outcome: Outcome) -> Check {
        Check {
            key: key.into(),
            outcome,
        }
    }

    /// Whether this check failed.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Error(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, text) = match &self.outcome {
            Outcome::Ok(t) => ("ok", t),
            Outcome::Warn(t) => ("warn", t),
            Outcome::Error(t) => ("error", t),
        };
        write!(f, "{tag:<5} {}: {text}", self.key)
    }
}

/// Runs every check that applies to `cfg`, in configuration order.
pub fn run_checks(cfg: &RunConfig) -> Vec<Check> {
    let mut out = vec![Check::new(
        "admin.bind",
        Outcome::Ok(format!("listen on {}", cfg.admin_bind())),
    )];
    if cfg.admin.token.is_some() {
        out.push(Check::new(
            "admin.token",
            Outcome::Ok("set in the configuration (not shown)".into()),
        ));
    } else if let Some(path) = &cfg.admin.token_file {
        out.push(Check::new("admin.token_file", secret_file(path)));
    }
    // Listed once, and only when a source names an interface.
    let devices = std::cell::OnceCell::new();
    for (i, source) in cfg.sources.iter().enumerate() {
        source_checks(i, source, cfg, &devices, &mut out);
    }
    out.push(Check::new("state_dir", writable_dir(&cfg.state_dir)));
    if let Some(path) = &cfg.hints_file {
        out.push(Check::new("hints_file", readable_file(path)));
    }
    if let Some(cp) = &cfg.control_plane {
        control_plane_checks(cp, &mut out);
    }
    out
}

fn source_checks(
    i: usize,
    source: &SourceConfig,
    cfg: &RunConfig,
    devices: &std::cell::OnceCell<Devices>,
    out: &mut Vec<Check>,
) {
    let devices = || devices.get_or_init(Devices::list);
    match source {
        SourceConfig::Pcap {
            interfaces, filter, ..
        } => {
            for (j, name) in interfaces.iter().enumerate() {
                out.push(Check::new(
                    format!("sources[{i}].interfaces[{j}]"),
                    devices().check(name),
                ));
            }
            // The same expression the capture installs (derived from the
            // ports when none is set), compiled for each link type in use:
            // `any` captures Linux cooked frames, the rest Ethernet.
            let expr = crate::source::live::LiveConfig {
                ports: cfg.ports.clone(),
                filter: filter.clone(),
                ..Default::default()
            }
            .filter_expression();
            let mut linktypes = vec![pcap::Linktype::ETHERNET];
            if interfaces.iter().any(|n| n == "any") {
                linktypes.push(pcap::Linktype::LINUX_SLL);
            }
            let key = if filter.is_some() {
                format!("sources[{i}].filter")
            } else {
                format!("sources[{i}].filter (from ports)")
            };
            out.push(Check::new(key, compile_filter(&expr, &linktypes)));
        }
        SourceConfig::Tproxy { listen, .. } => {
            let outcome = match listen.parse::<std::net::SocketAddr>() {
                Ok(a) => Outcome::Ok(format!("transparent listener on {a}")),
                Err(e) => Outcome::Error(format!("{listen:?}: {e}")),
            };
            out.push(Check::new(format!("sources[{i}].listen"), outcome));
        }
        SourceConfig::Ebpf { interface, .. } => {
            out.push(Check::new(
                format!("sources[{i}].interface"),
                devices().check(interface),
            ));
        }
        SourceConfig::File { path } => {
            out.push(Check::new(
                format!("sources[{i}].path"),
                readable_file(path),
            ));
        }
    }
}

fn control_plane_checks(cp: &ControlPlaneSettings, out: &mut Vec<Check>) {
    match cp.publish.mode {
        PublishMode::Http => {
            let url = match reqwest::Url::parse(&cp.url) {
                Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {
                    Outcome::Ok(format!("{}://{}", u.scheme(), u.authority()))
                }
                Ok(_) => Outcome::Error(format!("{:?} names no host", cp.url)),
                Err(e) => Outcome::Error(format!("{:?}: {e}", cp.url)),
            };
            out.push(Check::new("control_plane.url", url));
            let (key_name, key) = match (&cp.key_file, &cp.key_env) {
                (Some(path), _) => ("control_plane.key_file".to_owned(), secret_file(path)),
                (None, env) => {
                    let var = env
                        .as_deref()
                        .unwrap_or(super::config::DEFAULT_KEY_ENV)
                        .to_owned();
                    let outcome = match crate::publish::load_key(cp) {
                        Ok(_) => Outcome::Ok(format!("read from ${var} (not shown)")),
                        Err(e) => Outcome::Error(e.to_string()),
                    };
                    ("control_plane.key_env".to_owned(), outcome)
                }
            };
            out.push(Check::new(key_name, key));
            if let Some(ca) = &cp.ca_bundle {
                // Builds the client the publisher would use (no request is
                // sent): this parses the bundle as the TLS stack will.
                let outcome = crate::publish::client::Key::new("check")
                    .ok_or_else(|| "internal: placeholder key refused".to_owned())
                    .and_then(|k| {
                        crate::publish::client::Client::new(
                            &cp.url,
                            k,
                            Some(ca),
                            std::time::Duration::from_secs(1),
                        )
                        .map_err(|e| e.to_string())
                    });
                let outcome = match outcome {
                    Ok(_) => Outcome::Ok(format!("{}: certificates read", ca.display())),
                    Err(e) => Outcome::Error(e),
                };
                out.push(Check::new("control_plane.ca_bundle", outcome));
            }
        }
        PublishMode::Directory => {
            if let Some(dir) = &cp.publish.directory {
                out.push(Check::new(
                    "control_plane.publish.directory",
                    writable_dir(dir),
                ));
            }
        }
    }
}

/// The interfaces this host has (libpcap's list, which includes `any`),
/// listed once for all checks.
struct Devices(Result<Vec<String>, String>);

impl Devices {
    fn list() -> Devices {
        Devices(
            pcap::Device::list()
                .map(|d| d.into_iter().map(|d| d.name).collect())
                .map_err(|e| e.to_string()),
        )
    }

    fn check(&self, name: &str) -> Outcome {
        // /sys/class/net also knows interfaces libpcap cannot open (down
        // ones are still listed by both); `any` exists only for libpcap.
        let in_sys = !name.contains('/')
            && !name.is_empty()
            && Path::new("/sys/class/net").join(name).exists();
        match &self.0 {
            Ok(names) if names.iter().any(|n| n == name) || in_sys => {
                Outcome::Ok(format!("interface {name} exists"))
            }
            Ok(names) => Outcome::Error(format!(
                "no interface {name:?} on this host (there are: {})",
                names.join(", ")
            )),
            Err(_) if in_sys => Outcome::Ok(format!("interface {name} exists")),
            Err(e) => Outcome::Error(format!(
                "no interface {name:?} in /sys/class/net, and libpcap cannot list interfaces: {e}"
            )),
        }
    }
}

/// Compiles `expr` as libpcap will when the capture opens.
fn compile_filter(expr: &str, linktypes: &[pcap::Linktype]) -> Outcome {
    for &lt in linktypes {
        let compiled = pcap::Capture::dead(lt)
            .map_err(|e| e.to_string())
            .and_then(|c| c.compile(expr, true).map_err(|e| e.to_string()));
        if let Err(e) = compiled {
            return Outcome::Error(format!("{expr:?} does not compile: {e}"));
        }
    }
    Outcome::Ok(format!("{expr:?} compiles"))
}

/// A file holding a secret on its first line: readable, non-empty, and
/// (a warning otherwise) not readable by every user. The content is
/// never part of the message.
fn secret_file(path: &Path) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Outcome::Error(format!("{}: cannot read: {e}", path.display())),
    };
    let first = text.lines().next().unwrap_or_default().trim();
    if first.is_empty() {
        return Outcome::Error(format!("{}: the first line is empty", path.display()));
    }
    if first.bytes().any(|b| b.is_ascii_control()) {
        return Outcome::Error(format!(
            "{}: the first line holds control characters",
            path.display()
        ));
    }
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777);
    if mode & 0o004 != 0 {
        return Outcome::Warn(format!(
            "{}: readable by every user (mode {mode:04o}); chmod o-r it",
            path.display()
        ));
    }
    Outcome::Ok(format!(
        "{}: read (not shown), mode {mode:04o}",
        path.display()
    ))
}

fn readable_file(path: &Path) -> Outcome {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_dir() => Outcome::Error(format!("{}: is a directory", path.display())),
        Ok(_) => Outcome::Ok(format!("{}: readable", path.display())),
        Err(e) => Outcome::Error(format!("{}: cannot open: {e}", path.display())),
    }
}

/// A directory the daemon writes to: it exists and a file can be created
/// and removed in it, or it is missing and its nearest existing ancestor
/// takes a new entry (the daemon creates the rest at start). Nothing is
/// left behind.
fn writable_dir(dir: &Path) -> Outcome {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Outcome::Error(format!("{}: not a directory", dir.display()));
        }
        Ok(_) => {
            return match probe_write(dir) {
                Ok(()) => Outcome::Ok(format!("{}: writable", dir.display())),
                Err(e) => Outcome::Error(format!("{}: not writable: {e}", dir.display())),
            };
        }
        // Missing, or under a file: look at the ancestors to say which.
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Outcome::Error(format!("{}: {e}", dir.display()));
        }
        Err(_) => {}
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        match std::fs::metadata(a) {
            Ok(m) if m.is_dir() => {
                return match probe_write(a) {
                    Ok(()) => Outcome::Ok(format!(
                        "{}: missing, will be created under {}",
                        dir.display(),
                        a.display()
                    )),
                    Err(e) => Outcome::Error(format!(
                        "{}: missing, and {} does not take new entries: {e}",
                        dir.display(),
                        a.display()
                    )),
                };
            }
            Ok(_) => {
                return Outcome::Error(format!(
                    "{}: cannot be created: {} is not a directory",
                    dir.display(),
                    a.display()
                ));
            }
            Err(_) => ancestor = a.parent(),
        }
    }
    Outcome::Error(format!("{}: no existing parent", dir.display()))
}

/// Creates and removes a file in `dir`: the test that counts (permission
/// bits do not tell about read-only mounts, ACLs or root).
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".stoa-tap-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn filters_compile_or_say_why() {
        let ok = compile_filter("tcp port 5555", &[pcap::Linktype::ETHERNET]);
        assert!(matches!(ok, Outcome::Ok(_)), "{ok:?}");
        let bad = compile_filter("tcp prot 5555", &[pcap::Linktype::ETHERNET]);
        match bad {
            Outcome::Error(e) => assert!(e.contains("does not compile"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secret_files_are_read_but_never_shown() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret-value\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let ok = secret_file(&p);
        assert!(
            matches!(&ok, Outcome::Ok(t) if !t.contains("s3cret")),
            "{ok:?}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let warn = secret_file(&p);
        assert!(
            matches!(&warn, Outcome::Warn(t) if t.contains("0644") && !t.contains("s3cret")),
            "{warn:?}"
        );
        std::fs::write(&p, "\nsecond\n").expect("write");
        assert!(matches!(secret_file(&p), Outcome::Error(e) if e.contains("empty")));
        let missing = secret_file(&dir.path().join("nope"));
        assert!(matches!(missing, Outcome::Error(e) if e.contains("cannot read")));
    }

    #[test]
    fn state_directories_are_probed_and_left_clean() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(matches!(writable_dir(dir.path()), Outcome::Ok(t) if t.contains("writable")));
        let deep = dir.path().join("a/b/c");
        assert!(matches!(writable_dir(&deep), Outcome::Ok(t) if t.contains("will be created")));
        assert!(!dir.path().join("a").exists(), "the check creates nothing");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        assert!(matches!(writable_dir(&file), Outcome::Error(e) if e.contains("not a directory")));
        let under_file = file.join("state");
        assert!(
            matches!(writable_dir(&under_file), Outcome::Error(e) if e.contains("not a directory"))
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "only the test's file remains: {left:?}");
    }

    #[test]
    fn interfaces_are_looked_up() {
        let d = Devices::list();
        assert!(matches!(d.check("lo"), Outcome::Ok(_)));
        assert!(
            matches!(d.check("stoa-no-such0"), Outcome::Error(e) if e.contains("stoa-no-such0"))
        );
    }
}
