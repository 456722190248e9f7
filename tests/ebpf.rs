//! The eBPF probe, end to end in network namespaces (needs root and a build
//! with the `ebpf` feature).
//!
//! - A veth pair between a client namespace and a gateway namespace running a
//!   real HTTP/1.1 server on :5555, the probe on the gateway's end, IPv4 and
//!   IPv6, offloads on (GSO/GRO super-packets larger than the MTU cross it).
//! - `lo` inside a fresh namespace, client and server both local.
//! - `stoa-tap run --ebpf` as an unprivileged user holding only CAP_BPF,
//!   CAP_NET_ADMIN and CAP_PERFMON: metrics, a port change on SIGHUP, and the
//!   probe detached on exit.
//!
//! The exchanges the probe yields must equal those the client performed,
//! response bodies included (their SHA-256), the ~1.1 MB body among them.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::{line_reader, repo, wait_line};

fn require_root() -> bool {
    support::require_root("the eBPF tests need root (network namespaces, loading BPF programs)")
}

/// The `probe_capture` example, built with this test's profile.
fn example_binary() -> PathBuf {
    support::build_example("probe_capture", &["ebpf"])
}

/// A directory everyone can read and write, removed on drop.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(tag: &str) -> OpenDir {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("stoa-ebpf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        OpenDir(d)
    }

    /// Copies an executable in, readable and runnable by anyone.
    fn install(&self, bin: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let to = self.0.join(bin.file_name().expect("file name"));
        std::fs::copy(bin, &to).expect("copy binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        to
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Namespaces and the processes started in them; torn down on drop.
struct Netns {
    prefix: String,
    /// Namespaces made by hand (the `lo` case), deleted on drop.
    own: Vec<String>,
    children: Vec<Child>,
    topology: bool,
}

fn unique_prefix(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("se{tag}{}x{n}", std::process::id())
}

impl Netns {
    /// Client and gateway namespaces joined by a veth pair.
    fn veth() -> Netns {
        let t = Netns {
            prefix: unique_prefix("v"),
            own: Vec::new(),
            children: Vec::new(),
            topology: true,
        };
        let out = Command::new("sh")
            .arg(repo().join("tests/netns/probe_topology.sh"))
            .args(["up", &t.prefix])
            .output()
            .expect("run probe_topology.sh");
        assert!(
            out.status.success(),
            "topology setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    /// One fresh namespace with only `lo`, named `<prefix>g`.
    fn lo_only() -> Netns {
        let prefix = unique_prefix("l");
        let ns = format!("{prefix}g");
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("ip")
                .args(["-n", &ns, "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "cannot create namespace {ns}");
        Netns {
            prefix,
            own: vec![ns],
            children: Vec::new(),
            topology: false,
        }
    }

    fn ns(&self, role: char) -> String {
        format!("{}{role}", self.prefix)
    }

    /// Starts `program args` in namespace `role`; stdout and stderr piped.
    fn spawn(
        &mut self,
        role: char,
        program: &Path,
        args: &[&str],
    ) -> (u32, ChildStdout, ChildStderr) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let pid = child.id();
        self.children.push(child);
        (pid, out, err)
    }

    /// Runs a command in namespace `role` to completion.
    fn run(&self, role: char, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .output()
            .expect("run in namespace")
    }

    /// Starts the dual-stack test server in the gateway namespace.
    fn start_server(&mut self) {
        let script = repo().join("tests/netns/mirror_server.py");
        let (_, out, _) = self.spawn(
            'g',
            Path::new("python3"),
            &[script.to_str().unwrap_or_default(), "5555", "dual"],
        );
        wait_line(&line_reader(out), "the gateway server", |l| l == "ready");
    }

    /// Runs the client from namespace `role` against `host`; returns what it did.
    fn client(&self, role: char, host: &str) -> Vec<Performed> {
        let script = repo().join("tests/netns/mirror_client.py");
        let out = self.run(
            role,
            "python3",
            &[script.to_str().unwrap_or_default(), host, "5555"],
        );
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let performed: Vec<Performed> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("client json");
                Performed::from_json(&v, "len", "sha256")
            })
            .collect();
        assert!(performed.len() >= 40, "client did {}", performed.len());
        performed
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.topology {
            let _ = Command::new("sh")
                .arg(repo().join("tests/netns/probe_topology.sh"))
                .args(["down", &self.prefix])
                .status();
        }
        for ns in &self.own {
            let pids = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One exchange as the client saw it (or as the probe reported it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Performed {
    method: String,
    target: String,
    status: Option<u64>,
    body_len: Option<u64>,
    sha256: Option<String>,
}

impl Performed {
    /// From a JSON line of the client (`len`, `sha256`) or of the probe
    /// (`response_body_len`, `response_sha256`).
    fn from_json(v: &serde_json::Value, len_key: &str, sha_key: &str) -> Performed {
        Performed {
            method: v["method"].as_str().unwrap_or_default().to_owned(),
            target: v["target"].as_str().unwrap_or_default().to_owned(),
            status: v["status"].as_u64(),
            body_len: v[len_key].as_u64(),
            sha256: v[sha_key].as_str().map(str::to_owned),
        }
    }
}

/// When the probe saw an exchange's first and last bytes, ns since the epoch:
/// `[request first, request last, response first, response last]`.
type Times = [u64; 4];

/// Wall clock, ns since the Unix epoch.
fn epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Stops `probe_capture` and returns (exchanges by server address, stats,
/// the exchanges' times).
fn stop_probe(
    pid: u32,
    lines: &mpsc::Receiver<String>,
) -> (Vec<(String, Performed)>, serde_json::Value, Vec<Times>) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let mut seen = Vec::new();
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("probe_capture output ended without a stats line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
        match v["type"].as_str() {
            Some("exchange") => {
                let t = |k: &str| v[k].as_u64().unwrap_or(0);
                times.push([
                    t("request_first_ns"),
                    t("request_last_ns"),
                    t("response_first_ns"),
                    t("response_last_ns"),
                ]);
                seen.push((
                    v["server"].as_str().unwrap_or_default().to_owned(),
                    Performed::from_json(&v, "response_body_len", "response_sha256"),
                ))
            }
            Some("stats") => return (seen, v, times),
            _ => {}
        }
    }
}

/// The probe's exchanges toward `server` equal what the client performed.
fn assert_same(seen: &[(String, Performed)], server: &str, mut performed: Vec<Performed>) {
    let mut got: Vec<Performed> = seen
        .iter()
        .filter(|(s, _)| s == server)
        .map(|(_, p)| p.clone())
        .collect();
    got.sort();
    performed.sort();
    assert_eq!(got.len(), performed.len(), "exchanges toward {server}");
    for (g, p) in got.iter().zip(&performed) {
        assert_eq!(g, p, "exchange toward {server}");
    }
    let big = performed
        .iter()
        .filter(|p| p.body_len.unwrap_or(0) >= 1_000_000)
        .count();
    assert!(big >= 2, "the client fetched the 1 MB body {big} times");
}

/// Every exchange's times lie within `[from, to]` (the wall clock around the
/// client's run) and in causal order: the probe's timestamps, whether read
/// from the kernel's departure stamps or from its clock, are on the epoch.
fn assert_timed(times: &[Times], stats: &serde_json::Value, from: u64, to: u64) {
    assert!(!times.is_empty());
    for t in times {
        assert!(
            t.iter().all(|&x| (from..=to).contains(&x)),
            "{t:?} not within {from}..={to}"
        );
        assert!(
            t[0] <= t[1] && t[1] <= t[2] && t[2] <= t[3],
            "{t:?} out of order"
        );
    }
    // TCP stamps what it sends: at least the server's segments carry one.
    // (A SYN retransmitted by its timer may carry its first try's stamp, a
    // second old: the probe reads its clock for it, `foreign_timestamps`.)
    let k = &stats["probe"]["kernel"];
    let departure = k["departure_timestamps"].as_u64().unwrap_or(0);
    let foreign = k["foreign_timestamps"].as_u64().unwrap_or(u64::MAX);
    assert!(departure > 0, "no departure stamp used: {stats}");
    assert!(foreign * 20 < departure, "stamps mostly refused: {stats}");
}

/// The stats of a clean run: nothing lost anywhere, super-packets seen.
fn assert_clean(stats: &serde_json::Value) {
    let k = &stats["probe"]["kernel"];
    eprintln!("probe counters: {}", stats["probe"]);
    assert_eq!(k["ring_full_records"], 0, "{stats}");
    assert_eq!(k["load_errors"], 0, "{stats}");
    assert_eq!(k["cut_segments"], 0, "{stats}");
    assert_eq!(stats["probe"]["records_malformed"], 0, "{stats}");
    assert_eq!(stats["segments_dropped_queue"], 0, "{stats}");
    assert_eq!(stats["with_gap"], 0, "{stats}");
    assert_eq!(stats["engine"]["tcp"]["gaps"], 0, "{stats}");
    // Segments larger than one 4 KiB chunk: GSO/GRO super-packets, well
    // above the 1500-byte MTU.
    assert!(
        k["multi_chunk_segments"].as_u64().unwrap_or(0) > 0,
        "no super-packet seen: {stats}"
    );
    assert_eq!(
        k["payload_bytes"], stats["probe"]["payload_bytes_delivered"],
        "{stats}"
    );
}

#[test]
fn probe_on_the_gateway_veth_sees_every_exchange_v4_and_v6() {
    if !require_root() {
        return;
    }
    let bin = example_binary();
    let mut net = Netns::veth();
    net.start_server();
    let (pid, out, _err) = net.spawn('g', &bin, &["--iface", "t0", "--port", "5555"]);
    let lines = line_reader(out);
    wait_line(&lines, "the probe to attach", |l| l.contains("\"ready\""));

    let from = epoch_ns();
    let v4 = net.client('c', "10.78.0.2");
    let v6 = net.client('c', "fd78::2");
    let to = epoch_ns();
    let (seen, stats, times) = stop_probe(pid, &lines);
    assert_timed(&times, &stats, from, to);
    assert_same(&seen, "10.78.0.2:5555", v4);
    assert_same(&seen, "[fd78::2]:5555", v6);
    assert_clean(&stats);
}

#[test]
fn probe_on_lo_in_a_fresh_namespace() {
    if !require_root() {
        return;
    }
    let bin = example_binary();
    let mut net = Netns::lo_only();
    net.start_server();
    // `auto` attaches to egress only on lo: every packet crosses it twice.
    let (pid, out, _err) = net.spawn('g', &bin, &["--iface", "lo", "--port", "5555"]);
    let lines = line_reader(out);
    wait_line(&lines, "the probe to attach", |l| l.contains("\"ready\""));

    let from = epoch_ns();
    let v4 = net.client('g', "127.0.0.1");
    let v6 = net.client('g', "::1");
    let to = epoch_ns();
    let (seen, stats, times) = stop_probe(pid, &lines);
    assert_timed(&times, &stats, from, to);
    assert_same(&seen, "127.0.0.1:5555", v4);
    assert_same(&seen, "[::1]:5555", v6);
    assert_clean(&stats);
    // Both hooks on lo would make every segment a duplicate; a loaded
    // machine may still retransmit a few for real (tail loss probes).
    let tcp = &stats["engine"]["tcp"];
    let dup = tcp["retransmitted_segments"].as_u64().unwrap_or(u64::MAX);
    let all = tcp["segments"].as_u64().unwrap_or(0);
    assert!(dup * 20 < all, "lo seen twice? {stats}");
}

/// The probe's programs attached (TCX) to `dev` in namespace `role`.
fn tcx_programs(net: &Netns, role: char, probe: &Path, dev: &str) -> usize {
    let out = net.run(
        role,
        probe.to_str().unwrap_or_default(),
        &["--attached", dev],
    );
    assert!(
        out.status.success(),
        "probe_capture --attached: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, String)> = serde_json::from_slice(&out.stdout).expect("json");
    v.iter()
        .filter(|(_, name)| name.starts_with("stoa_tap"))
        .count()
}

/// `setpriv` arguments that run `bin args` as nobody with only `caps`.
fn privileged(caps: &str, bin: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--inh-caps",
        &format!("-all,{caps}"),
        "--ambient-caps",
        &format!("-all,{caps}"),
        "--bounding-set",
        &format!("-all,{caps}"),
        bin.to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

#[test]
fn stoa_tap_run_with_the_ebpf_source_as_an_unprivileged_user() {
    // One worker: each batch from the reader goes whole to it.
    run_with_the_ebpf_source("run1", "1", 19191);
}

#[test]
fn stoa_tap_run_with_the_ebpf_source_and_two_worker_threads() {
    // Two workers: each batch is split between them by connection.
    run_with_the_ebpf_source("run2", "2", 19192);
}

/// `stoa-tap run --ebpf` with `workers` as an unprivileged user holding the
/// probe's capabilities: ports reloaded into the probe, every exchange
/// learned, the probe detached at SIGTERM.
fn run_with_the_ebpf_source(tag: &str, workers: &str, admin_port: u16) {
    if !require_root() {
        return;
    }
    let probe = example_binary();
    let dir = OpenDir::new(tag);
    let bin = dir.install(Path::new(env!("CARGO_BIN_EXE_stoa-tap")));
    let mut net = Netns::veth();
    net.start_server();
    let config = dir.0.join("stoa-tap.yaml");
    // Port 5556 first: the probe must see nothing of the traffic to 5555.
    std::fs::write(&config, "ports: [5556]\n").expect("config");
    let state = dir.0.join("state");
    let admin = format!("127.0.0.1:{admin_port}");
    let set_workers = format!("workers={workers}");
    let args = [
        "-v",
        "run",
        "--config",
        config.to_str().unwrap_or_default(),
        "--ebpf",
        "t0",
        "--set",
        &set_workers,
        "--state-dir",
        state.to_str().unwrap_or_default(),
        "--admin-bind",
        &admin,
    ];

    // Without CAP_PERFMON the start fails and says what is missing.
    let denied = net.run(
        'g',
        "setpriv",
        &privileged("+bpf,+net_admin", &bin, &args)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!denied.status.success());
    let msg = String::from_utf8_lossy(&denied.stderr);
    assert!(msg.contains("missing CAP_PERFMON"), "{msg}");

    let setpriv = PathBuf::from("setpriv");
    let full = privileged("+bpf,+net_admin,+perfmon", &bin, &args);
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let (pid, _out, err) = net.spawn('g', &setpriv, &full);
    let err_lines = line_reader(err);
    wait_line(&err_lines, "stoa-tap run to start", |l| {
        l.contains("running")
    });
    assert_eq!(
        tcx_programs(&net, 'g', &probe, "t0"),
        2,
        "ingress and egress attached"
    );

    let api = |path: &str| -> String {
        let out = net.run('g', "curl", &["-s", &format!("http://{admin}/{path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let summary = |net_api: &dyn Fn(&str) -> String| -> serde_json::Value {
        serde_json::from_str(&net_api("api/v1/summary")).unwrap_or_default()
    };
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };

    let ignored = net.client('c', "10.78.0.2");
    std::thread::sleep(Duration::from_millis(1500));
    let m = api("metrics");
    assert_eq!(metric(&m, "stoa_tap_ebpf_probe_records_total"), 0, "{m}");
    assert!(metric(&m, "stoa_tap_ebpf_probe_packets_total") > 0, "{m}");
    assert_eq!(summary(&api)["exchanges_observed"], 0);

    // Watch 5555 from now on: SIGHUP reloads the ports into the probe's map.
    std::fs::write(&config, "ports: [5555]\n").expect("config");
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success()));
    wait_line(&err_lines, "the probe's ports to change", |l| {
        l.contains("eBPF probe ports updated")
    });
    let performed = net.client('c', "10.78.0.2");
    assert_eq!(performed.len(), ignored.len());
    let s = support::poll_until(
        20,
        || summary(&api),
        |s| s["exchanges_observed"].as_u64() == Some(performed.len() as u64),
    );
    assert_eq!(
        s["exchanges_observed"].as_u64(),
        Some(performed.len() as u64),
        "{s}"
    );
    assert_eq!(s["gaps"], 0, "{s}");
    let m = api("metrics");
    assert!(metric(&m, "stoa_tap_ebpf_probe_records_total") > 0, "{m}");
    assert!(
        metric(&m, "stoa_tap_ebpf_probe_multi_chunk_segments_total") > 0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "stoa_tap_ebpf_probe_ring_full_records_total"),
        0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "stoa_tap_ebpf_probe_payload_bytes_total"),
        metric(&m, "stoa_tap_ebpf_payload_bytes_delivered_total"),
        "{m}"
    );

    // SIGTERM: the probe is detached before the process exits.
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success()));
    wait_line(&err_lines, "the probe to detach", |l| {
        l.contains("eBPF probe detached") && l.contains("stoa_tap_egress")
    });
    wait_line(&err_lines, "stoa-tap to stop", |l| l.contains("stopped"));
    let gone = Instant::now() + Duration::from_secs(10);
    while tcx_programs(&net, 'g', &probe, "t0") != 0 && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        tcx_programs(&net, 'g', &probe, "t0"),
        0,
        "programs left attached"
    );
}
