//! Live capture on a tc port mirror, end to end in network namespaces.
//!
//! Topology (tests/netns/mirror_topology.sh): client ns -- veth -- gateway ns
//! running a real HTTP/1.1 server on :5555; tc clsact + mirred on the gateway
//! side veth copies both directions to a veth whose peer sits in a monitor ns,
//! where the `live_capture` example captures. The exchanges it reports must
//! equal those the client performed.
//!
//! Needs root (namespaces, tc, packet sockets). Without root the tests fail
//! with a clear message, unless `STOA_TAP_SKIP_NETNS=1` is set.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use stoa_tap::source::live::{self, LiveConfig, LiveError};

mod support;
use support::{line_reader, repo, wait_line};

fn require_root() -> bool {
    support::require_root("the mirror tests need root (network namespaces, tc, packet capture)")
}

/// The `live_capture` example, built with this test's profile.
fn example_binary() -> PathBuf {
    support::build_example("live_capture", &[])
}

/// The namespaces and the processes started in them; everything is torn down
/// on drop, even when the test fails.
struct Topology {
    prefix: String,
    children: Vec<Child>,
}

impl Topology {
    fn up() -> Topology {
        // Unique per process and per topology: namespace names are per host.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("stm{}x{n}", std::process::id());
        let t = Topology {
            prefix,
            children: Vec::new(),
        };
        let out = Command::new("sh")
            .arg(repo().join("tests/netns/mirror_topology.sh"))
            .args(["up", &t.prefix])
            .output()
            .expect("run mirror_topology.sh");
        assert!(
            out.status.success(),
            "topology setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn ns(&self, role: char) -> String {
        format!("{}{role}", self.prefix)
    }

    /// Starts a process in a namespace with stdout (and optionally stderr) piped.
    fn spawn(
        &mut self,
        role: char,
        program: &Path,
        args: &[&str],
        pipe_stderr: bool,
    ) -> (u32, ChildStdout, Option<ChildStderr>) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if pipe_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn in namespace");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take();
        let pid = child.id();
        self.children.push(child);
        (pid, out, err)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("sh")
            .arg(repo().join("tests/netns/mirror_topology.sh"))
            .args(["down", &self.prefix])
            .status();
    }
}

type Triple = (String, String, Option<u16>);

fn triple(v: &serde_json::Value) -> Triple {
    (
        v["method"].as_str().unwrap_or_default().to_owned(),
        v["target"].as_str().unwrap_or_default().to_owned(),
        v["status"].as_u64().map(|s| s as u16),
    )
}

/// Runs the client in the client namespace; returns what it performed.
fn run_client(topo: &Topology) -> Vec<Triple> {
    let client = Command::new("ip")
        .args(["netns", "exec", &topo.ns('c')])
        .arg("python3")
        .arg(repo().join("tests/netns/mirror_client.py"))
        .args(["10.77.0.2", "5555"])
        .output()
        .expect("run the client");
    assert!(
        client.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    String::from_utf8_lossy(&client.stdout)
        .lines()
        .map(|l| triple(&serde_json::from_str(l).expect("client json")))
        .collect()
}

/// Runs the client through the mirror while `live_capture` captures in the
/// monitor namespace; with `recreate`, the capture interface is deleted and
/// created again after the capture started. Returns the final stats line.
fn mirror_scenario(recreate: bool) -> serde_json::Value {
    let bin = example_binary();
    let mut topo = Topology::up();

    let (_, server_out, _) = topo.spawn(
        'g',
        Path::new("python3"),
        &[
            repo()
                .join("tests/netns/mirror_server.py")
                .to_str()
                .unwrap(),
            "5555",
        ],
        false,
    );
    let server_lines = line_reader(server_out);
    wait_line(&server_lines, "the gateway server", |l| l == "ready");

    let (tap_pid, tap_out, tap_err) =
        topo.spawn('m', &bin, &["--iface", "m1", "--port", "5555"], recreate);
    let tap_lines = line_reader(tap_out);
    wait_line(&tap_lines, "the capture to start", |l| {
        l.contains("\"type\":\"ready\"")
    });
    if let Some(err) = tap_err {
        let err_lines = line_reader(err);
        let out = Command::new("sh")
            .arg(repo().join("tests/netns/mirror_topology.sh"))
            .args(["remirror", &topo.prefix])
            .output()
            .expect("run mirror_topology.sh remirror");
        assert!(
            out.status.success(),
            "remirror failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_line(&err_lines, "the capture to reopen", |l| {
            l.contains("capture reopened")
        });
    }

    let mut performed = run_client(&topo);
    assert!(
        performed.len() >= 40,
        "client did {} requests",
        performed.len()
    );

    // No pause needed: on stop the capture drains its ring, including the
    // block the kernel retires within the read timeout.
    let st = Command::new("kill")
        .args(["-TERM", &tap_pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());

    let mut seen = Vec::new();
    let mut stats = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tap_lines
            .recv_timeout(left)
            .expect("live_capture output ended without a stats line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
        match v["type"].as_str() {
            Some("exchange") => seen.push(triple(&v)),
            Some("stats") => stats = Some(v),
            _ => {}
        }
    }
    let stats = stats.unwrap();
    eprintln!("capture stats: {stats}");

    performed.sort();
    seen.sort();
    assert_eq!(
        seen, performed,
        "exchanges seen by stoa-tap differ from the client's"
    );
    assert!(stats["frames"].as_u64().unwrap() > 0);
    assert_eq!(stats["interfaces"][0]["linktype"], 1, "Ethernet on a veth");
    assert_eq!(stats["kernel_dropped"], 0);
    assert_eq!(stats["frames_dropped_queue"], 0);
    assert_eq!(stats["with_gap"], 0);
    // Nanosecond stamps: with microsecond precision both would end in 000.
    let first = stats["engine"]["capture"]["first_ts_ns"].as_u64().unwrap();
    let last = stats["engine"]["capture"]["last_ts_ns"].as_u64().unwrap();
    assert!(
        first % 1000 != 0 || last % 1000 != 0,
        "timestamps look like microseconds: {first} {last}"
    );
    stats
}

#[test]
fn mirrored_exchanges_match_the_client() {
    if !require_root() {
        return;
    }
    let stats = mirror_scenario(false);
    assert_eq!(stats["interfaces"][0]["reopens"], 0);
    assert_eq!(stats["interfaces"][0]["read_errors"], 0);
}

#[test]
fn capture_survives_the_interface_being_recreated() {
    if !require_root() {
        return;
    }
    let stats = mirror_scenario(true);
    assert_eq!(stats["interfaces"][0]["reopens"], 1);
}

/// A port nobody uses, so the capture stays idle.
fn idle_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn stop_is_prompt_on_an_idle_interface() {
    if !require_root() {
        return;
    }
    let (tx, _rx) = mpsc::sync_channel(16);
    let cfg = LiveConfig {
        interfaces: vec!["lo".into()],
        ports: vec![idle_port()],
        ..LiveConfig::default()
    };
    let h = live::start(cfg, tx).expect("start on lo");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let s = h.stats();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "stats took {:?}",
        t.elapsed()
    );
    assert_eq!(s.len(), 1);
    assert!(s[0].running);
    assert_eq!(s[0].read_errors, 0, "{s:?}");
    let t = Instant::now();
    let fin = h.stop();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert!(!fin[0].running);

    // Drop stops too.
    let (tx, _rx) = mpsc::sync_channel(16);
    let cfg = LiveConfig {
        interfaces: vec!["lo".into()],
        ports: vec![idle_port()],
        ..LiveConfig::default()
    };
    let h = live::start(cfg, tx).expect("start on lo");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(h);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        t.elapsed()
    );
}

#[test]
fn full_queue_drops_batches_and_counts_them() {
    if !require_root() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Capacity 1 and never read: the first batch fills the queue.
    let (tx, rx) = mpsc::sync_channel(1);
    let cfg = LiveConfig {
        interfaces: vec!["lo".into()],
        ports: vec![port],
        batch: 1,
        read_timeout: Duration::from_millis(10),
        ..LiveConfig::default()
    };
    let h = live::start(cfg, tx).expect("start on lo");
    std::thread::sleep(Duration::from_millis(100));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.len()
    });
    {
        use std::io::Write;
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for _ in 0..20 {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(server.join().unwrap(), 20 * 27);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = h.stats();
    while s[0].frames < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        s = h.stats();
    }
    let fin = h.stop();
    let st = &fin[0];
    assert!(st.frames >= 20, "{st:?}");
    assert_eq!(st.linktype, 1, "lo is Ethernet-framed");
    assert_eq!(st.batches, 1, "{st:?}");
    assert!(st.frames_dropped_queue >= 19, "{st:?}");
    assert_eq!(st.frames, st.frames_dropped_queue + 1);
    assert!(st.kernel_received >= st.frames, "{st:?}");
    let first = rx.try_recv().expect("one batch queued");
    assert_eq!(first.len(), 1);
    let frame = first.get(0).expect("the batch's frame");
    assert!(frame.ts_ns > 1_600_000_000_000_000_000);
}

#[test]
fn start_errors_are_specific() {
    if !require_root() {
        return;
    }
    let (tx, _rx) = mpsc::sync_channel(1);
    let err = live::start(
        LiveConfig {
            interfaces: vec!["stoa-nope0".into()],
            ..LiveConfig::default()
        },
        tx.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, LiveError::InterfaceNotFound { .. }), "{err}");
    let err = live::start(
        LiveConfig {
            interfaces: vec!["lo".into()],
            filter: Some("tcp port".into()),
            ..LiveConfig::default()
        },
        tx.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, LiveError::BadFilter { .. }), "{err}");
    assert!(err.to_string().contains("syntax error"), "{err}");
    let err = live::start(LiveConfig::default(), tx).unwrap_err();
    assert!(matches!(err, LiveError::NoInterface), "{err}");
}

#[test]
fn several_interfaces_at_once_with_their_own_linktypes() {
    if !require_root() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::sync_channel(1024);
    let cfg = LiveConfig {
        interfaces: vec!["lo".into(), "any".into()],
        ports: vec![port],
        read_timeout: Duration::from_millis(10),
        ..LiveConfig::default()
    };
    let h = live::start(cfg, tx).expect("start on lo and any");
    assert_eq!(h.interfaces(), ["lo", "any"]);
    std::thread::sleep(Duration::from_millis(100));
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        n
    });
    {
        use std::io::Write;
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /multi HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    }
    assert!(server.join().unwrap() > 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = h.stats();
    while s.iter().any(|i| i.frames < 6) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        s = h.stats();
    }
    let fin = h.stop();
    assert_eq!(fin[0].linktype, 1, "{fin:?}");
    assert_eq!(
        fin[1].linktype, 113,
        "`any` gives Linux cooked frames: {fin:?}"
    );
    assert!(
        fin.iter().all(|i| i.frames >= 6 && i.read_errors == 0),
        "{fin:?}"
    );

    // Each interface's frames carry its link type and decode to the same exchange.
    let engine = || {
        let mut cfg = stoa_tap::pipeline::EngineConfig::default();
        cfg.tcp.ports = stoa_tap::tcp::ServerPorts::List(vec![port]);
        stoa_tap::pipeline::Engine::new(cfg)
    };
    let mut engines = [engine(), engine()];
    while let Ok(batch) = rx.try_recv() {
        for f in batch.iter() {
            let e = match f.linktype {
                1 => &mut engines[0],
                113 => &mut engines[1],
                other => panic!("unexpected linktype {other}"),
            };
            e.packet(&f);
        }
    }
    for e in &mut engines {
        e.finish();
        let ex: Vec<Triple> = e
            .take_exchanges()
            .map(|x| {
                (
                    x.request.method.to_string(),
                    x.request.target.clone(),
                    x.response.as_ref().map(|r| r.status),
                )
            })
            .collect();
        assert_eq!(ex, [("GET".to_owned(), "/multi".to_owned(), Some(200))]);
    }
}

#[test]
fn permission_error_names_the_capabilities() {
    if !require_root() {
        return;
    }
    let bin = example_binary();
    // Copy to a path any user can execute, then run it without privileges.
    // Closed before the copy, so it can be executed; removed on drop.
    let tmp = tempfile::Builder::new()
        .prefix("stoa-live-capture-")
        .tempfile()
        .expect("temp file")
        .into_temp_path();
    std::fs::copy(&bin, &tmp).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&tmp)
        .args(["--iface", "lo", "--seconds", "1"])
        .output();
    drop(tmp);
    let out = out.expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        err.contains("CAP_NET_RAW") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
}

/// `stoa-tap run` itself (pcap source on the mirror port, admin API inside
/// the monitor namespace) sees what the client performed.
#[test]
fn stoa_tap_run_on_the_mirror_port_sees_the_client_exchanges() {
    if !require_root() {
        return;
    }
    // Declared before the topology, so removed after its processes are stopped.
    let tmp = support::temp_dir("mirror-run");
    let mut topo = Topology::up();
    let (_, server_out, _) = topo.spawn(
        'g',
        Path::new("python3"),
        &[
            repo()
                .join("tests/netns/mirror_server.py")
                .to_str()
                .unwrap_or_default(),
            "5555",
        ],
        false,
    );
    wait_line(&line_reader(server_out), "the gateway server", |l| {
        l == "ready"
    });

    let state = tmp.path().join("state");
    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "").expect("empty config");
    let (_, _, err) = topo.spawn(
        'm',
        Path::new(env!("CARGO_BIN_EXE_stoa-tap")),
        &[
            "-v",
            "run",
            "--config",
            empty.to_str().unwrap_or_default(),
            "--interface",
            "m1",
            "--port",
            "5555",
            "--state-dir",
            state.to_str().unwrap_or_default(),
            "--admin-bind",
            "127.0.0.1:19190",
        ],
        true,
    );
    let err_lines = line_reader(err.expect("stderr piped"));
    wait_line(&err_lines, "stoa-tap run to start", |l| {
        l.contains("running")
    });

    let performed = run_client(&topo);

    let api = |path: &str| -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &topo.ns('m'), "curl", "-s"])
            .arg(format!("http://127.0.0.1:19190/api/v1/{path}"))
            .output()
            .expect("curl in the monitor namespace");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let summary = support::poll_until(
        20,
        || api("summary"),
        |s| s["exchanges_observed"].as_u64() == Some(performed.len() as u64),
    );
    assert_eq!(
        summary["exchanges_observed"].as_u64(),
        Some(performed.len() as u64),
        "{summary}"
    );
    assert_eq!(summary["gaps"], 0, "{summary}");
    // Per (method, status) the operations account for every request performed
    // (404s are counted above but kept out of the contracts by design).
    let mut want: std::collections::BTreeMap<(String, u16), u64> = Default::default();
    for (m, _, s) in &performed {
        if *s != Some(404) {
            *want.entry((m.clone(), s.unwrap_or(0))).or_default() += 1;
        }
    }
    let mut got: std::collections::BTreeMap<(String, u16), u64> = Default::default();
    let ops = api("operations");
    for op in ops.as_array().cloned().unwrap_or_default() {
        let m = op["method"].as_str().unwrap_or_default().to_owned();
        if let Some(st) = op["stats"]["statuses"].as_object() {
            for (code, n) in st {
                *got.entry((m.clone(), code.parse().unwrap_or(0)))
                    .or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    assert_eq!(got, want, "operations: {ops}");
}
