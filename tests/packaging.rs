//! Packages and container image.
//!
//! - The .deb and .rpm built by `packaging/build-packages.sh` from this test
//!   run's own binary (the debug build `cargo test` just made: the package
//!   shape does not depend on the profile, and a release build would cost
//!   minutes), twice: revision 1, and revision 2 to upgrade to.
//! - Their contents: paths, modes, owners, conffiles / config flags, the unit,
//!   the man page, the maintainer scripts, the dependencies.
//! - As root: the .deb installs, upgrades keeping an edited configuration,
//!   removes (taking down TPROXY rules left installed, in a network
//!   namespace) and purges cleanly; `systemd-analyze verify` accepts the
//!   installed unit; the .rpm's files land with their modes in a scratch root
//!   and an upgrade keeps an edited configuration.
//! - As root: the .rpm's scriptlets on this machine (its own rpm database):
//!   account, state directory, upgrade, erase with leftover TPROXY rules.
//! - The Containerfile, linted (structure, and shellcheck on every RUN), and
//!   its build stage's commands run against a copy of the sources; compose.yaml
//!   checked for strategy A's requirements; both health checks judged against
//!   a running tap (when the build has `stoa-tap check`).
//! - As root: strategy C from the guide's own commands, in namespaces (VXLAN
//!   mirror from the gateway, the tap on the far end sees every exchange).
//!
//! The first run compiles the build stage once into target/containerfile-check
//! (81 s measured on a loaded 2-CPU machine), later runs reuse it.
//! Needs cargo-deb, cargo-generate-rpm, rpm, shellcheck, patchelf (installed
//! by tests/run-all.sh).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{repo, temp_dir};

/// The packages of one build.
struct Built {
    deb: PathBuf,
    rpm: PathBuf,
}

/// Three revisions, built once per test process: 2 ships the same example
/// configuration as 1, 3 a changed one.
struct Packages {
    r1: Built,
    r2: Built,
    r3: Built,
}

/// The line revision 3 adds to the example configuration.
const NEW_EXAMPLE: &str = "# example revised in revision 3";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

fn build(out: &Path, revision: &str, example: Option<&Path>) -> Built {
    let script = repo().join("packaging/build-packages.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_stoa-tap"))
        .arg("--out")
        .arg(out)
        .args(["--revision", revision, "--fast"]);
    if let Some(example) = example {
        cmd.arg("--example-config").arg(example);
    }
    let log = run_ok(&mut cmd);
    let find = |ext: &str| -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir(out)
            .expect("package output")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        assert_eq!(found.len(), 1, "one .{ext} in {}: {found:?}", out.display());
        found.remove(0)
    };
    let built = Built {
        deb: find("deb"),
        rpm: find("rpm"),
    };
    // SHA256SUMS lists both and verifies (the air-gapped transfer check).
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS");
    for p in [&built.deb, &built.rpm] {
        let name = p.file_name().and_then(|n| n.to_str()).expect("file name");
        assert!(sums.contains(name), "SHA256SUMS lacks {name}:\n{sums}");
    }
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(out),
    );
    let info = std::fs::read_to_string(out.join("BUILDINFO")).expect("BUILDINFO");
    assert!(info.contains(&format!("revision: {revision}")), "{info}");
    assert!(log.contains("== cargo deb"), "{log}");
    built
}

fn packages() -> &'static Packages {
    static P: OnceLock<Packages> = OnceLock::new();
    P.get_or_init(|| {
        for tool in [
            "cargo-deb",
            "cargo-generate-rpm",
            "rpm",
            "dpkg-deb",
            "patchelf",
        ] {
            assert!(
                have(tool),
                "{tool} is missing: `cargo install cargo-deb cargo-generate-rpm --locked` and \
                 `apt-get install rpm patchelf` (tests/run-all.sh does both)"
            );
        }
        let base = repo().join("target/packages-test");
        let t0 = Instant::now();
        let r1 = build(&base.join("r1"), "1", None);
        let r2 = build(&base.join("r2"), "2", None);
        std::fs::create_dir_all(&base).expect("output");
        let example = base.join("example-r3.yaml");
        let text =
            std::fs::read_to_string(repo().join("packaging/stoa-tap.yaml")).expect("example");
        std::fs::write(&example, format!("{NEW_EXAMPLE}\n{text}")).expect("write example");
        let r3 = build(&base.join("r3"), "3", Some(&example));
        eprintln!(
            "packages built from {} in {:.1}s",
            env!("CARGO_BIN_EXE_stoa-tap"),
            t0.elapsed().as_secs_f64()
        );
        Packages { r1, r2, r3 }
    })
}

/// `dpkg-deb -c`: path -> (mode string, owner/group).
fn deb_listing(deb: &Path) -> BTreeMap<String, (String, String)> {
    let text = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/bin/
            let path = f.get(5)?.trim_start_matches('.').trim_end_matches('/');
            Some((path.to_string(), (f[0].to_string(), f[1].to_string())))
        })
        .collect()
}

#[test]
fn deb_contents() {
    let p = packages();
    let files = deb_listing(&p.r1.deb);
    let expect = [
        ("/usr/bin/stoa-tap", "-rwxr-xr-x"),
        ("/etc/stoa-tap/stoa-tap.yaml", "-rw-r-----"),
        ("/lib/systemd/system/stoa-tap.service", "-rw-r--r--"),
        ("/usr/share/man/man1/stoa-tap.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/stoa-tap/README.md", "-rw-r--r--"),
        ("/usr/share/doc/stoa-tap/INSTALL.md", "-rw-r--r--"),
        ("/usr/share/doc/stoa-tap/tproxy.md", "-rw-r--r--"),
        (
            "/usr/share/doc/stoa-tap/examples/stoa-tap-tproxy.conf",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/stoa-tap/copyright", "-rw-r--r--"),
    ];
    for (path, mode) in expect {
        let (m, owner) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in the .deb: {files:#?}"));
        assert_eq!(m, mode, "{path} mode");
        assert!(
            owner == "root/root" || owner == "0/0",
            "{path} owner {owner}"
        );
    }
    // Nothing else but directories: no stray file slipped in.
    let extra: Vec<&String> = files
        .iter()
        .filter(|(path, (m, _))| {
            !m.starts_with('d') && !expect.iter().any(|(e, _)| e == path) && !path.is_empty()
        })
        .map(|(p, _)| p)
        .collect();
    assert!(
        extra
            .iter()
            .all(|p| p.starts_with("/usr/share/doc/stoa-tap/")),
        "unexpected files: {extra:?}"
    );
    // The state directory is created by postinst (systemd later moves it
    // under /var/lib/private), never shipped.
    assert!(!files.keys().any(|k| k.starts_with("/var/lib/stoa-tap")));

    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&p.r1.deb)
            .arg("conffiles"),
    );
    assert_eq!(
        conffiles.lines().map(str::trim).collect::<Vec<_>>(),
        ["/etc/stoa-tap/stoa-tap.yaml"],
        "conffiles"
    );
    let depends = run_ok(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&p.r1.deb)
            .arg("Depends"),
    );
    assert!(depends.contains("libpcap0.8"), "Depends: {depends}");
    assert!(depends.contains("adduser"), "Depends: {depends}");
    let version = run_ok(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&p.r2.deb)
            .arg("Version"),
    );
    assert!(version.trim().ends_with("-2"), "revision 2: {version}");

    // Maintainer scripts: present, and none enables or starts the service.
    for script in ["postinst", "prerm", "postrm"] {
        let text = run_ok(
            Command::new("dpkg-deb")
                .arg("-I")
                .arg(&p.r1.deb)
                .arg(script),
        );
        assert!(text.starts_with("#!/bin/sh"), "{script}: {text}");
        assert_never_starts(script, &text);
    }

    // The unit and man page as installed: extract without installing.
    let dir = temp_dir("deb-x");
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&p.r1.deb)
            .arg(dir.path()),
    );
    let unit = std::fs::read_to_string(dir.path().join("lib/systemd/system/stoa-tap.service"))
        .expect("unit");
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("packaging/stoa-tap.service")).expect("unit source")
    );
    assert!(unit.contains("ExecStart=/usr/bin/stoa-tap run --config /etc/stoa-tap/stoa-tap.yaml"));
    check_man_page(&dir.path().join("usr/share/man/man1/stoa-tap.1.gz"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/stoa-tap/stoa-tap.yaml")).expect("config"),
        std::fs::read_to_string(repo().join("packaging/stoa-tap.yaml")).expect("example"),
        "the packaged configuration is the example"
    );
    // The packaged binary is the one under test, stripped of DWARF only.
    let out = run_ok(Command::new(dir.path().join("usr/bin/stoa-tap")).arg("--version"));
    assert!(out.starts_with("stoa-tap "), "{out}");
    let sections = run_ok(
        Command::new("objdump")
            .arg("-h")
            .arg(dir.path().join("usr/bin/stoa-tap")),
    );
    assert!(
        !sections.contains(".debug_info"),
        "DWARF left in the packaged binary"
    );
    let symbols = run_ok(Command::new("nm").arg(dir.path().join("usr/bin/stoa-tap")));
    assert!(symbols.contains("main"), "symbol table stripped");
}

/// No `systemctl enable`, `start` or `restart` (only `try-restart`, which
/// restarts a service that was already running) in a maintainer script.
fn assert_never_starts(name: &str, text: &str) {
    for line in text.lines() {
        // Code only: not comments, not quoted text (messages that tell the
        // administrator to enable it).
        let code = strip_quoted(line.split('#').next().unwrap_or(""));
        if !code.contains("systemctl") {
            continue;
        }
        let words: Vec<&str> = code.split_whitespace().collect();
        for bad in ["enable", "start", "restart", "reload-or-restart"] {
            assert!(
                !words.contains(&bad),
                "{name} starts or enables the service: {line}"
            );
        }
    }
}

fn strip_quoted(line: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

fn check_man_page(gz: &Path) {
    let out = run_ok(
        Command::new("man")
            .arg("-l")
            .arg(gz)
            .env("MANWIDTH", "100")
            .env_remove("MAN_KEEP_FORMATTING"),
    );
    for want in [
        "stoa-tap - passive HTTP API-traffic analyzer",
        "stoa-tap run",
        "stoa-tap analyze",
        "stoa-tap tproxy-rules",
        "/etc/stoa-tap/stoa-tap.yaml",
        "--config",
    ] {
        assert!(out.contains(want), "man page lacks {want:?}:\n{out}");
    }
    // groff warnings mean a broken escape in the generated page.
    let warn = run(Command::new("sh").arg("-c").arg(format!(
        "zcat '{}' | groff -man -Tutf8 -ww -z",
        gz.display()
    )));
    assert!(
        warn.status.success() && warn.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&warn.stderr)
    );
}

/// `rpm -qp --dump`: path -> (mode, owner, group, config flag).
fn rpm_dump(rpm: &Path) -> BTreeMap<String, (u32, String, String, bool)> {
    let text = run_ok(Command::new("rpm").args(["-qp", "--dump"]).arg(rpm));
    text.lines()
        .filter_map(|l| {
            // path size mtime digest mode owner group isconfig isdoc rdev symlink
            let f: Vec<&str> = l.split_whitespace().collect();
            let mode = u32::from_str_radix(f.get(4)?, 8).ok()?;
            Some((
                f[0].to_string(),
                (mode, f[5].to_string(), f[6].to_string(), f[7] == "1"),
            ))
        })
        .collect()
}

#[test]
fn rpm_contents() {
    let p = packages();
    let files = rpm_dump(&p.r1.rpm);
    let expect = [
        ("/usr/bin/stoa-tap", 0o100755, "root", false),
        ("/etc/stoa-tap/stoa-tap.yaml", 0o100640, "stoa-tap", true),
        (
            "/usr/lib/systemd/system/stoa-tap.service",
            0o100644,
            "root",
            false,
        ),
        ("/usr/share/man/man1/stoa-tap.1.gz", 0o100644, "root", false),
        (
            "/usr/share/doc/stoa-tap/INSTALL.md",
            0o100644,
            "root",
            false,
        ),
        (
            "/usr/share/doc/stoa-tap/examples/stoa-tap-tproxy.conf",
            0o100644,
            "root",
            false,
        ),
    ];
    for (path, mode, group, config) in expect {
        let (m, owner, g, c) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in the .rpm: {files:#?}"));
        assert_eq!(*m, mode, "{path} mode {m:o}");
        assert_eq!(owner, "root", "{path} owner");
        assert_eq!(g, group, "{path} group");
        assert_eq!(*c, config, "{path} config flag");
    }
    assert!(!files.keys().any(|k| k.starts_with("/var/lib/stoa-tap")));
    // noreplace: an edited configuration survives upgrades.
    let flags = run_ok(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]"])
            .arg(&p.r1.rpm),
    );
    assert!(
        flags.lines().any(|l| l == "cn /etc/stoa-tap/stoa-tap.yaml"),
        "config(noreplace) flag: {flags}"
    );
    // The RPM binary names the soname RPM distributions have.
    let requires = run_ok(
        Command::new("rpm")
            .args(["-qp", "--requires"])
            .arg(&p.r1.rpm),
    );
    assert!(requires.contains("libpcap.so.1()(64bit)"), "{requires}");
    assert!(!requires.contains("libpcap.so.0.8"), "{requires}");
    let release = run_ok(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{RELEASE}"])
            .arg(&p.r2.rpm),
    );
    assert_eq!(release, "2");
    let scripts = run_ok(
        Command::new("rpm")
            .args(["-qp", "--scripts"])
            .arg(&p.r1.rpm),
    );
    for part in ["preinstall", "postinstall", "preuninstall", "postuninstall"] {
        assert!(
            scripts.contains(part),
            "{part} scriptlet missing:\n{scripts}"
        );
    }
    assert!(scripts.contains("useradd -r"), "{scripts}");
    assert_never_starts("rpm scriptlets", &scripts);
    // Every scriptlet is valid sh.
    let dir = temp_dir("rpm-scripts");
    for f in [
        "pre_install",
        "post_install",
        "pre_uninstall",
        "post_uninstall",
    ] {
        let src = repo().join(format!("packaging/rpm/{f}.sh"));
        let body = std::fs::read_to_string(&src).expect("scriptlet");
        let file = dir.path().join(f);
        std::fs::write(&file, format!("#!/bin/sh\n{body}")).expect("write");
        run_ok(Command::new("shellcheck").arg("-s").arg("sh").arg(&file));
    }
}

/// The .rpm laid down into a scratch root (no scriptlets: they need the
/// RPM distribution's tools), upgraded over an edited configuration, then
/// erased: the edit is kept on upgrade, and saved as .rpmsave on erase.
#[test]
fn rpm_install_upgrade_erase_in_scratch_root() {
    if !is_root() {
        eprintln!("skipping rpm_install_upgrade_erase_in_scratch_root: rpm --root needs root");
        return;
    }
    let p = packages();
    let root = temp_dir("rpm-root");
    let r = root.path();
    let rpm = |args: &[&str], pkg: Option<&Path>| {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(r).args(args);
        if args != ["-q", "stoa-tap"] {
            c.args(["--nodeps", "--noscripts"]);
        }
        if let Some(pkg) = pkg {
            c.arg(pkg);
        }
        run_ok(&mut c)
    };
    rpm(&["-i"], Some(&p.r1.rpm));
    let conf = r.join("etc/stoa-tap/stoa-tap.yaml");
    let bin = r.join("usr/bin/stoa-tap");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(mode(&conf), 0o640);
    assert!(r.join("usr/lib/systemd/system/stoa-tap.service").exists());
    // The binary asks for libpcap.so.1, the name on RPM distributions, which
    // Debian does not have; given it (Debian's libpcap under that name: the
    // same library), it runs.
    let bare = run(Command::new(&bin).arg("--version"));
    assert!(
        !bare.status.success() && String::from_utf8_lossy(&bare.stderr).contains("libpcap.so.1"),
        "the .rpm binary runs without libpcap.so.1: {bare:?}"
    );
    let libdir = el_libdir();
    let v = run_ok(
        Command::new(&bin)
            .arg("--version")
            .env("LD_LIBRARY_PATH", libdir.path()),
    );
    assert!(v.starts_with("stoa-tap "), "{v}");

    edit_config(&conf);
    rpm(&["-U"], Some(&p.r2.rpm));
    assert_edited(&conf);
    let q = rpm(&["-q", "stoa-tap"], None);
    assert!(q.trim().ends_with("-2.x86_64") || q.contains("-2."), "{q}");
    rpm(&["-e", "stoa-tap"], None);
    assert!(!bin.exists(), "binary left after erase");
    assert!(!conf.exists(), "edited config left in place after erase");
    assert_edited(&r.join("etc/stoa-tap/stoa-tap.yaml.rpmsave"));
}

/// A directory holding Debian's libpcap under the RPM distributions' name,
/// for running the .rpm's binary here (LD_LIBRARY_PATH).
fn el_libdir() -> tempfile::TempDir {
    let libdir = temp_dir("el-libpcap");
    let debian_pcap = [
        "/usr/lib/x86_64-linux-gnu/libpcap.so.0.8",
        "/lib/x86_64-linux-gnu/libpcap.so.0.8",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("Debian's libpcap");
    std::os::unix::fs::symlink(&debian_pcap, libdir.path().join("libpcap.so.1")).expect("symlink");
    libdir
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

const EDIT: &str = "save_interval_s: 45 # edited by tests/packaging.rs";

fn edit_config(conf: &Path) {
    let text = std::fs::read_to_string(conf).expect("config");
    assert!(text.contains("save_interval_s: 60\n"), "example changed?");
    std::fs::write(
        conf,
        text.replace("save_interval_s: 60\n", &format!("{EDIT}\n")),
    )
    .expect("edit config");
}

fn assert_edited(conf: &Path) {
    let text = std::fs::read_to_string(conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    assert!(text.contains(EDIT), "{}: edit lost", conf.display());
}

/// dpkg, retried while another process holds its lock (a shared machine).
fn dpkg(args: &[&str], pkg: Option<&Path>) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut c = Command::new("dpkg");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(pkg) = pkg {
            c.arg(pkg);
        }
        let out = run(&mut c);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr);
        }
        if stderr.contains("lock") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        panic!(
            "dpkg {args:?} {pkg:?} failed ({}):\n{}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", "stoa-tap"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.strip_prefix("install ok installed ").map(str::to_string)
}

fn owner_group(p: &Path) -> (String, String) {
    let out = run_ok(Command::new("stat").args(["-c", "%U %G"]).arg(p));
    let mut f = out.split_whitespace().map(str::to_string);
    (f.next().unwrap_or_default(), f.next().unwrap_or_default())
}

/// A network namespace removed on drop (after killing what runs in it).
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run_ok(Command::new("ip").args(["netns", "add", name]));
        run_ok(Command::new("ip").args(["netns", "exec", name, "ip", "link", "set", "lo", "up"]));
        Netns(name.to_string())
    }

    fn exec(&self, argv: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(argv))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Serialises the tests that install into the real system.
static SYSTEM: Mutex<()> = Mutex::new(());

#[test]
fn deb_install_upgrade_remove_purge() {
    if !is_root() {
        eprintln!("skipping deb_install_upgrade_remove_purge: installing a package needs root");
        return;
    }
    let _guard = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    match installed_version() {
        // A leftover of an interrupted run of this test: same version.
        Some(v) if v.starts_with("0.1.0-") => {
            dpkg(&["--purge", "stoa-tap"], None);
        }
        Some(v) => {
            eprintln!("skipping: stoa-tap {v} is installed on this machine; not touching it");
            return;
        }
        None => {}
    }
    let p = packages();
    let conf = Path::new("/etc/stoa-tap/stoa-tap.yaml");
    let state = Path::new("/var/lib/stoa-tap");
    let unit = Path::new("/lib/systemd/system/stoa-tap.service");
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/stoa-tap.service");

    // Install: files, account, permissions; not enabled, not started.
    let log = dpkg(&["-i"], Some(&p.r1.deb));
    assert!(log.contains("not started"), "postinst message: {log}");
    assert_eq!(installed_version().as_deref(), Some("0.1.0-1"));
    let v = run_ok(Command::new("/usr/bin/stoa-tap").arg("--version"));
    assert!(v.starts_with("stoa-tap 0.1.0"), "{v}");
    assert_eq!(mode(conf), 0o640);
    assert_eq!(owner_group(conf), ("root".into(), "stoa-tap".into()));
    assert_eq!(mode(state), 0o700);
    assert_eq!(owner_group(state), ("stoa-tap".into(), "stoa-tap".into()));
    assert!(unit.exists());
    assert!(!wants.exists(), "the service was enabled at install");
    let pgrep = run(Command::new("pgrep").args(["-x", "stoa-tap"]));
    let running = String::from_utf8_lossy(&pgrep.stdout).into_owned();
    let ours: Vec<&str> = running
        .lines()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| e == Path::new("/usr/bin/stoa-tap"))
        })
        .collect();
    assert!(ours.is_empty(), "the installed binary is running: {ours:?}");
    let shell = run_ok(Command::new("getent").args(["passwd", "stoa-tap"]));
    assert!(shell.trim_end().ends_with("/usr/sbin/nologin"), "{shell}");
    // The example configuration is valid as shipped.
    let check = run(Command::new("/usr/bin/stoa-tap")
        .args(["run", "--check", "--config"])
        .arg(conf));
    support::assert_example_checks(&check);
    if have("systemd-analyze") {
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit));
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("systemd-analyze not found: unit not verified");
    }

    // Upgrade to revision 2 over an edited configuration: the edit stays,
    // with its permissions (dpkg-statoverride).
    edit_config(conf);
    let log = dpkg(&["-i"], Some(&p.r2.deb));
    assert!(
        !log.contains("not started"),
        "upgrade spoke as an install: {log}"
    );
    assert_eq!(installed_version().as_deref(), Some("0.1.0-2"));
    assert_edited(conf);
    assert!(!conf.with_extension("yaml.dpkg-dist").exists());
    assert_eq!(mode(conf), 0o640);
    assert_eq!(owner_group(conf), ("root".into(), "stoa-tap".into()));
    // Upgrade to revision 3, whose example changed too, unattended as the
    // guide says (--force-confold): the edit stays, the new example is set
    // beside it.
    let log = dpkg(&["--force-confold", "-i"], Some(&p.r3.deb));
    assert_eq!(installed_version().as_deref(), Some("0.1.0-3"), "{log}");
    assert_edited(conf);
    let dist = Path::new("/etc/stoa-tap/stoa-tap.yaml.dpkg-dist");
    let new = std::fs::read_to_string(dist).expect("the new example as .dpkg-dist");
    assert!(new.starts_with(NEW_EXAMPLE), "{new}");
    assert_eq!(mode(conf), 0o640);
    assert_eq!(owner_group(conf), ("root".into(), "stoa-tap".into()));
    // Observations saved before the upgrade are still there.
    std::fs::write(state.join("observations.json"), b"{}").expect("state file");

    // TPROXY rules left installed by hand are taken down on removal: the
    // nft ones by dpkg's own prerm (run in a namespace, so the machine's
    // netfilter is untouched), the iptables ones by the same prerm script.
    let ns_nft = Netns::new("stoa-pkg-nft");
    let ns_ipt = Netns::new("stoa-pkg-ipt");
    let rules = |ns: &Netns, backend: &str| {
        let out = ns.exec(&[
            "/usr/bin/stoa-tap",
            "tproxy-rules",
            "install",
            "--port",
            "5555",
            "--backend",
            backend,
        ]);
        assert!(
            out.status.success(),
            "tproxy-rules install {backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rules(&ns_nft, "nft");
    assert!(ns_nft
        .exec(&["nft", "list", "table", "inet", "stoa_tap"])
        .status
        .success());
    let ipt = have("iptables") && have("ipset");
    if ipt {
        rules(&ns_ipt, "iptables");
        assert!(ns_ipt
            .exec(&["iptables", "-t", "mangle", "-n", "-L", "STOA_TAP"])
            .status
            .success());
        let out = ns_ipt.exec(&["/var/lib/dpkg/info/stoa-tap.prerm", "remove"]);
        assert!(
            out.status.success(),
            "prerm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!ns_ipt
            .exec(&["iptables", "-t", "mangle", "-n", "-L", "STOA_TAP"])
            .status
            .success());
        let rules =
            String::from_utf8_lossy(&ns_ipt.exec(&["ip", "rule", "show"]).stdout).into_owned();
        assert!(!rules.contains("lookup 100"), "policy route left: {rules}");
    } else {
        eprintln!("iptables or ipset missing: iptables removal not checked");
    }
    let out = ns_nft.exec(&["dpkg", "--remove", "stoa-tap"]);
    assert!(
        out.status.success(),
        "dpkg --remove: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removing the nft TPROXY rules"), "{said}");
    assert!(!ns_nft
        .exec(&["nft", "list", "table", "inet", "stoa_tap"])
        .status
        .success());
    let rules = String::from_utf8_lossy(&ns_nft.exec(&["ip", "rule", "show"]).stdout).into_owned();
    assert!(!rules.contains("lookup 100"), "policy route left: {rules}");

    // Removed: program and unit gone; configuration and observations kept.
    assert!(!Path::new("/usr/bin/stoa-tap").exists());
    assert!(!unit.exists());
    assert_edited(conf);
    assert!(state.join("observations.json").exists());

    // Purged: nothing left.
    dpkg(&["--purge", "stoa-tap"], None);
    assert_eq!(installed_version(), None);
    for gone in [conf, Path::new("/etc/stoa-tap"), state] {
        assert!(!gone.exists(), "{} left after purge", gone.display());
    }
    let overrides = run_ok(Command::new("dpkg-statoverride").arg("--list"));
    assert!(!overrides.contains("/etc/stoa-tap"), "{overrides}");
    let listed = run(Command::new("dpkg").args(["-L", "stoa-tap"]));
    assert!(!listed.status.success(), "dpkg still lists files");
}

/// One Containerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instr {
    line: usize,
    op: String,
    args: String,
}

fn parse_containerfile(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut cur: Option<Instr> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if cur.is_none() && (line.trim_start().starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        let (body, cont) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        match cur.as_mut() {
            Some(c) => {
                if !body.trim_start().starts_with('#') {
                    c.args.push(' ');
                    c.args.push_str(body.trim());
                }
            }
            None => {
                let t = body.trim();
                let (op, args) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
                cur = Some(Instr {
                    line: i + 1,
                    op: op.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
            }
        }
        if !cont {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}

/// Build arguments and their defaults (global and per stage, last wins).
fn arg_defaults(instrs: &[Instr]) -> BTreeMap<String, String> {
    instrs
        .iter()
        .filter(|i| i.op == "ARG")
        .map(|i| match i.args.split_once('=') {
            Some((k, v)) => (k.to_string(), v.trim_matches('"').to_string()),
            None => (i.args.clone(), String::new()),
        })
        .collect()
}

fn expand(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in args {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    out
}

/// Stages: name -> instructions after its FROM.
fn stages(instrs: &[Instr]) -> Vec<(String, String, Vec<Instr>)> {
    let mut out: Vec<(String, String, Vec<Instr>)> = Vec::new();
    for i in instrs {
        if i.op == "FROM" {
            let f: Vec<&str> = i.args.split_whitespace().collect();
            let name = match f.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => n.to_string(),
                _ => format!("stage{}", out.len()),
            };
            out.push((
                name,
                f.first().copied().unwrap_or("").to_string(),
                Vec::new(),
            ));
        } else if let Some(last) = out.last_mut() {
            last.2.push(i.clone());
        }
    }
    out
}

/// The packages of the `apt-get install` in a RUN line.
fn installed_packages(run_line: &str) -> Vec<String> {
    run_line
        .split("&&")
        .find(|c| c.contains("apt-get install"))
        .map(|c| {
            c.split_whitespace()
                .filter(|w| !w.starts_with('-') && !["apt-get", "install"].contains(w))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// shellcheck on one RUN line. Word splitting of a build argument
/// (`$EXTRA_PACKAGES`: a package list) is intended; nothing else passes.
fn shellcheck_run(text: &str, args: &BTreeMap<String, String>, dir: &Path, n: usize) {
    let mut script = String::from("#!/bin/sh\n");
    for k in args.keys() {
        script.push_str(&format!("{k}=\"${{{k}:-}}\"\n"));
    }
    let head = script.lines().count();
    script.push_str(text);
    script.push('\n');
    let file = dir.join(format!("run{n}.sh"));
    std::fs::write(&file, &script).expect("write RUN script");
    let out = run(Command::new("shellcheck")
        .args(["-s", "sh", "-f", "json"])
        .arg(&file));
    let findings: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(Vec::new()));
    let lines: Vec<&str> = script.lines().collect();
    let mut bad = Vec::new();
    for f in findings.as_array().into_iter().flatten() {
        let code = f["code"].as_u64().unwrap_or(0);
        let line = f["line"].as_u64().unwrap_or(0) as usize;
        let (c0, c1) = (
            f["column"].as_u64().unwrap_or(1) as usize,
            f["endColumn"].as_u64().unwrap_or(1) as usize,
        );
        let word = lines
            .get(line.saturating_sub(1))
            .and_then(|l| l.get(c0.saturating_sub(1)..c1.saturating_sub(1)))
            .unwrap_or("");
        let arg_split = code == 2086
            && args.contains_key(word.trim_start_matches('$').trim_matches(['{', '}']));
        if !arg_split && line > head {
            bad.push(format!("SC{code} {word:?}: {}", f["message"]));
        }
    }
    assert!(
        bad.is_empty(),
        "shellcheck on RUN {text:?}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn containerfile_lint_and_build_stage() {
    assert!(
        have("shellcheck"),
        "shellcheck missing (apt-get install shellcheck)"
    );
    let root = repo();
    let text =
        std::fs::read_to_string(root.join("packaging/Containerfile")).expect("Containerfile");
    let instrs = parse_containerfile(&text);
    let args = arg_defaults(&instrs);
    let st = stages(&instrs);
    let names: Vec<&str> = st.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["build", "runtime"], "stages");

    // Base images: a registry, a tag, never `latest`.
    for (name, image, _) in &st {
        let image = expand(image, &args);
        let (repo_part, tag) = image.rsplit_once(':').unwrap_or((&image, ""));
        assert!(
            repo_part.contains('/') && repo_part.contains('.'),
            "{name}: {image} without a registry"
        );
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('$'),
            "{name}: {image} tag"
        );
    }
    let known_ops: BTreeSet<&str> = [
        "FROM",
        "ARG",
        "RUN",
        "COPY",
        "WORKDIR",
        "ENV",
        "USER",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
        "VOLUME",
        "STOPSIGNAL",
        "LABEL",
        "EXPOSE",
    ]
    .into_iter()
    .collect();
    for i in &instrs {
        assert!(
            known_ops.contains(i.op.as_str()),
            "line {}: {} (ADD, MAINTAINER... are not used)",
            i.line,
            i.op
        );
        if i.op == "WORKDIR" {
            assert!(i.args.starts_with('/'), "line {}: relative WORKDIR", i.line);
        }
        if i.op == "RUN" {
            let a = &i.args;
            assert!(!a.contains("sudo "), "line {}: sudo", i.line);
            if a.contains("apt-get install") {
                assert!(
                    a.contains("apt-get update"),
                    "line {}: install without update in the same layer",
                    i.line
                );
                assert!(
                    a.contains("--no-install-recommends") && a.contains(" -y"),
                    "line {}",
                    i.line
                );
                assert!(
                    a.contains("rm -rf /var/lib/apt/lists/*"),
                    "line {}: apt lists left in the layer",
                    i.line
                );
            }
            assert!(
                !a.contains("curl ") && !a.contains("wget "),
                "line {}: downloads outside a package manager",
                i.line
            );
        }
    }

    // The runtime: libpcap only (plus what the builder asks for), a
    // non-root user, a health check, exec-form entry point.
    let runtime = &st[1].2;
    let installs: Vec<&Instr> = runtime
        .iter()
        .filter(|i| i.op == "RUN" && i.args.contains("apt-get install"))
        .collect();
    assert_eq!(installs.len(), 1);
    let pkgs = installed_packages(&installs[0].args);
    assert_eq!(pkgs, ["libpcap0.8", "$EXTRA_PACKAGES"], "runtime packages");
    assert_eq!(
        args.get("EXTRA_PACKAGES").map(String::as_str),
        Some(""),
        "EXTRA_PACKAGES default"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|i| i.op == "USER")
        .expect("USER in the runtime stage");
    let uname = user.args.split(':').next().unwrap_or("");
    assert!(
        !["root", "0", ""].contains(&uname),
        "runtime USER {}",
        user.args
    );
    let hc = runtime
        .iter()
        .find(|i| i.op == "HEALTHCHECK")
        .expect("HEALTHCHECK");
    assert!(
        hc.args.contains("CMD") && hc.args.contains("\"check\""),
        "{}",
        hc.args
    );
    for op in ["ENTRYPOINT", "CMD"] {
        let i = runtime
            .iter()
            .find(|i| i.op == op)
            .unwrap_or_else(|| panic!("{op}"));
        let v: Vec<String> =
            serde_json::from_str(&i.args).unwrap_or_else(|e| panic!("{op} not exec form: {e}"));
        assert!(!v.is_empty());
    }
    let volume = runtime.iter().find(|i| i.op == "VOLUME").expect("VOLUME");
    assert!(volume.args.contains("/var/lib/stoa-tap"));

    // shellcheck every RUN line.
    let scratch = temp_dir("containerfile");
    for (n, i) in instrs.iter().filter(|i| i.op == "RUN").enumerate() {
        shellcheck_run(&i.args, &args, scratch.path(), n);
    }

    // The build stage's commands, in order, against a copy of what its COPY
    // lines bring in (less what Containerfile.dockerignore keeps out of the
    // context): proves the copied set builds and the binary lands where the
    // runtime stage takes it. apt-get needs the network and root: its
    // packages are checked to be installed here, where the build works,
    // instead. The copy and its target directory stay in
    // target/containerfile-check between runs and the compiler settings are
    // lightened (no LTO, no optimisation), so this costs one debug-like
    // build once, then little.
    let t0 = Instant::now();
    let work = root.join("target/containerfile-check");
    let src = work.join("src");
    let out_dir = work.join("out");
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(work.join("target")).expect("target dir");
    let ignore = std::fs::read_to_string(root.join("packaging/Containerfile.dockerignore"))
        .expect("Containerfile.dockerignore");
    let excludes: Vec<String> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("--exclude={}", l.trim_start_matches("**/")))
        .collect();
    let mut cwd = work.clone();
    for i in &st[0].2 {
        match i.op.as_str() {
            "WORKDIR" => {
                assert_eq!(i.args, "/src");
                cwd = src.clone();
                std::fs::create_dir_all(&cwd).expect("workdir");
                // Cargo's default target directory, kept between runs.
                std::os::unix::fs::symlink(work.join("target"), cwd.join("target"))
                    .expect("target link");
            }
            "COPY" => {
                let parts: Vec<&str> = i.args.split_whitespace().collect();
                let (dest, sources) = parts.split_last().expect("COPY args");
                assert!(
                    !sources.iter().any(|s| s.starts_with("--")),
                    "COPY flags in the build stage"
                );
                for s in sources {
                    assert!(root.join(s).exists(), "COPY source {s} missing");
                    // `COPY a b ./` puts files in ./; `COPY dir ./dir` the
                    // directory's content in ./dir: the same paths either way.
                    if !dest.ends_with('/') && *dest != "." {
                        assert_eq!(dest.trim_start_matches("./"), *s, "COPY renames");
                    }
                    run_ok(
                        Command::new("tar")
                            .args(&excludes)
                            .arg("-cf")
                            .arg(work.join("copy.tar"))
                            .arg("-C")
                            .arg(&root)
                            .arg(s),
                    );
                    run_ok(
                        Command::new("tar")
                            .arg("-xf")
                            .arg(work.join("copy.tar"))
                            .arg("-C")
                            .arg(&cwd),
                    );
                }
            }
            "RUN" if i.args.contains("apt-get") => {
                let wanted = installed_packages(&i.args);
                assert!(!wanted.is_empty());
                for pkg in wanted {
                    let ok = Command::new("dpkg")
                        .args(["-s", &pkg])
                        .output()
                        .is_ok_and(|o| o.status.success());
                    assert!(ok, "build stage package {pkg} is not installed here");
                }
            }
            "RUN" => {
                let cmd = i.args.replace("/out", &out_dir.display().to_string());
                let mut c = Command::new("sh");
                c.arg("-c").arg(&cmd).current_dir(&cwd);
                for (k, v) in &args {
                    c.env(k, v);
                }
                for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS"] {
                    c.env_remove(var);
                }
                c.env("CARGO_NET_OFFLINE", "true")
                    .env("CARGO_PROFILE_RELEASE_LTO", "false")
                    .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
                    .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
                    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
                    .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true");
                let o = run(&mut c);
                assert!(
                    o.status.success(),
                    "build stage RUN (line {}) failed:\n{}\n{}",
                    i.line,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            "ARG" | "ENV" => {}
            other => panic!("build stage: unexpected {other}"),
        }
    }
    eprintln!("build stage ran in {:.1}s", t0.elapsed().as_secs_f64());
    // What the runtime stage copies exists: from the build stage and from
    // the context.
    for i in runtime.iter().filter(|i| i.op == "COPY") {
        let parts: Vec<&str> = i.args.split_whitespace().collect();
        let (_, sources) = parts.split_last().expect("COPY args");
        match sources.first() {
            Some(f) if f.starts_with("--from=") => {
                assert_eq!(*f, "--from=build");
                for s in &sources[1..] {
                    let p = PathBuf::from(s.replace("/out", &out_dir.display().to_string()));
                    assert!(p.exists(), "runtime COPY --from=build {s}: not produced");
                }
            }
            _ => {
                for s in sources {
                    assert!(root.join(s).exists(), "runtime COPY {s} missing");
                }
            }
        }
    }
    let v = run_ok(Command::new(out_dir.join("stoa-tap")).arg("--version"));
    assert!(v.starts_with("stoa-tap "), "{v}");
}

#[test]
fn compose_for_strategy_a() {
    let text =
        std::fs::read_to_string(repo().join("packaging/compose.yaml")).expect("compose.yaml");
    // The YAML reader applies the `<<: *tap` merge keys itself.
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("compose.yaml is YAML");
    let services = doc["services"].as_object().expect("services");
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let want: [(&str, &[&str]); 4] = [
        ("tap-pcap", &["NET_RAW", "NET_ADMIN"]),
        ("tap-ebpf", &["BPF", "PERFMON", "NET_ADMIN"]),
        ("tap-tproxy", &["NET_ADMIN"]),
        ("tproxy-rules", &["NET_ADMIN"]),
    ];
    assert_eq!(services.len(), want.len(), "services");
    let volumes = doc["volumes"].as_object().expect("top-level volumes");
    for (name, caps) in want {
        let s = &doc["services"][name];
        assert!(!s.is_null(), "service {name}");
        assert_eq!(s["network_mode"].as_str(), Some("host"), "{name}");
        assert_eq!(strs(&s["cap_drop"]), ["ALL"], "{name}");
        let mut got = strs(&s["cap_add"]);
        got.sort();
        let mut caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        caps.sort();
        assert_eq!(got, caps, "{name} capabilities");
        assert_eq!(s["read_only"].as_bool(), Some(true), "{name}");
        assert!(
            strs(&s["security_opt"])
                .iter()
                .any(|o| o.starts_with("no-new-privileges")),
            "{name}"
        );
        assert!(
            !strs(&s["profiles"]).is_empty(),
            "{name}: one profile per source"
        );
        let vols = strs(&s["volumes"]);
        assert!(
            vols.iter()
                .any(|v| v.ends_with(":/etc/stoa-tap/stoa-tap.yaml:ro")),
            "{name}: configuration mounted read-only: {vols:?}"
        );
        let state = vols
            .iter()
            .find(|v| v.ends_with(":/var/lib/stoa-tap"))
            .unwrap_or_else(|| panic!("{name}: state volume"));
        let vol_name = state.split(':').next().unwrap_or("");
        assert!(
            volumes.contains_key(vol_name),
            "{name}: volume {vol_name} not declared"
        );
        let cmd = strs(&s["command"]);
        if name.starts_with("tap-") {
            assert_eq!(
                cmd,
                ["run", "--config", "/etc/stoa-tap/stoa-tap.yaml"],
                "{name}"
            );
            let test = strs(&s["healthcheck"]["test"]);
            assert!(
                test.iter().any(|t| t == "check") || test.iter().any(|t| t.contains("/healthz")),
                "{name}: healthcheck {test:?}"
            );
        } else {
            assert_eq!(
                cmd.get(..2),
                Some(&["tproxy-rules".to_string(), "install".to_string()][..])
            );
        }
    }
    // The configuration is valid for the daemon the services run: the
    // example mounted by default parses.
    let state = support::temp_dir("compose-check");
    let check = run(Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
        .args(["run", "--check", "--config"])
        .arg(repo().join("packaging/stoa-tap.yaml"))
        .arg("--state-dir")
        .arg(state.path()));
    support::assert_example_checks(&check);
}

/// The image's and compose.yaml's health checks, run as written (with the
/// admin address of a tap started here) against a running tap: healthy;
/// and once it is gone: unhealthy. `stoa-tap check` must be in this build.
#[test]
fn healthcheck_commands_against_a_running_tap() {
    use std::io::{BufRead, BufReader};
    let bin = env!("CARGO_BIN_EXE_stoa-tap");
    let has_check = Command::new(bin)
        .args(["check", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_check {
        eprintln!("skipping: this build has no `stoa-tap check` subcommand");
        return;
    }
    // The two health checks, as argument vectors.
    let text =
        std::fs::read_to_string(repo().join("packaging/Containerfile")).expect("Containerfile");
    let instrs = parse_containerfile(&text);
    let hc = instrs
        .iter()
        .find(|i| i.op == "HEALTHCHECK")
        .expect("HEALTHCHECK");
    let json = &hc.args[hc.args.find("CMD").expect("CMD") + 3..];
    let image: Vec<String> = serde_json::from_str(json.trim()).expect("exec-form CMD");
    let compose: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("packaging/compose.yaml")).expect("compose"),
    )
    .expect("yaml");
    let test: Vec<String> = compose["services"]["tap-pcap"]["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck test")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(test.first().map(String::as_str), Some("CMD"));
    let checks = [image, test[1..].to_vec()];

    let state = temp_dir("healthcheck");
    let cfg = state.path().join("empty.yaml");
    std::fs::write(&cfg, "").expect("config");
    let mut child = Command::new(bin)
        .args(["-v", "run", "--config"])
        .arg(&cfg)
        .args(["--replay"])
        .arg(repo().join("fixtures/real/fidelity.pcap"))
        .args(["--admin-bind", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn stoa-tap run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !line.contains("admin server listening") {
                continue;
            }
            if let Some(at) = line.find("addr=") {
                if let Some(t) = tx.take() {
                    let addr: String = line[at + 5..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                        .to_string();
                    let _ = t.send(addr);
                }
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the tap did not start");
        }
    };
    let url = format!("http://{addr}");
    let run_check = |argv: &[String]| -> Output {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace("http://127.0.0.1:9090", &url))
            .collect();
        assert_eq!(argv[0], "/usr/bin/stoa-tap");
        run(Command::new(bin).args(&args))
    };
    for argv in &checks {
        let out = run_check(argv);
        if !out.status.success() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            out.status.success(),
            "healthy tap judged unhealthy by {argv:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    for argv in &checks {
        let out = run_check(argv);
        assert!(
            !out.status.success(),
            "a stopped tap judged healthy by {argv:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The text of the first fenced block of `lang` after `marker` in the guide.
fn guide_block(guide: &str, marker: &str, lang: &str) -> String {
    let at = guide
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in the guide"));
    let rest = &guide[at..];
    let open = format!("```{lang}\n");
    let start = rest.find(&open).expect("fenced block") + open.len();
    let end = rest[start..].find("```").expect("block end") + start;
    // Blocks inside list items are indented: remove the common indentation
    // (YAML's own must stay).
    let body = &rest[start..end];
    let indent = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.lines()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Strategy C as the guide describes it, in network namespaces: a client,
/// the gateway VM (eth0, HTTP server on :5555) and the tap VM (eth1,
/// 10.0.0.20) on one switch. The guide's own commands build the VXLAN
/// mirror on the gateway and drop the tunnel's packets on the tap; the tap
/// runs with the guide's configuration and must see every exchange the
/// client makes; the guide's removal commands leave no filter behind.
#[test]
fn strategy_c_vxlan_feed_from_the_guide() {
    if !is_root() {
        eprintln!("skipping strategy_c_vxlan_feed_from_the_guide: namespaces need root");
        return;
    }
    let guide = std::fs::read_to_string(repo().join("packaging/README.md")).expect("guide");
    let gateway_cmds = guide_block(&guide, "**VXLAN tunnel from the gateway VM", "sh");
    let config = guide_block(&guide, "- The configuration: the `pcap` source", "yaml");
    let inline = |marker: &str| -> String {
        let at = guide.find(marker).unwrap_or_else(|| panic!("{marker:?}")) + marker.len();
        let end = guide[at..].find('`').expect("closing backquote") + at;
        guide[at..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let stop_cmds = inline("To stop: `");
    let drop_cmds = inline("ICMP port-unreachable:\n  `");

    let p = format!("spc{}", std::process::id() % 100000);
    let ns = |r: &str| format!("{p}{r}");
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            for r in ["c", "g", "t", "s"] {
                let name = format!("{}{r}", self.0);
                if let Ok(o) = Command::new("ip").args(["netns", "pids", &name]).output() {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
    let _down = Down(p.clone());
    let sh = |script: &str| run_ok(Command::new("sh").arg("-ec").arg(script));
    let mut topo = format!(
        "ip netns add {s}; ip -n {s} link add br0 type bridge; ip -n {s} link set br0 up\n",
        s = ns("s")
    );
    for (r, dev, addr) in [
        ("c", "eth0", "10.0.0.5"),
        ("g", "eth0", "10.0.0.10"),
        ("t", "eth1", "10.0.0.20"),
    ] {
        topo.push_str(&format!(
            "ip netns add {n}; ip -n {n} link set lo up\n\
             ip link add {p}{r}0 type veth peer name {p}{r}b\n\
             ip link set {p}{r}0 netns {n}; ip -n {n} link set {p}{r}0 name {dev}\n\
             ip -n {n} addr add {addr}/24 dev {dev}; ip -n {n} link set {dev} up\n\
             ip link set {p}{r}b netns {s}; ip -n {s} link set {p}{r}b master br0 up\n",
            n = ns(r),
            s = ns("s"),
        ));
    }
    sh(&topo);
    let in_ns = |r: &str, script: &str| {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &ns(r), "sh", "-ec"])
                .arg(script),
        )
    };
    in_ns("g", &gateway_cmds);
    in_ns("t", &drop_cmds);

    let tmp = temp_dir("strategy-c");
    let cfg = tmp.path().join("stoa-tap.yaml");
    std::fs::write(&cfg, &config).expect("config");
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns("g"), "python3"])
        .arg(repo().join("tests/netns/mirror_server.py"))
        .arg("5555")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    let server_out = support::line_reader(server.stdout.take().expect("stdout"));
    support::wait_line(&server_out, "the gateway server", |l| l == "ready");
    let mut tap = Command::new("ip")
        .args(["netns", "exec", &ns("t")])
        .arg(env!("CARGO_BIN_EXE_stoa-tap"))
        .args(["-v", "run", "--config"])
        .arg(&cfg)
        .args(["--admin-bind", "127.0.0.1:19290", "--state-dir"])
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stoa-tap run");
    let tap_err = support::line_reader(tap.stderr.take().expect("stderr"));
    support::wait_line(&tap_err, "stoa-tap run to start", |l| l.contains("running"));

    let n = 6;
    for i in 0..n {
        let code = in_ns(
            "c",
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' http://10.0.0.10:5555/api/v1/items/{i}"
            ),
        );
        assert_eq!(code, "200");
    }
    let summary = support::poll_until(
        20,
        || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns("t"),
                    "curl",
                    "-s",
                    "http://127.0.0.1:19290/api/v1/summary",
                ])
                .output()
                .expect("curl");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
        },
        |s| s["exchanges_observed"].as_u64() == Some(n),
    );
    let _ = tap.kill();
    let _ = tap.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(summary["exchanges_observed"].as_u64(), Some(n), "{summary}");

    in_ns("g", &stop_cmds);
    let left = in_ns(
        "g",
        "tc filter show dev eth0 ingress; tc filter show dev eth0 egress; ip -o link show",
    );
    assert!(
        !left.contains("mirred") && !left.contains("stoa-mirror"),
        "{left}"
    );
}

/// The .rpm with its scriptlets on this machine (rpm keeps its database in
/// a temporary directory, apart from dpkg's): %pre creates the account,
/// %post the state directory and says the service is not started, an upgrade
/// keeps the edited configuration, %preun removes TPROXY rules left
/// installed (in a namespace), erase keeps the edit as .rpmsave.
#[test]
fn rpm_scriptlets_on_this_machine() {
    if !is_root() {
        eprintln!("skipping rpm_scriptlets_on_this_machine: installing needs root");
        return;
    }
    let _guard = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let bin = Path::new("/usr/bin/stoa-tap");
    if bin.exists() || Path::new("/etc/stoa-tap").exists() {
        eprintln!("skipping rpm_scriptlets_on_this_machine: stoa-tap is already installed here");
        return;
    }
    let p = packages();
    let db = temp_dir("rpmdb");
    // The .rpm's binary names libpcap.so.1 (see build-packages.sh).
    let libdir = el_libdir();
    let rpm = |ns: Option<&Netns>, args: &[&str], pkg: Option<&Path>| -> String {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, "rpm"]);
                c
            }
            None => Command::new("rpm"),
        };
        c.arg("--dbpath")
            .arg(db.path())
            .args(args)
            .env("LD_LIBRARY_PATH", libdir.path());
        if let Some(pkg) = pkg {
            c.arg(pkg);
        }
        let out = run(&mut c);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rpm {args:?}: {text}");
        text
    };
    let conf = Path::new("/etc/stoa-tap/stoa-tap.yaml");
    let state = Path::new("/var/lib/stoa-tap");
    // Whatever happens below, the machine is left as it was (but for the
    // account, kept as on Debian).
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for f in [
                "/usr/bin/stoa-tap",
                "/usr/lib/systemd/system/stoa-tap.service",
                "/usr/share/man/man1/stoa-tap.1.gz",
            ] {
                let _ = std::fs::remove_file(f);
            }
            for d in [
                "/etc/stoa-tap",
                "/var/lib/stoa-tap",
                "/usr/share/doc/stoa-tap",
            ] {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let _cleanup = Cleanup;

    let said = rpm(None, &["-i", "--nodeps"], Some(&p.r1.rpm));
    assert!(said.contains("not started"), "{said}");
    let account = run_ok(Command::new("getent").args(["passwd", "stoa-tap"]));
    assert!(account.contains("nologin"), "{account}");
    assert_eq!(mode(state), 0o700);
    assert_eq!(owner_group(state), ("stoa-tap".into(), "stoa-tap".into()));
    assert_eq!(mode(conf), 0o640);
    assert_eq!(owner_group(conf), ("root".into(), "stoa-tap".into()));
    assert!(Path::new("/usr/lib/systemd/system/stoa-tap.service").exists());

    edit_config(conf);
    let said = rpm(None, &["-U", "--nodeps"], Some(&p.r2.rpm));
    assert!(
        !said.contains("not started"),
        "upgrade spoke as an install: {said}"
    );
    assert_edited(conf);
    assert!(!Path::new("/etc/stoa-tap/stoa-tap.yaml.rpmnew").exists());
    // Revision 3 changes the example too: the edit stays, the new example is
    // set beside it.
    rpm(None, &["-U", "--nodeps"], Some(&p.r3.rpm));
    assert_edited(conf);
    let new = std::fs::read_to_string("/etc/stoa-tap/stoa-tap.yaml.rpmnew").expect(".rpmnew");
    assert!(new.starts_with(NEW_EXAMPLE), "{new}");

    let ns = Netns::new("stoa-pkg-rpm");
    let out = run(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "/usr/bin/stoa-tap",
            "tproxy-rules",
            "install",
        ])
        .args(["--port", "5555", "--backend", "nft"])
        .env("LD_LIBRARY_PATH", libdir.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = rpm(Some(&ns), &["-e", "--nodeps", "stoa-tap"], None);
    assert!(said.contains("removing the nft TPROXY rules"), "{said}");
    assert!(!ns
        .exec(&["nft", "list", "table", "inet", "stoa_tap"])
        .status
        .success());
    assert!(!bin.exists());
    assert_edited(Path::new("/etc/stoa-tap/stoa-tap.yaml.rpmsave"));
    assert!(state.exists(), "rpm erase keeps the observations");
}
