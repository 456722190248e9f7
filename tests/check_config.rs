//! `stoa-tap run --check` tries what the daemon would open at start, without
//! capturing: a configuration naming a missing interface, a filter that does
//! not compile, a missing token file, a state directory that cannot be
//! created and an unreadable control-plane key fails with each problem named
//! (exit 8); a usable one passes (exit 0). Secrets are never printed.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

mod support;
use support::{failed_checks, repo, temp_dir};

fn check(config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stoa-tap"))
        .args(["run", "--check", "--config"])
        .arg(config)
        // A key in the environment would hide the key_file check's result.
        .env_remove("STOA_GATEWAY_KEY")
        .output()
        .expect("run --check")
}

#[test]
fn every_problem_is_named_and_fails_the_check() {
    let dir = temp_dir("check-bad");
    // The state directory would be created below a regular file: impossible
    // even for root, unlike a mode-0500 directory.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").expect("write");
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  - kind: pcap\n    interfaces: [lo, stoa-nosuch0]\n    filter: tcp prot 5555\n\
             ports: [5555]\n\
             admin:\n  bind: 127.0.0.1:9090\n  token_file: {dir}/missing-token\n\
             state_dir: {blocker}/state\n\
             control_plane:\n  url: http://127.0.0.1:8000\n  key_file: {dir}/missing-key\n",
            dir = dir.path().display(),
            blocker = blocker.display(),
        ),
    )
    .expect("write config");
    let out = check(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    let failed = failed_checks(&stderr);
    let named = |key: &str, why: &str| {
        assert!(
            failed
                .iter()
                .any(|l| l.starts_with(&format!("error {key}: ")) && l.contains(why)),
            "no failed {key} ({why}) in:\n{stderr}"
        );
    };
    named("sources[0].interfaces[1]", "stoa-nosuch0");
    named("sources[0].filter", "does not compile");
    named("admin.token_file", "missing-token: cannot read");
    named("state_dir", "not a directory");
    named("control_plane.key_file", "missing-key: cannot read");
    assert_eq!(failed.len(), 5, "exactly the five problems: {stderr}");
    // What is fine is said to be fine.
    assert!(
        stderr.contains("ok    sources[0].interfaces[0]: interface lo exists"),
        "{stderr}"
    );
    assert!(stderr.contains("run --check: 5 of "), "{stderr}");
}

#[test]
fn a_usable_configuration_passes_and_shows_no_secret() {
    let dir = temp_dir("check-good");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "t0ken-never-shown\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key = dir.path().join("gateway.key");
    std::fs::write(&key, "k3y-never-shown\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = dir.path().join("good.yaml");
    std::fs::write(
        &cfg,
        format!(
            "sources:\n  - kind: pcap\n    interfaces: [lo]\n  - kind: file\n    path: {fixture}\n\
             \x20 - kind: tproxy\n    listen: 127.0.0.1:15001\n\
             ports: [5555, 8080]\n\
             admin:\n  bind: 0.0.0.0:9090\n  token_file: {token}\n\
             state_dir: {dir}/state/new\n\
             control_plane:\n  url: https://cp.example.com\n  key_file: {key}\n",
            fixture = repo().join("fixtures/real/curl_keepalive.pcap").display(),
            token = token.display(),
            key = key.display(),
            dir = dir.path().display(),
        ),
    )
    .expect("write config");
    let out = check(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(failed_checks(&stderr).is_empty(), "{stderr}");
    for line in [
        "ok    sources[0].interfaces[0]: interface lo exists",
        "ok    sources[0].filter (from ports): \"tcp port 5555 or tcp port 8080\" compiles",
        "ok    sources[1].path: ",
        "ok    sources[2].listen: transparent listener on 127.0.0.1:15001",
        "ok    state_dir: ",
        "ok    control_plane.url: https://cp.example.com",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    // A world-readable key is a warning, not a failure.
    assert!(
        stderr.contains("warn  control_plane.key_file: ") && stderr.contains("mode 0644"),
        "{stderr}"
    );
    assert!(stderr.contains("will be created"), "{stderr}");
    assert!(
        !dir.path().join("state").exists(),
        "the check creates nothing"
    );
    for secret in ["t0ken-never-shown", "k3y-never-shown"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} shown"
        );
    }
    assert!(
        stdout.contains("state_dir: "),
        "configuration printed: {stdout}"
    );
}
