//! End to end: the TPROXY relay in real network namespaces.
//!
//! client ns -- veth -- tap ns (forwarding, TPROXY rules, relay) -- veth --
//! gateway ns (Python HTTP/1.1 server on :5555, relayed, and :5556, direct).
//! Topology: `tests/bench/tproxy_netns.sh`; server and client:
//! `tests/bench/tproxy_server.py`, `tests/bench/tproxy_client.py`; relay:
//! `stoa-tap/examples/tproxy_relay.rs` (built by the first test that needs it).
//!
//! Needs root (namespaces, nft, IP_TRANSPARENT). Not root: the tests fail,
//! unless `STOA_TAP_SKIP_NETNS=1` is set, which skips them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use stoa_tap::source::tproxy::rules::{self, RuleSpec};

const CLIENT_V4: &str = "10.77.1.2";
const CLIENT_V6: &str = "fd00:77:1::2";
const RELAY_V4: &str = "10.77.2.1";
const GATEWAY_V4: &str = "10.77.2.2";
const GATEWAY_V6: &str = "fd00:77:2::2";

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench")
}

/// True when the test may run; panics with a clear message when it cannot.
fn netns_allowed() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    if !root {
        if std::env::var("STOA_TAP_SKIP_NETNS").as_deref() == Ok("1") {
            eprintln!("tproxy e2e skipped: not root and STOA_TAP_SKIP_NETNS=1");
            return false;
        }
        panic!(
            "tests/tproxy.rs needs root (network namespaces, nft TPROXY, IP_TRANSPARENT); \
             run it as root, or set STOA_TAP_SKIP_NETNS=1 to skip it"
        );
    }
    for tool in ["ip", "nft", "python3"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "tests/tproxy.rs needs `{tool}` (Debian: iproute2, nftables, iptables, python3)"
        );
    }
    true
}

/// Path of the relay example, built once with the same profile as this test.
fn relay_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/tproxy-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "stoa-tap", "--example", "tproxy_relay"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("run cargo build --example tproxy_relay");
        assert!(st.success(), "building the tproxy_relay example failed");
        let bin = profile_dir.join("examples/tproxy_relay");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nft,
    Iptables,
}

/// The namespaces and the processes in them; everything is removed on drop,
/// whatever happened.
struct Topo {
    prefix: String,
    dir: PathBuf,
    server: Option<Child>,
    relay: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
    /// Backend of the installed rules (the relay refreshes its guard set).
    backend: Option<Backend>,
}

impl Topo {
    fn up() -> Topo {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "stp{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("stoa-tap-{prefix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topo = Topo {
            prefix,
            dir,
            server: None,
            relay: None,
            backend: None,
        };
        check(
            Command::new("bash")
                .arg(bench_dir().join("tproxy_netns.sh"))
                .args(["up", &topo.prefix])
                .output()
                .expect("run tproxy_netns.sh"),
            "namespace set-up",
        );
        topo
    }

    fn ns(&self, which: char) -> String {
        format!("{}{which}", self.prefix)
    }

    fn in_ns(&self, which: char, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(which)]).args(argv);
        c
    }

    fn run_in(&self, which: char, argv: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.in_ns(which, argv);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn ip netns exec");
        let mut w = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            w.write_all(s.as_bytes()).unwrap();
        }
        drop(w);
        child.wait_with_output().unwrap()
    }

    /// The rules as generated by `stoa-tap tproxy-rules` (same functions).
    fn install_rules(&mut self, backend: Backend) {
        self.backend = Some(backend);
        let spec = RuleSpec {
            iface: Some("t0".into()),
            ipv6: true,
            ..RuleSpec::default()
        };
        spec.validate().unwrap();
        match backend {
            Backend::Nft => {
                let out = self.run_in('t', &["nft", "-f", "-"], Some(&rules::nft_install(&spec)));
                check(out, "nft -f (generated rules)");
            }
            Backend::Iptables => {
                for c in rules::iptables_install(&spec) {
                    let argv: Vec<&str> = c.iter().map(String::as_str).collect();
                    check(self.run_in('t', &argv, None), &rules::shell_line(&c));
                }
            }
        }
        for c in rules::routes_install(&spec) {
            let argv: Vec<&str> = c.iter().map(String::as_str).collect();
            check(self.run_in('t', &argv, None), &rules::shell_line(&c));
        }
    }

    fn start_server(&mut self) {
        let log = self.dir.join("server.log");
        let script = bench_dir().join("tproxy_server.py");
        let mut child = self
            .in_ns(
                'g',
                &[
                    "python3",
                    script.to_str().unwrap(),
                    log.to_str().unwrap(),
                    "5555",
                    "5556",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "gateway server did not start");
        self.server = Some(child);
    }

    fn start_relay(&mut self, extra: &[&str]) {
        let bin = relay_bin();
        let mut argv = vec![bin.to_str().unwrap()];
        argv.extend_from_slice(extra);
        match self.backend {
            Some(Backend::Nft) => argv.extend_from_slice(&["--guard", "nft"]),
            Some(Backend::Iptables) => argv.extend_from_slice(&["--guard", "iptables"]),
            None => {}
        }
        let mut child = self
            .in_ns('t', &argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the relay");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("relay did not start ({e}): {line:?}"));
        assert_eq!(v["event"], "ready");
        self.relay = Some((child, stdin, out));
    }

    /// Stops the relay (closes its stdin); returns (exchanges, stats).
    fn stop_relay(&mut self) -> (Vec<Value>, Value) {
        let (mut child, stdin, out) = self.relay.take().expect("relay running");
        drop(stdin);
        let mut exchanges = Vec::new();
        let mut stats = Value::Null;
        for line in out.lines() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            match v["event"].as_str() {
                Some("exchange") => exchanges.push(v),
                Some("stats") => stats = v,
                _ => {}
            }
        }
        assert!(
            child.wait().unwrap().success(),
            "relay exited with an error"
        );
        (exchanges, stats)
    }

    /// Runs the client scenario; returns its per-response records.
    fn client(&self, host: &str, port: u16) -> Vec<Value> {
        let script = bench_dir().join("tproxy_client.py");
        let out = self
            .in_ns(
                'c',
                &[
                    "timeout",
                    "60",
                    "python3",
                    script.to_str().unwrap(),
                    host,
                    &port.to_string(),
                ],
            )
            .output()
            .unwrap();
        let out = check(out, &format!("client against {host}:{port}"));
        let v: Value = serde_json::from_slice(&out.stdout).expect("client output");
        v["results"].as_array().unwrap().clone()
    }

    /// Server log lines: (port, peer, method, target).
    fn server_log(&self) -> Vec<(u16, String, String, String)> {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        s.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        if let Some((mut c, stdin, _)) = self.relay.take() {
            drop(stdin);
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kills every process left in the namespaces, then deletes them.
        let _ = Command::new("bash")
            .arg(bench_dir().join("tproxy_netns.sh"))
            .args(["down", &self.prefix])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (method, target, status) multiset of client records or tap exchanges.
fn exchanges_of(v: &[Value]) -> BTreeMap<(String, String, u64), usize> {
    let mut m = BTreeMap::new();
    for x in v {
        let k = (
            x["method"].as_str().unwrap().to_string(),
            x["target"].as_str().unwrap().to_string(),
            x["status"].as_u64().unwrap_or(0),
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn sha_list(v: &[Value]) -> Vec<(String, String, u64)> {
    v.iter()
        .map(|x| {
            (
                x["target"].as_str().unwrap().to_string(),
                x["sha256"].as_str().unwrap().to_string(),
                x["len"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats["relay"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no relay stat {key} in {stats}"))
}

/// Relayed responses are byte-identical to direct ones (IPv4 and IPv6, keep
/// alive, pipelining, 1-3 MB bodies, a 1 MB upload, half-close), the gateway
/// sees the client's address (spoof on) and the tap saw every exchange.
fn transparent_and_observed(backend: Backend) {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(backend);
    t.start_server();
    t.start_relay(&["--spoof"]);

    let mut relayed_all = Vec::new();
    for (gw, client_ip) in [(GATEWAY_V4, CLIENT_V4), (GATEWAY_V6, CLIENT_V6)] {
        let relayed = t.client(gw, 5555);
        let direct = t.client(gw, 5556);
        assert_eq!(
            sha_list(&relayed),
            sha_list(&direct),
            "relayed responses differ from direct ones ({gw})"
        );
        assert!(relayed
            .iter()
            .any(|r| r["len"].as_u64().unwrap() >= 1_000_000));
        assert!(relayed.iter().all(|r| r["status"] == 200));
        // Spoofing: the gateway saw the client, not the relay.
        let peers: Vec<String> = t
            .server_log()
            .into_iter()
            .filter(|(port, _, _, _)| *port == 5555)
            .map(|(_, peer, _, _)| peer)
            .collect();
        assert!(peers.iter().any(|p| p == client_ip), "{peers:?}");
        assert!(
            peers.iter().all(|p| p == CLIENT_V4 || p == CLIENT_V6),
            "the gateway saw other peers than the client: {peers:?}"
        );
        relayed_all.extend(relayed);
    }

    let (tapped, stats) = t.stop_relay();
    assert_eq!(
        exchanges_of(&tapped),
        exchanges_of(&relayed_all),
        "the tap's exchanges differ from the client's"
    );
    for x in &tapped {
        let c = x["client"].as_str().unwrap();
        assert!(
            c.starts_with(CLIENT_V4) || c.starts_with(&format!("[{CLIENT_V6}]")),
            "{c}"
        );
        assert!(x["server"].as_str().unwrap().ends_with(":5555"));
    }
    assert_eq!(stat(&stats, "connections_accepted"), 6, "{stats}");
    assert_eq!(stat(&stats, "connections_active"), 0);
    assert_eq!(stat(&stats, "upstream_connect_errors"), 0);
    assert_eq!(stat(&stats, "tap_events_dropped"), 0);
    assert_eq!(stat(&stats, "untapped_connections"), 0);
    assert!(stat(&stats, "bytes_client_to_server") >= 2_000_000);
    assert!(stat(&stats, "bytes_server_to_client") >= 2 * 4_300_000);
    assert_eq!(stats["unknown_conn_events"], 0);
    assert_eq!(stats["http"]["gaps"], 0);
}

#[test]
fn relay_is_byte_identical_spoofs_the_client_and_is_observed_nft() {
    transparent_and_observed(Backend::Nft);
}

#[test]
fn relay_is_byte_identical_spoofs_the_client_and_is_observed_iptables() {
    transparent_and_observed(Backend::Iptables);
}

/// A tap queue of 4 events that is never drained: traffic still passes
/// byte-identical and the misses are counted. Without spoofing, the gateway
/// sees the relay's address.
#[test]
fn stalled_analyzer_never_hurts_the_traffic() {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(Backend::Nft);
    t.start_server();
    t.start_relay(&["--stall", "--tap-capacity", "4"]);
    for gw in [GATEWAY_V4, GATEWAY_V6] {
        let relayed = t.client(gw, 5555);
        let direct = t.client(gw, 5556);
        assert_eq!(sha_list(&relayed), sha_list(&direct), "{gw}");
    }
    let relayed_peers: Vec<String> = t
        .server_log()
        .into_iter()
        .filter(|(port, _, _, _)| *port == 5555)
        .map(|(_, peer, _, _)| peer)
        .collect();
    assert!(
        relayed_peers.iter().any(|p| p == RELAY_V4),
        "{relayed_peers:?}"
    );
    assert!(
        !relayed_peers.iter().any(|p| p == CLIENT_V4),
        "spoofing is off, the gateway must see the relay: {relayed_peers:?}"
    );
    let (_, stats) = t.stop_relay();
    assert_eq!(stat(&stats, "connections_accepted"), 6, "{stats}");
    assert!(stat(&stats, "tap_events_dropped") > 0, "{stats}");
    assert!(stat(&stats, "tap_bytes_dropped") > 0, "{stats}");
    // Only the first connection's Open fit in the queue: the others were
    // relayed untapped.
    assert!(stat(&stats, "untapped_connections") >= 5, "{stats}");
    assert!(stat(&stats, "tap_events_sent") <= 4, "{stats}");
}

/// One keep-alive connection: requests every 0.3 s for 1.5 s (never idle for
/// the relay's 1 s timeout), then silence. The relay closes it about 1 s
/// after the last byte, counts it, and the analyzer gets its `Close` and
/// every exchange.
#[test]
fn idle_connections_are_closed_and_counted() {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(Backend::Nft);
    t.start_server();
    t.start_relay(&["--spoof", "--idle-timeout-ms", "1000"]);
    let script = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5555), timeout=10)
f = s.makefile("rb")
def get(i):
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: gw\r\n\r\n" % (100 + i))
    n = 0
    while True:
        line = f.readline()
        assert line, "closed while active"
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
        if line == b"\r\n":
            break
    assert len(f.read(n)) == n
for i in range(6):
    get(i)
    time.sleep(0.3)
t0 = time.monotonic()
assert f.read(1) == b"", "data after the last response"
print("%.3f" % (time.monotonic() - t0))
"#;
    let out = check(
        t.run_in(
            'c',
            &["timeout", "30", "python3", "-c", script, GATEWAY_V4],
            None,
        ),
        "idle client",
    );
    let closed_after: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("seconds until the close");
    // 1 s timeout, measured from the last byte: allow for the 0.3 s pause
    // already spent and for a loaded machine.
    assert!(
        (0.4..5.0).contains(&closed_after),
        "closed {closed_after} s after the last response"
    );
    let (tapped, stats) = t.stop_relay();
    assert_eq!(stat(&stats, "connections_idle_closed"), 1, "{stats}");
    assert_eq!(stat(&stats, "connections_reset"), 0, "{stats}");
    assert_eq!(tapped.len(), 6, "{tapped:?}");
    assert_eq!(stats["closes"], 1, "{stats}");
    assert_eq!(stats["open_at_end"], 0, "{stats}");
    assert_eq!(stats["unknown_conn_events"], 0, "{stats}");
}

/// `stoa-tap run` with the TPROXY source in the tap namespace (admin server on
/// the namespace's loopback).
struct TapDaemon {
    child: Child,
}

impl TapDaemon {
    fn start(t: &Topo, backend: Backend) -> TapDaemon {
        let guard = match backend {
            Backend::Nft => "nft",
            Backend::Iptables => "iptables",
        };
        let state = t.dir.join("state");
        let cfg = t.dir.join("run.yaml");
        std::fs::write(
            &cfg,
            format!(
                "sources:\n  - kind: tproxy\n    listen: \"[::]:15001\"\n    guard: {guard}\n\
                 ports: [5555]\nworkers: 1\nstate_dir: {}\nadmin:\n  bind: 127.0.0.1:9090\n",
                state.display()
            ),
        )
        .expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.dir.join("daemon.log"))
            .expect("daemon log");
        let child = t
            .in_ns(
                't',
                &[
                    env!("CARGO_BIN_EXE_stoa-tap"),
                    "-v",
                    "run",
                    "--config",
                    cfg.to_str().expect("utf-8 path"),
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start stoa-tap run");
        let d = TapDaemon { child };
        let t0 = std::time::Instant::now();
        while t.metric("stoa_tap_tproxy_guard_diverting").unwrap_or(0.0) < 1.0 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the daemon never diverted: {}",
                std::fs::read_to_string(t.dir.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        d
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for TapDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Topo {
    /// A gauge or counter of the daemon's /metrics (summed over labels).
    fn metric(&self, name: &str) -> Option<f64> {
        let out = self.run_in(
            't',
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "http://127.0.0.1:9090/metrics",
            ],
            None,
        );
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// Runs the prober in the client namespace; (start, ok, relayed) per probe.
    fn probe(&self, tag: &str, duration_s: f64) -> Vec<(f64, bool, Option<bool>)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/netns/failopen_probe.py");
        let out = self.run_in(
            'c',
            &[
                "python3",
                script.to_str().expect("utf-8 path"),
                GATEWAY_V4,
                "5555",
                tag,
                &duration_s.to_string(),
                "0.25",
            ],
            None,
        );
        let out = check(out, "fail-open prober");
        let v: Value = serde_json::from_slice(&out.stdout).expect("prober output");
        let log = self.server_log();
        v["probes"]
            .as_array()
            .expect("probes")
            .iter()
            .map(|p| {
                let n = p["n"].as_u64().unwrap_or(0);
                let path = format!("/json?probe={tag}-{n}");
                let relayed = log
                    .iter()
                    .find(|(port, _, _, target)| *port == 5555 && *target == path)
                    .map(|(_, peer, _, _)| peer == RELAY_V4);
                (
                    p["start"].as_f64().unwrap_or(0.0),
                    p["ok"].as_bool().unwrap_or(false),
                    relayed,
                )
            })
            .collect()
    }

    /// Probes until one is answered through the relay; panics after `limit_s`.
    fn wait_relayed(&self, tag: &str, limit_s: f64) -> f64 {
        let t0 = std::time::Instant::now();
        let mut round = 0;
        loop {
            let p = self.probe(&format!("{tag}{round}"), 0.5);
            if p.iter().any(|x| x.1 && x.2 == Some(true)) {
                return t0.elapsed().as_secs_f64();
            }
            assert!(
                t0.elapsed().as_secs_f64() < limit_s,
                "{tag}: diversion did not resume within {limit_s} s: {p:?}"
            );
            round += 1;
        }
    }
}

/// What clients see while the daemon is killed or stopped: probes started
/// every 250 ms; every one started 3 s or more after the event must succeed
/// (straight to the gateway). Returns the first start of a run of successes.
fn assert_fail_open(what: &str, probes: &[(f64, bool, Option<bool>)]) -> f64 {
    let late: Vec<_> = probes.iter().filter(|p| p.0 >= 3.0).collect();
    assert!(!late.is_empty(), "{what}: no late probes");
    for p in &late {
        assert!(
            p.1,
            "{what}: a new connection at +{:.2} s failed: {probes:?}",
            p.0
        );
        assert_eq!(
            p.2,
            Some(false),
            "{what}: went through the stuck relay: {probes:?}"
        );
    }
    let mut first_ok = probes.last().map_or(0.0, |p| p.0);
    for p in probes.iter().rev() {
        if !p.1 {
            break;
        }
        first_ok = p.0;
    }
    first_ok
}

/// The guard: `kill -9` and `kill -STOP` of the daemon never take the
/// gateway's port down (new connections bypass the relay within 3 s, with no
/// command run), and after a restart or SIGCONT diversion and analysis resume
/// on their own.
fn fails_open(backend: Backend) {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(backend);
    t.start_server();
    let mut d = TapDaemon::start(&t, backend);
    t.wait_relayed("up", 5.0);

    // kill -9: the guard's child withdraws the element at once.
    let _ = d.child.kill();
    let _ = d.child.wait();
    let killed = t.probe("kill", 4.5);
    let first = assert_fail_open("kill -9", &killed);
    println!("{backend:?}: kill -9 -> new connections direct from +{first:.2} s");

    // Restart: diversion and analysis come back by themselves.
    drop(d);
    let d = TapDaemon::start(&t, backend);
    let back = t.wait_relayed("restart", 5.0);
    println!("{backend:?}: restart -> relayed again after {back:.2} s");
    let observed = |t: &Topo| t.metric("stoa_tap_exchanges_observed_total").unwrap_or(0.0);
    let wait_observed_above = |t: &Topo, floor: f64, what: &str| -> f64 {
        let t0 = std::time::Instant::now();
        loop {
            let n = observed(t);
            if n > floor {
                return n;
            }
            assert!(t0.elapsed().as_secs() < 10, "{what}: no exchange analysed");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let before_stop = wait_observed_above(&t, 0.0, "after restart");

    // kill -STOP: nothing refreshes the set; the element expires.
    let st = Command::new("kill")
        .args(["-STOP", &d.pid()])
        .status()
        .expect("kill");
    assert!(st.success());
    let stopped = t.probe("stop", 4.5);
    let first = assert_fail_open("kill -STOP", &stopped);
    println!("{backend:?}: kill -STOP -> new connections direct from +{first:.2} s");
    let st = Command::new("kill")
        .args(["-CONT", &d.pid()])
        .status()
        .expect("kill");
    assert!(st.success());
    let back = t.wait_relayed("cont", 5.0);
    println!("{backend:?}: SIGCONT -> relayed again after {back:.2} s");
    // Analysis resumed: the relayed probes are analysed again.
    let after = wait_observed_above(&t, before_stop, "after SIGCONT");
    println!("{backend:?}: exchanges analysed {before_stop} before SIGSTOP, {after} after SIGCONT");
    assert!(
        t.metric("stoa_tap_tproxy_guard_refreshes_total")
            .unwrap_or(0.0)
            > 0.0
    );
    drop(d);
}

#[test]
fn a_killed_or_stopped_tap_fails_open_nft() {
    fails_open(Backend::Nft);
}

#[test]
fn a_killed_or_stopped_tap_fails_open_iptables() {
    fails_open(Backend::Iptables);
}

/// Overload: with every connection slot taken, new connections bypass the
/// relay (answered by the gateway directly, counted), and diversion comes back
/// once slots free up.
#[test]
fn a_saturated_relay_is_bypassed_not_queued() {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(Backend::Nft);
    t.start_server();
    t.start_relay(&["--max-connections", "3", "--quiet"]);
    // Three idle connections through the relay take every slot.
    let hold = format!(
        "import socket,sys,time\n\
         s=[socket.create_connection(('{GATEWAY_V4}',5555)) for _ in range(3)]\n\
         print('held',flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut holder = t
        .in_ns('c', &["python3", "-c", &hold])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder output");
    assert_eq!(line.trim(), "held");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let p = t.probe("full", 1.0);
    assert!(
        p.iter().all(|x| x.1 && x.2 == Some(false)),
        "with every slot taken, new connections must go straight to the gateway: {p:?}"
    );
    // Free the slots: diversion comes back by itself.
    drop(holder.stdin.take());
    let _ = holder.wait();
    let back = t.wait_relayed("freed", 5.0);
    println!("slots freed -> relayed again after {back:.2} s");
    let (_, stats) = t.stop_relay();
    assert!(stat(&stats, "guard_bypass_full") >= 1, "{stats}");
}

/// `spoof_client` with the gateway in the relay's own namespace: the
/// gateway's answers to the client's address are routed to the client, never
/// back to the relay, so the upstream connect could only time out. The
/// client must be reset at once (not after the connect timeout or its own),
/// and the case counted.
#[test]
fn spoofing_toward_a_gateway_on_the_relay_host_resets_the_client_at_once() {
    if !netns_allowed() {
        return;
    }
    let mut t = Topo::up();
    t.install_rules(Backend::Nft);
    // The gateway listens in the tap namespace itself (on every address,
    // port 5555); the client targets the tap host's address.
    let log = t.dir.join("local-server.log");
    let script = bench_dir().join("tproxy_server.py");
    let mut server = t
        .in_ns(
            't',
            &[
                "python3",
                script.to_str().unwrap(),
                log.to_str().unwrap(),
                "5555",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the local gateway");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "local gateway did not start");
    t.server = Some(server);
    t.start_relay(&["--spoof"]);
    let client = r#"
import socket, sys, time
t0 = time.monotonic()
try:
    # The relay accepts, then resets: the reset may already be there when
    # the connect completes.
    s = socket.create_connection((sys.argv[1], 5555), timeout=10)
    s.sendall(b"GET /local HTTP/1.1\r\nHost: gw\r\n\r\n")
    what = "eof" if s.recv(1) == b"" else "data"
except ConnectionResetError:
    what = "reset"
except socket.timeout:
    what = "timeout"
print(what, "%.3f" % (time.monotonic() - t0))
"#;
    let mut results = Vec::new();
    for _ in 0..3 {
        let out = check(
            t.run_in(
                'c',
                &["timeout", "30", "python3", "-c", client, RELAY_V4],
                None,
            ),
            "client toward the local gateway",
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (what, secs) = text.split_once(' ').expect("client output");
        results.push((what.to_string(), secs.parse::<f64>().expect("seconds")));
    }
    let (_, stats) = t.stop_relay();
    for (what, secs) in &results {
        assert_eq!(what, "reset", "{results:?}");
        assert!(*secs < 1.0, "reset after {secs} s: {results:?}");
    }
    assert_eq!(stat(&stats, "upstream_spoof_local"), 3, "{stats}");
    assert_eq!(stat(&stats, "upstream_connect_errors"), 3, "{stats}");
    // Nothing reached the local gateway.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.trim().is_empty(), "gateway saw {seen:?}");
}
